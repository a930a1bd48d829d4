"""The write path: one agent batch becomes one transaction, exactly once.

A batch carries its own id. The id is recorded in ``ingested_batches`` in the same transaction as
the rows, so a batch replayed from the agent's spool after a crash or an outage is recognised and
skipped: no sample is lost (the spool keeps it until the commit) and none is duplicated.

Sample rows go in through the fastest path each driver has, on rows built once per batch:
``executemany`` of many-row INSERTs on SQLite (a column that is None, or the same bool, in every
row written as a literal: the sqlite3 module binds those ten times slower than numbers), binary
``COPY`` on PostgreSQL. The records are duck-typed (``kind``, ``ts``, ``key``, ``values`` for
samples; see ``collectors.records``) so ``db`` does not depend on the collectors package. A bulk
importer hands in ``SampleColumns`` instead: many rows of one thing, column-major, which become row
tuples in one ``zip`` with no Python object per row on the way.

``gpus.last_seen`` (the newest time a GPU said it was fine) is kept to ``GPU_LAST_SEEN_RESOLUTION``:
a writer rewrites it only when it has moved on by that much since the writer last wrote it. Nothing
decides on it (a GPU's current state comes from its newest sample; a node's ``last_seen``, which
absence alerts read, stays exact), and rewriting every GPU row on every flush was the largest cost
after the samples themselves.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import secrets
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Engine, Float, Integer, Table, insert, select, update

from db.engine import upsert
from db.models import EVENTS, SAMPLE_TABLES, Gpu, Node

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """What one agent flush writes: who it is from and what it saw."""

    batch_id: str
    node: dict[str, Any]  # name (required), cluster, hostname, agent_version, driver_version, …
    ts: float
    records: Sequence[Any]
    collectors: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SampleColumns:
    """Rows of one thing (a GPU, an interface, …) column-major: row ``i`` is at ``ts[i]`` with
    ``columns[c][i]`` for each column ``c`` of the ``kind``'s table; ``key`` as a sample's key."""

    kind: str
    key: dict[str, Any]
    ts: Sequence[float]
    columns: dict[str, Sequence[Any]]


@dataclass(slots=True)
class WriteResult:
    written: bool  # False when the batch had already been ingested
    rows: dict[str, int]


GPU_LAST_SEEN_RESOLUTION = 60.0  # seconds; see the module docstring
_SQLITE_ROWS_PER_INSERT = 50  # rows per INSERT on SQLite, within its limit of bound parameters
# PostgreSQL, overlapped path: GPU rows built before the COPY starts (while the server records the
# batches); a larger transaction builds the rest during the COPY, this many rows at a time.
_ROWS_BEFORE_COPY = 1024
_STREAM_CHUNK = 1024
_SQLITE_STATEMENTS_KEPT = 256  # SQLite INSERTs kept per writer, one per shape and pattern of constant columns

# PostgreSQL types of sample columns for binary COPY, by SQLAlchemy type (strings: text).
_PG_BINARY_TYPES = {BigInteger: "int8", Integer: "int4", Float: "float8", Boolean: "bool"}
_INT4 = (-2**31, 2**31 - 1)
_BOOL_TYPES = frozenset({bool, type(None)})

_NODE_FIELDS = ("cluster", "hostname", "agent_version", "driver_version", "cuda_driver_version",
                "cpu_count", "memory_total_bytes", "gpu_count", "labels")
_GPU_FIELDS = ("index", "model", "serial", "pci_bus_id", "memory_total_bytes", "power_limit_default_watts",
               "sm_clock_max_hz", "mem_clock_max_hz", "pcie_link_gen_max", "pcie_link_width_max",
               "mig_mode", "unsupported")

# The statements every transaction runs, as driver SQL with positional rows: through SQLAlchemy,
# an executemany of dicts cost ~4 µs a row in parameter processing, more than SQLite's own work.
# On PostgreSQL each is one statement over arrays (``unnest``), so a flush of many batches is the
# same few statements, sent together in one pipeline (one round trip), with binary parameters.
_SQLITE_SQL = {
    "done": "SELECT batch_id FROM ingested_batches WHERE batch_id IN ({})",
    "heartbeats": "INSERT INTO heartbeats (node_id, ts, agent_version, collectors) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (node_id, ts) DO NOTHING",
    "ingested": "INSERT INTO ingested_batches (batch_id, node_id, ts, records) VALUES (?, ?, ?, ?)",
    # A replayed old batch must not move last_seen backwards. One statement per distinct time (all
    # GPUs of a flush, usually) costs half of one per row.
    "gpus": "UPDATE gpus SET last_seen = ?1 WHERE last_seen < ?1 AND id IN ({})",
    "nodes": "UPDATE nodes SET last_seen = ?1 WHERE last_seen < ?1 AND id IN ({})",
}
_PG_SQL = {
    "done": "SELECT batch_id FROM ingested_batches WHERE batch_id = ANY(%b::text[])",
    "heartbeats": "INSERT INTO heartbeats (node_id, ts, agent_version, collectors) "
                  "SELECT * FROM unnest(%b::bigint[], %b::float8[], %b::text[], %b::json[]) "
                  "ON CONFLICT (node_id, ts) DO NOTHING",
    "ingested": "INSERT INTO ingested_batches (batch_id, node_id, ts, records) "
                "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::float8[], %b::integer[]) "
                "ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
    "gpus": "UPDATE gpus SET last_seen = v.ts FROM unnest(%b::bigint[], %b::float8[]) AS v(id, ts) "
            "WHERE gpus.id = v.id AND gpus.last_seen < v.ts",
    "nodes": "UPDATE nodes SET last_seen = v.ts FROM unnest(%b::bigint[], %b::float8[]) AS v(id, ts) "
             "WHERE nodes.id = v.id AND nodes.last_seen < v.ts",
}


def new_batch_id() -> str:
    """A new batch id: 32 hex digits, the first 12 the time in milliseconds and the other 20 random
    (the layout of a UUIDv7). Ids made one after another sort one after another, so the primary
    key of ``ingested_batches`` grows at its right edge, a page or two a transaction; random ids
    land all over it, one index page per batch (on SQLite each a 4 KiB page in the WAL at every
    commit, on PostgreSQL a full-page image after each checkpoint)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


def _texts(values: Iterable[Any]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def _column_values(rows: list[tuple[Any, ...]], positions: list[int]) -> Iterable[Any]:
    """The values at ``positions`` of every row, one after another (in C: itemgetter of one
    position gives the value itself, of several a tuple)."""
    picked = map(itemgetter(*positions), rows)
    return chain.from_iterable(picked) if len(positions) > 1 else picked


def _sqlite_constants(rows: list[tuple[Any, ...]], start: int) -> tuple[tuple[int, str], ...]:
    """(position, SQL literal) of the value columns (from ``start``, after the keys) that are None
    in every row (NULL) or the same bool in every row (1 or 0). Only the columns whose first value
    is None or a bool are looked at, each in C."""
    found: list[tuple[int, str]] = []
    n = len(rows)
    for i, first in enumerate(rows[0][start:], start):
        if first is None:
            if list(map(itemgetter(i), rows)).count(None) == n:
                found.append((i, "NULL"))
        elif first is True or first is False:
            column = list(map(itemgetter(i), rows))
            if column.count(first) == n and set(map(type, column)) == {bool}:  # 1 == True: types too
                found.append((i, "1" if first else "0"))
    return tuple(found)


def _chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    """``items`` in lists of at most ``size``: bound parameters per IN list, well under SQLite's limit."""
    return (items[i:i + size] for i in range(0, len(items), size))


def ensure_node(conn: Connection, name: str, ts: float, info: dict[str, Any], *, known: int | None = None) -> int:
    """The id of the node called ``name`` (nodes are keyed by name), inserted at ``ts`` if new, its
    ``info`` columns brought up to date otherwise. ``known``: its id, when the caller has it cached."""
    node_id = known if known is not None else conn.execute(select(Node.id).where(Node.name == name)).scalar()
    if node_id is None:
        return int(conn.execute(insert(Node).returning(Node.id),
                                {"name": name, "first_seen": ts, "last_seen": ts, **info}).scalar_one())
    if info:
        conn.execute(update(Node).where(Node.id == node_id).values(**info))
    return int(node_id)


def ensure_gpu(conn: Connection, node_id: int, uuid: str, ts: float, info: dict[str, Any], *,
               known: int | None = None) -> int:
    """The id of the GPU with this UUID (GPUs are keyed by UUID), inserted on ``node_id`` at ``ts`` if
    new; otherwise, when there is ``info``, moved to ``node_id`` with its ``info`` columns updated."""
    gpu_id = known if known is not None else conn.execute(select(Gpu.id).where(Gpu.uuid == uuid)).scalar()
    if gpu_id is None:
        return int(conn.execute(insert(Gpu).returning(Gpu.id),
                                {"node_id": node_id, "uuid": uuid, "first_seen": ts, "last_seen": ts, **info}
                                ).scalar_one())
    if info:
        conn.execute(update(Gpu).where(Gpu.id == gpu_id).values(node_id=node_id, **info))
    return int(gpu_id)


class _Replayed(Exception):
    """A batch of the transaction was already written (found while recording them, PostgreSQL)."""


class _NeedsLookup(Exception):
    """Building rows met a GPU to register while SQL could not run (the overlapped path)."""


class _BinaryCopyRefused(Exception):
    """A binary COPY dumper refused a value of this (kind, value columns) shape; raised from it."""

    def __init__(self, key: tuple[str, tuple[str, ...]]) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class _CopySpec:
    """PostgreSQL COPY of one (kind, value columns) shape: the text and binary statements, the
    column types binary COPY declares, and the positions of the ``integer`` and ``boolean`` columns
    (the values ``_binary_safe`` checks)."""

    text_sql: str
    binary_sql: str
    types: list[str]
    int4: list[int]
    bools: list[int]


@dataclass
class _Deferred:
    """GPU sample groups (or their tails) to build during the COPY: (key, node id, samples, getter,
    width); ``budget``: rows still to build before it."""

    budget: int
    groups: list[tuple[tuple[str, tuple[str, ...]], int, list[Any], Any, int]] = field(default_factory=list)


class Writer:
    """Writes batches to one store. Keeps small caches of node and GPU ids (forgotten when a
    transaction fails, since they may then name rows that were rolled back)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._node_ids: dict[str, int] = {}
        self._node_seen: dict[str, dict[str, Any]] = {}  # the node description last written
        self._nodes_touched: list[str] = []  # nodes inserted or described in the transaction under way
        self._gpu_ids: dict[str, int] = {}
        self._gpu_info_seen: dict[str, tuple[Any, ...]] = {}
        # Per sample table: the columns filled from the record's key (in primary-key order, plus
        # node_id), then the value columns, in the order rows are built and inserted.
        self._layout: dict[str, tuple[list[str], tuple[str, ...]]] = {}
        for kind, table in SAMPLE_TABLES.items():
            keys = [c.name for c in table.primary_key.columns]
            if "node_id" not in keys:
                keys.append("node_id")
            self._layout[kind] = (keys, tuple(c.name for c in table.columns if c.name not in keys))
        self._gpu_columns = frozenset(self._layout["gpu"][1])
        self._table_columns = {kind: frozenset(values) for kind, (_, values) in self._layout.items()}
        # GPU sample value columns as a collector sends them → a getter of those values as a tuple
        # (None when the shape cannot be inserted as is: unknown or fewer than two columns).
        self._gpu_getters: dict[tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]] | None] = {}
        self._sql = _PG_SQL if self.dialect == "postgresql" else _SQLITE_SQL
        self._collectors_seen: tuple[dict[str, Any], str] | None = None  # the last collector states, as JSON
        self._gpu_seen_written: dict[int, float] = {}  # gpus.last_seen as this writer last wrote it
        # PostgreSQL: (kind, value columns) → its COPY statements and the binary format's column types;
        # shapes whose values a binary dumper refused go as text from then on.
        self._copy_specs: dict[tuple[str, tuple[str, ...]], _CopySpec] = {}
        self._text_copy: set[tuple[str, tuple[str, ...]]] = set()
        # SQLite's INSERTs per (kind, columns, constant columns): one row, many rows, rows per many, and
        # the getter of the bound values when some are constant
        self._sqlite_multi: dict[Any, tuple[str, str, int, Callable[[Any], Any] | None]] = {}
        self._no_sql = False  # set while rows are built inside the overlapped path's pipeline
        self._deferred: _Deferred | None = None  # set there: GPU rows past the budget wait for the COPY

    # -- public -------------------------------------------------------------------------------

    def write(self, batch: Batch) -> WriteResult:
        """Write ``batch`` in one transaction; a batch already ingested is skipped."""
        return self.write_many([batch])[0]

    def write_many(self, batches: Sequence[Batch]) -> list[WriteResult]:
        """Write several batches in one transaction, merged: one bulk insert per table however
        many batches (a spool backlog drains fast). Batches already ingested are skipped."""
        # Building thousands of row tuples triggers the cyclic GC over and over, for nothing: these
        # rows hold no cycles. Pausing it for the transaction saves ~10-20% of the write path.
        paused = gc.isenabled()
        gc.disable()
        try:
            check_first = self.dialect != "postgresql"
            while True:
                self._nodes_touched.clear()
                try:
                    with self.engine.begin() as conn:
                        return self._write_many(conn, batches, check_first)
                except _Replayed:
                    self._forget()  # some batch was already written: again, looking first
                    check_first = True
                except _NeedsLookup:
                    # A GPU to register (SQL, which the overlapped path cannot run): again, the plain
                    # way. Only the nodes this try inserted or described may name rows rolled back;
                    # the other ids, and all the GPU ids, are from committed transactions.
                    for name in self._nodes_touched:
                        self._node_ids.pop(name, None)
                        self._node_seen.pop(name, None)
                    check_first = True
                except _BinaryCopyRefused as refused:
                    # A value the binary format cannot carry as the column's type (say a float for a
                    # bigint): this shape goes as text from now on, and the transaction once more.
                    # Each refusal adds a shape, so this ends.
                    self._forget()
                    self._text_copy.add(refused.key)
                    log.info("binary COPY refused a %s row (%s); writing that shape as text", refused.key[0],
                             refused.__cause__)
                except Exception:
                    self._forget()
                    raise
        finally:
            if paused:
                gc.enable()

    def _forget(self) -> None:
        """Drop the id and last-written caches: a failed transaction may have rolled back what they name."""
        self._node_ids.clear()
        self._node_seen.clear()
        self._gpu_ids.clear()
        self._gpu_info_seen.clear()
        self._gpu_seen_written.clear()

    # -- the transaction ----------------------------------------------------------------------

    def _write_many(self, conn: Connection, batches: Sequence[Batch], check_first: bool) -> list[WriteResult]:
        """The transaction. ``check_first`` (SQLite; PostgreSQL after a replay or for a new GPU):
        look up which batches are already written, build and insert the rows, then record the
        batches. Otherwise ``_write_many_overlapped``."""
        raw = conn.connection.driver_connection
        assert raw is not None
        if not check_first:
            return self._write_many_overlapped(conn, raw, batches)
        results, todo, heartbeats, ingested, node_seen = self._to_write(
            conn, batches, self._ingested(raw, [b.batch_id for b in batches]))
        rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
        events: list[dict[str, Any]] = []
        gpu_seen: dict[int, float] = {}
        for position, batch, node_id in todo:
            results[position] = WriteResult(written=True, rows=self._records(conn, node_id, batch.records, rows,
                                                                             events, gpu_seen))
        gpu_seen = self._due_gpu_seen(gpu_seen)
        self._insert_rows(conn, rows, events)
        if ingested and self._bookkeeping(raw, heartbeats, ingested, gpu_seen, node_seen):
            raise _Replayed  # another writer recorded one of them since the check: again, looking first
        return [r for r in results if r is not None]

    def _insert_rows(self, conn: Connection, rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]],
                     events: list[dict[str, Any]], binary: dict[tuple[str, tuple[str, ...]], bool] | None = None,
                     ) -> None:
        """The transaction's sample rows, one bulk insert per (kind, value columns), and its events.
        ``binary``: on PostgreSQL, whether each shape's rows go by binary COPY, where already known."""
        for (kind, value_cols), kind_rows in rows.items():
            self._bulk_insert(conn, SAMPLE_TABLES[kind], kind, value_cols, kind_rows,
                              None if binary is None else binary.get((kind, value_cols)))
        self._insert_ignore(conn, EVENTS, events, ["uid"])

    def _to_write(self, conn: Connection, batches: Sequence[Batch], done: set[str]) -> tuple[
            list[WriteResult | None], list[tuple[int, Batch, int]], list[tuple[Any, ...]], list[tuple[Any, ...]],
            dict[int, float]]:
        """The batches to write (the first of each id, unless ``done``) as (position, batch, node id),
        with their heartbeats, ``ingested_batches`` rows and the nodes' newest times; the results
        list holds ``written=False`` for the others and a place for each one to write."""
        results: list[WriteResult | None] = []
        todo: list[tuple[int, Batch, int]] = []
        heartbeats: list[tuple[Any, ...]] = []
        ingested: list[tuple[Any, ...]] = []
        node_seen: dict[int, float] = {}
        done = set(done)
        for batch in batches:
            if batch.batch_id in done:
                results.append(WriteResult(written=False, rows={}))
                continue
            done.add(batch.batch_id)
            node_id = self._node(conn, batch)
            node_seen[node_id] = max(node_seen.get(node_id, batch.ts), batch.ts)
            heartbeats.append((node_id, batch.ts, batch.node.get("agent_version"), self._collectors_json(batch)))
            ingested.append((batch.batch_id, node_id, batch.ts, len(batch.records)))
            todo.append((len(results), batch, node_id))
            results.append(None)
        return results, todo, heartbeats, ingested, node_seen

    def _write_many_overlapped(self, conn: Connection, raw: Any, batches: Sequence[Batch]) -> list[WriteResult]:
        """PostgreSQL: the batches are recorded first (batch ids, heartbeats, nodes' last_seen), sent
        in one pipeline that the server works through while the rows are built here (the GPUs'
        last_seen, which the rows tell, follows in the same round trip); the answer says whether
        any batch was already written (``_Replayed``: the caller rolls back and goes
        the plain way). Building rows must not run SQL meanwhile, so a GPU not yet known raises
        ``_NeedsLookup`` (once per new GPU), with the same outcome.

        A large transaction (a backlog) builds only its first ``_ROWS_BEFORE_COPY`` GPU rows before
        the COPY; the rest are built, checked and sent in chunks during it, while the server
        inserts those before, and the GPUs' last_seen follows the COPY."""
        results, todo, heartbeats, ingested, node_seen = self._to_write(conn, batches, set())
        rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
        events: list[dict[str, Any]] = []
        gpu_seen: dict[int, float] = {}
        binary: dict[tuple[str, tuple[str, ...]], bool] = {}
        deferred = _Deferred(_ROWS_BEFORE_COPY)
        if todo:
            self._no_sql = True
            self._deferred = deferred
            try:
                with raw.cursor() as recorded, raw.cursor() as cur:
                    with raw.pipeline():  # leaving it syncs and fetches every answer: one round trip
                        self._send_records(recorded, cur, heartbeats, ingested, node_seen)
                        for position, batch, node_id in todo:  # while the server records the batches
                            counts = self._records(conn, node_id, batch.records, rows, events, gpu_seen)
                            results[position] = WriteResult(written=True, rows=counts)
                        binary = {key: self._binary(key, kind_rows) for key, kind_rows in rows.items()}
                        if not deferred.groups:  # in the same round trip
                            self._send_seen(cur, "gpus", self._due_gpu_seen(gpu_seen))
                    if len(recorded.fetchall()) < len(ingested):
                        raise _Replayed
                self._deferred = None
                if deferred.groups:  # rows unlike their group's first join the table-order shape during the COPY
                    binary.pop(("gpu", self._layout["gpu"][1]), None)
                for key in dict.fromkeys(key for key, *_ in deferred.groups):
                    self._stream_gpu_rows(conn, raw, key, rows.pop(key, []), binary.pop(key, None),
                                          [g for g in deferred.groups if g[0] == key], gpu_seen, rows)
            finally:
                self._no_sql = False
                self._deferred = None
        self._insert_rows(conn, rows, events, binary)
        if deferred.groups and (due := self._due_gpu_seen(gpu_seen)):
            with raw.cursor() as cur:
                self._send_seen(cur, "gpus", due)
        return [r for r in results if r is not None]

    def _stream_gpu_rows(self, conn: Connection, raw: Any, key: tuple[str, tuple[str, ...]],
                         ready: list[tuple[Any, ...]], binary: bool | None, parts: list[Any],
                         gpu_seen: dict[int, float], rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]],
                         ) -> None:
        """One COPY of the ``ready`` rows of ``key`` and of those deferred (``parts``), built and
        checked ``_STREAM_CHUNK`` rows at a time as the COPY goes. A chunk the binary format cannot
        carry aborts it with ``_BinaryCopyRefused``, as an eager check would have."""
        if binary is None:
            binary = self._binary(key, ready)
        canonical = rows[("gpu", self._layout["gpu"][1])]
        with self._copy(raw, key, binary) as stream:
            self._copy_rows(stream, key, ready, binary)
            for _, node_id, group, getter, width in parts:
                for i in range(0, len(group), _STREAM_CHUNK):
                    chunk = list(self._gpu_row_iter(conn, node_id, group[i:i + _STREAM_CHUNK], getter, width,
                                                    gpu_seen, canonical))
                    if binary and not self._binary_safe(key, chunk):
                        raise _BinaryCopyRefused(key)
                    self._copy_rows(stream, key, chunk, binary)

    @staticmethod
    def _copy_rows(stream: Any, key: tuple[str, tuple[str, ...]], rows: list[tuple[Any, ...]], binary: bool) -> None:
        write = stream.write_row
        try:
            for row in rows:
                write(row)
        except (TypeError, ValueError, OverflowError) as exc:  # a binary dumper's, client-side: nothing stored
            if binary:
                raise _BinaryCopyRefused(key) from exc
            raise

    def _due_gpu_seen(self, gpu_seen: dict[int, float]) -> dict[int, float]:
        """The GPUs whose last_seen moved on by the resolution since this writer wrote it."""
        if not gpu_seen:
            return gpu_seen
        written = self._gpu_seen_written
        due = {g: t for g, t in gpu_seen.items() if t >= written.get(g, -math.inf) + GPU_LAST_SEEN_RESOLUTION}
        written.update(due)
        return due

    def _ingested(self, raw: Any, ids: list[str]) -> set[str]:
        """The ids among ``ids`` already written."""
        if self.dialect == "postgresql":
            with raw.cursor() as cur:
                with raw.pipeline():  # sent with the BEGIN, answered when the pipeline is left
                    cur.execute(self._sql["done"], (ids,))
                return {r[0] for r in cur.fetchall()}
        done: set[str] = set()
        for chunk in _chunks(ids):
            done.update(r[0] for r in raw.execute(self._sql["done"].format(", ".join("?" * len(chunk))), chunk))
        return done

    def _bookkeeping(self, raw: Any, heartbeats: list[tuple[Any, ...]], ingested: list[tuple[Any, ...]],
                     gpu_seen: dict[int, float], node_seen: dict[int, float]) -> bool:
        """Heartbeats, ``ingested_batches`` and last_seen of every batch in the transaction. Whether
        some batch was already in ``ingested_batches`` (PostgreSQL; the others it ran for such a
        batch change nothing: heartbeats are kept once, last_seen only moves forward)."""
        sql = self._sql
        if self.dialect == "postgresql":
            with raw.cursor() as recorded, raw.cursor() as cur:
                with raw.pipeline():  # one round trip, when it is left
                    self._send_records(recorded, cur, heartbeats, ingested, node_seen)
                    self._send_seen(cur, "gpus", gpu_seen)
                return len(recorded.fetchall()) < len(ingested)
        raw.executemany(sql["heartbeats"], heartbeats)
        raw.executemany(sql["ingested"], ingested)
        for table, seen in (("gpus", gpu_seen), ("nodes", node_seen)):
            by_ts: dict[float, list[int]] = defaultdict(list)
            for key, ts in seen.items():
                by_ts[ts].append(key)
            for ts, keys in by_ts.items():
                for chunk in _chunks(keys):
                    raw.execute(sql[table].format(", ".join("?" * len(chunk))), (ts, *chunk))
        return False

    def _send_records(self, recorded: Any, cur: Any, heartbeats: list[tuple[Any, ...]],
                      ingested: list[tuple[Any, ...]], node_seen: dict[int, float]) -> None:
        """PostgreSQL, in a pipeline: the batch ids (``recorded`` gets back those new), heartbeats and
        the nodes' last_seen, each one statement over arrays. An array holds one type: times that
        came in as int become float, versions text."""
        sql = self._sql
        node_ids, times, versions, states = zip(*heartbeats, strict=True)
        batch_ids, batch_nodes, batch_times, counts = zip(*ingested, strict=True)
        recorded.execute(sql["ingested"], (_texts(batch_ids), list(batch_nodes), _floats(batch_times), list(counts)))
        cur.execute(sql["heartbeats"], (list(node_ids), _floats(times), _texts(versions), list(states)))
        self._send_seen(cur, "nodes", node_seen)

    def _send_seen(self, cur: Any, table: str, seen: dict[int, float]) -> None:
        """PostgreSQL: move ``table``'s last_seen forward to ``seen`` (id → time), one statement."""
        if seen:
            cur.execute(self._sql[table], (list(seen), _floats(seen.values())))

    def _collectors_json(self, batch: Batch) -> str | None:
        """The heartbeat's collector states as JSON (NULL when none), serialised again only when
        they differ from the last batch's: they rarely change."""
        if not batch.collectors:
            return None
        if self._collectors_seen is None or self._collectors_seen[0] != batch.collectors:
            self._collectors_seen = (copy.deepcopy(batch.collectors), json.dumps(batch.collectors))
        return self._collectors_seen[1]

    # -- nodes and GPUs -----------------------------------------------------------------------

    def _node(self, conn: Connection, batch: Batch) -> int:
        name = batch.node["name"]
        node_id = self._node_ids.get(name)
        if node_id is not None and self._node_seen.get(name) == batch.node:
            return node_id  # the steady state: known, and described as last time
        info = {k: batch.node.get(k) for k in _NODE_FIELDS if batch.node.get(k) is not None}
        self._nodes_touched.append(name)
        node_id = ensure_node(conn, name, batch.ts, info, known=node_id)
        self._node_seen[name] = copy.deepcopy(batch.node)
        self._node_ids[name] = node_id
        return node_id

    def _gpu(self, conn: Connection, node_id: int, uuid: str, ts: float, info: dict[str, Any]) -> int:
        if self._no_sql:
            raise _NeedsLookup
        gpu_id = ensure_gpu(conn, node_id, uuid, ts, info, known=self._gpu_ids.get(uuid))
        self._gpu_ids[uuid] = gpu_id
        return gpu_id

    def _gpu_infos(self, conn: Connection, node_id: int, infos: Iterable[Any], ts: float) -> None:
        for gi in infos:
            info = {k: getattr(gi, k) for k in _GPU_FIELDS}
            signature = tuple(repr(v) for v in info.values())
            if self._gpu_info_seen.get(gi.uuid) == signature and gi.uuid in self._gpu_ids:
                continue
            self._gpu(conn, node_id, gi.uuid, ts, info)
            self._gpu_info_seen[gi.uuid] = signature

    # -- records ------------------------------------------------------------------------------

    def _records(self, conn: Connection, node_id: int, records: Sequence[Any],
                 rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]], events: list[dict[str, Any]],
                 gpu_seen: dict[int, float]) -> dict[str, int]:
        samples: dict[str, list[Any]] = defaultdict(list)
        blocks: list[SampleColumns] = []
        batch_events: list[Any] = []
        infos: list[Any] = []
        for r in records:
            if isinstance(r, SampleColumns):
                blocks.append(r)
            elif hasattr(r, "values"):
                samples[r.kind].append(r)
            elif hasattr(r, "severity"):
                batch_events.append(r)
            else:
                infos.append(r)
        if infos:
            newest = max((s.ts for g in samples.values() for s in g), default=0.0)
            self._gpu_infos(conn, node_id, infos, max([newest, *(max(b.ts) for b in blocks if b.ts)]))
        counts: dict[str, int] = {}
        for kind, group in samples.items():
            if kind not in SAMPLE_TABLES:
                raise ValueError(f"unknown sample kind {kind!r}")
            if kind == "gpu":
                n = self._gpu_rows(conn, node_id, group, gpu_seen, rows)
            else:
                built = self._other_rows(conn, node_id, kind, group)
                rows[(kind, self._layout[kind][1])].extend(built)
                n = len(built)
            counts[SAMPLE_TABLES[kind].name] = n
        for block in blocks:
            if n := self._block_rows(conn, node_id, block, gpu_seen, rows):
                name = SAMPLE_TABLES[block.kind].name
                counts[name] = counts.get(name, 0) + n
        if batch_events:
            events.extend(self._event_rows(conn, node_id, batch_events))
            counts["events"] = len(batch_events)
        return counts

    def _gpu_id(self, conn: Connection, node_id: int, key: dict[str, Any], ts: float) -> int:
        gpu_id = self._gpu_ids.get(key["gpu_uuid"])
        if gpu_id is None:
            gpu_id = self._gpu(conn, node_id, key["gpu_uuid"], ts, {"index": key.get("gpu_index")})
        return gpu_id

    def _gpu_rows(self, conn: Connection, node_id: int, group: list[Any], gpu_seen: dict[int, float],
                  rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]]) -> int:
        """GPU sample rows, the hot path. A collector fills every row's ``values`` with the same keys,
        so the first row's keys are the columns and one precompiled ``itemgetter`` takes a row's
        values in that order, in C. A row with as many keys, all of them found, has exactly those
        keys; any other row is built column by column in the table's order.

        In the overlapped path the rows past the first ``_ROWS_BEFORE_COPY`` of the transaction are
        left to be built during the COPY (``_Deferred``), while the server takes the rows before."""
        shape = tuple(group[0].values)
        if shape in self._gpu_getters:
            getter = self._gpu_getters[shape]
        else:
            usable = len(shape) > 1 and set(shape) <= self._gpu_columns  # itemgetter of one is no tuple
            getter = self._gpu_getters[shape] = itemgetter(*shape) if usable else None
        canonical = self._layout["gpu"][1]  # keys are (gpu_id, ts, node_id)
        key = ("gpu", shape if getter else canonical)
        now, deferred = group, self._deferred
        if deferred is not None:
            if len(group) > deferred.budget:
                now = group[:deferred.budget]
                deferred.groups.append((key, node_id, group[deferred.budget:], getter, len(shape)))
            deferred.budget = max(0, deferred.budget - len(group))
        if now:
            rows[key].extend(self._gpu_row_iter(conn, node_id, now, getter, len(shape), gpu_seen,
                                                rows[("gpu", canonical)]))
        return len(group)

    def _gpu_row_iter(self, conn: Connection, node_id: int, group: list[Any], getter: Callable[[Any], Any] | None,
                      width: int, gpu_seen: dict[int, float], others: list[tuple[Any, ...]],
                      ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``group``: with ``getter`` (of ``width`` keys), those of its shape, the others
        appended to ``others`` (the table's order); without, every row in the table's order."""
        canonical = self._layout["gpu"][1]
        ids, seen = self._gpu_ids, gpu_seen.get
        for s in group:
            values, ts = s.values, s.ts
            gpu_id = ids.get(s.key["gpu_uuid"])
            if gpu_id is None:
                gpu_id = self._gpu_id(conn, node_id, s.key, ts)
            if values.get("status") == "ok" and seen(gpu_id, 0.0) < ts:
                gpu_seen[gpu_id] = ts
            if getter is not None and len(values) == width:
                try:
                    row = (gpu_id, ts, node_id) + getter(values)
                except KeyError:
                    pass
                else:
                    yield row
                    continue
            row = (gpu_id, ts, node_id, *map(values.get, canonical))
            if getter is None:
                yield row
            else:
                others.append(row)

    def _block_rows(self, conn: Connection, node_id: int, block: SampleColumns, gpu_seen: dict[int, float],
                    rows: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]]) -> int:
        """Rows of a ``SampleColumns``: the key columns repeated, zipped with the value columns."""
        shape = tuple(block.columns)
        if block.kind not in self._layout or not set(shape) <= self._table_columns[block.kind]:
            raise ValueError(f"unknown sample kind or columns: {block.kind!r} {shape!r}")
        if any(len(column) != len(block.ts) for column in block.columns.values()):
            raise ValueError(f"{block.kind} columns of unequal length")
        if not block.ts:
            return 0
        fixed = {"node_id": node_id, **block.key}
        if "gpu_uuid" in block.key:
            fixed["gpu_id"] = gpu_id = self._gpu_id(conn, node_id, block.key, block.ts[0])
            if block.kind == "gpu":  # last_seen: the newest row that says the GPU was fine
                ok = [t for t, s in zip(block.ts, block.columns.get("status", ()), strict=False) if s == "ok"]
                if ok and gpu_seen.get(gpu_id, 0.0) < max(ok):
                    gpu_seen[gpu_id] = max(ok)
        keys = (block.ts if c == "ts" else repeat(fixed[c]) for c in self._layout[block.kind][0])
        rows[(block.kind, shape)].extend(zip(*keys, *block.columns.values(), strict=False))  # repeat() is endless
        return len(block.ts)

    def _other_rows(self, conn: Connection, node_id: int, kind: str, group: list[Any]) -> list[tuple[Any, ...]]:
        key_cols, value_cols = self._layout[kind]
        out = []
        for s in group:
            fixed = {"node_id": node_id, "ts": s.ts, **s.key}
            if "gpu_uuid" in s.key:
                fixed["gpu_id"] = self._gpu_id(conn, node_id, s.key, s.ts)
            out.append((*(fixed[c] for c in key_cols), *map(s.values.get, value_cols)))
        return out

    def _bulk_insert(self, conn: Connection, table: Table, kind: str, value_cols: tuple[str, ...],
                     rows: list[tuple[Any, ...]], binary: bool | None = None) -> None:
        if not rows:
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        key = (kind, value_cols)
        if self.dialect != "postgresql":
            self._sqlite_insert(raw, table, key, rows)
            return
        if binary is None:
            binary = self._binary(key, rows)
        with self._copy(raw, key, binary) as stream:
            self._copy_rows(stream, key, rows, binary)

    @contextmanager
    def _copy(self, raw: Any, key: tuple[str, tuple[str, ...]], binary: bool) -> Iterator[Any]:
        """PostgreSQL: a COPY of ``key``'s rows, binary with the column types declared or text."""
        spec = self._copy_spec(key)
        with raw.cursor() as cur, cur.copy(spec.binary_sql if binary else spec.text_sql) as stream:
            if binary:
                stream.set_types(spec.types)
            yield stream

    def _copy_spec(self, key: tuple[str, tuple[str, ...]]) -> _CopySpec:
        spec = self._copy_specs.get(key)
        if spec is None:
            table = SAMPLE_TABLES[key[0]]
            cols = [*self._layout[key[0]][0], *key[1]]
            types = [_PG_BINARY_TYPES.get(type(table.c[c].type), "text") for c in cols]
            collist = ", ".join(f'"{c}"' for c in cols)
            sql = f'COPY "{table.name}" ({collist}) FROM STDIN'
            spec = self._copy_specs[key] = _CopySpec(
                sql, sql + " (FORMAT BINARY)", types,
                [i for i, t in enumerate(types) if t == "int4"], [i for i, t in enumerate(types) if t == "bool"])
        return spec

    def _binary(self, key: tuple[str, tuple[str, ...]], rows: list[tuple[Any, ...]]) -> bool:
        """Whether these rows of ``key`` go by binary COPY: the shape was never refused, and they pass
        ``_binary_safe``."""
        return key not in self._text_copy and self._binary_safe(key, rows)

    def _sqlite_insert(self, raw: Any, table: Table, key: tuple[str, tuple[str, ...]],
                       rows: list[tuple[Any, ...]]) -> None:
        """``executemany`` of an INSERT of ``_SQLITE_ROWS_PER_INSERT`` rows at a time (about a tenth
        faster than one row a statement: SQLite steps fewer statements), the rest one by one.

        A column that is None in every row (a field this GPU does not have) or the same bool in
        every row is written as the literal NULL, 1 or 0 rather than bound: the sqlite3 module binds
        None and bool through its adapter lookup (CPython's ``need_adapt``), about ten times the
        cost of a number (six of the 45 columns of an H100's rows)."""
        constants = _sqlite_constants(rows, len(self._layout[key[0]][0]))
        statements = self._sqlite_multi.get((key, constants))
        if statements is None:
            cols = [*self._layout[key[0]][0], *key[1]]
            literal = dict(constants)
            collist = ", ".join(f'"{c}"' for c in cols)
            values = "({})".format(", ".join(literal.get(i, "?") for i in range(len(cols))))
            one = f'INSERT INTO "{table.name}" ({collist}) VALUES {values}'
            bound = tuple(i for i in range(len(cols)) if i not in literal)  # the keys at least: never constant
            limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(raw, "getlimit") else 999
            per = max(1, min(_SQLITE_ROWS_PER_INSERT, limit // len(bound)))
            if len(self._sqlite_multi) >= _SQLITE_STATEMENTS_KEPT:  # patterns of constant columns can be many
                self._sqlite_multi.clear()
            statements = self._sqlite_multi[(key, constants)] = (
                one, one + ", " + ", ".join([values] * (per - 1)), per, itemgetter(*bound) if constants else None)
        one, multi, per, pick = statements
        if pick is not None:
            rows = list(map(pick, rows))
        full = len(rows) - len(rows) % per if per > 1 else 0
        if full:
            raw.executemany(multi, [tuple(chain.from_iterable(rows[i:i + per])) for i in range(0, full, per)])
        if full < len(rows):
            raw.executemany(one, rows[full:] if full else rows)

    def _binary_safe(self, key: tuple[str, tuple[str, ...]], rows: list[tuple[Any, ...]]) -> bool:
        """Whether binary COPY stores these rows as text input would, or refuse them: every value of
        the ``integer`` columns fits 32 bits (the int4 dumper would keep the low 32 bits of a larger
        number) and every value of the ``boolean`` columns is a bool (the bool dumper would store
        the truth of "false" or 0.5). Otherwise text COPY, where the server takes or names them."""
        spec = self._copy_spec(key)
        int4, bools = spec.int4, spec.bools
        if bools and not set(map(type, _column_values(rows, bools))) <= _BOOL_TYPES:
            return False
        if not int4:
            return True
        values = list(filter(None, _column_values(rows, int4)))  # in C; drops None, and 0, which fits
        try:
            return not values or (_INT4[0] <= min(values) and max(values) <= _INT4[1])
        except TypeError:  # not numbers: text COPY, where the server names the bad value
            return False

    def _event_rows(self, conn: Connection, node_id: int, events: list[Any]) -> list[dict[str, Any]]:
        rows = []
        for e in events:
            gpu_id = None
            if e.gpu_uuid:
                gpu_id = self._gpu_id(conn, node_id, {"gpu_uuid": e.gpu_uuid, "gpu_index": e.gpu_index}, e.ts)
            rows.append({
                "uid": e.uid, "ts": e.ts, "node_id": node_id, "gpu_id": gpu_id, "gpu_index": e.gpu_index,
                "kind": e.kind, "code": None if e.code is None else str(e.code), "severity": e.severity,
                "category": e.category, "fatal": e.fatal, "message": e.message,
                "recommended_action": e.recommended_action, "source": e.source, "details": e.details or None,
            })
        return rows

    def _insert_ignore(self, conn: Connection, table: Table, rows: list[dict[str, Any]],
                       conflict: list[str]) -> None:
        if not rows:
            return
        conn.execute(upsert(self.dialect, table).on_conflict_do_nothing(index_elements=conflict), rows)
