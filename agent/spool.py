"""The agent's on-disk buffer: every batch is written here before the store sees it.

Each batch is one JSON file, written to a temporary name, fsync'd and renamed, so a file is either
complete or absent even if the agent is killed mid-write. Files are named by a sequence number and
replayed oldest first; a file is removed only after the store has committed its batch (the store
records batch ids, so a batch replayed after a crash between commit and removal is skipped).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUFFIX = ".batch.json"


@dataclass(slots=True)
class SpoolEntry:
    path: Path
    seq: int
    batch_id: str


class SpoolError(Exception):
    pass


class Spool:
    """A folder of pending batches with a size cap (oldest dropped first, and counted)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 1 << 30) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool folder {self.dir}: {exc.strerror}") from exc
        if not os.access(self.dir, os.W_OK):
            raise SpoolError(f"spool folder {self.dir} is not writable")
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        for stale in self.dir.glob("*.tmp"):  # half-written by a killed agent: never renamed, never acked
            stale.unlink(missing_ok=True)
        entries = self.pending()
        self._seq = entries[-1].seq + 1 if entries else 0
        # Bytes of each pending file, kept in memory so that the cap costs nothing per append
        # (an outage can leave thousands of files; listing them every cycle would not do).
        self._sizes: dict[Path, int] = {}
        for e in entries:
            try:
                self._sizes[e.path] = e.path.stat().st_size
            except FileNotFoundError:
                pass

    def append(self, batch_id: str, payload: dict[str, Any]) -> SpoolEntry:
        data = json.dumps(payload, separators=(",", ":"), default=_jsonable).encode()
        with self._lock:
            seq = self._seq
            self._seq += 1
            final = self.dir / f"{seq:012d}-{batch_id}{SUFFIX}"
            tmp = final.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(self.dir)
            self._sizes[final] = len(data)
        self._enforce_cap()
        return SpoolEntry(final, seq, batch_id)

    def pending(self) -> list[SpoolEntry]:
        out = []
        for path in self.dir.glob(f"*{SUFFIX}"):
            stem = path.name[: -len(SUFFIX)]
            seq_text, _, batch_id = stem.partition("-")
            if seq_text.isdigit() and batch_id:
                out.append(SpoolEntry(path, int(seq_text), batch_id))
        out.sort(key=lambda e: e.seq)
        return out

    def load(self, entry: SpoolEntry) -> dict[str, Any] | None:
        """The batch's payload; ``None`` (and the file set aside as ``.bad``) if it is unreadable."""
        try:
            payload: dict[str, Any] = json.loads(entry.path.read_bytes())
            return payload
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("spool file %s is unreadable (%s); set aside as .bad", entry.path.name, exc)
            entry.path.rename(entry.path.with_suffix(".bad"))
            with self._lock:
                self._sizes.pop(entry.path, None)
            return None

    def remove(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)
        with self._lock:
            self._sizes.pop(entry.path, None)

    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def _enforce_cap(self) -> None:
        if self.size_bytes() <= self.max_bytes:
            return
        entries = self.pending()
        total = self.size_bytes()
        for entry in entries[:-1]:  # the newest batch always stays
            if total <= self.max_bytes:
                break
            log.error("spool over %d bytes: dropping oldest batch %s", self.max_bytes, entry.batch_id)
            total -= self._sizes.get(entry.path, 0)
            self.remove(entry)
            self.dropped += 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot store {type(value).__name__} in the spool")
