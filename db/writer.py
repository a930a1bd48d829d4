"""The write path: one agent batch becomes one transaction, exactly once.

A batch carries its own id. The id is recorded in ``ingested_batches`` in the same transaction as
the rows, so a batch replayed from the agent's spool after a crash or an outage is recognised and
skipped: no sample is lost (the spool keeps it until the commit) and none is duplicated.

Sample rows go in through the fastest path each driver has, on rows built once per batch:
``executemany`` on SQLite, ``COPY`` on PostgreSQL. The records are duck-typed (``kind``, ``ts``,
``key``, ``values`` for samples; see ``collectors.records``) so ``db`` does not depend on the
collectors package.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from db.models import EVENTS, HEARTBEATS, SAMPLE_TABLES, Gpu, IngestedBatch, Node


@dataclass(slots=True)
class Batch:
    """What one agent flush writes: who it is from and what it saw."""

    batch_id: str
    node: dict[str, Any]  # name (required), cluster, hostname, agent_version, driver_version, …
    ts: float
    records: Sequence[Any]
    collectors: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class WriteResult:
    written: bool  # False when the batch had already been ingested
    rows: dict[str, int]


_NODE_FIELDS = ("cluster", "hostname", "agent_version", "driver_version", "cuda_driver_version",
                "cpu_count", "memory_total_bytes", "gpu_count", "labels")
_GPU_FIELDS = ("index", "model", "serial", "pci_bus_id", "memory_total_bytes", "power_limit_default_watts",
               "sm_clock_max_hz", "mem_clock_max_hz", "pcie_link_gen_max", "pcie_link_width_max",
               "mig_mode", "unsupported")


class Writer:
    """Writes batches to one store. Keeps small caches of node and GPU ids; safe to reuse across
    reconnects (the caches hold only ids, which never change)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._node_ids: dict[str, int] = {}
        self._gpu_ids: dict[str, int] = {}
        self._gpu_info_seen: dict[str, tuple[Any, ...]] = {}
        self._columns = {kind: [c.name for c in table.columns] for kind, table in SAMPLE_TABLES.items()}
        # Columns that come from the record's key or the batch rather than from its ``values``.
        self._keys = {kind: {c.name for c in table.primary_key.columns} | {"node_id"}
                      for kind, table in SAMPLE_TABLES.items()}

    # -- public -------------------------------------------------------------------------------

    def write(self, batch: Batch) -> WriteResult:
        """Write ``batch`` in one transaction; a batch already ingested is skipped."""
        return self.write_many([batch])[0]

    def write_many(self, batches: Sequence[Batch]) -> list[WriteResult]:
        """Write several batches in one transaction (a spool backlog drains fast), in order."""
        try:
            return self._write_many(batches)
        except Exception:
            # Ids cached during a rolled-back transaction may not exist: forget them all.
            self._node_ids.clear()
            self._gpu_ids.clear()
            self._gpu_info_seen.clear()
            raise

    def _write_many(self, batches: Sequence[Batch]) -> list[WriteResult]:
        results = []
        with self.engine.begin() as conn:
            ids = [b.batch_id for b in batches]
            done = set(conn.execute(
                select(IngestedBatch.batch_id).where(IngestedBatch.batch_id.in_(ids))
            ).scalars())
            for batch in batches:
                if batch.batch_id in done:
                    results.append(WriteResult(written=False, rows={}))
                    continue
                results.append(WriteResult(written=True, rows=self._write(conn, batch)))
                done.add(batch.batch_id)
        return results

    def _write(self, conn: Connection, batch: Batch) -> dict[str, int]:
        node_id = self._node(conn, batch)
        rows = self._records(conn, node_id, batch.records)
        self._insert_ignore(conn, HEARTBEATS, [{
            "node_id": node_id, "ts": batch.ts,
            "agent_version": batch.node.get("agent_version"), "collectors": batch.collectors or None,
        }], ["node_id", "ts"])
        conn.execute(insert(IngestedBatch), {
            "batch_id": batch.batch_id, "node_id": node_id, "ts": batch.ts, "records": len(batch.records),
        })
        return rows

    # -- nodes and GPUs -----------------------------------------------------------------------

    def _node(self, conn: Connection, batch: Batch) -> int:
        name = batch.node["name"]
        info = {k: batch.node.get(k) for k in _NODE_FIELDS if batch.node.get(k) is not None}
        node_id = self._node_ids.get(name)
        if node_id is None:
            node_id = conn.execute(select(Node.id).where(Node.name == name)).scalar()
        if node_id is None:
            node_id = conn.execute(
                insert(Node).returning(Node.id),
                {"name": name, "first_seen": batch.ts, "last_seen": batch.ts, **info},
            ).scalar_one()
        else:
            # A replayed old batch must not move last_seen backwards.
            conn.execute(update(Node).where(Node.id == node_id, Node.last_seen < batch.ts)
                         .values(last_seen=batch.ts))
            if info:
                conn.execute(update(Node).where(Node.id == node_id).values(**info))
        self._node_ids[name] = node_id
        return node_id

    def _gpu(self, conn: Connection, node_id: int, uuid: str, ts: float, info: dict[str, Any]) -> int:
        gpu_id = self._gpu_ids.get(uuid)
        if gpu_id is None:
            gpu_id = conn.execute(select(Gpu.id).where(Gpu.uuid == uuid)).scalar()
        if gpu_id is None:
            gpu_id = conn.execute(
                insert(Gpu).returning(Gpu.id),
                {"node_id": node_id, "uuid": uuid, "first_seen": ts, "last_seen": ts, **info},
            ).scalar_one()
        elif info:
            conn.execute(update(Gpu).where(Gpu.id == gpu_id).values(node_id=node_id, **info))
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

    def _records(self, conn: Connection, node_id: int, records: Sequence[Any]) -> dict[str, int]:
        samples: dict[str, list[Any]] = defaultdict(list)
        events: list[Any] = []
        infos: list[Any] = []
        for r in records:
            if hasattr(r, "values"):
                samples[r.kind].append(r)
            elif hasattr(r, "severity"):
                events.append(r)
            else:
                infos.append(r)
        ts_max = max((s.ts for group in samples.values() for s in group), default=None)
        if infos:
            self._gpu_infos(conn, node_id, infos, ts_max or 0.0)
        counts: dict[str, int] = {}
        gpu_last_seen: dict[int, float] = {}
        for kind, group in samples.items():
            table = SAMPLE_TABLES.get(kind)
            if table is None:
                raise ValueError(f"unknown sample kind {kind!r}")
            rows = self._rows(conn, node_id, kind, group, gpu_last_seen)
            self._bulk_insert(conn, table, self._columns[kind], rows)
            counts[table.name] = len(rows)
        for gpu_id, ts in gpu_last_seen.items():
            conn.execute(update(Gpu).where(Gpu.id == gpu_id, Gpu.last_seen < ts).values(last_seen=ts))
        if events:
            counts["events"] = self._events(conn, node_id, events)
        return counts

    def _rows(self, conn: Connection, node_id: int, kind: str, group: list[Any],
              gpu_last_seen: dict[int, float]) -> list[tuple[Any, ...]]:
        cols = self._columns[kind]
        keys = self._keys[kind]
        rows = []
        for s in group:
            values = s.values
            key = s.key
            fixed = {"node_id": node_id, "ts": s.ts}
            if "gpu_uuid" in key:
                gpu_id = self._gpu(conn, node_id, key["gpu_uuid"], s.ts, {"index": key.get("gpu_index")}
                                   if key["gpu_uuid"] not in self._gpu_ids else {})
                fixed["gpu_id"] = gpu_id
                if kind == "gpu" and gpu_last_seen.get(gpu_id, 0.0) < s.ts and values.get("status") == "ok":
                    gpu_last_seen[gpu_id] = s.ts
            for name in ("interface", "device", "path", "pid"):
                if name in key:
                    fixed[name] = key[name]
            rows.append(tuple(fixed[c] if c in keys else values.get(c) for c in cols))
        return rows

    def _bulk_insert(self, conn: Connection, table: Table, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            raw = conn.connection.driver_connection
            assert raw is not None
            collist = ", ".join(f'"{c}"' for c in cols)
            with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({collist}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
            return
        placeholders = ", ".join("?" for _ in cols)
        collist = ", ".join(f'"{c}"' for c in cols)
        conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({collist}) VALUES ({placeholders})', rows)

    def _events(self, conn: Connection, node_id: int, events: list[Any]) -> int:
        rows = []
        for e in events:
            gpu_id = self._gpu_ids.get(e.gpu_uuid) if e.gpu_uuid else None
            if e.gpu_uuid and gpu_id is None:
                gpu_id = self._gpu(conn, node_id, e.gpu_uuid, e.ts, {"index": e.gpu_index})
            rows.append({
                "uid": e.uid, "ts": e.ts, "node_id": node_id, "gpu_id": gpu_id, "gpu_index": e.gpu_index,
                "kind": e.kind, "code": None if e.code is None else str(e.code), "severity": e.severity,
                "category": e.category, "fatal": e.fatal, "message": e.message,
                "recommended_action": e.recommended_action, "source": e.source, "details": e.details or None,
            })
        self._insert_ignore(conn, EVENTS, rows, ["uid"])
        return len(rows)

    def _insert_ignore(self, conn: Connection, table: Table, rows: list[dict[str, Any]],
                       conflict: list[str]) -> None:
        if not rows:
            return
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=conflict), rows)
