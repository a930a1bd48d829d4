"""XID classification against the vendored NVIDIA catalogue, and kernel-log parsing."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from collectors.kmsg import KernelLog
from collectors.xid import CATEGORIES, catalogue, classify, normalise_pci, parse_kernel_line
from tests.conftest import SHARED_DATA, missing

DATA = Path(__file__).parent / "data" / "kmsg"


def test_catalogue_is_vendored_whole() -> None:
    cat = catalogue()
    assert len(cat) == 162
    assert all(info.category in CATEGORIES for info in cat.values())


def test_vendored_copy_matches_shared_data() -> None:
    src = SHARED_DATA / "nvidia_xid" / "xid_errors_mapping_nvsentinel.csv"
    if not src.exists():
        missing("../shared/data is not present")
    rows = list(csv.DictReader(src.open()))
    for row in rows:
        info = classify(int(row["xid"]))
        assert info.mnemonic == row["mnemonic"]
        assert info.fatal == (row["fatality"] == "FATAL")


@pytest.mark.parametrize(("code", "fatal", "category", "resolution"), [
    (79, True, "gpu-hardware", "RESTART_BM"),
    (48, True, "gpu-hardware", "WORKFLOW_XID_48"),
    (94, False, "gpu-hardware", "RESTART_APP"),
    (95, True, "gpu-hardware", "RESET_GPU"),
    (13, False, "user/app", "RESTART_APP"),
    (74, True, "interconnect", "WORKFLOW_NVLINK_ERR"),
    (63, False, "gpu-hardware", "IGNORE"),
])
def test_classification(code: int, fatal: bool, category: str, resolution: str) -> None:
    info = classify(code)
    assert (info.fatal, info.category, info.resolution) == (fatal, category, resolution)
    assert info.recommended_action
    assert info.severity == ("critical" if fatal else ("info" if resolution == "IGNORE" else "warning"))


def test_unknown_xid_is_treated_as_fatal() -> None:
    info = classify(99999)
    assert info.fatal and info.severity == "critical" and info.mnemonic == "UNKNOWN_XID"


def test_kernel_lines_parse() -> None:
    lines = (DATA / "dmesg.txt").read_text().splitlines()
    xids = [x for x in map(parse_kernel_line, lines) if x]
    assert [(x.pci_bus_id, x.code) for x in xids] == [
        ("0000:18:00", 79), ("0000:2a:00", 13), ("0000:ab:00", 48), ("0000:db:00", 94)]
    assert xids[1].pid == 48213 and "Warp Exception" in xids[1].message


@pytest.mark.parametrize(("raw", "norm"), [
    ("00000000:18:00.0", "0000:18:00"), ("0000:3B:00", "0000:3b:00"), ("3b:00.0", "0000:3b:00")])
def test_pci_ids_normalise_to_kernel_form(raw: str, norm: str) -> None:
    assert normalise_pci(raw) == norm


def test_kernel_log_tails_new_lines_only(tmp_path: Path) -> None:
    log_file = tmp_path / "kmsg"
    log_file.write_text((DATA / "dmesg.txt").read_text())
    klog = KernelLog(str(log_file))
    assert klog.check()
    assert klog.read_xids() == []  # history before the agent started is not replayed
    with log_file.open("a") as f:
        f.write("NVRM: Xid (PCI:0000:18:00): 31, pid=1, name=x, MMU Fault\nNVRM: Xid (PCI:0000:18:00): 4")
    assert [x.code for x in klog.read_xids()] == [31]
    with log_file.open("a") as f:
        f.write("3, pid=2, name=y, Reset channel\n")  # the partial line completes
    assert [x.code for x in klog.read_xids()] == [43]
    klog.close()


def test_unreadable_kernel_log_is_not_an_error(tmp_path: Path) -> None:
    klog = KernelLog(str(tmp_path / "missing"))
    assert not klog.check()
    assert klog.read_xids() == []


@pytest.mark.skipif(not os.path.exists("/dev/kmsg"), reason="no /dev/kmsg on this machine")
def test_real_dev_kmsg_reads_without_blocking() -> None:
    klog = KernelLog("/dev/kmsg")
    if klog.check():
        assert isinstance(klog.read_lines(), list)
    klog.close()
