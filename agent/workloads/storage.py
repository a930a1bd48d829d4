"""Storage throughput and IOPS on a configured path: sequential 1 MiB and random 4 KiB reads and
writes of one scratch file, every write pass fsync'd, the file deleted afterwards.

Without O_DIRECT the page cache would answer reads from memory, so before each read pass the file's
pages are dropped with ``posix_fadvise(DONTNEED)`` (it was fsync'd, so they are clean and really go).
Writes include their fsync: a write pass counts only once the data is on the device. Compare with
the device's datasheet (sequential MB/s, random 4K IOPS at queue depth 1: this is one thread with
one request in flight, so expect far fewer IOPS than the datasheet's deep-queue figure).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.workloads.base import RunContext, WorkloadResult
from agent.workloads.harness import measure, rate_metric, time_metric

KiB, MiB = 1 << 10, 1 << 20
# (file size, random operations per sample) per suite.
SHAPES = {"quick": (16 * MiB, 256), "standard": (256 * MiB, 2048), "full": (1024 * MiB, 8192)}
OPS = ("seq_write", "seq_read", "rand_write", "rand_read")


def _drop_cache(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class Storage:
    name = "storage"
    description = ("sequential (1 MiB) and random (4 KiB, one in flight) read/write bytes/s and IOPS on the "
                   "scratch path, fsync'd, page cache dropped before reads")

    def params(self, suite: str, device: str) -> Sequence[dict[str, Any]]:
        size, ops = SHAPES[suite]
        return [{"op": op, "bytes": size, "block": MiB if op.startswith("seq") else 4 * KiB,
                 "ops": size // MiB if op.startswith("seq") else ops} for op in OPS]

    def run(self, ctx: RunContext, params: dict[str, Any]) -> WorkloadResult:
        op, size, block, nops = str(params["op"]), int(params["bytes"]), int(params["block"]), int(params["ops"])
        if op not in OPS:
            raise ValueError(f"unknown storage op {op!r}")
        ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
        path = Path(ctx.scratch_dir) / f"gpufleet-storage-{os.getpid()}-{op}.bin"
        rng = random.Random(ctx.seed)
        buf = os.urandom(block)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if op != "seq_write":  # the other passes work on an existing file
                self._fill(fd, size)
            blocks = size // block

            def offsets() -> list[int]:
                if op.startswith("seq"):
                    return [i * block for i in range(nops)]
                return [rng.randrange(blocks) * block for _ in range(nops)]

            todo: list[int] = []

            def setup() -> None:
                todo[:] = offsets()
                if op.endswith("read"):
                    _drop_cache(fd)

            if op.endswith("write"):
                def step() -> None:
                    for off in todo:
                        os.pwrite(fd, buf, off)
                    os.fsync(fd)
            else:
                def step() -> None:
                    for off in todo:
                        if len(os.pread(fd, block, off)) != block:
                            raise OSError(f"short read at {off} of {path}")

            stats = measure(step, device="cpu", warmup=1, min_iters=3, max_iters=100, budget_s=ctx.budget_s,
                            setup=setup)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        return WorkloadResult(self.name, dict(params), metrics=[
            rate_metric(stats, "throughput", "B/s", float(nops * block)), rate_metric(stats, "iops", "ops/s", nops),
            time_metric(stats)])

    @staticmethod
    def _fill(fd: int, size: int) -> None:
        chunk = os.urandom(MiB)
        for off in range(0, size, MiB):
            os.pwrite(fd, chunk[: min(MiB, size - off)], off)
        os.fsync(fd)


WORKLOAD = Storage()
