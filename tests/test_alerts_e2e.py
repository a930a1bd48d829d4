"""End to end: an agent on the XID 79 scenario, a controller, a real HTTP receiver.

The GPU falls off the bus: one firing webhook carrying node, GPU, XID, category and the catalogue's
recommended action. The GPU comes back (the node is repaired and its agent restarted): one resolved
webhook. The receiver is down for a while in between: delivery is delayed, nothing is lost.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import alerts
from agent.config import AgentConfig
from agent.daemon import build_agent
from alerts.config import parse_config
from alerts.controller import Controller
from alerts.notify import verify
from alerts.rules import parse_rules
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.nvml import NvmlCollector
from collectors.xid import classify
from db.engine import make_engine, upgrade
from tests.conftest import free_port

SECRET = "s3cret-for-tests"


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.up = True
        received = self.bodies
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if not outer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                assert verify(raw, self.headers.get("X-Gpufleet-Signature"), SECRET)
                received.append(json.loads(raw))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def xid79(self, status: str) -> list[dict]:
        return [a for b in self.bodies for a in b["alerts"]
                if a["labels"].get("xid") == "79" and a["labels"]["alertname"] == "gpu_xid_fatal"
                and a["status"] == status]


def start_agent(url: str, tmp_path: Path, scenario: str):
    cfg = AgentConfig(db_url=url, interval=0.5, node_name="gpu-node-7", metrics_addr=None,
                      spool_dir=str(tmp_path / "spool"))
    agent = build_agent(cfg, collectors=[NvmlCollector(FakeNVML(load_scenario(scenario), node_name="gpu-node-7"))])
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_fallen_off_the_bus_pages_once_and_resolves_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    receiver = Receiver()
    config = parse_config(f"""
route:
  receiver: ops
  group_by: [alertname, node, gpu]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: ops
    type: webhook
    url: http://127.0.0.1:{receiver.port}/hook
    secret: {SECRET}
delivery:
  backoff_base: 0.2s
  backoff_max: 1s
controller:
  evaluation_interval: 0.5s
  lease_ttl: 5s
""", "test.yaml")
    # The shipped pack keeps a fatal XID firing for at least 30 minutes; the test cannot wait that long.
    pack = (Path(alerts.__file__).parent / "default_rules.yaml").read_text()
    assert "resolve_after: 30m" in pack
    rules = parse_rules(pack.replace("resolve_after: 30m", "resolve_after: 3s", 1), "default_rules.yaml")
    controller = Controller(engine, config, rules=rules)
    ctl_thread = threading.Thread(target=controller.run, daemon=True)
    ctl_thread.start()
    agent, thread = start_agent(url, tmp_path, "xid79")
    try:
        assert wait_for(lambda: receiver.xid79("firing"), timeout=60), receiver.bodies
        firing = receiver.xid79("firing")[0]
        info = classify(79)
        assert firing["labels"]["node"] == "gpu-node-7"
        assert firing["labels"]["gpu"] == str(load_scenario("xid79").faults[0].gpu)
        assert firing["labels"]["category"] == info.category
        assert info.recommended_action in json.dumps(firing["annotations"])
        # The receiver goes down; meanwhile the node is repaired and its agent restarted.
        receiver.up = False
        agent.stop()
        thread.join(timeout=30)
        agent, thread = start_agent(url, tmp_path, "healthy")
        time.sleep(5)
        assert receiver.xid79("resolved") == []
        receiver.up = True
        assert wait_for(lambda: receiver.xid79("resolved"), timeout=60), receiver.bodies
        time.sleep(3)  # anything sent twice would arrive now
    finally:
        agent.stop()
        thread.join(timeout=30)
        controller.stop()
        ctl_thread.join(timeout=30)
        receiver.server.shutdown()
    assert len(receiver.xid79("firing")) == 1
    assert len(receiver.xid79("resolved")) == 1
    # The lost GPU is the XID's symptom: inhibited by default, so the operator is paged once.
    symptoms = ("gpu_lost", "gpu_missing")
    assert not [a for b in receiver.bodies for a in b["alerts"] if a["labels"]["alertname"] in symptoms]
    assert receiver.bodies[-1]["version"] == "4"
    engine.dispose()
