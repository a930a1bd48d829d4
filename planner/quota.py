"""Quota rebalancing between teams or virtual clusters (VCs).

A VC is **starved** when it has pending GPUs most of the time (more than half of it, by default)
and **idle** when it keeps under 30% of its GPUs allocated on average; moving GPUs from idle VCs to
starved ones serves queued work without buying anything. Each verdict comes with the numbers behind
it (``VcEvidence``), so a person can check it before changing a quota.

How much moves: an idle VC keeps enough GPUs to hold its own p95 running GPUs at the target
allocation; the rest, in whole nodes, can go. A starved VC asks for its mean pending GPUs (the
backlog it carries on average), in whole nodes. Largest asks are served first from the largest
spares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

STARVED_PENDING_SHARE = 0.5
IDLE_ALLOCATION = 0.30


@dataclass(frozen=True, slots=True)
class VcEvidence:
    """One VC over the range. GPU counts are time-weighted; shares are of the time the VC had any
    capacity; ``pending_gpu_hours`` is the queued GPU-hours; ``idle_gpu_hours`` the unallocated ones."""

    vc: str
    capacity: float  # latest
    mean_running: float
    p95_running: float
    mean_allocation: float | None
    pending_share: float
    mean_pending: float
    p95_pending: float
    pending_gpu_hours: float
    idle_gpu_hours: float
    hours: float

    def status(self, *, starved_share: float = STARVED_PENDING_SHARE, idle_allocation: float = IDLE_ALLOCATION) -> str:
        """``starved``, ``idle`` or ``ok``."""
        if self.pending_share > starved_share:
            return "starved"
        if self.mean_allocation is not None and self.mean_allocation < idle_allocation:
            return "idle"
        return "ok"


def vc_evidence(vc: str, frame: pd.DataFrame) -> VcEvidence:
    """Evidence from a usage frame (``running``, ``pending``, ``capacity`` per time step, evenly
    spaced). Steps where the VC had no capacity are left out of the shares and means."""
    f = frame[frame["capacity"].fillna(0) > 0]
    step_hours = _step_hours(frame)
    running = f["running"].fillna(0.0).to_numpy(float)
    pending = f["pending"].fillna(0.0).to_numpy(float)
    capacity = f["capacity"].to_numpy(float)
    if not len(f):
        return VcEvidence(vc, 0.0, 0.0, 0.0, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return VcEvidence(
        vc=vc, capacity=float(capacity[-1]), mean_running=float(running.mean()),
        p95_running=float(np.quantile(running, 0.95)), mean_allocation=float((running / capacity).mean()),
        pending_share=float((pending > 0).mean()), mean_pending=float(pending.mean()),
        p95_pending=float(np.quantile(pending, 0.95)), pending_gpu_hours=float(pending.sum() * step_hours),
        idle_gpu_hours=float(np.clip(capacity - running, 0, None).sum() * step_hours), hours=len(f) * step_hours)


def _step_hours(frame: pd.DataFrame) -> float:
    if len(frame.index) < 2:
        return 1.0
    return float(pd.Series(frame.index).diff().median().total_seconds() / 3600.0)


@dataclass(frozen=True, slots=True)
class Transfer:
    from_vc: str
    to_vc: str
    gpus: int


@dataclass(frozen=True)
class QuotaPlan:
    evidence: list[VcEvidence]
    statuses: dict[str, str]
    spare: dict[str, int]  # GPUs each idle VC can give
    need: dict[str, int]  # GPUs each starved VC asks for
    transfers: list[Transfer]


def _nodes_down(x: float, per_node: int) -> int:
    return max(int(math.floor(x / per_node + 1e-9)) * per_node, 0)


def _nodes_up(x: float, per_node: int) -> int:
    return max(int(math.ceil(x / per_node - 1e-9)) * per_node, 0)


def rebalance(evidence: Sequence[VcEvidence], *, target: float = 0.8, per_node: int = 8,
              starved_share: float = STARVED_PENDING_SHARE, idle_allocation: float = IDLE_ALLOCATION) -> QuotaPlan:
    """Classify each VC and propose GPU moves from idle VCs to starved ones (see the module docstring)."""
    statuses = {e.vc: e.status(starved_share=starved_share, idle_allocation=idle_allocation) for e in evidence}
    spare = {e.vc: _nodes_down(e.capacity - e.p95_running / target, per_node)
             for e in evidence if statuses[e.vc] == "idle"}
    need = {e.vc: _nodes_up(e.mean_pending, per_node) for e in evidence if statuses[e.vc] == "starved"}
    left = dict(spare)
    transfers: list[Transfer] = []
    for vc, want in sorted(need.items(), key=lambda kv: (-kv[1], kv[0])):
        for donor in sorted(left, key=lambda d: (-left[d], d)):
            if want <= 0:
                break
            give = min(left[donor], want)
            if give > 0:
                transfers.append(Transfer(donor, vc, give))
                left[donor] -= give
                want -= give
    return QuotaPlan(list(evidence), statuses, spare, need, transfers)


def rebalance_frames(frames: Mapping[str, pd.DataFrame], **kwargs: float) -> QuotaPlan:
    """``rebalance`` over usage frames per VC (from ``planner.demand``: series files or jobs)."""
    return rebalance([vc_evidence(vc, f) for vc, f in sorted(frames.items())], **kwargs)  # type: ignore[arg-type]
