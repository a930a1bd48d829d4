"""Rule evaluation over series written through the real write path: ``for`` from the data, each
kind of the default pack on a seeded incident, restart safety, and the cost of a cycle."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from alerts.evaluate import evaluate
from alerts.lifecycle import fingerprint
from alerts.rules import load_default_rules
from alerts.series import expand_hostlist, increase
from collectors.xid import classify
from db.models import Job
from tests.alerts import scenarios as c
from tests.alerts.scenarios import NOW, T0, Fleet, healthy, rules, xid

HOT = """\
rules:
  - name: hot
    kind: threshold
    column: temperature_gpu_celsius
    op: ">"
    value: 85
    for: 5m
    severity: warning
    annotations:
      summary: "{node} GPU {gpu} ({uuid}) at {value} °C, above {threshold} for {for}"
"""


@pytest.fixture
def fleet(sqlite_url: str) -> Iterator[Fleet]:
    yield from c.opened(sqlite_url)


@pytest.fixture
def any_fleet(store_url: str) -> Iterator[Fleet]:
    """The same fleet on SQLite and on PostgreSQL."""
    yield from c.opened(store_url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def incidents(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from c.incidents_store(request.param, tmp_path_factory)


@pytest.fixture
def scenario(incidents: Fleet) -> Fleet:
    return c.reset(incidents)


def hot_from(start: float, gpu: int = 2):
    return lambda node, i, ts: healthy(temperature_gpu_celsius=91.0 if i == gpu and ts >= start else 60.0)


# -- for, since and templating ------------------------------------------------------------------


def test_for_holds_pending_until_the_condition_held_long_enough(any_fleet: Fleet) -> None:
    since = T0 + 60
    any_fleet.write(T0 - 600, since + 360, hot_from(since))
    r = rules(HOT)
    (cond,) = evaluate(any_fleet.engine, r, since + 240)  # true for 4 of the 5 minutes
    assert cond.since == since and cond.value == 91.0
    assert cond.labels == {"alertname": "hot", "severity": "warning", "node": "n1", "gpu": "2",
                           "uuid": "GPU-n1-2", "model": c.MODEL}
    assert cond.annotations["summary"] == "n1 GPU 2 (GPU-n1-2) at 91 °C, above 85 for 5m"
    _, changes = any_fleet.cycle(r, since + 240)
    assert [(t.old, t.new) for t in changes.transitions] == [(None, "pending")]
    _, changes = any_fleet.cycle(r, since + 360)  # 6 minutes
    assert [(t.old, t.new) for t in changes.transitions] == [("pending", "firing")]
    (alert,) = any_fleet.alerts()
    assert alert.state == "firing" and alert.active_since == since and alert.starts_at == since + 300
    assert alert.fingerprint == fingerprint(cond.labels)


def test_a_single_cool_sample_restarts_the_for_timer(fleet: Fleet) -> None:
    fleet.write(T0, T0 + 900, lambda n, i, ts: healthy(
        temperature_gpu_celsius=60.0 if ts == T0 + 480 or i != 0 else 91.0))
    (cond,) = evaluate(fleet.engine, rules(HOT), T0 + 900)
    assert cond.since == T0 + 540  # the first hot sample after the cool one


def test_stale_series_has_no_condition(fleet: Fleet) -> None:
    fleet.write(T0, T0 + 600, hot_from(T0))
    assert evaluate(fleet.engine, rules(HOT), T0 + 600 + 299)
    assert evaluate(fleet.engine, rules(HOT), T0 + 600 + 301) == []  # the newest sample is over 5 minutes old


def test_power_cap_compares_with_each_gpus_own_limit(fleet: Fleet) -> None:
    fleet.write(T0, T0 + 900, lambda n, i, ts: healthy(power_watts=[690.0, 690.0, 395.0, 300.0][i],
                                                       power_limit_watts=[700.0, 800.0, 400.0, 400.0][i]))
    capped = [r for r in load_default_rules() if r.name == "gpu_power_capped"]
    found = {x.labels["gpu"]: x for x in evaluate(fleet.engine, capped, T0 + 900)}
    assert sorted(found) == ["0", "2"]
    assert found["2"].annotations["summary"] == "n1 GPU 2 at its power cap (395 W of 392 W) for 10m"


# -- the default pack on one fleet with an incident of each kind -----------------------------------


def firing(fleet: Fleet) -> dict[tuple[str, str, str | None], object]:
    return {(a.rule, a.labels["node"], a.labels.get("gpu")): a for a in fleet.alerts() if a.state == "firing"}


def test_default_pack_fires_each_incident_and_nothing_else(scenario: Fleet) -> None:
    pack = load_default_rules()
    conditions, changes = scenario.cycle(pack, NOW)
    assert {(x.rule.name, x.labels["node"], x.labels.get("gpu")) for x in conditions} == c.INCIDENTS
    assert set(firing(scenario)) == c.INCIDENTS
    assert len(changes.of("firing")) == len(c.INCIDENTS)

    xid79 = [a for a in scenario.alerts() if a.labels.get("xid") == "79"]
    assert len(xid79) == 1
    (a,) = xid79
    assert a.state == "firing" and a.labels["severity"] == "critical" and a.labels["category"] == "gpu-hardware"
    assert a.annotations["recommended_action"] == classify(79).recommended_action
    assert a.annotations["summary"] == "n1 GPU 0: XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert a.starts_at == c.XID79_AT

    repeated = firing(scenario)[("gpu_xid_repeated", "n1", "2")]
    assert repeated.labels["xid"] == "13" and repeated.value == 3
    assert repeated.annotations["summary"] == "n1 GPU 2: XID 13 3 times in 1h"
    assert not [a for a in scenario.alerts() if a.labels.get("gpu") == "1" and a.labels["node"] == "n1"]

    down = firing(scenario)[("node_down", "n2", None)]
    assert "uuid" not in down.labels and down.value == pytest.approx(660)
    ecc = firing(scenario)[("gpu_ecc_corrected_rising", "n3", "2")]
    assert ecc.value == 300  # 5 a minute over the hour (the sample just before the window is the baseline)
    assert firing(scenario)[("gpu_pcie_replays", "n3", "3")].value == 4
    slow = firing(scenario)[("bench_slow", "n3", "0")]
    assert slow.labels["workload"] == "gemm" and slow.labels["metric"] == "tflops"
    assert re.search(r"600 TFLOP/s is 0\.79\d* of the fleet median$", slow.annotations["summary"])
    assert firing(scenario)[("gpu_missing", "n3", "1")].starts_at == c.N3_GPU1_GONE_FROM - 60 + 300
    assert firing(scenario)[("gpu_temperature_high", "n1", "3")].starts_at == c.HOT_FROM + 300
    idle = firing(scenario)[("gpu_idle_allocated", "n4", "1")]
    assert idle.annotations["description"].startswith("GPU 1 on n4 is held by 1 process(es)")


def test_restart_keeps_fingerprints_and_since(scenario: Fleet) -> None:
    pack = load_default_rules()
    first = {fingerprint(x.labels): x.since for x in evaluate(scenario.engine, pack, NOW)}
    scenario.cycle(pack, NOW)
    before = {a.fingerprint: (a.state, a.active_since, a.starts_at) for a in scenario.alerts()}
    # A fresh controller: a new engine on the same store computes the same conditions from the data...
    url = scenario.engine.url.render_as_string(hide_password=False)
    restarted = Fleet(url, nodes=scenario.nodes, gpus=scenario.gpus)
    try:
        again = {fingerprint(x.labels): x.since for x in evaluate(restarted.engine, pack, NOW)}
        assert again == first
        # ... and a cycle later every alert keeps its start, including conditions older than their
        # lookback, whose ``since`` from the data has moved on with the window.
        later = {fingerprint(x.labels): x.since for x in evaluate(restarted.engine, pack, NOW + 60)}
        assert set(later) == set(first)
        assert any(later[fp] > first[fp] for fp in first)
        restarted.cycle(pack, NOW + 60)
        assert {a.fingerprint: (a.state, a.active_since, a.starts_at) for a in restarted.alerts()} == before
    finally:
        restarted.engine.dispose()


def test_restart_does_not_reset_a_pending_timer(store_url: str) -> None:
    f = Fleet(store_url)
    try:
        f.write(T0, T0 + 240, hot_from(T0 + 60))
        _, changes = f.cycle(rules(HOT), T0 + 240)
        assert changes.of("pending")
        f.engine.dispose()
        g = Fleet(store_url)  # the controller restarts, the agent keeps writing
        g.write(T0 + 300, T0 + 420, hot_from(T0 + 60))
        _, changes = g.cycle(rules(HOT), T0 + 360)  # 5 minutes after the first hot sample
        assert [(t.old, t.new) for t in changes.transitions] == [("pending", "firing")]
        (alert,) = g.alerts()
        assert alert.active_since == T0 + 60 and alert.starts_at == T0 + 360
        g.engine.dispose()
    finally:
        f.engine.dispose()


# -- events -------------------------------------------------------------------------------------


def test_xid13_fires_only_when_it_repeats_on_one_gpu(fleet: Fleet) -> None:
    pack = [r for r in load_default_rules() if r.name == "gpu_xid_repeated"]
    events = {T0 + 60: [xid(T0 + 60, 0, 13), xid(T0 + 60, 1, 13)], T0 + 600: [xid(T0 + 600, 1, 13)],
              T0 + 1200: [xid(T0 + 1200, 2, 13)], T0 + 1800: [xid(T0 + 1800, 1, 13)]}
    fleet.write(T0, T0 + 7200, events=events)
    assert evaluate(fleet.engine, pack, T0 + 1700) == []  # GPU 1 twice, GPU 0 and 2 once
    (cond,) = evaluate(fleet.engine, pack, T0 + 1800)
    assert cond.labels["gpu"] == "1" and cond.labels["xid"] == "13" and cond.since == T0 + 1800
    assert evaluate(fleet.engine, pack, T0 + 1800 + 3599)  # holds for an hour after the third
    assert evaluate(fleet.engine, pack, T0 + 1800 + 3600) == []


def test_fatal_xid_fires_until_the_gpu_reports_ok_again(fleet: Fleet) -> None:
    pack = [r for r in load_default_rules() if r.name == "gpu_xid_fatal"]
    back = T0 + 3 * 3600
    # GPU 0: XID 79, lost for hours. GPU 1: XID 48, answers right away. GPU 2: XID 48, fine again,
    # then XID 79 an hour later and lost since.
    lost = lambda i, ts: (i == 0 and T0 + 60 < ts < back) or (i == 2 and ts > T0 + 3660)  # noqa: E731
    fleet.write(T0, T0 + 4 * 3600, lambda n, i, ts: {"status": "lost"} if lost(i, ts) else healthy(), events={
        T0 + 60: [xid(T0 + 60, 0, 79), xid(T0 + 60, 2, 48)], T0 + 1800: [xid(T0 + 1800, 1, 48)],
        T0 + 3660: [xid(T0 + 3660, 2, 79)]})

    def firing(now: float) -> list[tuple[str, str]]:
        return sorted((x.labels["gpu"], x.labels["xid"]) for x in evaluate(fleet.engine, pack, now))

    assert firing(T0 + 1800) == [("0", "79"), ("1", "48"), ("2", "48")]
    # XID 48: the GPU answers right away, so it clears 30 minutes (resolve_after) after the event.
    assert firing(T0 + 1800 + 1799) == [("0", "79"), ("1", "48")]
    assert firing(T0 + 1800 + 1800) == [("0", "79")]
    assert firing(T0 + 3660 + 60) == [("0", "79"), ("2", "79")]  # GPU 2's earlier XID 48 stays resolved
    assert firing(back - 60) == [("0", "79"), ("2", "79")]  # lost for hours, still firing
    assert firing(back) == [("2", "79")]  # GPU 0 reports ok again
    (cond,) = evaluate(fleet.engine, pack, back)
    assert cond.since == T0 + 3660 and cond.value == 1


# -- counters -----------------------------------------------------------------------------------


def test_increase_counts_resets_from_zero() -> None:
    points = [(0.0, 90.0), (10.0, 100.0), (20.0, 180.0), (30.0, 20.0), (40.0, 50.0)]
    total, running = increase(points, 5.0)  # baseline 90 at t=0
    assert total == 10 + 80 + 20 + 30
    assert running == [(10.0, 10.0), (20.0, 90.0), (30.0, 110.0), (40.0, 140.0)]
    assert increase([(100.0, 7.0)], 5.0) == (0.0, [(100.0, 0.0)])


def test_rate_rule_over_a_counter_reset(any_fleet: Fleet) -> None:
    pack = [r for r in load_default_rules() if r.name == "gpu_ecc_corrected_rising"]
    counts = {T0 + 60 * k: v for k, v in enumerate([0, 0, 60, 120, 0, 50, 50])}
    any_fleet.write(T0, T0 + 360, lambda n, i, ts: healthy(ecc_corrected_volatile_total=counts[ts] if i == 3 else 0))
    (cond,) = evaluate(any_fleet.engine, pack, T0 + 360)
    assert cond.labels["gpu"] == "3" and cond.value == 170 and cond.since == T0 + 180
    assert cond.annotations["summary"] == "n1 GPU 3: 170 corrected ECC errors in 1h"


def test_rate_in_sql_matches_the_reference_increase(fleet: Fleet) -> None:
    """The rule computes the increase in SQL; ``increase`` is the reference it must agree with, on
    random counters with resets, a baseline before the window and GPUs that did not move."""
    import random

    rng = random.Random(7)
    window, now = 3600.0, T0 + 3 * 3600
    series: dict[tuple[str, int], dict[float, int]] = {}
    for node in fleet.nodes:
        for gpu in range(fleet.gpus):
            v, points = rng.randint(0, 50), {}
            for ts in range(int(T0), int(now) + 1, 60):
                step = rng.choice([0, 0, 0, 1, 3, 40])
                v = 0 if rng.random() < 0.01 else v + step
                points[float(ts)] = v
            series[(node, gpu)] = points
    fleet.write(T0, now + 1, lambda n, i, ts: healthy(ecc_corrected_volatile_total=series[(n, i)][ts]), step=60)
    pack = [r for r in load_default_rules() if r.name == "gpu_ecc_corrected_rising"]
    got = {(c.labels["node"], int(c.labels["gpu"])): (c.value, c.since) for c in evaluate(fleet.engine, pack, now)}
    want = {}
    for key, points in series.items():
        pts = [(ts, float(v)) for ts, v in sorted(points.items()) if now - window - 120 < ts <= now]
        total, running = increase(pts, now - window)
        if total > 100:
            want[key] = (total, next(ts for ts, inc in running if inc > 100))
    assert want and got == want


# -- idle but allocated, from jobs ----------------------------------------------------------------


def test_hostlists() -> None:
    assert expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert expand_hostlist("n1 n2") == ["n1", "n2"]
    assert expand_hostlist("rack[1-2]-node") == ["rack1-node", "rack2-node"]


def test_idle_allocated_from_jobs(sqlite_url: str) -> None:
    f = Fleet(sqlite_url, nodes=("n1", "n2", "n3"), gpus=4)
    # n1: a whole-node job, GPUs 0-1 busy, 2-3 idle with no process; n2: a job holding 2 of 4 GPUs,
    # GPU 0 idle with a process (counts), GPU 1 idle without (may be a GPU the job does not hold);
    # n3: idle with a process but no job.
    def values(node: str, i: int, ts: float) -> dict:
        if node == "n1":
            return healthy(utilization_gpu_ratio=0.9 if i < 2 else 0.0, process_count=1 if i < 2 else 0)
        if node == "n2":
            return healthy(utilization_gpu_ratio=0.01 if i < 2 else 0.9, process_count=1 if i != 1 else 0)
        return healthy(utilization_gpu_ratio=0.01)

    f.write(T0, T0 + 3600, values)
    with f.engine.begin() as conn:
        conn.execute(insert(Job), [
            {"source": "sacct", "cluster": "c", "external_id": "101", "user": "ada", "start_ts": T0 + 3000,
             "end_ts": None, "gpus": 4, "nodes": 1, "node_list": "n1"},
            {"source": "sacct", "cluster": "c", "external_id": "102", "user": "bob", "start_ts": T0,
             "end_ts": None, "gpus": 2, "nodes": 1, "node_list": "n[2]"},
            {"source": "sacct", "cluster": "c", "external_id": "99", "user": "eve", "start_ts": T0 - 86400,
             "end_ts": T0 - 3600, "gpus": 4, "nodes": 1, "node_list": "n3"}])
    pack = [r for r in load_default_rules() if r.name == "gpu_idle_allocated"]
    found = {(x.labels["node"], x.labels["gpu"]): x for x in evaluate(f.engine, pack, T0 + 3600)}
    assert sorted(found) == [("n1", "2"), ("n1", "3"), ("n2", "0")]
    assert found[("n1", "2")].labels["job_id"] == "101" and found[("n1", "2")].since == T0 + 3000
    assert "job 101 (ada)" in found[("n1", "2")].annotations["description"]
    # Without job data the same GPUs are judged by their processes.
    f2 = Fleet(sqlite_url.replace("store.db", "nojobs.db"), nodes=("n1", "n2", "n3"), gpus=4)
    f2.write(T0, T0 + 3600, values)
    found = {(x.labels["node"], x.labels["gpu"]) for x in evaluate(f2.engine, pack, T0 + 3600)}
    assert found == {("n2", "0"), ("n3", "0"), ("n3", "1"), ("n3", "2"), ("n3", "3")}
    f.engine.dispose()
    f2.engine.dispose()


# -- cost ---------------------------------------------------------------------------------------


def test_default_pack_on_1024_gpus_takes_under_a_second(tmp_path: Path) -> None:
    from tests.alerts import fleet as big

    end = 1_764_000_000.0
    engine = big.build(f"sqlite:///{tmp_path / 'fleet.db'}", end, hours=2.0)
    pack = load_default_rules()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        found = evaluate(engine, pack, end)
        best = min(best, time.perf_counter() - t)
    names = {x.rule.name for x in found}
    assert {"gpu_temperature_high", "gpu_xid_fatal", "gpu_xid_repeated", "node_down", "gpu_missing",
            "gpu_ecc_corrected_rising", "bench_slow", "gpu_idle_allocated"} <= names
    print(f"default pack, 1,024 GPUs, SQLite: {best * 1000:.0f} ms")
    assert best < 1.0
    engine.dispose()
