"""The command line: help everywhere, --once JSON, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpufleet.cli import build_parser


def gpufleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpufleet", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("gpufleet: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.mark.parametrize("argv", [[], ["agent"], ["agent", "run"], ["db"], ["db", "upgrade"], ["demo"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: gpufleet" in capsys.readouterr().out


def test_once_prints_one_collection_as_json(tmp_path: Path) -> None:
    result = gpufleet("agent", "run", "--once", "--simulate", "healthy", "--spool-dir", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    kinds = {r.get("kind") or r["type"] for r in doc["records"]}
    assert {"gpu", "gpu_info", "host", "interface", "disk", "filesystem"} <= kinds
    gpu = next(r for r in doc["records"] if r.get("kind") == "gpu")
    assert 0 <= gpu["values"]["utilization_gpu_ratio"] <= 1
    assert gpu["values"]["memory_total_bytes"] > 10**9  # bytes, not MiB


def test_unreadable_config(tmp_path: Path) -> None:
    line = one_error_line(gpufleet("agent", "run", "--once", "--config", str(tmp_path / "nope.yaml")))
    assert "cannot read config file" in line


def test_malformed_config(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("interval: [oops\n")
    assert "not valid YAML" in one_error_line(gpufleet("agent", "run", "--once", "--config", str(cfg)))
    cfg.write_text("intervall: 5\n")
    assert "unknown setting 'intervall'" in one_error_line(gpufleet("agent", "run", "--config", str(cfg)))
    cfg.write_text("interval: soon\n")
    assert "interval" in one_error_line(gpufleet("agent", "run", "--config", str(cfg)))


def test_unknown_scenario() -> None:
    line = one_error_line(gpufleet("agent", "run", "--simulate", "no-such-scenario"))
    assert "no-such-scenario" in line and "healthy" in line  # says what would have worked


def test_bad_metrics_address() -> None:
    assert "HOST:PORT" in one_error_line(gpufleet("agent", "run", "--metrics-addr", "localhost"))


def test_bad_and_unreachable_store_urls(tmp_path: Path) -> None:
    assert "invalid database URL" in one_error_line(gpufleet("db", "info", "--db", "not a url"))
    line = one_error_line(gpufleet("db", "info", "--db", "postgresql://nobody@127.0.0.1:1/none"))
    assert "cannot reach the store" in line
    line = one_error_line(gpufleet("agent", "run", "--db", "mysql://u@h/d", "--spool-dir", str(tmp_path)))
    assert "mysql" in line


def test_db_upgrade_and_info(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    up = gpufleet("db", "upgrade", "--db", url)
    assert up.returncode == 0, up.stderr
    info = gpufleet("db", "info", "--db", url)
    assert info.returncode == 0 and "gpu_samples" in info.stdout


def test_db_prune_keeps_recent_rows(tmp_path: Path) -> None:
    import time
    import uuid

    from collectors.records import Sample
    from db.engine import make_engine, upgrade
    from db.writer import Batch, Writer

    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = time.time()
    for age_days in (30, 1):
        ts = now - age_days * 86400
        Writer(engine).write(Batch(uuid.uuid4().hex, {"name": "n"}, ts, [Sample("host", ts, {}, {"load1": 1.0})]))
    engine.dispose()
    out = gpufleet("db", "prune", "--db", url, "--raw-days", "7")
    assert out.returncode == 0, out.stderr
    assert "host_samples" in out.stdout
    engine = make_engine(url)
    with engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("select count(*) from host_samples")).scalar() == 1
    engine.dispose()


def test_alerts_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert "invalid URL" in one_error_line(gpufleet("alerts", "test", "not a url"))
    down = gpufleet("alerts", "test", "http://127.0.0.1:1/hook", "--timeout", "2")
    assert down.returncode == 1 and "delivery failed" in down.stdout
    made = gpufleet("alerts", "silence", "--db", url, "node=node-03", "alertname=~gpu_xid.*", "--duration", "1h",
                    "--comment", "swapping the GPU")
    assert made.returncode == 0, made.stderr
    assert "silence 1 created" in made.stdout
    listed = gpufleet("alerts", "silence", "--db", url, "--list")
    assert "node-03" in listed.stdout and "swapping the GPU" in listed.stdout
    assert gpufleet("alerts", "silence", "--db", url, "--expire", "1").returncode == 0
    assert "--duration" in one_error_line(gpufleet("alerts", "silence", "--db", url, "node=x", "--duration", "soon"))
    assert "no alerts" in gpufleet("alerts", "list", "--db", url).stdout
    once = gpufleet("controller", "run", "--once", "--db", url)
    assert once.returncode == 0 and "leader=True" in once.stdout, once.stderr


def test_controller_config_errors_name_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "alerting.yaml"
    cfg.write_text("route:\n  receiver: ops\nreceivers:\n  - name: ops\n    type: pagerduty\n")
    line = one_error_line(gpufleet("controller", "run", "--once", "--config", str(cfg),
                                   "--db", f"sqlite:///{tmp_path / 'c.db'}"))
    assert "alerting.yaml" in line and "line 5" in line and "pagerduty" in line
    cfg.write_text("route: {receiver: ops}\nreceivers: [{name: ops}]\ncontroller: {rules: /nope.yaml}\n")
    line = one_error_line(gpufleet("controller", "run", "--once", "--config", str(cfg),
                                   "--db", f"sqlite:///{tmp_path / 'c.db'}"))
    assert "/nope.yaml" in line
