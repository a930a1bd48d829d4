"""``gpufleet import prometheus``: dcgm-exporter and node_exporter series from a Prometheus server
into the store, through the agent's write path, exactly once.

The import reads Prometheus' ``query_range`` on a grid of ``step`` seconds aligned to the epoch, so
every import of the same data lands on the same timestamps. A range is cut into chunks on a global
grid too (at most 10,000 steps, under Prometheus' 11,000 points per series, and a budget of points
per chunk); each chunk is one transaction per the write path: one batch per node whose id names the
source, node, chunk and step, so a chunk imported twice is skipped, and rows another (overlapping)
import already stored are left out, so ranges may overlap freely. Each chunk's query starts one step
early: the point before the chunk gives counter rates and XID changes for its first point, so what
is stored does not depend on where the chunks fall. The mapping itself is ``collectors.dcgm``; the
HTTP side and the decoding of Prometheus' answers are ``gpufleet.promsource``.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import logging
import math
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from alerts.rulefile import parse_duration
from collectors import dcgm
from collectors.records import Event, GpuInfo, Value
from db.engine import upsert
from db.models import SAMPLE_TABLES, Gpu, ImportCursor, Node
from db.writer import Batch, SampleColumns, Writer
from gpufleet.cli import UserError
from gpufleet.promsource import PromSource, Series

log = logging.getLogger(__name__)

SOURCE = "prometheus"
MAX_STEPS = 10_000  # per query and series, with the extra point in front: under Prometheus' 11,000
AHEAD = 2  # chunks asked for before they are needed
SWITCH_INTERVAL = 0.0005  # seconds, while importing (see _bulk_mode)
POINT_BUDGET = 400_000  # points per chunk, all series together: bounds the memory of one chunk


# -- user input -------------------------------------------------------------------------------


def parse_step(text: str) -> int:
    """Whole seconds (``15``, ``15s``, ``1m``): the client sends whole-second range bounds, so a
    fractional step would drift off the grid."""
    try:
        step = float(text) if text.strip().replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        raise UserError(f"--step {text!r}: expected seconds or a duration like 15s") from None
    if step < 1 or step != int(step):
        raise UserError(f"--step {text!r}: must be a whole number of seconds, at least 1")
    return int(step)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- from series to batches -------------------------------------------------------------------


@dataclass
class ImportStats:
    rows: Counter[str] = field(default_factory=Counter)  # table -> rows written
    events: int = 0
    points: int = 0  # Prometheus points read (the one-step-early points included)
    skipped_rows: int = 0  # already in the store
    chunks: int = 0
    done_until: float | None = None

    def summary(self) -> str:
        parts = [f"{n:,} {table}" for table, n in sorted(self.rows.items())] or ["no samples"]
        return f"{', '.join(parts)} and {self.events:,} XID events ({self.skipped_rows:,} rows already stored)"


@dataclass
class _Thing:
    """One GPU, interface, disk, filesystem or host within a chunk: its columns on the chunk's grid
    (index 0 is the point one step before the chunk), and which grid points any series had."""

    key: dict[str, Any]
    labels: dict[str, str]
    columns: dict[str, list[Value]] = field(default_factory=dict)
    fallbacks: dict[str, list[Value]] = field(default_factory=dict)
    present: set[int] | None = field(default_factory=set)  # None: every grid point


@dataclass
class _NodeData:
    info: dict[str, Any] = field(default_factory=dict)
    things: dict[tuple[str, tuple[Any, ...]], _Thing] = field(default_factory=dict)
    gpus: dict[str, GpuInfo] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


@dataclass
class _Chunk:
    """One chunk, decoded and mapped: per node its things, each with every column of its table."""

    a: int
    b: int
    points: int  # Prometheus points read, the one-step-early ones included
    nodes: dict[str, _NodeData]


def map_chunk(result: list[Series], a: int, b: int, step: int) -> _Chunk:
    """The series of the chunk ``a..b`` (its query starts one step early) in gpufleet's columns."""
    q0, n = a - step, (b - a) // step + 2
    nodes = _build(result, q0, n, step)
    for data in nodes.values():
        for (kind, _), thing in data.things.items():
            _finish(kind, thing, n, step)
    return _Chunk(a, b, sum(len(s.values) for s in result), nodes)


def _on_grid(values: list[tuple[float, float]], f: dcgm.Field, q0: int, n: int,
             step: int) -> tuple[list[Value], list[int] | None]:
    """A series' converted values on the chunk's grid, and the grid indices it had (None: all)."""
    converted = dcgm.convert(f, [x for _, x in values])
    if len(converted) == n:
        return converted, None
    where = [round((t - q0) / step) for t, _ in values]
    column: list[Value] = [None] * n
    for i, v in zip(where, converted, strict=True):
        column[i] = v
    return column, where


def _merge(old: list[Value] | None, new: list[Value]) -> list[Value]:
    """Two series for one thing and column (a label changed mid-chunk): the points of both."""
    return new if old is None else [y if y is not None else x for x, y in zip(old, new, strict=True)]


def _build(result: list[Series], q0: int, n: int, step: int) -> dict[str, _NodeData]:
    """Group a chunk's series (grid ``q0, q0 + step, …``, ``n`` points) by node and thing, in
    gpufleet units."""
    unames = {m["instance"]: m["nodename"] for s in result if (m := s.metric).get("__name__") == dcgm.UNAME_METRIC
              and m.get("instance") and m.get("nodename")}
    nodes: dict[str, _NodeData] = defaultdict(_NodeData)
    for series in result:
        labels = series.metric
        name = labels.get("__name__", "")
        node = dcgm.node_name(labels, unames)
        if name == dcgm.UNAME_METRIC or node is None:
            continue
        data = nodes[node]
        f = dcgm.XID_FIELD if name == dcgm.XID_METRIC else dcgm.BY_METRIC[name]
        key = dcgm.thing_key(f.kind, labels)
        if key is None:
            continue
        column, where = _on_grid(series.values, f, q0, n, step)
        if f is dcgm.XID_FIELD:
            data.events += _xid_events(key, column, q0, step)
            continue
        thing = data.things.get((f.kind, tuple(key.values())))
        if thing is None:
            thing = data.things[(f.kind, tuple(key.values()))] = _Thing(key, labels)
            if f.kind == "gpu":
                data.info.update(dcgm.node_info(labels))
                data.gpus[key["gpu_uuid"]] = GpuInfo(index=key["gpu_index"], uuid=key["gpu_uuid"],
                                                     **dcgm.gpu_info(labels))
        target = thing.fallbacks if f.metric in dcgm.FALLBACKS else thing.columns
        target[f.column] = _merge(target.get(f.column), column)
        if where is None:
            thing.present = None
        elif thing.present is not None:
            thing.present.update(where)
    return dict(nodes)


def _finish(kind: str, thing: _Thing, n: int, step: int) -> None:
    """A thing's columns as stored: fallbacks where the preferred metric is missing, counter rates,
    derived columns, and every column of its table in one order (None where no series had it), so
    every row of a kind has one shape (the write path's fast path)."""
    cols = thing.columns
    for col, values in thing.fallbacks.items():
        cols[col] = _merge(values, cols[col]) if col in cols else values
    for col, f in dcgm.RATES.items():
        if f.kind == kind and col in cols and f.rate is not None:
            cols[f.rate] = list(dcgm.counter_rates(f, cols[col], step))
    dcgm.derive(kind, cols, thing.labels, n)
    if kind == "gpu":
        cols["status"] = ["ok"] * n
    nones: list[Value] = [None] * n
    thing.columns = {c: cols.get(c, nones) for c in dcgm.COLUMNS[kind]}
    thing.fallbacks = {}


def _xid_events(key: dict[str, Any], column: list[Value], q0: int, step: int) -> list[Event]:
    events = []
    for i, info in dcgm.xid_changes(column):
        ts = float(q0 + i * step)
        uid = hashlib.sha256(f"prometheus-xid|{key['gpu_uuid']}|{ts}|{info.code}".encode()).hexdigest()[:32]
        events.append(Event(
            ts=ts, kind="xid", severity=info.severity, code=str(info.code), category=info.category,
            message=f"XID {info.code} ({info.mnemonic}) on GPU {key['gpu_index']}",
            recommended_action=info.recommended_action, fatal=info.fatal, gpu_index=key["gpu_index"],
            gpu_uuid=key["gpu_uuid"], source=SOURCE, uid=uid,
            details={"mnemonic": info.mnemonic, "resolution": info.resolution, "metric": dcgm.XID_METRIC}))
    return events


def _blocks(data: _NodeData, existing: set[tuple[Any, ...]], node: str, q0: int, n: int,
            step: int) -> tuple[list[SampleColumns], int]:
    """Per thing, its rows for every grid point after the first that some series had, minus rows
    already stored: column slices, no object per row."""
    grid = [float(q0 + i * step) for i in range(n)]
    out: list[SampleColumns] = []
    skipped = 0
    for (kind, key_tuple), thing in data.things.items():
        keep: Sequence[int] = range(1, n) if thing.present is None else sorted(thing.present - {0})
        if existing:
            probe = ("gpu", thing.key["gpu_uuid"]) if kind == "gpu" else (kind, node, *key_tuple)
            new = [i for i in keep if (*probe, grid[i]) not in existing]
            skipped += len(keep) - len(new)
            keep = new
        if not keep:
            continue
        if keep[-1] - keep[0] + 1 == len(keep):  # one run of grid points: slices
            lo, hi = keep[0], keep[-1] + 1
            out.append(SampleColumns(kind, thing.key, grid[lo:hi], {c: v[lo:hi] for c, v in thing.columns.items()}))
        else:
            out.append(SampleColumns(kind, thing.key, [grid[i] for i in keep],
                                     {c: [v[i] for i in keep] for c, v in thing.columns.items()}))
    return out, skipped


@contextmanager
def _bulk_mode() -> Iterator[None]:
    """While a range imports: the cyclic GC paused (a chunk's JSON is millions of small objects
    without cycles, and with the GC on, decoding re-scans everything alive over and over) and a
    short GIL switch interval. The transfer thread needs the GIL for a moment after each read from
    the socket; with the default 5 ms, a busy decoding thread makes it wait that long every time,
    and a chunk then arrives several times later than Prometheus sends it."""
    paused, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if paused:
            gc.enable()


def chunk_bounds(first: int, last: int, step: int, steps: int) -> Iterator[tuple[int, int]]:
    """Chunks of at most ``steps`` grid points covering ``first..last``, cut on a global grid (multiples
    of ``steps * step``), so equal ranges cut equally and their batch ids match."""
    span = steps * step
    a = first
    while a <= last:
        b = min(last, (a // span + 1) * span - step)
        yield a, b
        a = b + step


def default_lag(step: int) -> float:
    """How far behind now an import stays: a scrape is stamped when it starts and stored when it ends."""
    return max(2.0 * step, 5.0)


# -- the importer -----------------------------------------------------------------------------


class PrometheusImporter:
    """Imports ranges (``import_range``) or follows Prometheus (``follow``) into one store."""

    def __init__(self, engine: Engine, source: PromSource, step: int, *, point_budget: int = POINT_BUDGET,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.source = source
        self.step = step
        self.point_budget = point_budget
        self.clock = clock
        self.writer = Writer(engine)
        self._known_gpus: set[str] = set()

    # -- ranges ---------------------------------------------------------------------------------

    def grid(self, start: float, end: float) -> tuple[int, int]:
        """The first and last grid points inside ``[start, end]``."""
        return math.ceil(start / self.step) * self.step, math.floor(end / self.step) * self.step

    def import_range(self, start: float, end: float, *, stats: ImportStats | None = None,
                     committed: Callable[[int], None] | None = None) -> ImportStats:
        """Import every grid point in ``[start, end]``; ``committed(b)`` runs after each chunk commits."""
        stats = stats or ImportStats()
        first, last = self.grid(start, end)
        if first > last:
            return stats
        series = self.source.series_count(first - self.step, last)
        if series == 0:
            return stats
        bounds = list(chunk_bounds(first, last, self.step, max(1, min(MAX_STEPS, self.point_budget // series))))
        with _bulk_mode(), closing(self._answers(bounds)) as answers:
            for a, b, body in answers:
                self._write(map_chunk(self.source.decode(body), a, b, self.step), stats)
                stats.done_until = float(b)
                if committed is not None:
                    committed(b)
        return stats

    def _answers(self, bounds: list[tuple[int, int]]) -> Generator[tuple[int, int, bytes], None, None]:
        """Each chunk's answer, in order, asked for ``AHEAD`` chunks before it is needed: Prometheus
        evaluates and sends the next chunks while this thread decodes, maps and writes. Only the
        transfer runs in the worker thread; the Python work stays on this one, where it does not
        fight a second thread for the GIL."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prom-fetch")
        pending: deque[Future[bytes]] = deque()
        asked = 0
        try:
            for a, b in bounds:
                while asked < len(bounds) and len(pending) <= AHEAD:
                    a2, b2 = bounds[asked]
                    pending.append(pool.submit(self.source.query_range, a2 - self.step, b2, self.step))
                    asked += 1
                yield a, b, pending.popleft().result()
        finally:
            pool.shutdown(cancel_futures=True)

    def _write(self, chunk: _Chunk, stats: ImportStats) -> None:
        """Write one mapped chunk: one batch per node, all in one transaction."""
        a, b, nodes = chunk.a, chunk.b, chunk.nodes
        q0, n = a - self.step, (b - a) // self.step + 2
        stats.points += chunk.points
        existing = self._existing(a, b, nodes)
        batches = []
        for node, data in sorted(nodes.items()):
            blocks, skipped = _blocks(data, existing, node, q0, n, self.step)
            stats.skipped_rows += skipped
            records: list[Any] = [g for uuid, g in data.gpus.items() if uuid not in self._known_gpus]
            records += blocks
            records += data.events
            ident = f"{self.source.name}|{node}|{a}|{b}|{self.step}"
            batches.append(Batch(batch_id="prom-" + hashlib.sha256(ident.encode()).hexdigest()[:40],
                                 node={"name": node, **data.info}, ts=float(b), records=records,
                                 collectors={SOURCE: {"status": "ok"}}))
        for batch, written in zip(batches, self.writer.write_many(batches), strict=True):
            stats.events += written.rows.get("events", 0)
            stats.rows.update({table: n for table, n in written.rows.items() if table != "events"})
            self._known_gpus.update(r.uuid for r in batch.records if isinstance(r, GpuInfo))
        stats.chunks += 1

    def _existing(self, a: int, b: int, nodes: dict[str, _NodeData]) -> set[tuple[Any, ...]]:
        """Rows of this chunk already in the store (an overlapping import, or a chunk cut differently
        before a restart), as ``(kind, owner, *key, ts)``: gpu rows are owned by the GPU's UUID,
        the others by the node's name."""
        found: set[tuple[Any, ...]] = set()
        uuids = {k[1][1] for d in nodes.values() for k in d.things if k[0] == "gpu"}
        kinds = {k[0] for d in nodes.values() for k in d.things} - {"gpu"}
        with self.engine.connect() as conn:
            unknown = uuids - self._known_gpus
            if unknown:
                self._known_gpus.update(conn.execute(select(Gpu.uuid).where(Gpu.uuid.in_(unknown))).scalars())
            if uuids & self._known_gpus:
                t = SAMPLE_TABLES["gpu"]
                q = (select(Gpu.uuid, t.c.ts).join(Gpu, Gpu.id == t.c.gpu_id)
                     .where(t.c.ts >= a, t.c.ts <= b, Gpu.uuid.in_(uuids & self._known_gpus)))
                found.update(("gpu", uuid, ts) for uuid, ts in conn.execute(q))
            for kind in kinds:
                t = SAMPLE_TABLES[kind]
                keys = [c for c in t.primary_key.columns if c.name not in ("node_id", "ts")]
                q = (select(Node.name, *keys, t.c.ts).join(Node, Node.id == t.c.node_id)
                     .where(t.c.ts >= a, t.c.ts <= b, Node.name.in_(list(nodes))))
                found.update((kind, *row) for row in conn.execute(q))
        return found

    # -- following -----------------------------------------------------------------------------

    def cursor(self) -> float | None:
        with self.engine.connect() as conn:
            return conn.execute(select(ImportCursor.done_until).where(
                ImportCursor.source == SOURCE, ImportCursor.url == self.source.name)).scalar()

    def save_cursor(self, done_until: float) -> None:
        row = {"source": SOURCE, "url": self.source.name, "step": float(self.step), "done_until": float(done_until),
               "updated_at": self.clock()}
        stmt = upsert(self.engine, ImportCursor).values(row)
        stmt = stmt.on_conflict_do_update(index_elements=["source", "url"],
                                          set_={k: stmt.excluded[k] for k in ("step", "done_until", "updated_at")})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def follow(self, start: float, stop: threading.Event, *, lag: float | None = None,
               rounds: int | None = None) -> ImportStats:
        """Import up to ``now - lag`` over and over until ``stop`` is set (or after ``rounds``),
        resuming after the stored cursor, else at ``start``. The cursor moves after each chunk
        commits, so a crash re-reads at most one chunk, whose rows are then skipped, not doubled.
        A failing Prometheus or store is logged and retried next round."""
        lag = default_lag(self.step) if lag is None else lag
        stats = ImportStats()
        done = self.cursor()
        next_t = float(start if done is None else done + self.step)
        n = 0
        while not stop.is_set() and (rounds is None or n < rounds):
            n += 1
            try:
                self.import_range(next_t, self.clock() - lag, stats=stats, committed=self.save_cursor)
            except UserError as exc:
                log.warning("%s; retrying in %d s", exc, self.step)
            except Exception as exc:  # the store went away: the cursor still says what is committed
                log.warning("import failed (%s: %s); retrying in %d s", type(exc).__name__, exc, self.step)
            if stats.done_until is not None:
                next_t = stats.done_until + self.step
            if rounds is not None and n >= rounds:
                break
            now = self.clock()
            stop.wait(max(0.05, math.floor((now - lag) / self.step + 1) * self.step + lag - now))
        return stats

