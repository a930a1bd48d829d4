"""GPU and node health from alerts, events and the newest samples, on the incident fleet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete

from alerts.health import health, update_health
from alerts.rules import load_default_rules
from collectors.xid import classify
from db.models import Alert
from tests.alerts import scenarios as c
from tests.alerts.scenarios import NOW, T0, Fleet, healthy, xid


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def incidents(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from c.incidents_store(request.param, tmp_path_factory)


@pytest.fixture
def scenario(incidents: Fleet) -> Fleet:
    return c.reset(incidents)


@pytest.fixture
def fleet(sqlite_url: str) -> Iterator[Fleet]:
    yield from c.opened(sqlite_url)


def states(engine, entity: str) -> dict:
    return {(r["node"], r["gpu"]): r for r in health(engine, entity)}


def test_health_of_each_incident(scenario: Fleet) -> None:
    scenario.cycle(load_default_rules(), NOW)
    counts = update_health(scenario.engine, NOW)
    gpus = states(scenario.engine, "gpu")
    assert {k: v["state"] for k, v in gpus.items() if v["state"] != "healthy"} == {
        ("n1", 0): "unhealthy",  # XID 79, lost
        ("n1", 2): "degraded",  # XID 13 three times: a warning alert
        ("n1", 3): "degraded",  # hot and thermally throttled
        ("n2", 0): "unknown", ("n2", 1): "unknown", ("n2", 2): "unknown", ("n2", 3): "unknown",  # node down
        ("n3", 0): "degraded",  # slow in the benchmark
        ("n3", 1): "unhealthy",  # vanished: gpu_missing is critical
        ("n3", 2): "degraded",  # corrected ECC errors rising
        ("n3", 3): "degraded",  # PCIe replays
    }  # n1 GPU 1 (one XID 13), n4 (power capped, idle allocated: info alerts) are healthy
    assert counts == {"unhealthy": 2 + 3, "degraded": 5, "unknown": 4, "healthy": 5 + 1}  # GPUs + nodes

    lost = gpus[("n1", 0)]
    assert lost["reasons"][0] == "XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert "GPU lost" in lost["reasons"] and lost["recommended_action"] == classify(79).recommended_action
    assert lost["uuid"] == "GPU-n1-0" and lost["since"] == NOW
    assert gpus[("n1", 2)]["reasons"] == [f"XID 13 {classify(13).mnemonic}"]
    assert gpus[("n1", 2)]["recommended_action"] == classify(13).recommended_action
    assert gpus[("n1", 3)]["reasons"] == ["thermal throttling", "alert gpu_temperature_high"]
    assert gpus[("n2", 0)]["reasons"] == ["node down: agent heartbeat missing"]
    assert gpus[("n1", 1)]["reasons"] == [] and gpus[("n1", 1)]["recommended_action"] is None

    nodes = states(scenario.engine, "node")
    assert {k[0]: v["state"] for k, v in nodes.items()} == {
        "n1": "unhealthy", "n2": "unhealthy", "n3": "unhealthy", "n4": "healthy"}
    assert nodes[("n1", None)]["reasons"][0] == "GPU 0: XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert nodes[("n1", None)]["recommended_action"] == classify(79).recommended_action
    assert nodes[("n2", None)]["reasons"][0] == "agent heartbeat missing"
    # Worst first: unhealthy nodes lead.
    assert [r["state"] for r in health(scenario.engine)][:4] == ["unhealthy"] * 4


def test_since_is_kept_while_the_state_holds(scenario: Fleet) -> None:
    scenario.cycle(load_default_rules(), NOW)
    update_health(scenario.engine, NOW)
    update_health(scenario.engine, NOW + 30)
    gpus = states(scenario.engine, "gpu")
    assert gpus[("n1", 0)]["since"] == NOW and gpus[("n1", 0)]["updated_at"] == NOW + 30
    # The alerts clear (nothing firing any more): the XID 79 GPU stays unhealthy from its event
    # alone, the warning-only GPUs become healthy, with a new since.
    with scenario.engine.begin() as conn:
        conn.execute(delete(Alert))
    update_health(scenario.engine, NOW + 60)
    gpus = states(scenario.engine, "gpu")
    assert gpus[("n1", 0)]["state"] == "unhealthy" and gpus[("n1", 0)]["since"] == NOW
    assert gpus[("n1", 2)]["state"] == "healthy" and gpus[("n1", 2)]["since"] == NOW + 60


def test_a_gpu_that_reports_again_is_healthy(fleet: Fleet) -> None:
    back = T0 + 3600
    fleet.write(T0, back + 600, lambda n, i, ts: {"status": "lost"} if i == 0 and T0 + 60 < ts < back
                else healthy(), events={T0 + 60: [xid(T0 + 60, 0, 79)]})
    update_health(fleet.engine, back - 60)
    assert states(fleet.engine, "gpu")[("n1", 0)]["state"] == "unhealthy"
    update_health(fleet.engine, back + 60)
    assert states(fleet.engine, "gpu")[("n1", 0)]["state"] == "healthy"
    assert states(fleet.engine, "node")[("n1", None)]["state"] == "healthy"


def test_a_silent_gpu_on_a_live_node_is_unknown(fleet: Fleet) -> None:
    fleet.write(T0, T0 + 600, lambda n, i, ts: None if i == 3 and ts > T0 + 300 else healthy(
        remapped_rows_pending=i == 1, clock_event_reasons=0x4 if i == 2 else 0))
    update_health(fleet.engine, T0 + 600)
    gpus = states(fleet.engine, "gpu")
    assert gpus[("n1", 3)]["state"] == "unknown" and gpus[("n1", 3)]["reasons"] == ["no recent data"]
    assert gpus[("n1", 1)]["state"] == "degraded" and gpus[("n1", 1)]["reasons"] == ["row remap pending"]
    assert gpus[("n1", 2)]["state"] == "healthy"  # at its power cap: busy, not broken
    node = states(fleet.engine, "node")[("n1", None)]
    assert node["state"] == "unknown" and node["reasons"] == ["GPU 1: row remap pending", "GPU 3: no recent data"]
