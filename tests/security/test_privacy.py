"""Per-process telemetry (user names, command lines) in full, pseudonymised with a keyed HMAC, or off."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from agent.config import AgentConfig, ConfigError, load_config
from agent.daemon import build_agent, build_collectors
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.procinfo import ProcessIdentity, psutil_lookup
from db.engine import make_engine

KEY = "privacy-key-5f2b9c0e71"
USERS = ("alice", "bob")


class Table:
    """A process table for the fake GPUs' invented PIDs, in order of appearance: two users, three command lines
    (each with a token in it)."""

    def __init__(self) -> None:
        self.order: dict[int, int] = {}

    def user(self, pid: int) -> str:
        return USERS[self.order.setdefault(pid, len(self.order)) % 2]

    def command(self, pid: int) -> str:
        return f"python train.py --run={self.order.setdefault(pid, len(self.order)) % 3} --wandb-key=tok-123456"

    def __call__(self, pid: int) -> tuple[str | None, list[str] | None]:
        return self.user(pid), self.command(pid).split()


table = Table()


def run_agent(tmp_path: Path, privacy: str) -> list[tuple[str | None, int]]:
    """One cycle of a real agent on the fake NVML into SQLite; the stored (name, pid) of GPU processes."""
    cfg = AgentConfig(db_url=f"sqlite:///{tmp_path / 'store.db'}", interval=0.1, node_name="priv-node",
                      metrics_addr=None, spool_dir=str(tmp_path / "spool"), process_privacy=privacy,
                      process_privacy_key=KEY if privacy == "pseudonymize" else None, kernel_log=None)
    # A fixed simulated time at which the GPUs run processes (the load curve has idle slots).
    nvml = FakeNVML(load_scenario("healthy"), node_name="priv-node", clock=lambda: 1_800_003_600.0)
    agent = build_agent(cfg, collectors=build_collectors(cfg, nvml=nvml, process_lookup=table)[:1])
    agent.run(max_cycles=1)
    engine = make_engine(cfg.db_url)
    with engine.connect() as conn:
        rows = [(r[0], r[1]) for r in conn.execute(text("SELECT name, pid FROM gpu_process_samples"))]
        counts = conn.execute(text("SELECT sum(process_count) FROM gpu_samples")).scalar_one()
    engine.dispose()
    assert counts and counts > 0  # the per-GPU count is kept in every mode
    return rows


def test_full_records_user_and_command_line(tmp_path: Path) -> None:
    rows = run_agent(tmp_path, "full")
    assert rows
    for name, pid in rows:
        assert name == f"{table.user(pid)}: {table.command(pid)}"


def test_pseudonymize_stores_keyed_tokens_only(tmp_path: Path) -> None:
    rows = run_agent(tmp_path, "pseudonymize")
    assert rows
    for name, pid in rows:
        assert name is not None
        assert not any(word in name for word in ("alice", "bob", "python", "train", "tok-123456"))
        user, _, command = name.partition(": ")
        expected = hmac.new(KEY.encode(), f"user:{table.user(pid)}".encode(), hashlib.sha256).hexdigest()[:16]
        assert user == f"user-{expected}"
        assert command.startswith("cmd-") and len(command) == 4 + 16
    # Same user, same token (countable across the fleet); two users, two tokens; three command lines, three.
    assert len({n.partition(": ")[0] for n, _ in rows if n}) == 2
    assert len({n.partition(": ")[2] for n, _ in rows if n}) == 3


def test_off_records_no_process_rows(tmp_path: Path) -> None:
    assert run_agent(tmp_path, "off") == []


def test_tokens_depend_on_the_key() -> None:
    one, same, other = ProcessIdentity("pseudonymize", b"k" * 16, table), ProcessIdentity(
        "pseudonymize", b"k" * 16, table), ProcessIdentity("pseudonymize", b"j" * 16, table)
    assert one(4) == same(4) != other(4)
    assert one(4) != one(5)
    assert ProcessIdentity("full", None, lambda pid: (None, None))(4) is None
    assert ProcessIdentity("full", None, lambda pid: ("carol", None))(4) == "carol"
    long = ProcessIdentity("full", None, lambda pid: ("dave", ["x" * 400]))(4)
    assert long is not None and len(long) == 255


def test_the_real_process_table() -> None:
    user, argv = psutil_lookup(os.getpid())
    assert user == getpass.getuser()
    assert argv and Path(argv[0]).name.startswith(Path(sys.executable).name[:6])
    assert psutil_lookup(2**22 + 12345) == (None, None)  # above pid_max: no such process


def test_configuration(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    cfg = load_config(env={"GPUFLEET_PROCESS_PRIVACY": "pseudonymize",
                           "GPUFLEET_PROCESS_PRIVACY_KEY_FILE": str(key_file)})
    assert (cfg.process_privacy, cfg.process_privacy_key) == ("pseudonymize", KEY)
    assert KEY not in repr(cfg)
    conf = tmp_path / "agent.yaml"
    conf.write_text(f"process_privacy: pseudonymize\nprocess_privacy_key_file: {key_file}\n")
    assert load_config(str(conf), env={}).process_privacy_key == KEY
    with pytest.raises(ConfigError, match="needs process_privacy_key"):
        load_config(env={"GPUFLEET_PROCESS_PRIVACY": "pseudonymize"})
    with pytest.raises(ConfigError, match="not one of full, pseudonymize, off"):
        load_config(env={"GPUFLEET_PROCESS_PRIVACY": "anonymous"})
    assert load_config(env={}).process_privacy == "full"
