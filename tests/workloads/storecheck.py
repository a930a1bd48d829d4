"""Run one workload's tiny parameter sets through the runner into a fresh SQLite store and read the
runs back: the shared check behind every workload's "stored and read back" test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent.workloads.runner import Runner, RunRecord
from db.engine import ensure_schema, make_engine
from db.models import BenchResult, BenchRun


def run_and_read(url: str, workload: str, params: list[dict[str, Any]], tmp: Path,
                 **runner: Any) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """(the runner's records, the stored runs with a ``results`` list each, in run order)."""
    engine = make_engine(url)
    ensure_schema(engine)
    records = Runner(suite="quick", device="cpu", workloads=[workload], params={workload: params}, engine=engine,
                     node_name="test-node", storage_path=str(tmp), budget_s=0.05, **runner).run()
    with engine.connect() as conn:
        runs = [dict(r._mapping) for r in conn.execute(select(BenchRun).order_by(BenchRun.id))]
        for run in runs:
            rows = conn.execute(select(BenchResult).where(BenchResult.run_id == run["id"]).order_by(BenchResult.id))
            run["results"] = {r.metric: dict(r._mapping) for r in rows}
    engine.dispose()
    return records, runs
