"""Against a real Alertmanager 0.25: alerts forwarded through its v2 API show up there (and go away when
resolved), and gpufleet's webhook body is the one Alertmanager itself sends for the same alerts and routes:
same keys and shapes at every level, same time format, same bytes."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alerts.config import parse_config
from alerts.notify import AlertmanagerNotifier, UrllibClient, build_notifiers
from alerts.outbox import deliver_due
from alerts.payload import encode_webhook, fingerprint, parse_time
from alerts.routing import route
from tests.alerts.harness import Receiver, put_alert, store
from tests.conftest import binary, free_port

pytestmark = pytest.mark.service
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
EXTERNAL = "http://gpufleet.test:9093"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start Alertmanager with a config; returns its base URL."""
    exe = binary("prometheus-alertmanager")
    procs: list[subprocess.Popen] = []

    def start(config: str) -> str:
        (tmp_path / "am.yml").write_text(config)
        port = free_port()
        log = (tmp_path / "am.log").open("w")
        procs.append(subprocess.Popen(
            [exe, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", f"--web.external-url={EXTERNAL}"],
            stdout=log, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return base
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"Alertmanager did not start: {(tmp_path / 'am.log').read_text()[-500:]}")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def am_alerts(base: str) -> list[dict]:
    with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5) as r:
        return json.loads(r.read())


def wait_for(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.time() + seconds
    while not check():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def test_alerts_forwarded_through_the_v2_api_show_up_and_resolve(sqlite_url: str, alertmanager) -> None:
    base = alertmanager("route: {receiver: none, group_wait: 1h}\nreceivers: [{name: none}]\n")
    cfg = parse_config(f"""
route: {{receiver: am, group_wait: 0s, group_interval: 1s}}
receivers: [{{name: am, type: alertmanager, url: "{base}/", firing_ttl: 4h10m}}]
""")
    engine = store(sqlite_url)
    now = time.time()
    hot = {"alertname": "gpu_temperature_high", "node": "n1", "gpu": "0", "severity": "warning"}
    lost = {"alertname": "gpu_temperature_high", "node": "n1", "gpu": "1", "severity": "warning"}
    put_alert(engine, hot, starts_at=now - 120.5, annotations={"summary": "GPU 0 at 91 C"})
    put_alert(engine, lost, starts_at=now - 60)
    assert len(route(engine, cfg, now)) == 1
    stats = deliver_due(engine, build_notifiers(cfg), "c", now)
    assert stats.delivered == 1, stats.errors
    got = {a["fingerprint"]: a for a in am_alerts(base)}
    assert set(got) == {fingerprint(hot), fingerprint(lost)}
    mine = got[fingerprint(hot)]
    assert mine["labels"] == hot and mine["annotations"] == {"summary": "GPU 0 at 91 C"}
    assert mine["status"]["state"] == "active"
    assert parse_time(mine["startsAt"]) == pytest.approx(now - 120.5, abs=0.001)
    assert parse_time(mine["endsAt"]) == pytest.approx(now + 4 * 3600 + 600, abs=60)
    put_alert(engine, lost, starts_at=now - 60, state="resolved", ends_at=time.time() - 1)
    later = now + 2
    assert len(route(engine, cfg, later)) == 1
    assert deliver_due(engine, build_notifiers(cfg), "c", later).delivered == 1
    assert {a["fingerprint"] for a in am_alerts(base)} == {fingerprint(hot)}
    engine.dispose()


def shape(value: object) -> object:
    """Keys and value types at every level (lists by their elements)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str) and TIME.fullmatch(value):
        return "time"
    return type(value).__name__


def test_gpufleet_webhook_body_is_what_alertmanager_sends(sqlite_url: str, alertmanager) -> None:
    server = Receiver().start()
    routes = """
route:
  receiver: gpu.hook
  group_by: [alertname, node]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"', 'node=~"n[0-9]+"']
      receiver: gpu.hook
"""
    base = alertmanager(routes + f"""
receivers:
  - name: gpu.hook
    webhook_configs: [{{url: "{server.url}", send_resolved: true}}]
""")
    cfg = parse_config(routes + f"""
external_url: {EXTERNAL}
receivers:
  - {{name: gpu.hook, type: webhook, url: "http://127.0.0.1:9/unused"}}
""")
    engine = store(sqlite_url)
    forward = AlertmanagerNotifier(
        parse_config(f"route: {{receiver: am}}\nreceivers: [{{name: am, type: alertmanager, url: '{base}'}}]")
        .receivers["am"], UrllibClient())
    now = time.time()
    xid = {"alertname": "gpu_xid_fatal", "node": "n1", "gpu": "0", "severity": "critical", "model": "H100 <SXM5>"}
    xid2 = {**xid, "gpu": "1", "uuid": "GPU-1&2"}
    notes = {"summary": "XID 79 <fallen off the bus> & \"reset\" needed", "runbook": "https://docs/x?a=1&b=2"}
    put_alert(engine, xid, starts_at=now - 30.123456, annotations=notes)
    put_alert(engine, xid2, starts_at=now - 20, annotations={"summary": "XID 79"})

    def exchange(at: float) -> tuple[bytes, bytes]:
        """Route in gpufleet, forward the same alerts to Alertmanager, and return (ours, theirs)."""
        seen = len(server.accepted)
        ours = route(engine, cfg, at)
        assert len(ours) == 1
        assert forward.send(ours[0]).ok
        wait_for(lambda: len(server.accepted) > seen)
        return encode_webhook(ours[0].payload), server.accepted[-1].body

    route(engine, cfg, now)
    rounds = [exchange(now + 1)]
    put_alert(engine, xid2, starts_at=now - 20, state="resolved", ends_at=time.time() - 0.5,
              annotations={"summary": "XID 79"})
    rounds.append(exchange(now + 2.5))
    put_alert(engine, xid, starts_at=now - 30.123456, state="resolved", ends_at=time.time() - 0.25, annotations=notes)
    rounds.append(exchange(now + 4))
    server.stop()
    engine.dispose()
    statuses = []
    for ours, theirs in rounds:
        mine, am = json.loads(ours), json.loads(theirs)
        assert shape(mine) == shape(am), (ours, theirs)
        assert list(mine) == list(am) and list(mine["alerts"][0]) == list(am["alerts"][0])
        statuses.append((am["status"], [a["status"] for a in am["alerts"]]))
        assert ours == theirs
    assert statuses == [("firing", ["firing", "firing"]), ("firing", ["firing", "resolved"]),
                        ("resolved", ["resolved"])]
