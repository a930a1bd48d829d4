"""Agent CPU per collection cycle, side by side with prometheus-node-exporter on the same host.

node_exporter serves the host collectors gpufleet also has (cpu, meminfo, loadavg, netdev,
diskstats, filesystem); it is scraped N times and its process CPU time (all threads, user +
system) is divided by N. The gpufleet agent runs in its own process with the fake NVML (8 GPUs),
host, network and storage collectors and ``/metrics`` on a free port; the benchmark drives N
cycles of one collection (``Agent.collect()``, what runs every interval) plus one ``/metrics``
scrape and divides the agent process's CPU time the same way. The kinds of work are measured in
rounds that alternate between the processes, so drift on a shared machine hits all alike. Also
measured: the same cycle with NVML answered from a recorded table (what the fake NVML itself
costs, which real NVML, a C library, would not), the spool + SQLite store write per cycle, idle
CPU, and resident memory.

``--write`` replaces the ``agent_cost`` section of docs/PERFORMANCE.md; ``--profile`` prints the
top functions of the agent cycle by cumulative time (cProfile).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NODE_EXPORTER = "prometheus-node-exporter"
NE_COLLECTORS = ["cpu", "meminfo", "loadavg", "netdev", "diskstats", "filesystem"]
# What Prometheus 2.x sends on a scrape, so both exporters pick their format and compression as
# they would in production.
PROM_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- measuring a process from outside -------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time of the whole process (all threads, live and exited), in seconds.

    Read from the process's CPU-time clock (``clock_gettime`` on the clock id Linux derives from
    the pid, nanosecond resolution), else from utime + stime in /proc/PID/stat (clock ticks)."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def scrape(url: str) -> bytes:
    req = urllib.request.Request(url, headers=PROM_HEADERS)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
        body: bytes = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(body)
        return body


def scrape_raw(url: str) -> int:
    req = urllib.request.Request(url, headers=PROM_HEADERS)
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
        return len(resp.read())


def series(body: bytes) -> int:
    return sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before serving {url}")
        try:
            scrape(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer on {url} after {timeout:.0f} s") from None
            time.sleep(0.05)


def _version(text: str) -> str:
    match = re.search(r"version (\S+)", text)
    return match.group(1) if match else "?"


# -- node_exporter --------------------------------------------------------------------------------

def start_node_exporter() -> dict[str, Any]:
    """node_exporter with the host collectors gpufleet also has, on a free loopback port."""
    binary = shutil.which(NODE_EXPORTER) or shutil.which("node_exporter")
    if binary is None:
        raise FileNotFoundError(f"{NODE_EXPORTER} is not installed (Debian package prometheus-node-exporter)")
    from perfdoc import free_port

    port = free_port()
    cmd = [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
           *[f"--collector.{c}" for c in NE_COLLECTORS]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url, proc)
    except Exception:
        proc.terminate()
        proc.wait(timeout=5)
        raise
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    body = scrape(url)
    mountpoints = sorted({line.split('mountpoint="', 1)[1].split('"', 1)[0]
                          for line in body.decode().splitlines()
                          if line.startswith("node_filesystem_size_bytes{")})
    return {"proc": proc, "pid": proc.pid, "url": url, "version": _version(version.stdout or version.stderr),
            "mountpoints": mountpoints}


def exposition(url: str) -> dict[str, Any]:
    body = scrape(url)
    return {"series": series(body), "bytes": len(body), "wire_bytes": scrape_raw(url)}


# -- the agent process ----------------------------------------------------------------------------

class Child:
    """The agent under test, in its own process, driven line by line over a pipe."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = self.call("hello")
        self.port = int(hello["port"])
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the agent process exited ({self.proc.wait()}) during {command!r}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"agent process: {reply['error']}")
        return reply

    def close(self) -> None:
        try:
            self.call("quit")
        except Exception:  # noqa: S110 - best effort; it is killed below anyway
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def per_unit(pid: int, n: int, action: Callable[[], object]) -> float:
    """CPU seconds process ``pid`` spends per ``action()``, over ``n`` of them."""
    before = cpu_seconds(pid)
    for _ in range(n):
        action()
    return (cpu_seconds(pid) - before) / n


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    time.sleep(seconds)
    return {k: (cpu_seconds(p) - before[k]) / seconds for k, p in pids.items()}


# -- inside the agent process ---------------------------------------------------------------------

def _freeze(value: Any) -> Any:
    """A table key for an NVML argument: itself when hashable, else its items (lists) or its id."""
    try:
        hash(value)
    except TypeError:
        if isinstance(value, list | tuple):
            return tuple(_freeze(v) for v in value)
        return ("@id", id(value))
    return value


class RecordedNVML:
    """NVML answered from a table recorded from the fake: the NVML collector's code runs unchanged,
    but each NVML call costs a dict lookup, and the event wait blocks like the C library's does.
    The difference from a run on the fake is what the fake's Python simulation costs."""

    _PASS = frozenset({"nvmlInit", "nvmlShutdown", "nvmlEventSetCreate", "nvmlEventSetFree",
                       "nvmlDeviceRegisterEvents"})

    def __init__(self, fake: Any) -> None:
        self._fake = fake
        self._table: dict[Any, tuple[bool, Any]] = {}
        self.recording = True
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fake, name)
        if not name.startswith("nvml") or not callable(attr) or name in self._PASS:
            return attr
        if name.startswith("nvmlEventSetWait"):
            timeout_error = self._fake.NVMLError_Timeout

            def wait(_event_set: Any, timeoutms: int) -> Any:
                time.sleep(timeoutms / 1000)  # no XIDs on a healthy node: NVML times out
                raise timeout_error()

            return wait
        table = self._table

        def call(*args: Any) -> Any:
            key = (name, _freeze(args))
            if self.recording:
                try:
                    result = attr(*args)
                except Exception as exc:
                    table[key] = (False, exc)
                    raise
                table[key] = (True, result)
                return result
            self.calls += 1
            ok, value = table[key]
            if ok:
                return value
            raise value.with_traceback(None)  # a fresh traceback each time, not an ever longer one

        call.__name__ = name
        self.__dict__[name] = call
        return call


class IntervalClock:
    """The fake NVML's clock here: real time plus one agent interval per collection. The benchmark
    runs cycles back to back (dozens within one 1/16 s tick of the fake), where a production agent
    collects once per interval, so every collection must see a new simulated tick, as in
    production; otherwise what the fake works out once per tick would be shared across cycles."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.offset = 0.0
        self.moved: Callable[[], None] = lambda: None  # the fake's clock_moved, so its event wait need not poll

    def __call__(self) -> float:
        return time.time() + self.offset

    def tick(self) -> None:
        self.offset += self.interval
        self.moved()


def child_main(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from agent.config import AgentConfig
    from agent.daemon import build_agent, serve_metrics
    from agent.exporter import make_registry, render_text
    from collectors.fake_nvml import FakeNVML, load_scenario
    from collectors.host import HostCollector
    from collectors.network import NetworkCollector
    from collectors.nvml import NvmlCollector
    from collectors.storage import StorageCollector

    clock = IntervalClock(10.0)
    fake = FakeNVML(load_scenario(args.scenario), node_name="bench-node", gpu_count=args.gpus, clock=clock,
                    clock_notifies=True)
    clock.moved = fake.clock_moved
    nvml: Any = RecordedNVML(fake) if args.nvml == "recorded" else fake
    paths = [p for p in args.fs_paths.split(",") if p] or ["/"]
    cfg = AgentConfig(node_name="bench-node", interval=10.0, spool_dir=os.path.join(args.workdir, "spool"),
                      db_url=f"sqlite:///{os.path.join(args.workdir, 'store.db')}",
                      metrics_addr=f"127.0.0.1:{args.port}", kernel_log=None, filesystem_paths=paths,
                      interfaces_exclude=[])
    gpu = NvmlCollector(nvml)
    if not gpu.check():
        print(json.dumps({"error": "the NVML collector found no GPU"}), flush=True)
        return 1
    collectors = [gpu, HostCollector(), NetworkCollector(exclude=tuple(cfg.interfaces_exclude)),
                  StorageCollector(paths=tuple(cfg.filesystem_paths))]
    agent = build_agent(cfg, collectors=collectors)
    server = serve_metrics(agent, cfg.metrics_addr or "")
    if isinstance(nvml, RecordedNVML):
        for _ in range(3):
            agent.collect()
        nvml.recording = False
    nvml_collects = 0
    registry = make_registry(agent, agent.node["name"])

    def reply(**kw: Any) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "hello":
                reply(port=server.server_port)
            elif cmd == "ping":
                reply(ok=True)
            elif cmd == "nvml":
                for _ in range(int(arg or 1)):
                    clock.tick()
                    gpu.collect()
                    nvml_collects += 1
                reply(ok=True)
            elif cmd == "collect":
                for _ in range(int(arg or 1)):
                    clock.tick()
                    agent.collect()
                    nvml_collects += 1
                reply(ok=True)
            elif cmd == "store":
                assert agent.store is not None
                for _ in range(int(arg or 1)):
                    clock.tick()
                    agent.cycle()
                    agent.store.flush()
                reply(ok=True, written=agent.store.written_batches, failures=agent.store.failures,
                      last_error=agent.store.last_error)
            elif cmd == "render":  # a collection, then the page its new snapshot needs (as a scrape would)
                for _ in range(int(arg or 1)):
                    clock.tick()
                    agent.collect()
                    render_text(registry)
                reply(ok=True)
            elif cmd == "profile":
                reply(text=_profile(agent, int(arg or 50), clock.tick))
            elif cmd == "stats":
                calls = nvml.calls if isinstance(nvml, RecordedNVML) else None
                per = calls / nvml_collects if calls is not None and nvml_collects else None
                reply(nvml_calls_per_collect=per,
                      records=len(agent.snapshot.samples), threads=len(os.listdir("/proc/self/task")),
                      cycle_seconds=agent.snapshot.cycle_seconds)
            elif cmd == "quit":
                reply(ok=True)
                break
            else:
                reply(error=f"unknown command {cmd!r}")
        except Exception as exc:
            reply(error=f"{type(exc).__name__}: {exc}")
    server.shutdown()
    agent.shutdown()
    return 0


def _profile(agent: Any, n: int, tick: Callable[[], None]) -> str:
    """cProfile over n × (collection + rendering /metrics as the agent's server renders it for the
    first scrape of a new collection: ``render_text`` over the agent's registry, which writes the
    text format straight from the snapshot), top 10 by cumulative and by own time, plus the share
    spent inside the fake NVML's own modules."""
    import cProfile
    import io
    import pstats

    from agent.exporter import make_registry, render_text

    registry = make_registry(agent, agent.node["name"])
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        tick()
        agent.collect()
        render_text(registry)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"{n} × (Agent.collect() + render_text(registry), what /metrics serves)\n")
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(10)
    stats.sort_stats("tottime").print_stats(10)
    fake_files = ("collectors/fake_nvml.py", "collectors/scenarios.py", "collectors/gpu_models.py")
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    fake = sum(v[2] for (file, _l, _f), v in raw.items() if file.endswith(fake_files))
    buf.write(f"\ntottime inside the fake NVML's modules: {fake:.3f} s of {total:.3f} s profiled "
              f"({fake / total:.0%})\n")
    return buf.getvalue()


# -- the report -----------------------------------------------------------------------------------

def ms(xs: list[float] | float | None, spread: bool = True) -> str:
    """A median in ms, with the range over the rounds."""
    if xs is None:
        return "–"
    if isinstance(xs, float):
        return f"{xs * 1e3:.2f} ms"
    mid = median(xs) * 1e3
    if not spread or len(xs) < 2:
        return f"{mid:.2f} ms"
    return f"{mid:.2f} ms ({min(xs) * 1e3:.2f}–{max(xs) * 1e3:.2f})"


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=200,
                    help="cycles and scrapes measured, per kind (default 200)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="the cycles are split into this many rounds, each measuring every kind in turn "
                         "(rotating order), so drift hits all alike; medians over rounds are reported")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--store-cycles", type=int, default=100,
                    help="cycles with spool + SQLite store write (default 100; 0 skips)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="idle window for background CPU (seconds; long enough to average the periodic work)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--scenario", default="healthy")
    ap.add_argument("--profile", action="store_true",
                    help="also print the agent cycle's top functions by cumulative time (not written)")
    ap.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    ap.add_argument("--write", action="store_true",
                    help="replace the agent_cost section of docs/PERFORMANCE.md")
    # Inside the agent process.
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nvml", default="fake", choices=["fake", "recorded"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--fs-paths", default="/", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.quick:
        args.cycles, args.rounds, args.warmup, args.store_cycles, args.idle_seconds = 20, 2, 2, 10, 1.0
    sys.path.insert(0, str(HERE))
    from perfdoc import header, package_version, table, write_section

    rounds = max(1, args.rounds)
    per_round = max(1, args.cycles // rounds)
    store_per_round = args.store_cycles // rounds
    workdir = tempfile.mkdtemp(prefix="gpufleet-bench-agent-")
    ne: dict[str, Any] = {}
    ne_skip = ""
    children: list[Child] = []
    got: dict[str, list[float]] = {}
    try:
        try:
            ne = start_node_exporter()
        except Exception as exc:
            ne_skip = f"{type(exc).__name__}: {exc}"
            print(f"node_exporter: skipped: {ne_skip}", file=sys.stderr)
        paths = ",".join(ne.get("mountpoints") or ["/"])
        common = ["--gpus", str(args.gpus), "--scenario", args.scenario, "--fs-paths", paths]
        fake = Child([*common, "--nvml", "fake", "--workdir", os.path.join(workdir, "fake")])
        children.append(fake)
        rec = Child([*common, "--nvml", "recorded", "--workdir", os.path.join(workdir, "recorded")])
        children.append(rec)

        def cycle(child: Child) -> Callable[[], object]:
            return lambda: (child.call("collect 1"), scrape_raw(child.url))

        tasks: list[tuple[str, int, int, Callable[[], object]]] = []
        if ne:
            tasks.append(("ne", ne["pid"], per_round, lambda: scrape_raw(ne["url"])))
        tasks += [
            ("cycle", fake.pid, per_round, cycle(fake)),
            ("collect", fake.pid, per_round, lambda: fake.call("collect 1")),
            ("scrape", fake.pid, per_round, lambda: scrape_raw(fake.url)),
            ("render", fake.pid, per_round, lambda: fake.call("render 1")),
            ("nvml", fake.pid, per_round, lambda: fake.call("nvml 1")),
            ("ping", fake.pid, per_round, lambda: fake.call("ping")),
            ("rec_cycle", rec.pid, per_round, cycle(rec)),
            ("rec_collect", rec.pid, per_round, lambda: rec.call("collect 1")),
            ("rec_nvml", rec.pid, per_round, lambda: rec.call("nvml 1")),
        ]
        if store_per_round:
            fake.call("store 3")  # opens the store and migrates it
            tasks.append(("store_cycle", fake.pid, store_per_round, lambda: fake.call("store 1")))
        for _name, _pid, _n, action in tasks:
            for _ in range(args.warmup):
                action()
        for r in range(rounds):
            k = r % len(tasks)
            for name, pid, n, action in tasks[k:] + tasks[:k]:
                got.setdefault(name, []).append(per_unit(pid, n, action))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f}" for k, v in got.items())
                  + " ms", file=sys.stderr)
        pids = {"node_exporter": ne["pid"]} if ne else {}
        pids.update(agent=fake.pid, recorded=rec.pid)
        idle = idle_cpu(pids, args.idle_seconds)
        rss = {k: rss_mib(p) for k, p in pids.items()}
        expo = {"agent": exposition(fake.url)}
        if ne:
            expo["node_exporter"] = exposition(ne["url"])
        stats = rec.call("stats")
        profile = fake.call(f"profile {10 if args.quick else 100}")["text"] if args.profile else None
    finally:
        for c in children:
            c.close()
        if ne:
            ne["proc"].terminate()
            ne["proc"].wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)

    base = median(got["ne"]) if "ne" in got else None
    ne_name = f"node_exporter {ne['version']}" if ne else "node_exporter"

    def vs(x: list[float] | float) -> str:
        value = median(x) if isinstance(x, list) else x
        return f"{value / base:.2f}×" if base else "–"

    render_share = median(got["render"]) - median(got["collect"])
    cycle_m, rec_m = median(got["cycle"]), median(got["rec_cycle"])
    fake_share = median(got["nvml"]) - median(got["rec_nvml"])
    rows: list[list[object]] = []
    if base is not None:
        rows.append([ne_name, f"one scrape ({', '.join(NE_COLLECTORS)})", ms(got["ne"]), "1.00×"])
    else:
        rows.append([ne_name, "skipped: " + ne_skip, "–", "–"])
    rows += [
        ["gpufleet agent",
         f"**cycle = one collection + one scrape** ({args.gpus} fake GPUs, host, network, storage)",
         ms(got["cycle"]), vs(got["cycle"])],
        ["", "… collection alone (`Agent.collect()`)", ms(got["collect"]), vs(got["collect"])],
        ["", "… … of which the NVML collector (`NvmlCollector.collect()`)", ms(got["nvml"]), vs(got["nvml"])],
        ["", "… … of which the fake NVML's own Python (NVML collector on the fake − on the recorded table)",
         ms(fake_share), vs(fake_share)],
        ["", "… /metrics scrape alone (page already rendered)", ms(got["scrape"]), vs(got["scrape"])],
        ["", "… rendering the page for a new collection (`render_text` after a collection, less the "
             "collection alone: what the first scrape after a collection adds)", ms(render_share), vs(render_share)],
        ["gpufleet agent, NVML from a recorded table",
         "cycle = one collection + one scrape (real GPUs, before the driver's own time)",
         ms(got["rec_cycle"]), vs(got["rec_cycle"])],
        ["", "… collection alone", ms(got["rec_collect"]), vs(got["rec_collect"])],
        ["", "… … of which the NVML collector", ms(got["rec_nvml"]), vs(got["rec_nvml"])],
    ]
    store_extra = None
    if "store_cycle" in got:
        store_extra = median(got["store_cycle"]) - median(got["collect"])
        rows.append(["gpufleet agent (extra)", "spool (fsync'd JSON file) + SQLite store write, per cycle",
                     ms(store_extra), vs(store_extra)])
    idle_names = {"node_exporter": ne_name, "agent": "gpufleet agent (fake NVML)",
                  "recorded": "gpufleet agent (recorded NVML)"}
    idle_rows = [[idle_names[k], f"{v * 1e3:.2f} ms/s", ms(v * 10)] for k, v in idle.items()]

    def expo_text(d: dict[str, Any]) -> str:
        return f"{d['series']} series, {d['bytes'] / 1024:.1f} KiB ({d['wire_bytes'] / 1024:.1f} KiB gzip)"

    mem_rows = [[ne_name, f"{rss['node_exporter']:.1f} MiB", expo_text(expo["node_exporter"])]] if ne else []
    mem_rows.append(["gpufleet agent (fake NVML), after the run", f"{rss['agent']:.1f} MiB",
                     expo_text(expo["agent"])])
    lines = [
        *table(["process", "work", "CPU: median (range over rounds)", "vs node_exporter scrape"], rows),
        "",
        *table(["background CPU while idle", "per second", "per 10 s interval"], idle_rows),
        "",
        *table(["resident memory (VmRSS)", "RSS", "/metrics"], mem_rows),
    ]
    verdict = []
    if base is not None:
        verdict.append(f"Target (issue): gpufleet CPU per cycle ≤ node_exporter CPU per scrape: "
                       f"{ms(cycle_m)} vs {ms(base)}, ratio {cycle_m / base:.2f} "
                       f"({'met' if cycle_m <= base else 'missed'}; with NVML from a table "
                       f"{rec_m / base:.2f}).")
    verdict.append(f"Target (issue): agent RSS < 100 MB: {rss['agent']:.1f} MiB "
                   f"({'met' if rss['agent'] * 2**20 < 100e6 else 'missed'}).")
    if stats.get("nvml_calls_per_collect"):
        verdict.append(f"NVML calls per collection ({args.gpus} GPUs): "
                       f"{stats['nvml_calls_per_collect']:.0f}.")
    verdict.append(f"The pipe command that triggers each collection costs the agent process "
                   f"{ms(got['ping'], spread=False)}; it is included in the agent rows.")
    print("\n".join(lines))
    print()
    print("\n".join("- " + v for v in verdict))
    if profile:
        print("\nagent cycle profile (collection + /metrics rendering), by cumulative time:\n")
        print(profile)
    if args.write:
        write_section("agent_cost", [
            "### Agent: CPU per collection cycle, side by side with node_exporter",
            "",
            *header([("node_exporter", ne.get("version", "not run")),
                     ("prometheus_client", package_version("prometheus-client")),
                     ("psutil", package_version("psutil"))]),
            f"- {per_round * rounds} cycles or scrapes of each kind, in {rounds} rounds that take the kinds "
            f"in turn (rotating), after {args.warmup} warm-up ones; each exporter runs in its own process, "
            "and CPU is that process's CPU-time clock (all threads, user + system, read from outside with "
            "`clock_gettime`) before and after, divided by the count",
            "- scrapes send Prometheus 2.x's `Accept` and `Accept-Encoding: gzip` headers, a new connection "
            f"each; both exporters cover the same interfaces (lo included) and filesystems ({paths}); the "
            f"agent runs the `{args.scenario}` scenario with {args.gpus} GPUs; the fake's clock moves on one "
            "agent interval (10 s) per collection, so that each collection, like each production cycle, sees "
            "a new simulated tick and shares nothing the fake works out per tick with the one before",
            "",
            *lines,
            "",
            *[f"- {v}" for v in verdict],
            "",
            "The fake NVML is Python and costs CPU that real NVML, a C library, would not. *Recorded* runs "
            "the same NVML collector code, but each NVML call returns a value recorded from the fake (a dict "
            "lookup) and the event wait blocks, as the driver's does; on real GPUs add the driver's time per "
            "call (and nvidia-ml-py's ctypes wrapper) to that row. The idle rows are CPU the agent spends "
            "between cycles (the NVML event thread's 500 ms waits and the HTTP server's 0.5 s poll). The spool + "
            "store row is work the "
            "agent's writer thread does per batch, outside the issue's definition of a cycle.",
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
