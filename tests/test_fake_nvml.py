"""The fake NVML: same API as pynvml, deterministic, monotone counters, and every scenario's fault."""

from __future__ import annotations

import inspect
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collectors import fake_nvml
from collectors.fake_nvml import FakeNVML, Fault, Load, Scenario, ScenarioError, list_scenarios, load_scenario

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86400.0
FAULT_DEADLINE_S = 10.0  # every fault scenario shows its effect by then
FIELDS_BUDGET_S = 0.005  # querying every field of 8 GPUs
EVENT_WAIT_SLACK_S = 1.0
ALL_LINKS = 0xFFFFFFFF

FAULT_SCENARIOS = ["xid79", "xid48", "xid94", "xid95", "thermal", "powercap", "slow-gpu", "nvml-timeout",
                   "gpu-missing"]


class Clock:
    """An injected clock: ``at(t)`` moves it to ``t`` seconds after START."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def at(self, t: float) -> None:
        self.now = START + t


def make(scenario: Scenario | str, **kwargs: object) -> tuple[FakeNVML, Clock]:
    clock = Clock()
    nvml = FakeNVML(scenario, clock=clock, start=START, **kwargs)  # type: ignore[arg-type]
    nvml.nvmlInit()
    return nvml, clock


def call(fn, *args):
    """The value, or the name of the NVML error class raised."""
    try:
        return fn(*args)
    except fake_nvml.NVMLError as exc:
        return type(exc).__name__


def snapshot(nvml: FakeNVML, index: int) -> dict[str, object]:
    """Every reading of one GPU as plain values."""
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = call(nvml.nvmlDeviceGetMemoryInfo, h)
    util = call(nvml.nvmlDeviceGetUtilizationRates, h)
    procs = call(nvml.nvmlDeviceGetComputeRunningProcesses, h)
    fields = nvml.nvmlDeviceGetFieldValues(h, [nvml.NVML_FI_DEV_MEMORY_TEMP,
                                               (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS),
                                               (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS)])
    return {
        "uuid": nvml.nvmlDeviceGetUUID(h),
        "mem": (mem.total, mem.used, mem.free) if not isinstance(mem, str) else mem,
        "util": (util.gpu, util.memory) if not isinstance(util, str) else util,
        "temp": nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
        "power": nvml.nvmlDeviceGetPowerUsage(h),
        "limit": nvml.nvmlDeviceGetEnforcedPowerLimit(h),
        "energy": nvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "sm": nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
        "memclk": nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM),
        "reasons": nvml.nvmlDeviceGetCurrentClocksEventReasons(h),
        "pstate": nvml.nvmlDeviceGetPerformanceState(h),
        "fan": call(nvml.nvmlDeviceGetFanSpeed, h),
        "pcie": (nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_TX_BYTES),
                 nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_RX_BYTES)),
        "replay": nvml.nvmlDeviceGetPcieReplayCounter(h),
        "ecc": tuple(call(nvml.nvmlDeviceGetTotalEccErrors, h, e, c) for e in (0, 1) for c in (0, 1)),
        "rows": call(nvml.nvmlDeviceGetRemappedRows, h),
        "procs": [(p.pid, p.usedGpuMemory) for p in procs] if not isinstance(procs, str) else procs,
        "fields": [(f.nvmlReturn, f.value.ullVal) for f in fields],
    }


def counters(nvml: FakeNVML, index: int) -> list[int]:
    """Every cumulative counter of one GPU."""
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    fields = nvml.nvmlDeviceGetFieldValues(h, [(nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS),
                                               (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS),
                                               nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 38, 45, 52, 59])
    links = [nvml.nvmlDeviceGetNvLinkErrorCounter(h, link, c) for link in range(18) for c in range(4)]
    return [nvml.nvmlDeviceGetTotalEnergyConsumption(h), nvml.nvmlDeviceGetPcieReplayCounter(h),
            *(nvml.nvmlDeviceGetTotalEccErrors(h, e, c) for e in (0, 1) for c in (0, 1)),
            *(f.value.ullVal for f in fields), *links]


# ---- scenarios --------------------------------------------------------------------------------

def test_the_shipped_scenarios_are_all_there() -> None:
    expected = {"healthy", "mixed", *FAULT_SCENARIOS, "a100-mig", "l40s", "rtx4090", "h200"}
    assert set(list_scenarios()) >= expected


@pytest.mark.parametrize("name", list_scenarios())
def test_every_scenario_loads_and_answers(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    nvml, clock = make(scenario)
    for t in (0, 30, DAY):
        clock.at(t)
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                snapshot(nvml, i)
            except (nvml.NVMLError_GpuIsLost, nvml.NVMLError_Timeout):
                assert name in ("xid79", "nvml-timeout")


def test_fault_scenarios_start_their_fault_within_ten_seconds() -> None:
    for name in FAULT_SCENARIOS:
        faults = load_scenario(name).faults
        assert faults and all(f.at <= FAULT_DEADLINE_S for f in faults), name


def test_unknown_scenario_names_the_valid_ones() -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario("no-such-scenario")
    message = str(err.value)
    assert "no-such-scenario" in message and "\n" not in message
    for name in list_scenarios():
        assert name in message


@pytest.mark.parametrize(("text", "field"), [
    ("model: H100\nfaults:\n  - {kind: xid, at: soon, gpu: 1, code: 79}\n", "faults[0].at"),
    ("model: H100\nfaults:\n  - {kind: xid, at: 5, gpu: 9, code: 79}\n", "faults[0].gpu"),
    ("model: H100\nfaults:\n  - {kind: thermal, at: 5, peak: 95}\n", "faults[0].peak"),
    ("model: H100\nfaults:\n  - {kind: meltdown, at: 5}\n", "faults[0].kind"),
    ("model: H100\nfaults:\n  - {kind: xid, at: 5}\n", "faults[0].code"),
    ("model: H100\nfaults:\n  - {kind: powercap, at: 5, limit_w: 900}\n", "faults[0].limit_w"),
    ("model: RTX4090\nfaults:\n  - {kind: xid, at: 5, code: 48}\n", "faults[0].kind"),
    ("model: H999\n", "model"),
    ("model: H100\ngpus: eight\n", "gpus"),
    ("model: H100\nload: {noise: 2}\n", "load.noise"),
    ("model: H100\nload: {bursty: true}\n", "load.bursty"),
    ("model: H100\ncolour: green\n", "colour"),
    ("model: L40S\nmig: [1g.10gb]\n", "mig"),
    ("model: A100\nmig: [7g.80gb, 1g.10gb]\n", "mig"),
])
def test_a_malformed_file_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert str(path) in message and f"{field}:" in message and "\n" not in message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("model: [H100\n")
    with pytest.raises(ScenarioError, match="syntax.yaml: not valid YAML"):
        load_scenario(str(path))


def test_scenarios_can_be_built_in_code_and_are_validated() -> None:
    scenario = Scenario(model="a100-sxm4", gpus=2, load=Load(busy_fraction=1.0, daily_amplitude=0.0),
                        faults=[Fault("thermal", at=3600, gpu=1, params={"peak_c": 95})])
    assert scenario.model == "A100" and isinstance(scenario.faults, tuple)
    with pytest.raises(ScenarioError, match="peak_c"):
        Fault("thermal", at=0, params={"peak_c": 500})
    with pytest.raises(ScenarioError, match="faults\\[0\\].gpu"):
        Scenario(gpus=2, faults=(Fault("missing", at=0, gpu=2),))


# ---- API shape --------------------------------------------------------------------------------

def test_nvml_error_maps_values_to_subclasses_like_pynvml() -> None:
    err = fake_nvml.NVMLError(fake_nvml.NVML_ERROR_NOT_SUPPORTED)
    assert type(err) is fake_nvml.NVMLError_NotSupported and err.value == 3 and str(err) == "Not Supported"
    assert isinstance(fake_nvml.NVMLError_GpuIsLost(), fake_nvml.NVMLError)
    assert fake_nvml.NVMLError_GpuIsLost().value == fake_nvml.NVML_ERROR_GPU_IS_LOST
    assert type(fake_nvml.NVMLError(fake_nvml.NVML_ERROR_TIMEOUT)) is fake_nvml.NVMLError_Timeout
    assert type(fake_nvml.NVMLError(12345)) is fake_nvml.NVMLError
    nvml, _ = make("healthy")
    for name in ("NVMLError", "NVMLError_NotSupported", "NVMLError_GpuIsLost", "NVMLError_Timeout",
                 "NVMLError_Unknown", "NVMLError_Uninitialized", "NVMLError_InvalidArgument",
                 "NVMLError_NotFound", "NVMLError_NoPermission"):
        assert getattr(nvml, name) is getattr(fake_nvml, name)
    assert nvml.nvmlExceptionClass(nvml.NVML_ERROR_GPU_IS_LOST) is fake_nvml.NVMLError_GpuIsLost


def test_the_fake_never_imports_pynvml() -> None:
    code = "import sys, collectors.fake_nvml as f; f.FakeNVML('mixed'); assert 'pynvml' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_constants_and_signatures_match_pynvml() -> None:
    pynvml = pytest.importorskip("pynvml")
    nvml, _ = make("healthy")
    names = [n for n in dir(nvml) if n.startswith(("NVML_", "nvmlEventType", "nvmlClocks"))]
    assert len(names) > 60
    for name in names:
        assert getattr(nvml, name) == getattr(pynvml, name), name
    for name in ("NVMLError", "NVMLError_NotSupported", "NVMLError_GpuIsLost"):
        assert getattr(nvml, name) is not getattr(pynvml, name)
    functions = [n for n in dir(nvml) if n.startswith("nvml") and callable(getattr(nvml, n))]
    assert len(functions) > 50
    for name in functions:
        ours = list(inspect.signature(getattr(nvml, name)).parameters)
        theirs = list(inspect.signature(getattr(pynvml, name)).parameters)
        assert ours == theirs, name


def test_calls_need_nvml_init() -> None:
    nvml = FakeNVML("healthy", clock=Clock(), start=START)
    with pytest.raises(nvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlShutdown()
    with pytest.raises(nvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetPowerUsage(handle)


def test_identity_and_units() -> None:
    nvml, _ = make("healthy", node_name="node-a")
    assert nvml.nvmlDeviceGetCount() == 8
    assert nvml.nvmlSystemGetDriverVersion() == "550.90.07" and nvml.nvmlSystemGetCudaDriverVersion() == 12040
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetHandleByIndex(0) is h and nvml.nvmlDeviceGetIndex(h) == 0
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    uuid = nvml.nvmlDeviceGetUUID(h)
    assert uuid.startswith("GPU-") and [len(p) for p in uuid[4:].split("-")] == [8, 4, 4, 4, 12]
    assert nvml.nvmlDeviceGetHandleByUUID(uuid) is h
    assert nvml.nvmlDeviceGetPciInfo(h).busId == b"00000000:18:00.0"  # bytes, as pynvml returns it
    assert nvml.nvmlDeviceGetPciInfo(h).busIdLegacy == b"0000:18:00.0"
    assert nvml.nvmlDeviceGetMemoryInfo(h).total == 81559 * 2**20
    assert nvml.nvmlDeviceGetPowerManagementDefaultLimit(h) == 700_000
    assert nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM) == 1980
    assert nvml.nvmlDeviceGetMaxPcieLinkGeneration(h) == 5 and nvml.nvmlDeviceGetMaxPcieLinkWidth(h) == 16
    assert nvml.nvmlDeviceGetMigMode(h) == [nvml.NVML_DEVICE_MIG_DISABLE] * 2
    assert len({nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(8)}) == 8


# ---- determinism and counters -----------------------------------------------------------------

def test_same_seed_same_values_whatever_was_asked_before() -> None:
    a, clock_a = make("mixed", seed=3, node_name="node-a")
    b, clock_b = make("mixed", seed=3, node_name="node-a")
    for t in (0, 10, 60, 3600, 5500):  # a is asked along the way, b only at the end
        clock_a.at(t)
        for i in range(8):
            snapshot(a, i)
    clock_b.at(5500)
    assert [snapshot(a, i) for i in range(8)] == [snapshot(b, i) for i in range(8)]


def test_nodes_and_seeds_differ() -> None:
    a, _ = make("healthy", node_name="node-a")
    b, _ = make("healthy", node_name="node-b")
    c, _ = make("healthy", node_name="node-a", seed=1)
    uuids = [{n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)) for i in range(8)} for n in (a, b, c)]
    assert not uuids[0] & uuids[1] and not uuids[0] & uuids[2]
    energies = [n.nvmlDeviceGetTotalEnergyConsumption(n.nvmlDeviceGetHandleByIndex(0)) for n in (a, b)]
    assert energies[0] != energies[1]


def test_counters_never_go_backwards_across_jumps_of_days() -> None:
    scenario = Scenario(model="H100", gpus=2, faults=(
        Fault("ecc_corrected", at=100, gpu=0, params={"per_hour": 50}),
        Fault("powercap", at=2 * DAY, gpu=0, duration=3 * 3600),
        Fault("thermal", at=2.05 * DAY, gpu=0, duration=600),
        Fault("xid", at=3 * DAY, gpu=0, code=48),
        Fault("xid", at=4 * DAY, gpu=0, code=95)))
    nvml, clock = make(scenario, node_name="mono")
    previous = None
    for t in (0, 10, 70, 3600, 2 * DAY, 2.05 * DAY + 300, 2.1 * DAY, 3 * DAY, 3 * DAY + 10, 4.5 * DAY,
              7 * DAY, 7 * DAY + 10, 7 * DAY + 70, 30 * DAY):
        clock.at(t)
        now = counters(nvml, 0)
        if previous is not None:
            assert all(n >= p for n, p in zip(now, previous, strict=True)), t
        previous = now
    clock.at(0)
    first = counters(nvml, 0)
    assert previous[0] > first[0] and previous[2] > first[2] and previous[4] == first[4] + 2  # XIDs 48 and 95


def test_energy_is_the_integral_of_power() -> None:
    nvml, clock = make("slow-gpu", node_name="energy")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    clock.at(DAY)
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
    powers = []
    for t in range(0, 600, 5):
        clock.at(DAY + t)
        powers.append(nvml.nvmlDeviceGetPowerUsage(h))
    clock.at(DAY + 600)
    joules = (nvml.nvmlDeviceGetTotalEnergyConsumption(h) - e0) / 1000
    assert joules == pytest.approx(statistics.mean(powers) / 1000 * 600, rel=0.05)


def test_load_follows_the_daily_cycle_and_idle_looks_idle() -> None:
    nvml, clock = make("healthy", node_name="daily")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    busy_at = {}
    idle_seen = busy_seen = False
    for hour in (3, 15):
        samples = []
        for day in range(60):
            clock.now = 1_699_920_000.0 + day * DAY + hour * 3600 + 1800  # 1_699_920_000 is 00:00 UTC
            util = nvml.nvmlDeviceGetUtilizationRates(h).gpu
            samples.append(util > 0)
            if util == 0:
                idle_seen = True
                assert nvml.nvmlDeviceGetPerformanceState(h) == 8
                assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) & nvml.nvmlClocksEventReasonGpuIdle
                assert nvml.nvmlDeviceGetPowerUsage(h) < 100_000
                assert nvml.nvmlDeviceGetComputeRunningProcesses(h) == []
            else:
                busy_seen = True
                assert nvml.nvmlDeviceGetPerformanceState(h) == 0
                assert nvml.nvmlDeviceGetPowerUsage(h) > 250_000
                assert 1 <= len(nvml.nvmlDeviceGetComputeRunningProcesses(h)) <= 2
        busy_at[hour] = sum(samples) / len(samples)
    assert idle_seen and busy_seen
    assert busy_at[15] > busy_at[3] + 0.15


def test_querying_every_field_of_eight_gpus_is_fast() -> None:
    nvml = FakeNVML("mixed", start=time.time() - 7 * DAY, node_name="perf")  # the real clock
    nvml.nvmlInit()
    for i in range(8):
        snapshot(nvml, i)
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        for i in range(8):
            snapshot(nvml, i)
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            for link in range(18):
                nvml.nvmlDeviceGetNvLinkState(h, link)
        timings.append(time.perf_counter() - t0)
    assert statistics.median(timings) < FIELDS_BUDGET_S


# ---- what each model does not support -----------------------------------------------------------

UNSUPPORTED_BY_MODEL = {
    "H100": {"fan", "retired_pages"},
    "H200": {"fan", "retired_pages"},
    "A100": {"fan", "retired_pages"},
    "L40S": {"fan", "retired_pages", "nvlink", "memory_temp", "mig"},
    "RTX4090": {"retired_pages", "nvlink", "memory_temp", "mig", "ecc", "remapped_rows", "serial"},
    "V100": {"fan", "remapped_rows", "mig"},
}


@pytest.mark.parametrize("model", sorted(UNSUPPORTED_BY_MODEL))
def test_unsupported_fields_raise_not_supported_per_model(model: str) -> None:
    nvml, _ = make(Scenario(model=model, gpus=1))
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    probes = {
        "fan": lambda: nvml.nvmlDeviceGetFanSpeed(h),
        "retired_pages": lambda: nvml.nvmlDeviceGetRetiredPages(
            h, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
        "remapped_rows": lambda: nvml.nvmlDeviceGetRemappedRows(h),
        "nvlink": lambda: nvml.nvmlDeviceGetNvLinkState(h, 0),
        "mig": lambda: nvml.nvmlDeviceGetMigMode(h),
        "ecc": lambda: nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                                        nvml.NVML_VOLATILE_ECC),
        "serial": lambda: nvml.nvmlDeviceGetSerial(h),
        "memory_temp": lambda: _field_return(nvml, h, nvml.NVML_FI_DEV_MEMORY_TEMP),
    }
    for name, probe in probes.items():
        if name in UNSUPPORTED_BY_MODEL[model]:
            with pytest.raises(nvml.NVMLError_NotSupported):
                probe()
        else:
            probe()


def _field_return(nvml: FakeNVML, h: object, field_id: int) -> int:
    (value,) = nvml.nvmlDeviceGetFieldValues(h, [field_id])
    if value.nvmlReturn == nvml.NVML_ERROR_NOT_SUPPORTED:
        raise nvml.NVMLError(value.nvmlReturn)
    assert value.nvmlReturn == nvml.NVML_SUCCESS and value.valueType == nvml.NVML_VALUE_TYPE_UNSIGNED_INT
    return value.value.uiVal


def test_nvlink_links_and_throughput_scope() -> None:
    nvml, clock = make("h200")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert [nvml.nvmlDeviceGetNvLinkState(h, link) for link in range(18)] == [nvml.NVML_FEATURE_ENABLED] * 18
    with pytest.raises(nvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetNvLinkState(h, 18)
    clock.at(DAY)
    tx = nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
    bare, link0, total, count = nvml.nvmlDeviceGetFieldValues(
        h, [tx, (tx, 0), (tx, ALL_LINKS), nvml.NVML_FI_DEV_NVLINK_LINK_COUNT])
    assert bare.value.ullVal == link0.value.ullVal  # a bare field id means link 0, as in nvml.h
    assert total.value.ullVal == 18 * link0.value.ullVal and total.scopeId == ALL_LINKS
    assert count.value.uiVal == 18


def test_mig_devices_on_a100() -> None:
    nvml, _ = make("a100-mig")
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMigMode(h) == [nvml.NVML_DEVICE_MIG_ENABLE] * 2
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    with pytest.raises(nvml.NVMLError_NotSupported):  # NVML has no utilization while MIG is on
        nvml.nvmlDeviceGetUtilizationRates(h)
    migs = [nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, i) for i in range(4)]
    with pytest.raises(nvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 4)
    assert [nvml.nvmlDeviceGetName(m).rsplit(" ", 1)[1] for m in migs] == ["3g.40gb", "2g.20gb", "1g.10gb",
                                                                           "1g.10gb"]
    assert all(nvml.nvmlDeviceGetUUID(m).startswith("MIG-") for m in migs)
    assert nvml.nvmlDeviceGetMemoryInfo(migs[0]).total == 40192 * 2**20
    assert [nvml.nvmlDeviceGetGpuInstanceId(m) for m in migs] == [1, 2, 3, 4]
    assert nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migs[1]) is h


# ---- faults -----------------------------------------------------------------------------------

def handle(nvml: FakeNVML, scenario_index: int) -> object:
    return nvml.nvmlDeviceGetHandleByIndex(scenario_index)


def test_xid79_loses_the_gpu() -> None:
    nvml, clock = make("xid79")
    h = handle(nvml, 3)
    assert nvml.nvmlDeviceGetPowerUsage(h) > 0
    clock.at(FAULT_DEADLINE_S)
    with pytest.raises(nvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetPowerUsage(h)
    with pytest.raises(nvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetHandleByIndex(3)
    assert nvml.nvmlDeviceGetCount() == 8  # still enumerated, just unreachable
    nvml.nvmlDeviceGetPowerUsage(handle(nvml, 2))


@pytest.mark.parametrize(("name", "gpu"), [("xid48", 2), ("xid94", 4), ("xid95", 5)])
def test_uncorrectable_ecc_xids_count_and_remap(name: str, gpu: int) -> None:
    nvml, clock = make(name)
    h = handle(nvml, gpu)

    def uncorrected() -> list[int]:
        return [nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, c)
                for c in (nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC)]

    before, rows_before = uncorrected(), nvml.nvmlDeviceGetRemappedRows(h)
    assert nvml.nvmlDeviceGetUtilizationRates(h).gpu > 0
    clock.at(FAULT_DEADLINE_S)
    assert uncorrected() == [before[0] + 1, before[1] + 1]
    corr, unc, pending, failure = nvml.nvmlDeviceGetRemappedRows(h)
    assert unc == rows_before[1] + 1 and pending == 1 and failure == 0
    util = nvml.nvmlDeviceGetUtilizationRates(h).gpu
    assert (util == 0) == (name == "xid95")  # only an uncontained error stops the GPU
    if name == "xid95":
        assert nvml.nvmlDeviceGetComputeRunningProcesses(h) == []
        clock.at(3 * DAY)
        assert nvml.nvmlDeviceGetUtilizationRates(h).gpu == 0


def test_dbe_on_a_pre_ampere_gpu_retires_a_page() -> None:
    nvml, clock = make(Scenario(model="V100", gpus=1, faults=(Fault("xid", at=5, code=48),)))
    h = handle(nvml, 0)
    dbe = nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    assert nvml.nvmlDeviceGetRetiredPages(h, dbe) == []
    clock.at(FAULT_DEADLINE_S)
    assert len(nvml.nvmlDeviceGetRetiredPages(h, dbe)) == 1


def test_thermal_slowdown() -> None:
    nvml, clock = make("thermal")
    h = handle(nvml, 2)
    thermal = nvml.nvmlClocksEventReasonSwThermalSlowdown | nvml.nvmlClocksEventReasonHwThermalSlowdown
    assert not nvml.nvmlDeviceGetCurrentClocksEventReasons(h) & thermal
    cool = nvml.nvmlDeviceGetTemperature(h, 0)
    clock_before = nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)
    clock.at(FAULT_DEADLINE_S)
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) & thermal == thermal
    assert nvml.nvmlDeviceGetTemperature(h, 0) >= 88 > cool
    assert nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM) < 0.8 * clock_before
    assert nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h) == nvml.nvmlDeviceGetCurrentClocksEventReasons(h)


def test_power_capping() -> None:
    nvml, clock = make("powercap")
    h = handle(nvml, 4)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
    clock.at(FAULT_DEADLINE_S)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 450_000
    for t in range(10, 100, 7):
        clock.at(t)
        assert 0.98 * 450_000 <= nvml.nvmlDeviceGetPowerUsage(h) <= 450_000
        assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) & nvml.nvmlClocksEventReasonSwPowerCap
    peers = nvml.nvmlDeviceGetClockInfo(handle(nvml, 3), nvml.NVML_CLOCK_SM)
    assert nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM) < 0.9 * peers


def test_slow_gpu_is_fifteen_percent_behind_its_peers() -> None:
    nvml, clock = make("slow-gpu")
    assert nvml.speed_factor(6) == 1.0
    clock.at(FAULT_DEADLINE_S)
    sm = [nvml.nvmlDeviceGetClockInfo(handle(nvml, i), nvml.NVML_CLOCK_SM) for i in range(8)]
    peers = statistics.median(sm[:6] + sm[7:])
    assert sm[6] / peers == pytest.approx(0.85, abs=0.02)
    assert nvml.speed_factor(6) == pytest.approx(0.85) and nvml.speed_factor(0) == 1.0
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(handle(nvml, 6)) == 0  # nothing explains it


def test_nvml_timeout_for_its_duration_only() -> None:
    nvml, clock = make("nvml-timeout")
    h = handle(nvml, 1)
    nvml.nvmlDeviceGetTemperature(h, 0)
    clock.at(FAULT_DEADLINE_S)
    with pytest.raises(nvml.NVMLError_Timeout):
        nvml.nvmlDeviceGetTemperature(h, 0)
    nvml.nvmlDeviceGetTemperature(handle(nvml, 0), 0)
    clock.at(5 + 60 + 1)
    nvml.nvmlDeviceGetTemperature(h, 0)


def test_a_missing_gpu_drops_out_of_the_count() -> None:
    nvml, clock = make("gpu-missing")
    h = handle(nvml, 7)
    uuid = nvml.nvmlDeviceGetUUID(h)
    clock.at(FAULT_DEADLINE_S)
    assert nvml.nvmlDeviceGetCount() == 7
    with pytest.raises(nvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetUUID(h)
    with pytest.raises(nvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetHandleByUUID(uuid)
    assert uuid not in {nvml.nvmlDeviceGetUUID(handle(nvml, i)) for i in range(7)}


def test_a_missing_gpu_in_the_middle_shifts_the_indices_after_it() -> None:
    nvml, clock = make(Scenario(gpus=4, faults=(Fault("missing", at=5, gpu=1),)))
    uuids = [nvml.nvmlDeviceGetUUID(handle(nvml, i)) for i in range(4)]
    clock.at(FAULT_DEADLINE_S)
    assert [nvml.nvmlDeviceGetUUID(handle(nvml, i)) for i in range(3)] == [uuids[0], uuids[2], uuids[3]]
    assert nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(uuids[3])) == 2


def test_gpu_count_override_wraps_faults() -> None:
    nvml, clock = make("xid79", gpu_count=2)  # the fault on GPU 3 lands on GPU 1
    assert nvml.nvmlDeviceGetCount() == 2
    clock.at(FAULT_DEADLINE_S)
    with pytest.raises(nvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetHandleByIndex(1)
    assert [f.kind for f in nvml.faults_due()] == ["xid"] and nvml.faults_due(4.0) == []


# ---- events and the kernel log ------------------------------------------------------------------

def register_all(nvml: FakeNVML, event_types: int) -> object:
    event_set = nvml.nvmlEventSetCreate()
    for i in range(nvml.nvmlDeviceGetCount()):
        nvml.nvmlDeviceRegisterEvents(handle(nvml, i), event_types, event_set)
    return event_set


def test_each_xid_is_delivered_once_when_due() -> None:
    nvml, clock = make("xid79")
    event_set = register_all(nvml, nvml.nvmlEventTypeXidCriticalError)
    lost = handle(nvml, 3)
    with pytest.raises(nvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait_v2(event_set, 0)  # not due yet
    clock.at(FAULT_DEADLINE_S)
    event = nvml.nvmlEventSetWait_v2(event_set, 0)
    assert event.eventType == nvml.nvmlEventTypeXidCriticalError and event.eventData == 79
    assert event.device is lost
    assert nvml.nvmlDeviceGetIndex(event.device) == 3  # host-side: works on a lost GPU, as in NVML
    with pytest.raises(nvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(event_set, 0)
    clock.at(0)  # a second set, registered before the fault, gets it too
    other = register_all(nvml, nvml.nvmlEventTypeXidCriticalError)
    clock.at(FAULT_DEADLINE_S)
    assert nvml.nvmlEventSetWait(other, 0).eventData == 79
    nvml.nvmlEventSetFree(event_set)
    nvml.nvmlEventSetFree(other)


def test_an_injected_clock_that_notifies_is_waited_on_without_polling() -> None:
    """With ``clock_notifies=True`` an event wait sleeps until the next event is due or the clock's
    owner says it jumped (``clock_moved``), rather than waking every 20 ms to look."""
    clock = Clock()
    nvml = FakeNVML(load_scenario("xid79"), clock=clock, start=START, node_name="n", clock_notifies=True)
    nvml.nvmlInit()
    event_set = register_all(nvml, nvml.nvmlEventTypeXidCriticalError)
    got: list[int] = []
    waits = []
    wait = nvml._cond.wait  # noqa: SLF001 - counting the wait's wake-ups
    nvml._cond.wait = lambda timeout=None: waits.append(timeout) or wait(timeout)  # type: ignore[method-assign]  # noqa: SLF001
    waiter = threading.Thread(target=lambda: got.append(nvml.nvmlEventSetWait_v2(event_set, 10_000).eventData))
    waiter.start()
    time.sleep(0.3)
    assert not got and len(waits) == 1  # asleep until the fault is due; polling would have woken ~15 times
    clock.at(FAULT_DEADLINE_S)
    nvml.clock_moved()
    waiter.join(timeout=2)
    assert got == [79]
    nvml.nvmlEventSetFree(event_set)


def test_xid48_also_raises_a_double_bit_ecc_event() -> None:
    nvml, clock = make("xid48")
    event_set = register_all(nvml, nvml.nvmlEventTypeXidCriticalError | nvml.nvmlEventTypeDoubleBitEccError)
    clock.at(FAULT_DEADLINE_S)
    got = {(e.eventType, e.eventData) for e in (nvml.nvmlEventSetWait_v2(event_set, 0) for _ in range(2))}
    assert got == {(nvml.nvmlEventTypeXidCriticalError, 48), (nvml.nvmlEventTypeDoubleBitEccError, 0)}


def test_registering_unsupported_event_types_fails() -> None:
    nvml, _ = make("rtx4090")
    with pytest.raises(nvml.NVMLError_NotSupported):
        register_all(nvml, nvml.nvmlEventTypeDoubleBitEccError)
    register_all(nvml, nvml.nvmlEventTypeXidCriticalError)


def test_wait_times_out_promptly_in_real_time() -> None:
    nvml, _ = make("healthy")
    event_set = register_all(nvml, nvml.nvmlEventTypeXidCriticalError)
    t0 = time.monotonic()
    with pytest.raises(nvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait_v2(event_set, 200)
    assert 0.15 <= time.monotonic() - t0 < EVENT_WAIT_SLACK_S


def test_a_waiting_thread_wakes_when_the_fault_comes_due_or_the_set_is_freed() -> None:
    nvml, clock = make("xid48")
    event_set = register_all(nvml, nvml.nvmlEventTypeXidCriticalError)
    results: list[object] = []

    def wait() -> None:
        try:
            results.append(nvml.nvmlEventSetWait_v2(event_set, 30_000).eventData)
        except fake_nvml.NVMLError as exc:
            results.append(type(exc).__name__)

    waiter = threading.Thread(target=wait)
    t0 = time.monotonic()
    waiter.start()
    time.sleep(0.05)
    clock.at(FAULT_DEADLINE_S)
    waiter.join(EVENT_WAIT_SLACK_S)
    assert results == [48] and time.monotonic() - t0 < EVENT_WAIT_SLACK_S
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    nvml.nvmlEventSetFree(event_set)
    waiter.join(EVENT_WAIT_SLACK_S)
    assert not waiter.is_alive() and results[1] == "NVMLError_InvalidArgument"


def test_kernel_log_lines_match_the_gpu_and_the_window() -> None:
    nvml, clock = make("mixed")
    clock.at(2 * DAY)
    lines = nvml.kernel_log_lines(0)
    xids = [line for line in lines if "NVRM: Xid" in line]
    assert [x.split("): ")[1].split(",")[0] for x in xids] == ["13", "31"]
    bus = nvml.nvmlDeviceGetPciInfo(handle(nvml, 1)).busId.decode()  # "00000000:2A:00.0"
    assert f"NVRM: Xid (PCI:0000:{bus[9:11].lower()}:00): 13, pid=" in xids[0]
    assert all(line.startswith("[") for line in lines)
    assert nvml.kernel_log_lines(10800, 2 * DAY) == lines[3:]  # (since, until]
    assert nvml.kernel_log_lines(0, 10799) == []
    kmsg = nvml.kernel_log_lines(0, style="kmsg")
    assert len(kmsg) == len(lines) and kmsg[2].split(";", 1)[1] == lines[2].split("] ", 1)[1]


def test_xid79_kernel_line_reads_like_the_driver() -> None:
    nvml, clock = make("xid79")
    bus = nvml.nvmlDeviceGetPciInfo(handle(nvml, 3)).busId
    assert bus == b"00000000:5D:00.0"
    clock.at(FAULT_DEADLINE_S)
    xid = [line for line in nvml.kernel_log_lines(0) if "NVRM: Xid" in line]
    assert len(xid) == 1
    assert xid[0].endswith("NVRM: Xid (PCI:0000:5d:00): 79, pid='<unknown>', name=<unknown>, "
                           "GPU has fallen off the bus.")


def test_idle_allocated_jobs_hold_memory_without_computing() -> None:
    from collectors.scenarios import Load, Scenario

    fake = FakeNVML(Scenario(model="H100", gpus=2, load=Load(busy_fraction=1.0, daily_amplitude=0.0,
                                                             idle_allocated_fraction=1.0)), start=0.0,
                    clock=lambda: 5000.0)
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetUtilizationRates(h).gpu < 5
    assert fake.nvmlDeviceGetComputeRunningProcesses(h)
    assert fake.nvmlDeviceGetMemoryInfo(h).used > 10 * 2**30


def test_weekends_are_quieter() -> None:
    from collectors.scenarios import Load, Scenario

    load = Load(busy_fraction=0.8, daily_amplitude=0.0, weekend_dip=0.6, job_slot_s=600)
    now = [0.0]
    fake = FakeNVML(Scenario(model="H100", gpus=1, load=load), start=0.0, clock=lambda: now[0])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)

    def busy_share(day0: float) -> float:  # days since 1970-01-01 (a Thursday)
        hits = 0
        for i in range(144):
            now[0] = day0 * 86400 + i * 600 + 300
            hits += fake.nvmlDeviceGetUtilizationRates(h).gpu > 5
        return hits / 144

    weekday = (busy_share(7) + busy_share(8)) / 2  # Thursday, Friday
    weekend = (busy_share(9) + busy_share(10)) / 2  # Saturday, Sunday
    assert weekend < weekday - 0.3
