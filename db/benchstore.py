"""Storing benchmark runs and their results (the workloads themselves live in ``agent/workloads``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert

from db.models import BenchResult, BenchRun


def save_run(conn: Connection, *, node_id: int, workload: str, started_at: float, finished_at: float | None,
             status: str = "ok", gpu_id: int | None = None, suite: str | None = None, device: str | None = None,
             error: str | None = None, config: dict[str, Any] | None = None,
             environment: dict[str, Any] | None = None, results: Sequence[dict[str, Any]] = ()) -> int:
    """Insert one run and its results (dicts with BenchResult's columns); returns the run id."""
    run_id = conn.execute(insert(BenchRun).returning(BenchRun.id), {
        "uid": uuid.uuid4().hex, "node_id": node_id, "gpu_id": gpu_id, "workload": workload, "suite": suite,
        "device": device, "status": status, "error": error, "started_at": started_at,
        "finished_at": finished_at, "config": config, "environment": environment,
    }).scalar_one()
    if results:
        conn.execute(insert(BenchResult), [{"run_id": run_id, "gpu_id": gpu_id, **r} for r in results])
    return int(run_id)
