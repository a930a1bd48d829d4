"""Benchmark workloads run by ``gpufleet bench run`` and the agent's scheduler (see ``base.py``).

The registry is an explicit list of module names, not an import side effect: each module
``agent.workloads.<name>`` exposes ``WORKLOAD``. Modules are imported only when a workload is asked
for, so importing this package (the CLI, the agent) never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util

from agent.workloads.base import Workload

# The order suites run in and ``gpufleet bench list`` shows: cheap hardware probes first, then the
# model workloads, then the ones that spawn processes or touch disks.
ORDER = ("gemm", "membw", "train", "infer", "allreduce", "storage")


class UnknownWorkload(LookupError):
    """A workload name that is not registered (or whose module is not installed)."""


def names() -> list[str]:
    """The registered workloads whose module exists, in suite order."""
    return [n for n in ORDER if importlib.util.find_spec(f"{__name__}.{n}") is not None]


def get(name: str) -> Workload:
    """The workload called ``name``; raises :class:`UnknownWorkload`."""
    if name not in names():
        raise UnknownWorkload(f"unknown workload {name!r} (known: {', '.join(names())})")
    module = importlib.import_module(f"{__name__}.{name}")
    workload: Workload = module.WORKLOAD
    return workload


def select(wanted: list[str] | None = None) -> list[Workload]:
    """The named workloads (all of them for ``None``), in suite order, each once."""
    chosen = names() if not wanted else [n for n in ORDER if n in set(wanted)]
    for n in wanted or ():
        if n not in chosen:
            get(n)  # raises with the list of known names
    return [get(n) for n in chosen]
