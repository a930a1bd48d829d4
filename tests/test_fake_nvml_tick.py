"""The fake NVML's per-tick shortcuts give the same numbers as the plain definitions: noise streams
against ``smooth_noise``, a knot's remembered half against ``unit_hash``, ``tick_counters`` against
the single counters, a whole field request against asking each field alone at a fresh tick, and
the answers of a fake whose clock moves one agent interval per collection (as in production)
against a fake that is asked each tick from cold, times going back included."""

from __future__ import annotations

import random
from typing import Any

import pytest

from collectors.fake_nvml import (
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    FakeNVML,
    NVMLError,
)
from collectors.gpu_models import NoiseStream, _knot_value, smooth_noise, unit_hash
from collectors.nvml import NvmlCollector
from collectors.scenarios import Fault, Scenario
from tests.conftest import ManualClock

START = 1_764_000_000.0
ALL_LINKS = 0xFFFFFFFF


def Clock() -> ManualClock:  # noqa: N802 - reads as the class it stands for
    return ManualClock(START)


@pytest.mark.parametrize("knot", [5.0, 7.0, 10.0, 30.0])
def test_a_noise_stream_is_smooth_noise_whichever_way_time_moves(knot: float) -> None:
    rng = random.Random(int(knot))
    for key in (0, 1, (1 << 64) - 1, rng.getrandbits(64)):
        stream, a = NoiseStream(key, knot), START + rng.random() * 1e5
        for _ in range(2000):
            a += rng.choice([10.0, 10.0, 10.0, 0.0625, 0.0, knot, -knot, -10.0, 3.3, 1e4, -1e4])
            assert stream.at(a) == smooth_noise(key, a, knot)


def test_a_knot_value_is_its_unit_hash() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        key, k = rng.getrandbits(64), rng.randrange(-10**9, 10**12)
        assert _knot_value(key, k) == unit_hash(key, k, 7)
        assert _knot_value(key, k) == unit_hash(key, k, 7)  # remembered half


def test_tick_counters_are_the_single_counters() -> None:
    sc = Scenario(model="H100", gpus=2, faults=(Fault("powercap", at=30, gpu=0, duration=100),
                                                 Fault("xid", at=50, gpu=1, code=79, duration=60)))
    nvml = FakeNVML(sc, clock=Clock(), start=START, seed=3)
    for g in nvml._gpus:
        for t in (-3.0, 0.0, 0.0625, 29.9375, 30.0, 55.0, 130.0, 7200.5, 86400.0 * 2, 10.0):
            single = [g.energy_mj(t), g.pcie_replays(t), g.nvlink_kib(t, rx=False), g.nvlink_kib(t, rx=True),
                      *(sum(g.nvlink_errors(t, link, c) for link in range(g.model.nvlinks)) for c in range(4))]
            assert g.tick_counters(t) == single


def _entries(out: list[Any]) -> list[tuple[Any, ...]]:
    return [(f.fieldId, f.scopeId, f.timestamp, f.latencyUsec, f.valueType, f.nvmlReturn, f.value.ullVal,
             f.value.uiVal, repr(f.value.dVal)) for f in out]


FIELDS = (82, 83, 94, 3, 4, 5, 6, 29, 30, 142, 143, 144, 145, 91, (138, ALL_LINKS), (139, ALL_LINKS), 138,
          (139, 3), 38, 45, 52, 59, (165, 0), (165, 17), (165, 40), 999, (138, 99))


@pytest.mark.parametrize("model", ["H100", "V100", "RTX4090", "L40S"])
def test_a_request_answers_as_each_field_alone_at_a_fresh_tick(model: str) -> None:
    ecc = () if model == "RTX4090" else (Fault("ecc_corrected", at=10, gpu=0, params={"per_hour": 9000}),
                                         Fault("xid", at=40, gpu=0, code=48))
    sc = Scenario(model=model, gpus=1, faults=ecc)
    clock = Clock()
    whole, alone = FakeNVML(sc, clock=clock, start=START), FakeNVML(sc, clock=clock, start=START)
    for nv in (whole, alone):
        nv.nvmlInit()
    h, ha = whole.nvmlDeviceGetHandleByIndex(0), alone.nvmlDeviceGetHandleByIndex(0)
    for t in (0.0, 9.9375, 10.0, 40.0, 400.0, 3600.0, 20.0):
        clock.now = START + t
        got = _entries(whole.nvmlDeviceGetFieldValues(h, FIELDS))
        one_by_one = []
        for f in FIELDS:
            clock.now = START + t + 5000.0  # the GPU's per-tick memory moves to another time
            alone.nvmlDeviceGetFieldValues(ha, FIELDS)
            clock.now = START + t
            one_by_one += _entries(alone.nvmlDeviceGetFieldValues(ha, [f]))
        assert got == one_by_one


def test_entries_are_new_objects_every_call() -> None:
    nvml = FakeNVML("healthy", clock=Clock(), start=START, gpu_count=1)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    first, second = nvml.nvmlDeviceGetFieldValues(h, FIELDS), nvml.nvmlDeviceGetFieldValues(h, FIELDS)
    assert not {id(f) for f in first} & {id(f) for f in second}
    first[0].nvmlReturn = 3
    assert second[0].nvmlReturn == 0 and nvml.nvmlDeviceGetFieldValues(h, FIELDS)[0].nvmlReturn == 0


def _answers(nv: FakeNVML) -> list[Any]:
    out: list[Any] = []
    for i in range(len(nv._gpus)):
        h = nv._handles[i]
        for call in (lambda: nv.nvmlDeviceGetUtilizationRates(h).__dict__,
                     lambda: nv.nvmlDeviceGetMemoryInfo(h).__dict__,
                     lambda: nv.nvmlDeviceGetTemperature(h, 0), lambda: nv.nvmlDeviceGetPowerUsage(h),
                     lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h), lambda: nv.nvmlDeviceGetClockInfo(h, 1),
                     lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h), lambda: nv.nvmlDeviceGetPerformanceState(h),
                     lambda: nv.nvmlDeviceGetPcieThroughput(h, 0), lambda: nv.nvmlDeviceGetPcieThroughput(h, 1),
                     lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h),
                     lambda: [p.__dict__ for p in nv.nvmlDeviceGetComputeRunningProcesses(h)],
                     lambda: _entries(nv.nvmlDeviceGetFieldValues(h, FIELDS))):
            try:
                out.append(call())
            except NVMLError as exc:
                out.append(("error", exc.value))
    return out


@pytest.mark.parametrize("scenario", ["healthy", "thermal", "xid79", "nvml-timeout", "a100-mig", "powercap"])
def test_ticks_one_interval_apart_match_cold_answers(scenario: str) -> None:
    """A fake collected every 10 s (every tick new, its noise streams and the knot memo warm)
    answers what a fresh fake answers at those times, going back in time too."""
    clock = Clock()
    warm = FakeNVML(scenario, clock=clock, start=START, node_name="n", gpu_count=2)
    collector = NvmlCollector(warm, clock=clock, event_thread=False)
    collector.check()
    for t in [10.0 * i for i in range(40)] + [123.0625, 5.0, 0.0, 300.0]:
        clock.now = START + t
        collector.collect()
        cold = FakeNVML(scenario, clock=clock, start=START, node_name="n", gpu_count=2)
        cold.nvmlInit()
        assert _answers(warm) == _answers(cold), t
    collector.close()


def _alone(nv: FakeNVML, h: Any, field: Any) -> tuple[int, int]:
    """(nvmlReturn, value) of one field as the function that reads it alone answers."""
    fid, scope = field if isinstance(field, tuple) else (field, 0)
    ecc = {3: (0, 0), 4: (1, 0), 5: (0, 1), 6: (1, 1)}  # field -> (errorType, counterType)
    try:
        if fid in ecc:
            return 0, nv.nvmlDeviceGetTotalEccErrors(h, *ecc[fid])
        if fid in (29, 30):  # retired pages: for multiple single-bit errors, for a double-bit one
            cause = (NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS if fid == 29
                     else NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
            return 0, len(nv.nvmlDeviceGetRetiredPages(h, cause))
        if fid in (142, 143, 144, 145):
            return 0, int(nv.nvmlDeviceGetRemappedRows(h)[fid - 142])
        if fid == 165:
            return 0, int(nv.nvmlDeviceGetNvLinkState(h, scope))
        if fid in (38, 45, 52, 59):  # NVLink error totals, by link
            counter = (38, 45, 52, 59).index(fid)
            links = range(max(1, nv._gpus[0].model.nvlinks))  # link 0 of none: its error
            return 0, sum(nv.nvmlDeviceGetNvLinkErrorCounter(h, link, counter) for link in links)
    except NVMLError as exc:
        return exc.value, 0
    raise AssertionError(field)


@pytest.mark.parametrize("model", ["H100", "A100", "V100", "RTX4090", "L40S"])
def test_a_field_answers_as_the_function_that_reads_it_alone(model: str) -> None:
    """The field table re-states which model supports what (ECC, retired pages or remapped rows,
    NVLink); each field must answer as its dedicated NVML call does, errors included."""
    ecc = () if model == "RTX4090" else (Fault("ecc_corrected", at=10, gpu=0, params={"per_hour": 9000}),
                                         Fault("xid", at=40, gpu=0, code=48))
    clock = Clock()
    nv = FakeNVML(Scenario(model=model, gpus=1, faults=ecc), clock=clock, start=START)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    fields = [3, 4, 5, 6, 29, 30, 142, 143, 144, 145, 38, 45, 52, 59, (165, 0), (165, 17)]
    for t in (0.0, 10.0, 45.0, 3600.0):
        clock.now = START + t
        for field, entry in zip(fields, nv.nvmlDeviceGetFieldValues(h, fields), strict=True):
            value = entry.value.uiVal if entry.valueType == 1 else entry.value.ullVal  # 1: unsigned int
            got = (entry.nvmlReturn, value if entry.nvmlReturn == 0 else 0)
            assert got == _alone(nv, h, field), (model, t, field)
