"""Dense datasheet peaks by NVML model name."""

from __future__ import annotations

import pytest

from agent.workloads.peaks import board, datasheet_peak
from collectors.gpu_models import MODELS


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100 SXM"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe"), ("NVIDIA A100 80GB PCIe", "A100 PCIe"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", "L40"), ("NVIDIA L4", "L4"), ("NVIDIA A10", "A10"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("Tesla V100-SXM2-32GB", "V100 SXM2"), ("Tesla V100-PCIE-16GB", "V100 PCIe"), ("Tesla T4", "T4"),
    ("NVIDIA B200", None), ("AMD Instinct MI300X", None),
])
def test_nvml_names_find_their_board(name: str, expected: str | None) -> None:
    assert board(name) == expected


def test_dense_not_sparse_numbers() -> None:
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bf16").flops == pytest.approx(989.5e12)  # 1,979 with sparsity
    assert datasheet_peak("NVIDIA H100 PCIe", "tf32").flops == pytest.approx(378e12)  # 756 with sparsity
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "fp32").flops == pytest.approx(19.5e12)
    assert datasheet_peak("NVIDIA GeForce RTX 4090", "fp16").flops == pytest.approx(165.2e12)  # FP32 accumulate
    v100 = datasheet_peak("Tesla V100-SXM2-32GB", "bf16")
    assert v100.flops is None and "V100 SXM2" in v100.source  # no bf16 on Volta
    assert datasheet_peak("NVIDIA B200", "bf16").flops is None


def test_every_simulated_gpu_model_has_a_peak() -> None:
    for model in MODELS.values():
        assert datasheet_peak(model.name, "fp16").flops, model.name
