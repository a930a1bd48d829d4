"""The NVML collector against every fake scenario: base units, NULLs where unsupported, one event
per injected fault with the right XID classification, and the collector surviving each fault."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from collectors.fake_nvml import FakeNVML, list_scenarios, load_scenario
from collectors.kmsg import KernelLog
from collectors.nvml import NvmlCollector, decode_reasons
from collectors.records import Event, GpuInfo, Sample
from collectors.xid import classify

START = 1_764_000_000.0
STEPS = 20  # seconds of scenario time: every fault scenario starts its fault within 10 s


def run(scenario: str, *, steps: int = STEPS, gpus: int | None = None, kernel_log: KernelLog | None = None):
    now = [START]
    fake = FakeNVML(load_scenario(scenario), clock=lambda: now[0], start=START, node_name="t", gpu_count=gpus)
    c = NvmlCollector(fake, clock=lambda: now[0], event_wait_ms=20, kernel_log=kernel_log)
    assert c.check()
    out = [c.collect()]
    for _ in range(steps):
        now[0] += 1.0
        time.sleep(0.03)  # the event thread polls the fake every 20 ms
        out.append(c.collect())
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # anything the event thread still holds
        time.sleep(0.05)
        out.append(c.collect())
    c.close()
    return c, fake, out


def flat(cycles, kind=None):
    recs = [r for cycle in cycles for r in cycle]
    if kind is Event:
        return [r for r in recs if isinstance(r, Event)]
    if kind is GpuInfo:
        return [r for r in recs if isinstance(r, GpuInfo)]
    if kind:
        return [r for r in recs if isinstance(r, Sample) and r.kind == kind]
    return recs


def events(cycles, kind: str | None = None) -> list[Event]:
    return [e for e in flat(cycles, Event) if kind is None or e.kind == kind]


@pytest.mark.parametrize("scenario", list_scenarios())
def test_every_scenario_collects_in_base_units_and_survives(scenario: str) -> None:
    c, fake, cycles = run(scenario)
    gpu_rows = flat(cycles, "gpu")
    assert len(cycles) > STEPS and all(cycle for cycle in cycles)  # something every cycle, no exception
    ok = [s for s in gpu_rows if s.values["status"] == "ok"]
    assert ok
    for s in ok:
        v = s.values
        for ratio in ("utilization_memory_ratio", "fan_speed_ratio"):
            assert v[ratio] is None or 0.0 <= v[ratio] <= 1.0
        assert v["utilization_gpu_ratio"] is None or 0.0 <= v["utilization_gpu_ratio"] <= 1.0
        assert v["memory_total_bytes"] > 4 * 2**30  # bytes, not MiB
        assert v["memory_used_bytes"] + v["memory_free_bytes"] <= v["memory_total_bytes"] * 1.01
        assert 5 <= v["power_watts"] <= 1000  # watts, not milliwatts
        assert 1e8 <= v["sm_clock_hz"] <= 3.5e9  # hertz, not MHz
        assert v["energy_joules_total"] > 0
        assert 15 <= v["temperature_gpu_celsius"] <= 110
    # The unsupported set is reported once, on the inventory record, and those fields are NULL.
    infos = {i.index: i for i in flat(cycles, GpuInfo)}
    for s in ok:
        for field in infos[s.key["gpu_index"]].unsupported:
            if field in s.values:
                assert s.values[field] is None, (scenario, field)
    infos_per_gpu = Counter(i.uuid for i in flat(cycles, GpuInfo))
    assert max(infos_per_gpu.values()) == 1  # not repeated every cycle


@pytest.mark.parametrize(("scenario", "code"), [("xid79", 79), ("xid48", 48), ("xid94", 94), ("xid95", 95)])
def test_xid_scenarios_give_one_classified_event(scenario: str, code: int) -> None:
    _c, fake, cycles = run(scenario)
    xids = events(cycles, "xid")
    assert len(xids) == 1, xids
    ev = xids[0]
    info = classify(code)
    assert ev.code == str(code) and ev.fatal == info.fatal and ev.category == info.category
    assert ev.recommended_action == info.recommended_action and ev.severity == info.severity
    fault = fake.scenario.faults[0]
    assert ev.gpu_index == fault.gpu and ev.gpu_uuid is not None


def test_fallen_off_the_bus_keeps_the_other_gpus_reporting() -> None:
    _c, fake, cycles = run("xid79")
    lost_gpu = fake.scenario.faults[0].gpu
    assert len(events(cycles, "gpu_lost")) == 1
    last = {s.key["gpu_index"]: s.values["status"] for s in cycles[-1] if isinstance(s, Sample) and s.kind == "gpu"}
    assert last[lost_gpu] == "lost"
    assert all(status == "ok" for idx, status in last.items() if idx != lost_gpu)
    assert len(last) == fake.scenario.gpus


def test_double_bit_ecc_counts_and_flags_the_remap() -> None:
    _c, fake, cycles = run("xid48")
    gpu = fake.scenario.faults[0].gpu
    rows = [s for s in flat(cycles, "gpu") if s.key["gpu_index"] == gpu]
    assert rows[0].values["ecc_uncorrected_volatile_total"] == 0
    assert rows[-1].values["ecc_uncorrected_volatile_total"] == 1
    ecc = events(cycles, "ecc")
    assert {e.code for e in ecc} >= {"uncorrected"} and all(e.gpu_index == gpu for e in ecc)


def test_thermal_slowdown_is_decoded_and_evented_once() -> None:
    _c, fake, cycles = run("thermal")
    gpu = fake.scenario.faults[0].gpu
    thermal = events(cycles, "thermal")
    assert len(thermal) == 1 and thermal[0].gpu_index == gpu
    hot = [s for s in flat(cycles, "gpu") if s.key["gpu_index"] == gpu][-1].values
    assert {"sw_thermal_slowdown", "hw_thermal_slowdown"} <= set(decode_reasons(hot["clock_event_reasons"]))
    assert hot["temperature_gpu_celsius"] >= 85


def test_power_cap_holds_power_at_the_limit() -> None:
    _c, fake, cycles = run("powercap")
    gpu = fake.scenario.faults[0].gpu
    assert [e.gpu_index for e in events(cycles, "power")] == [gpu]
    capped = [s for s in flat(cycles, "gpu") if s.key["gpu_index"] == gpu][-1].values
    assert "sw_power_cap" in decode_reasons(capped["clock_event_reasons"])
    assert capped["power_watts"] == pytest.approx(capped["power_limit_watts"], rel=0.05)


def test_slow_gpu_clocks_fifteen_percent_below_peers() -> None:
    _c, fake, cycles = run("slow-gpu")
    slow = fake.scenario.faults[0].gpu
    last = {s.key["gpu_index"]: s.values for s in cycles[-1] if isinstance(s, Sample) and s.kind == "gpu"}
    peers = [v["sm_clock_hz"] for i, v in last.items() if i != slow]
    assert last[slow]["sm_clock_hz"] / (sum(peers) / len(peers)) == pytest.approx(0.85, abs=0.04)
    assert events(cycles) == []


def test_nvml_timeout_is_an_error_row_then_recovers() -> None:
    _c, fake, cycles = run("nvml-timeout", steps=80)
    gpu = fake.scenario.faults[0].gpu
    errs = events(cycles, "nvml_error")
    assert len(errs) == 1 and errs[0].gpu_index == gpu
    statuses = [s.values["status"] for s in flat(cycles, "gpu") if s.key["gpu_index"] == gpu]
    assert "error" in statuses and statuses[-1] == "ok"
    assert len(events(cycles, "gpu_recovered")) == 1


def test_missing_gpu_is_noticed_against_the_inventory() -> None:
    _c, fake, cycles = run("gpu-missing")
    lost = events(cycles, "gpu_lost")
    assert len(lost) == 1
    last = [s for s in cycles[-1] if isinstance(s, Sample) and s.kind == "gpu"]
    assert sum(s.values["status"] == "ok" for s in last) == fake.scenario.gpus - 1


def test_healthy_node_has_no_events() -> None:
    _c, _fake, cycles = run("healthy")
    assert events(cycles) == []


@pytest.mark.parametrize(("scenario", "nulls", "present"), [
    ("rtx4090", ["ecc_uncorrected_volatile_total", "nvlink_tx_bytes_total", "temperature_memory_celsius",
                 "remapped_rows_pending"], ["fan_speed_ratio"]),
    ("l40s", ["nvlink_tx_bytes_total", "fan_speed_ratio"], ["ecc_corrected_volatile_total"]),
    ("healthy", ["fan_speed_ratio", "retired_pages_sbe"], ["nvlink_tx_bytes_total", "temperature_memory_celsius",
                                                           "remapped_rows_pending"]),
])
def test_unsupported_fields_per_model(scenario: str, nulls: list[str], present: list[str]) -> None:
    _c, _fake, cycles = run(scenario, steps=1)
    info = flat(cycles, GpuInfo)[0]
    row = flat(cycles, "gpu")[0].values
    for field in nulls:
        assert row[field] is None and field in info.unsupported, field
    for field in present:
        assert row[field] is not None and field not in info.unsupported, field


def test_nvlink_counters_sum_every_link() -> None:
    _c, fake, cycles = run("healthy", steps=2)
    first, last = flat(cycles, "gpu")[0].values, flat(cycles, "gpu")[-1].values
    assert first["nvlink_links_active"] == 18
    assert last["nvlink_tx_bytes_total"] >= first["nvlink_tx_bytes_total"] > 0


def test_mig_processes_name_their_instance() -> None:
    _c, _fake, cycles = run("a100-mig", steps=1)
    info = flat(cycles, GpuInfo)[0]
    assert info.mig_mode == 1
    procs = flat(cycles, "gpu_process")
    assert procs and all(p.values["mig_instance"] for p in procs)


def test_kernel_log_xids_merge_with_nvml_events(tmp_path) -> None:
    """NVML and the kernel log both report the XID: one event; a kernel-only XID is still recorded."""
    log_file = tmp_path / "kmsg"
    log_file.write_text("")
    now = [START]
    fake = FakeNVML(load_scenario("xid94"), clock=lambda: now[0], start=START, node_name="t")
    c = NvmlCollector(fake, clock=lambda: now[0], event_wait_ms=20, kernel_log=KernelLog(str(log_file)))
    assert c.check()
    cycles = [c.collect()]
    for _ in range(10):
        now[0] += 1
        time.sleep(0.03)
        cycles.append(c.collect())
    time.sleep(0.2)
    with log_file.open("a") as f:
        for line in fake.kernel_log_lines(0, 10):
            f.write(line + "\n")
        pci = fake.nvmlDeviceGetPciInfo(fake.nvmlDeviceGetHandleByIndex(0)).busId.decode()
        f.write(f"NVRM: Xid (PCI:{pci[4:-2].lower()}): 31, pid=77, name=python, MMU Fault\n")
    cycles.append(c.collect())
    c.close()
    xids = events(cycles, "xid")
    assert sorted((e.code, e.gpu_index) for e in xids) == [("31", 0), ("94", fake.scenario.faults[0].gpu)]
    assert next(e for e in xids if e.code == "31").source == "kmsg"


def test_without_the_event_thread_xids_carry_the_collection_time() -> None:
    """The demo replays days of history on a simulated clock: XIDs must land at their own time."""
    now = [START]
    fake = FakeNVML(load_scenario("xid94"), clock=lambda: now[0], start=START, node_name="t")
    c = NvmlCollector(fake, clock=lambda: now[0], event_thread=False)
    assert c.check()
    seen = []
    for _ in range(10):
        now[0] += 3600.0  # an hour per step: a background thread would stamp the wrong hour
        seen += [e for e in c.collect() if isinstance(e, Event) and e.kind == "xid"]
    c.close()
    assert [(e.code, e.ts) for e in seen] == [("94", START + 3600.0)]


def test_gpu_back_after_the_node_is_power_cycled() -> None:
    from collectors.scenarios import Fault, Scenario

    now = [START]
    scenario = Scenario(model="H100", gpus=2, faults=(Fault("xid", at=5, gpu=1, code=79, duration=10),))
    fake = FakeNVML(scenario, clock=lambda: now[0], start=START, node_name="t")
    c = NvmlCollector(fake, clock=lambda: now[0], event_thread=False)
    assert c.check()
    statuses = []
    for _ in range(20):
        now[0] += 1
        statuses.append(next(s.values["status"] for s in c.collect() if isinstance(s, Sample) and s.kind == "gpu"
                             and s.key["gpu_index"] == 1))
    c.close()
    assert statuses[3] == "ok" and statuses[6] == "lost" and statuses[-1] == "ok"
