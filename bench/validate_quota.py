"""Validation (3): quota rebalancing on the 16 Helios Earth VCs (May 2020, per minute).

Each VC's running and pending GPUs and its GPU count come from its ``vc_sequences`` file, minute
by minute; ``planner.quota`` calls a VC starved when it had pending GPUs more than half the time and
idle when it averaged under 30% allocation, and proposes whole-node moves (8 GPUs) from idle VCs
(keeping their p95 running GPUs at 80% allocation) to starved ones (their mean pending GPUs).
``--write`` replaces the ``quota`` section of docs/VALIDATION.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from perfdoc import ROOT, header, package_version, table, write_validation  # noqa: E402

from planner.demand import read_series_file  # noqa: E402
from planner.quota import IDLE_ALLOCATION, STARVED_PENDING_SHARE, rebalance_frames  # noqa: E402

SEQUENCES = ROOT.parent / "shared" / "data" / "helios" / "earth" / "vc_sequences"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the quota section of docs/VALIDATION.md")
    args = ap.parse_args()
    paths = sorted(SEQUENCES.glob("*.csv.gz"))
    if not paths:
        print(f"shared data not found under {SEQUENCES}", file=sys.stderr)
        return 2
    frames = {}
    for path in paths:
        usage = read_series_file(path, resample=None)
        frames[usage.name] = usage.frame
    plan = rebalance_frames(frames)
    order = {"starved": 0, "idle": 1, "ok": 2}
    evidence = sorted(plan.evidence, key=lambda e: (order[plan.statuses[e.vc]], -e.pending_share, e.vc))
    rows = [(e.vc, f"**{plan.statuses[e.vc]}**" if plan.statuses[e.vc] != "ok" else "ok", f"{e.capacity:,.0f}",
             f"{e.mean_allocation:.0%}" if e.mean_allocation is not None else "n/a", f"{e.p95_running:,.0f}",
             f"{e.pending_share:.0%}", f"{e.mean_pending:,.1f}", f"{e.p95_pending:,.0f}", f"{e.pending_gpu_hours:,.0f}",
             f"{e.idle_gpu_hours:,.0f}", plan.spare.get(e.vc, plan.need.get(e.vc, "")))
            for e in evidence]
    moves = [f"- move **{t.gpus} GPUs** from {t.from_vc} to {t.to_vc}" for t in plan.transfers] or ["- no moves"]
    unmet = {vc: n - sum(t.gpus for t in plan.transfers if t.to_vc == vc) for vc, n in plan.need.items()}
    lines = [
        "## Quota rebalancing (Helios Earth VCs, May 2020)",
        "",
        *header([("pandas", package_version("pandas"))]),
        "",
        f"Starved: pending GPUs more than {STARVED_PENDING_SHARE:.0%} of the minutes; idle: mean allocation "
        f"(running / VC GPUs) under {IDLE_ALLOCATION:.0%}. Spare = GPUs - p95 running / 80%, in whole nodes; "
        "need = mean pending GPUs, in whole nodes. GPU-hours are over the 31 days.",
        "",
        *table(["VC", "status", "GPUs", "mean allocation", "p95 running", "time pending", "mean pending",
                "p95 pending", "pending GPU-h", "unallocated GPU-h", "spare / need"], rows),
        "",
        "Proposed moves (largest need first, from the largest spare):",
        "",
        *moves,
        *[f"- still short after the moves: {vc} {n} GPUs" for vc, n in unmet.items() if n > 0],
    ]
    if args.write:
        write_validation("quota", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
