"""The agent's on-disk spool: atomic files, order, cap, and survival of half-written files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.spool import Spool, SpoolError


def test_batches_come_back_in_order_and_go_when_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append(f"b{i}", {"i": i})
    entries = spool.pending()
    assert [e.batch_id for e in entries] == [f"b{i}" for i in range(5)]
    assert spool.load(entries[2]) == {"i": 2}
    spool.remove(entries[0])
    assert [e.batch_id for e in spool.pending()][0] == "b1"


def test_sequence_continues_after_restart(tmp_path: Path) -> None:
    Spool(tmp_path).append("old", {})
    spool = Spool(tmp_path)
    spool.append("new", {})
    assert [e.batch_id for e in spool.pending()] == ["old", "new"]


def test_half_written_files_are_discarded_and_bad_ones_set_aside(tmp_path: Path) -> None:
    (tmp_path / "000000000007-x.batch.tmp").write_text('{"trunc')
    spool = Spool(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    entry = spool.append("b", {"ok": True})
    entry.path.write_text("{not json")
    assert spool.load(entry) is None
    assert spool.pending() == []
    assert list(tmp_path.glob("*.bad"))


def test_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2000)
    for i in range(10):
        spool.append(f"b{i}", {"pad": "x" * 400, "i": i})
    left = spool.pending()
    assert spool.dropped > 0
    assert left[-1].batch_id == "b9"
    assert spool.size_bytes() <= 2000
    assert json.loads(left[-1].path.read_text())["i"] == 9


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="cannot create spool folder"):
        Spool(blocker / "spool")


def test_size_is_known_after_restart_and_shrinks_on_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(f"b{i}", {"pad": "x" * 100})
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.batch.json"))
    restarted = Spool(tmp_path, max_bytes=on_disk)
    assert restarted.size_bytes() == on_disk
    restarted.remove(restarted.pending()[0])
    assert restarted.size_bytes() == sum(p.stat().st_size for p in tmp_path.glob("*.batch.json"))
    restarted.append("b3", {"pad": "x" * 100})  # still within the cap: nothing dropped
    assert restarted.dropped == 0 and len(restarted.pending()) == 3
