"""The Capacity page through the real router: the forecast answer `gpufleet plan forecast` gives for the
same store, the backtest, a note when the history is too short, and a what-if run from the page."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from db.engine import make_engine
from gpufleet.cli import main
from planner.jobs import store_jobs
from planner.simulate import simulate
from planner.whatif import store_cluster, store_trace
from tests.dashboard import seed
from tests.dashboard.test_alerts_page import frame_with
from tests.dashboard.test_app import figure, metrics, page

CAPACITY = "views/capacity.py"
DAY = 86400.0


def _jobs(now: float) -> list[dict[str, object]]:
    """Four weeks of jobs with a daily cycle: 2 to 10 GPUs of 1-GPU jobs submitted each hour, one hour long."""
    rows = []
    start = now - 30 * DAY
    for h in range(int((now - start) // 3600)):
        t = start + h * 3600
        for k in range(round(6 + 4 * math.sin(2 * math.pi * h / 24))):
            rows.append({"source": "csv", "cluster": "", "external_id": f"j{h}-{k}", "user": None, "account": None,
                         "partition": None, "state": "COMPLETED", "category": None, "submit_ts": t,
                         "start_ts": t + 60 * k, "end_ts": t + 3600, "gpus": 1.0, "gpu_model": None, "nodes": 1,
                         "node_list": None, "exit_code": None, "details": None})
    return rows


@pytest.fixture(scope="module")
def jobs_url(seeded_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    copy = tmp_path_factory.mktemp("capacity") / "jobs.db"
    shutil.copy(Path(seeded_url.removeprefix("sqlite:///")), copy)
    url = f"sqlite:///{copy}"
    engine = make_engine(url)
    store_jobs(engine, _jobs(seed.NOW))
    engine.dispose()
    return url


def test_forecast_answer_is_the_cli_answer(jobs_url: str, use_store: Callable[[str], None],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "forecast", "--db", jobs_url, "--start", str(seed.NOW - 28 * DAY), "--end", str(seed.NOW),
                 "--backtest-days", "1", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    use_store(jobs_url)
    at = page(CAPACITY)
    assert [s.value for s in at.success] == [cli["answer"]]
    fan = figure(at, "Demand vs capacity")
    assert {t.get("name") for t in fan["data"]} >= {"demand", "forecast", "capacity", "90% interval"}
    got = metrics(at)
    assert got["sMAPE, model"] == f"{cli['backtest']['model_smape']:.1%}"
    assert got["sMAPE, seasonal naive"] == f"{cli['backtest']['baseline_smape']:.1%}"
    assert len(frame_with(at, "model_smape", "baseline_smape")) == len(cli["backtest"]["folds"])


def test_whatif_runs_the_simulator_from_the_page(jobs_url: str, use_store: Callable[[str], None]) -> None:
    use_store(jobs_url)
    at = page(CAPACITY)
    assert any("Choose the policies" in c.value for c in at.caption)
    at.selectbox(key="whatif_queue").select("easy")
    at.selectbox(key="whatif_placement").select("best_fit")
    at.selectbox(key="whatif_model").select(seed.H100)
    at.number_input(key="whatif_add").set_value(4)
    at.button(key="whatif_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    runs = frame_with(at, "fleet", "queueing p90", "GPUs allocated")
    assert runs["fleet"].tolist() == ["as is", f"+4 {seed.H100}"]
    engine = make_engine(jobs_url)
    cluster = store_cluster(engine)
    trace = store_trace(engine, cluster, seed.NOW - 7 * DAY, seed.NOW)
    engine.dispose()
    want = simulate(cluster, trace.trace, "easy", "best_fit").summary()
    assert runs["jobs"].iloc[0] == want["jobs"] == len(trace.trace) > 0
    assert runs["GPUs allocated"].iloc[0] == pytest.approx(want["mean_allocation_ratio"])
    assert any("Add " in s.value or "nothing to add" in s.value or "Even 64" in s.value for s in at.success)
    assert figure(at, "What-if")


def test_short_history_explains_and_whatif_uses_a_synthetic_trace(seeded_url: str,
                                                                  use_store: Callable[[str], None]) -> None:
    use_store(seeded_url)  # four hours of telemetry, no jobs
    at = page(CAPACITY)
    assert any(i.value.startswith("No forecast: 5 hours of demand in the store; a forecast needs at least 48")
               for i in at.info)  # four hours of samples touch five hourly buckets
    at.button(key="whatif_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("synthetic jobs of 1, 2, 4 GPUs" in c.value for c in at.caption)


def test_empty_store_explains(empty_url: str, use_store: Callable[[str], None]) -> None:
    use_store(empty_url)
    at = page(CAPACITY)
    assert any("gpufleet demo" in i.value for i in at.info) and not at.get("plotly_chart")
