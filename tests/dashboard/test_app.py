"""Every page of the real app (through its router) against a seeded store and an empty one.

Headline numbers are checked against an independent SQL reading of the same store, following the
definitions the overview states in its caption."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from collectors.xid import classify
from tests.dashboard import seed
from tests.dashboard.conftest import APP

PAGES = ("views/overview.py", "views/node.py", "views/failures.py", "views/benchmarks.py")
SIX_HOURS = 6 * 3600


def app(query: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.run()


def page(path: str, query: dict[str, Any] | None = None) -> AppTest:
    at = app(query)
    if path != PAGES[0]:
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def figure(at: AppTest, title: str) -> dict[str, Any]:
    found = [f for f in figures(at) if title in str(f["layout"].get("title", {}).get("text", ""))]
    assert found, f"no figure titled {title!r} in {[f['layout'].get('title') for f in figures(at)]}"
    return found[0]


def values(data: Any) -> list[Any]:
    """A trace's data array, whether Plotly sent it as a list or as a typed (base64) array."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def expected_headline(url: str, nodes: tuple[str, ...] = (), models: tuple[str, ...] = ()) -> dict[str, str]:
    """The overview's headline, read straight from the store with plain SQL."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT g.id, n.name, g.model, s.status, s.ts, s.utilization_gpu_ratio, s.process_count,
                   s.clock_event_reasons, s.remapped_rows_pending, s.remapped_rows_failure, s.power_watts
            FROM gpus g JOIN nodes n ON n.id = g.node_id
            LEFT JOIN gpu_samples s ON s.gpu_id = g.id
                 AND s.ts = (SELECT MAX(ts) FROM gpu_samples WHERE gpu_id = g.id AND ts <= :now)
        """), {"now": seed.NOW}).all()
        interval = conn.execute(text(
            "SELECT (MAX(ts) - MIN(ts)) / (COUNT(*) - 1) FROM heartbeats WHERE ts > :now - 900 AND ts <= :now"
            " GROUP BY node_id"), {"now": seed.NOW}).scalars().first()
        bad = set(conn.execute(text("""
            SELECT DISTINCT e.gpu_id FROM events e
            WHERE e.gpu_id IS NOT NULL AND e.ts >= :start AND e.ts < :now
              AND (e.fatal = :yes OR e.severity = 'critical')
              AND NOT EXISTS (SELECT 1 FROM events r WHERE r.kind = 'gpu_recovered' AND r.gpu_id = e.gpu_id
                              AND r.ts > e.ts)
        """), {"start": seed.NOW - SIX_HOURS, "now": seed.NOW, "yes": True}).scalars())
    engine.dispose()
    rows = [r for r in rows if (not nodes or r.name in nodes) and (not models or r.model in models)]
    recent = max(60.0, 3 * interval)
    up = [r for r in rows if r.status == "ok" and seed.NOW - r.ts <= recent]
    busy = [r for r in up if r.utilization_gpu_ratio >= 0.05]
    idle = [r for r in up if r.utilization_gpu_ratio < 0.05]
    power = sum(r.power_watts for r in up)
    util = sum(r.utilization_gpu_ratio for r in up) / len(up)
    return {
        "GPUs": str(len(rows)), "Busy": str(len(busy)), "Idle": str(len(idle)),
        "Idle, allocated": str(sum(1 for r in idle if r.process_count > 0)), "Down": str(len(rows) - len(up)),
        "Throttled": str(sum(1 for r in up if r.clock_event_reasons & (0x4 | 0x8 | 0x20 | 0x40 | 0x80))),
        "Unhealthy": str(sum(1 for r in rows if r.id in bad or r.remapped_rows_pending or r.remapped_rows_failure)),
        "Fleet utilization": f"{util:.0%}", "Power": f"{power / 1000:,.1f} kW" if power >= 1000 else f"{power:,.0f} W",
    }


@pytest.fixture
def seeded(seeded_url: str, use_store: Callable[[str], None]) -> str:
    use_store(seeded_url)
    return seeded_url


# -- overview -----------------------------------------------------------------------------------


def test_overview_headline_equals_sql(seeded: str) -> None:
    at = page(PAGES[0])
    got = metrics(at)
    want = expected_headline(seeded)
    assert {k: got[k] for k in want} == want
    # And what the seed was built to show, so that a wrong seed cannot make both sides agree.
    assert (want["GPUs"], want["Busy"], want["Idle"], want["Idle, allocated"], want["Down"], want["Throttled"],
            want["Unhealthy"]) == ("12", "8", "3", "1", "1", "4", "2")


@pytest.mark.parametrize(("query", "nodes", "models"), [
    ({"node": "node-a"}, ("node-a",), ()),
    ({"cluster": "beta"}, ("node-c",), ()),
    ({"model": seed.A100}, (), (seed.A100,)),
    ({"node": ["node-a", "node-b"]}, ("node-a", "node-b"), ()),
])
def test_filters_in_the_url_narrow_the_headline(seeded: str, query: dict[str, Any], nodes: tuple[str, ...],
                                                models: tuple[str, ...]) -> None:
    got = metrics(page(PAGES[0], query))
    want = expected_headline(seeded, nodes, models)
    assert {k: got[k] for k in want} == want
    assert int(got["GPUs"]) < 12


def test_filter_widget_writes_the_url_and_follows_to_other_pages(seeded: str) -> None:
    at = page(PAGES[0])
    at.multiselect(key="f_node").select("node-b").run()
    assert metrics(at)["GPUs"] == "4" and metrics(at)["Throttled"] == "4"
    assert at.query_params["node"] in ("node-b", ["node-b"])
    at.selectbox(key="f_range").set_value("24h").run()
    assert at.query_params["range"] in ("24h", ["24h"])
    at.switch_page(PAGES[1]).run()
    assert not at.exception
    assert at.selectbox(key="node_pick").value == "node-b"
    at.switch_page(PAGES[0]).run()
    assert metrics(at)["GPUs"] == "4"  # the filter survived two page switches


def test_a_stale_link_falls_back_instead_of_failing(seeded: str) -> None:
    got = metrics(page(PAGES[0], {"node": "no-such-node", "range": "bogus", "model": "x"}))
    assert got["GPUs"] == "12"


@pytest.mark.parametrize("path", PAGES)
def test_a_selection_with_no_gpu_explains_itself(seeded: str, path: str) -> None:
    at = page(path, {"cluster": "alpha", "model": seed.A100})  # alpha has no A100
    assert not at.get("plotly_chart")
    assert any(c.value.startswith(":material/info:") for c in at.caption)


def test_top_problems_link_to_their_node_pages(seeded: str) -> None:
    at = page(PAGES[0])
    text_shown = " ".join(m.value for m in at.markdown)
    for problem in ("XID 79", "gpu lost", "ECC", "down", "throttled"):
        assert f"**{problem}**" in text_shown
    links = [el.proto for el in at.get("page_link")]
    assert links and all(link.page == "node" for link in links)
    targets = {link.query_string for link in links}
    assert "node=node-c&gpu=0" in targets and "node=node-b&gpu=3" in targets
    assert not any("node=node-a" in t for t in targets)  # node-a's XID 48 recovered


def test_overview_charts_cover_every_gpu(seeded: str) -> None:
    at = page(PAGES[0])
    area = figure(at, "GPUs by state")
    assert [t["name"] for t in area["data"]] == ["busy", "idle-allocated", "idle", "down", "throttled"]
    heat = figure(at, "GPU utilization")
    assert len(values(heat["data"][0]["y"])) == 12
    assert any("raw" in c.value for c in at.caption)


def test_long_range_reads_rollups(seeded: str) -> None:
    at = page(PAGES[0], {"range": "7d"})
    assert any("This view: 1h" in c.value for c in at.caption)
    assert metrics(at)["GPUs"] == "12"
    at = page(PAGES[0], {"range": "custom", "from": "2025-11-23", "to": "2025-11-24"})
    assert any("This view: 1m" in c.value for c in at.caption)


# -- node ---------------------------------------------------------------------------------------


def test_node_page_draws_every_metric_with_events_and_throttling(seeded: str) -> None:
    at = page(PAGES[1], {"node": "node-b"})
    fig = figure(at, "GPU metrics")
    axes = {v["title"]["text"] for k, v in fig["layout"].items() if k.startswith("yaxis") and "title" in v}
    assert {"utilization (%)", "memory used (GiB)", "temperature (°C)", "power (W)", "clocks (MHz)",
            "PCIe / NVLink (MB/s)", "errors (count)"} <= axes
    assert any(s["type"] == "rect" for s in fig["layout"].get("shapes", []))  # throttling bands
    assert any(t["name"] == "event: gpu-hardware" for t in fig["data"])  # the thermal events
    assert figure(at, "Network") and figure(at, "Storage")
    processes = [df.value for df in at.dataframe if "pid" in df.value.columns]
    assert processes and len(processes[0]) == 4
    assert figure(at, "over time")  # benchmark history


def test_node_page_lists_current_processes_only(seeded: str) -> None:
    at = page(PAGES[1], {"node": "node-a"})
    processes = next(df.value for df in at.dataframe if "pid" in df.value.columns)
    assert sorted(processes["GPU"]) == [0, 1, 2]  # GPU 3's job ended 30 minutes ago


def test_node_page_for_a_lost_gpu_from_a_link(seeded: str) -> None:
    at = page(PAGES[1], {"node": "node-c", "gpu": "0"})
    assert at.selectbox(key="node_pick").value == "node-c" and at.selectbox(key="gpu_pick").value == 0
    fig = figure(at, "GPU metrics")
    assert {t["name"].split(" · ")[0] for t in fig["data"] if t["name"].startswith("GPU")} == {"GPU 0"}
    assert any(s["type"] == "line" for s in fig["layout"].get("shapes", []))  # the fatal events
    state = next(df.value for df in at.dataframe if "state" in df.value.columns)
    assert state["state"].tolist() == ["down"] and state["unhealthy"].tolist() == [True]
    at.selectbox(key="gpu_pick").set_value("all").run()
    assert "gpu" not in at.query_params


# -- failures -----------------------------------------------------------------------------------


def test_failures_page(seeded: str) -> None:
    at = page(PAGES[2])
    xids = next(df.value for df in at.dataframe if "XID" in df.value.columns)
    assert sorted(xids["XID"]) == ["13", "48", "79"]
    row = xids.set_index("XID").loc["79"]
    assert row["mnemonic"] == classify(79).mnemonic and row["recommended action"] == classify(79).recommended_action
    assert bool(xids.set_index("XID").loc["13", "fatal"]) is False
    got = metrics(at)
    # Three failures: XID 48 (node-a), XID 79 + gpu_lost (one outage, node-c), uncorrectable ECC (node-c).
    assert got["MTBF, fleet"] == "2.0 h"  # 6 h / 3
    timeline = figure(at, "Events")
    assert {t["name"] for t in timeline["data"]} == {"gpu-hardware", "user/app"}
    bars = [t for t in figures(at) if t["data"] and t["data"][0]["type"] == "bar" and len(t["data"]) == 2]
    assert bars
    lost = dict(zip(values(bars[0]["data"][1]["x"]), values(bars[0]["data"][1]["y"]), strict=True))
    # XID 48: 10 min until ok again; XID 79: until the end of the range; ECC: one sample interval.
    assert lost["gpu-hardware"] == pytest.approx((600 + (seed.NOW - seed.XID79_AT) + 60) / 3600)
    heat = figure(at, "Failures per node and day")
    assert sorted(values(heat["data"][0]["y"])) == ["node-a", "node-c"]


# -- benchmarks ---------------------------------------------------------------------------------


def test_benchmarks_page_finds_the_slow_gpu_and_its_evidence(seeded: str) -> None:
    at = page(PAGES[3])
    slow = next(df.value for df in at.dataframe if "fleet median" in df.value.columns)
    assert set(slow["GPU"]) == {"node-b / GPU 3"}
    assert sorted(slow["metric"]) == ["mfu", "mfu", "tflops", "tflops"]
    # The second round ran while node-b was throttling; the first did not.
    by_time = slow[slow["metric"] == "tflops"].sort_values("run start")
    assert by_time["throttled (% samples)"].tolist() == [0.0, 100.0]
    dist = figure(at, "by GPU model")
    straggler = next(t for t in dist["data"] if t["name"] == "straggler")
    assert len(values(straggler["y"])) == 2
    assert figure(at, "MFU")
    by_node = next(df.value for df in at.dataframe if {"node", "stragglers"} <= set(df.value.columns))
    gemm = by_node[by_node["metric"] == "tflops"].set_index("node")["stragglers"]
    assert gemm.to_dict() == {"node-a": 0, "node-b": 2, "node-c": 0}
    env = next(df.value for df in at.dataframe if "env_torch" in df.value.columns)
    assert set(env["env_driver"]) == {"580.65.06"}
    assert at.json  # environment and configuration of the chosen run


def test_benchmarks_look_back_a_week_whatever_the_range(seeded: str) -> None:
    at = page(PAGES[3], {"range": "1h"})  # the seed's runs started 1 and 3 hours ago
    assert figure(at, "by GPU model")


def test_node_filter_keeps_fleet_median(seeded: str) -> None:
    at = page(PAGES[3], {"node": "node-b"})
    slow = next(df.value for df in at.dataframe if "fleet median" in df.value.columns)
    assert set(slow["GPU"]) == {"node-b / GPU 3"}  # still judged against the whole fleet


def test_every_page_on_postgresql(pg_url: str, use_store: Callable[[str], None]) -> None:
    seed.seed(pg_url).dispose()
    use_store(pg_url)
    at = page(PAGES[0])
    want = expected_headline(pg_url)
    assert {k: metrics(at)[k] for k in want} == want
    for path in PAGES[1:]:
        at.switch_page(path).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.get("plotly_chart")


# -- empty store --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_explains_an_empty_store(empty_url: str, use_store: Callable[[str], None], path: str) -> None:
    use_store(empty_url)
    at = page(path)
    infos = " ".join(i.value for i in at.info)
    assert "gpufleet demo" in infos and "gpufleet agent run" in infos
    assert not at.get("plotly_chart") and not at.metric


def test_a_missing_store_file_is_not_created(tmp_path, use_store: Callable[[str], None]) -> None:  # noqa: ANN001
    path = tmp_path / "nowhere" / "store.db"
    use_store(f"sqlite:///{path}")
    at = page(PAGES[0])
    assert "gpufleet demo" in " ".join(i.value for i in at.info)
    assert not path.exists()


def test_a_store_without_schema_says_what_to_run(tmp_path, use_store: Callable[[str], None]) -> None:  # noqa: ANN001
    path = tmp_path / "bare.db"
    path.touch()
    use_store(f"sqlite:///{path}")
    at = page(PAGES[2])
    assert "gpufleet db upgrade" in " ".join(w.value for w in at.warning)
