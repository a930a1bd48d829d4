"""What keeps the NVML side of the agent's cycle cheap (issue #2), held to giving the same answers:
the fake NVML's unions read without masking, ECC and PCIe figures worked out once per GPU and tick
and shared by the calls of that tick, and the NVML collector taking field answers by their position."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.fake_nvml import FakeNVML, _FieldUnion, _union
from collectors.nvml import NvmlCollector
from collectors.records import Sample
from collectors.scenarios import Fault, Scenario
from tests.conftest import ManualClock

START = 1_764_000_000.0
MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def Clock() -> ManualClock:  # noqa: N802 - reads as the class it stands for
    return ManualClock(START)


def _entries(fields: list[Any]) -> list[tuple[Any, ...]]:
    return [(f.fieldId, f.scopeId, f.timestamp, f.latencyUsec, f.valueType, f.nvmlReturn,
             *(getattr(f.value, m) for m in MEMBERS)) for f in fields]


@pytest.mark.parametrize("v", [0, 1, 255, 256, 65_535, 65_536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                               1_234_567_890_123, 2**63, 2**64 - 1, 2**64, -1, -(2**40)])
def test_unions_read_as_the_masked_members(v: int) -> None:
    """Whichever class holds the number, every member reads as the generic union computes it."""
    generic = _FieldUnion(v)
    assert [getattr(_union(v), m) for m in MEMBERS] == [getattr(generic, m) for m in MEMBERS]


@pytest.mark.parametrize("model", ["H100", "V100", "RTX4090"])
def test_answers_asked_again_within_a_tick_are_those_of_a_fresh_fake(model: str) -> None:
    """A request asked again within a tick (after the per-tick figures were worked out) answers as
    a FakeNVML that never answered it before, in entries of its own (a caller may write to them);
    the next tick, or an earlier one, is simulated afresh."""
    faults = () if model == "RTX4090" else (Fault("ecc_corrected", at=0, gpu=0, params={"per_hour": 36000}),
                                            Fault("xid", at=20, gpu=0, code=48))
    scenario = Scenario(model=model, gpus=2, faults=faults)
    request = (82, 83, 94, 3, 4, 5, 6, 29, 30, 142, 143, 144, 145, (138, 0xFFFFFFFF), (139, 0xFFFFFFFF),
               38, 45, 52, 59, (165, 0), (165, 5), (165, 40), 999)
    clock = Clock()
    kept = FakeNVML(scenario, clock=clock, start=START, node_name="n")
    kept.nvmlInit()
    for step in (0.0, 0.01, 0.07, 10.0, 25.0, 3600.0, 3600.03, 10.0):  # and back in time
        clock.now = START + step
        fresh_clock = Clock()
        fresh_clock.now = clock.now
        fresh = FakeNVML(scenario, clock=fresh_clock, start=START, node_name="n")
        fresh.nvmlInit()
        for index in range(2):
            h = kept.nvmlDeviceGetHandleByIndex(index)
            first = kept.nvmlDeviceGetFieldValues(h, request)
            expected = _entries(fresh.nvmlDeviceGetFieldValues(fresh.nvmlDeviceGetHandleByIndex(index), request))
            assert _entries(first) == expected
            for fv in first:
                fv.nvmlReturn = 999
            again = kept.nvmlDeviceGetFieldValues(h, request)
            assert not any(a is b for a, b in zip(again, first, strict=True))
            assert _entries(again) == expected
            assert _entries(kept.nvmlDeviceGetFieldValues(h, list(request))) == expected


def test_ecc_counts_within_a_tick_match_the_single_calls() -> None:
    clock = Clock()
    scenario = Scenario(model="H100", gpus=1, faults=(Fault("ecc_corrected", at=0, gpu=0, params={"per_hour": 7200}),
                                                      Fault("xid", at=30, gpu=0, code=48)))
    nvml = FakeNVML(scenario, clock=clock, start=START)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    for step in (0, 29, 30, 3600, 7201):
        clock.now = START + step
        rows = nvml.nvmlDeviceGetRemappedRows(h)
        ecc = [nvml.nvmlDeviceGetTotalEccErrors(h, e, c) for e in (0, 1) for c in (0, 1)]
        assert ecc[2] == ecc[3] == (1 if step >= 30 else 0)  # uncorrected: volatile and aggregate
        assert ecc[0] == int(step * 7200 / 3600) and ecc[1] >= ecc[0]
        assert rows == (ecc[1] // 100, ecc[3], 1 if ecc[3] else 0, 0)


class _Entry:
    def __init__(self, fid: Any, ret: int, kind: int | None, value: Any) -> None:
        self.fieldId, self.nvmlReturn, self.value = fid, ret, value
        if kind is not None:
            self.valueType = kind


class _Union:
    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


class OddDriver(FakeNVML):
    """A driver answering some fields as doubles, some without a value type, one with a missing
    member, and one entry short."""

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Any) -> Any:
        out = super().nvmlDeviceGetFieldValues(handle, fieldIds)
        if len(out) < 20:
            return out
        ok = out[0].nvmlReturn == 0
        out[0] = _Entry(82, 0, 0, _Union(dVal=41.5)) if ok else out[0]  # memory temperature, a double
        out[1] = _Entry(83, 0, None, _Union(ullVal=out[1].value.ullVal))  # energy, no valueType: ull
        out[2] = _Entry(94, 0, 1, _Union())  # PCIe replays: no such member
        out[14] = _Entry(139, 0, 4, _Union(sllVal=12_345))  # NVLink RX as signed
        return out[:-1]  # the last link's state is missing


def test_field_answers_are_read_by_position_whatever_their_type() -> None:
    clock = Clock()
    nvml = OddDriver(Scenario(model="H100", gpus=1), clock=clock, start=START)
    c = NvmlCollector(nvml, clock=clock, event_thread=False)
    assert c.check()
    c.collect()
    clock.now += 10
    row = next(r.values for r in c.collect() if isinstance(r, Sample) and r.kind == "gpu")
    assert row["temperature_memory_celsius"] == 41.5
    assert row["energy_joules_total"] is not None and row["energy_joules_total"] > 0
    assert row["pcie_replay_total"] is None
    assert row["nvlink_rx_bytes_total"] == 12_345 * 1024.0
    assert row["nvlink_tx_bytes_total"] is not None
    assert row["nvlink_links_active"] is None  # one link's state is unknown
    assert row["ecc_uncorrected_volatile_total"] == 0 and row["retired_pages_sbe"] is None
    c.close()
