"""The one command line: ``gpufleet``. Every failure the user can fix is one line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gpufleet import __version__


class UserError(Exception):
    """Raised for anything the user can fix; printed as ``gpufleet: error: …``."""


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the store (default: $GPUFLEET_DB_URL, "
                   "else SQLite in the user's data folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpufleet", description="Monitor, benchmark and plan a GPU fleet.")
    parser.add_argument("--version", action="version", version=f"gpufleet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated fleet into a fresh SQLite store")
    demo.add_argument("--nodes", type=int, default=4)
    demo.add_argument("--gpus-per-node", type=int, default=8)
    demo.add_argument("--history-days", type=float, default=7.0)
    _add_db(demo)
    demo.add_argument("--port", type=int, default=8501)
    demo.add_argument("--no-dashboard", action="store_true")
    demo.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    demo.add_argument("--interval", type=float, default=2.0, metavar="S", help="live collection interval")
    demo.add_argument("--alerts-config", metavar="FILE", help="alerting configuration (receivers) for the "
                      "demo's controller; default: alerts are kept but delivered nowhere")

    from gpufleet import dashboardcli

    dash = sub.add_parser("dashboard", help="serve the web dashboard over a store")
    _add_db(dash)
    dash.add_argument("--port", type=int, default=8501)
    dash.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1; another one "
                      "needs sign-in or --behind-proxy)")
    dashboardcli.add_arguments(dash)

    agent = sub.add_parser("agent", help="the node agent")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    run = agent_sub.add_parser("run", help="collect telemetry into the store and serve /metrics")
    run.add_argument("--config", metavar="FILE", help="YAML settings file")
    _add_db(run)
    run.add_argument("--interval", type=float, metavar="S", help="seconds between collections (default 10)")
    run.add_argument("--simulate", metavar="SCENARIO", help="use the fake NVML with this scenario")
    run.add_argument("--node-name", metavar="N", help="node name (default: the hostname)")
    run.add_argument("--metrics-addr", metavar="H:P", help="where to serve /metrics (default 127.0.0.1:9403; "
                     "'' turns it off)")
    run.add_argument("--spool-dir", metavar="DIR", help="on-disk buffer for batches the store has not taken")
    run.add_argument("--once", action="store_true", help="collect once, print JSON, touch no store")
    run.add_argument("--cycles", type=int, metavar="N", help=argparse.SUPPRESS)

    from gpufleet import alertscli, benchcli, importcli, plancli

    benchcli.add_parsers(sub, _add_db)
    alertscli.add_parsers(sub, _add_db)
    importcli.add_parsers(sub, _add_db)
    plancli.add_parsers(sub, _add_db)

    from gpufleet import dbcli

    dbcli.add_parsers(sub, _add_db)
    return parser


# Options that take a time, which may be one back from now (``-6h``, ``gpufleet.timeargs``). argparse
# reads ``--at -6h`` as two options, so such a value is joined to its option (``--at=-6h``) first.
_TIME_OPTIONS = frozenset({"--at", "--start", "--end"})


def _join_relative_times(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for token in argv:
        if out and out[-1] in _TIME_OPTIONS and token[:1] == "-" and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_relative_times(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from db.secrets import install_log_redaction

    install_log_redaction()  # any secret read from the environment or a file is masked in every log line
    from agent.config import ConfigError
    from agent.daemon import AgentError
    from agent.spool import SpoolError
    from alerts.config import ConfigError as AlertingConfigError
    from alerts.controller import ControllerError
    from alerts.rules import RuleError
    from collectors.fake_nvml import ScenarioError
    from db.engine import StoreError

    try:
        return _dispatch(args)
    except (UserError, ConfigError, AgentError, SpoolError, ScenarioError, StoreError, AlertingConfigError,
            ControllerError, RuleError) as exc:
        print(f"gpufleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unreachable server and the like: one line, not a traceback
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            print(f"gpufleet: error: cannot reach the store: {str(exc.orig).strip().splitlines()[0]}",
                  file=sys.stderr)
            return 2
        raise


def _serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the Streamlit server as a child until it exits; SIGTERM or SIGINT here stops it too (a
    service manager or a test stopping ``gpufleet dashboard`` must not leave the server running)."""
    import signal
    import subprocess

    child = subprocess.Popen(cmd, env=env)

    def stop(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "agent":
        from agent.config import load_config
        from agent.daemon import run_agent

        cfg = load_config(args.config, overrides={
            "db_url": args.db, "interval": args.interval, "simulate": args.simulate,
            "node_name": args.node_name, "metrics_addr": args.metrics_addr, "spool_dir": args.spool_dir,
        })
        if cfg.simulate:
            from collectors.fake_nvml import load_scenario

            load_scenario(cfg.simulate)  # an unknown scenario fails here, before anything starts
        return run_agent(cfg, once=args.once, max_cycles=args.cycles)
    if args.command in ("controller", "alerts"):
        from gpufleet import alertscli

        return alertscli.run(args)
    if args.command == "bench":
        from gpufleet import benchcli

        return benchcli.run(args)
    if args.command == "import":
        from gpufleet import importcli

        return importcli.run(args)
    if args.command == "plan":
        from gpufleet import plancli

        return plancli.run(args)
    if args.command == "db":
        from gpufleet import dbcli

        return dbcli.run(args)
    if args.command == "dashboard":
        import os

        from dashboard.server import command
        from db.engine import parse_url, redact, resolve_url

        url = resolve_url(args.db)
        parse_url(url)  # a bad URL is one line here, not a traceback in the browser
        from gpufleet.dashboardcli import secrets_files

        with secrets_files(args, url) as secrets:  # sign-in and roles checked, the bind rule enforced
            print(f"gpufleet dashboard on http://{args.address}:{args.port} over {redact(url)}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "GPUFLEET_DB_URL_FILE"}  # the resolved URL replaces it
            return _serve(command(url, args.port, args.address, secrets), {**env, "GPUFLEET_DB_URL": url})
    if args.command == "demo":
        from gpufleet.demo import run_demo

        return run_demo(args)
    raise UserError(f"unknown command {args.command}")
