"""``gpufleet controller run`` and ``gpufleet alerts test | list | silence``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from db.engine import ensure_schema, make_engine

log = logging.getLogger(__name__)


def controller_tasks() -> list[Any]:
    """Periodic work of other packages the controller runs as leader: the benchmark straggler
    detector (``bench_slow`` events after two consecutive slow runs)."""
    from alerts.controller import Task
    from planner.stragglers import refresh

    return [Task("bench_stragglers", 600.0, lambda engine, now: refresh(engine, now))]


def add_parsers(sub: Any, add_db: Any) -> None:
    ctl = sub.add_parser("controller", help="the one-per-fleet alerting and maintenance service")
    ctl_sub = ctl.add_subparsers(dest="controller_command", required=True, metavar="ACTION")
    run = ctl_sub.add_parser("run", help="evaluate rules, keep alert and health state, deliver webhooks")
    run.add_argument("--config", metavar="FILE", help="alerting configuration (routes, receivers, controller)")
    add_db(run)
    run.add_argument("--once", action="store_true", help="run one cycle, print what it did, exit")
    run.add_argument("--cycles", type=int, help=argparse.SUPPRESS)

    alerts = sub.add_parser("alerts", help="alerts, silences and receivers")
    a_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    test = a_sub.add_parser("test", help="send a sample alert to a webhook URL and print the answer")
    test.add_argument("url")
    test.add_argument("--secret-env", metavar="NAME", help="sign the body with the secret in this variable")
    test.add_argument("--timeout", type=float, default=10.0)
    lst = a_sub.add_parser("list", help="pending and firing alerts")
    add_db(lst)
    lst.add_argument("--all", action="store_true", help="include resolved alerts")
    sil = a_sub.add_parser("silence", help="silence alerts matching labels, list silences, or expire one")
    add_db(sil)
    sil.add_argument("matchers", nargs="*", metavar="MATCHER", help="label=value, label!=value, label=~regex")
    sil.add_argument("--duration", default="2h", help="how long (e.g. 30m, 2h, 1d; default 2h)")
    sil.add_argument("--comment", default=None)
    sil.add_argument("--author", default=None)
    sil.add_argument("--list", action="store_true", help="list silences instead")
    sil.add_argument("--expire", type=int, metavar="ID", help="expire silence ID now")


def _engine(args: argparse.Namespace) -> Any:
    engine = make_engine(args.db)
    ensure_schema(engine)
    return engine


def run(args: argparse.Namespace) -> int:
    if args.command == "controller":
        return _controller(args)
    if args.alerts_command == "test":
        return _test(args)
    if args.alerts_command == "list":
        return _list(args)
    return _silence(args)


def _controller(args: argparse.Namespace) -> int:
    from alerts.config import load_config
    from alerts.controller import Controller

    config = load_config(args.config)
    engine = _engine(args)
    controller = Controller(engine, config, tasks=controller_tasks())
    _audit_config(engine, args.config, controller)
    if args.once:
        report = controller.cycle()
        print(f"leader={report.leader} conditions={report.conditions} notifications={report.notifications} "
              f"delivered={report.delivered} failed={report.failed} in {report.seconds:.2f} s")
        for line in report.transitions:
            print(f"  {line}")
        return 0

    def _signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        controller.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
    log.info("controller %s: %d rules, every %.0f s", controller.id, len(controller.rules),
             controller.settings.evaluation_interval)
    controller.run(max_cycles=args.cycles)
    return 0


def _audit_config(engine: Any, path: str | None, controller: Any) -> None:
    """Record the configuration this controller starts with, when it differs from the last one recorded
    for the same file: the SHA-256 of the file and of its rule file and what they define, never their
    contents (they may hold webhook secrets)."""
    import hashlib
    from pathlib import Path

    from db import audit

    files = [p for p in (path, controller.settings.rules) if p]
    receivers = sorted(controller.config.receivers)
    details = {"sha256": {str(Path(p).resolve()): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in files},
               "receivers": receivers, "rules": len(controller.rules)}
    target = f"alerting config {Path(path).resolve()}" if path else "alerting config (built-in default)"
    if audit.record_change(engine, audit.os_user(), "config.load", target, details, source=audit.CONTROLLER,
                           message=f"{len(controller.rules)} rules, {len(receivers)} receivers"):
        log.info("audit: new %s recorded", target)


def _test(args: argparse.Namespace) -> int:
    import os

    from alerts.notify import send_test
    from gpufleet.cli import UserError

    secret = None
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            raise UserError(f"environment variable {args.secret_env} is not set")
    try:
        delivery = send_test(args.url, secret, timeout=args.timeout)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    status = delivery.http_status if delivery.http_status is not None else "no answer"
    print(f"receiver answered: {status} in {delivery.latency_seconds or 0:.3f} s")
    if not delivery.ok:
        print(f"delivery failed: {delivery.error}")
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from db.models import Alert

    engine = _engine(args)
    q = select(Alert).order_by(Alert.state, Alert.active_since.desc())
    if not args.all:
        q = q.where(Alert.state != "resolved")
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        print("no alerts")
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.starts_at or r.active_since))
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items()) if k not in ("alertname", "severity"))
        print(f"{r.state:<9} {r.labels.get('severity', ''):<9} {r.rule:<28} {since} UTC  {labels}")
        if r.annotations.get("summary"):
            print(f"          {r.annotations['summary']}")
    engine.dispose()
    return 0


def _silence(args: argparse.Namespace) -> int:
    from alerts.rules import parse_duration
    from alerts.silences import create_silence, expire_silence, list_silences
    from db import audit
    from gpufleet.cli import UserError

    engine = _engine(args)
    actor = audit.os_user()
    try:
        if args.expire is not None:
            with audit.action(engine, actor, "silence.expire", f"silence {args.expire}", source=audit.CLI) as act:
                try:
                    expired = expire_silence(engine, args.expire)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
                if not expired:
                    raise UserError(f"no active silence {args.expire}")
                act.message = f"silence {args.expire} expired"
            print(act.message)
        elif args.list or not args.matchers:
            for s in list_silences(engine, include_expired=args.list):
                until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.ends_at))
                print(f"{s.id:>5} {s.state:<8} until {until} UTC  {' '.join(s.matchers_text)}  {s.comment or ''}")
        else:
            try:
                duration = parse_duration(args.duration)
            except ValueError as exc:
                raise UserError(f"--duration: {exc}") from None
            details = {"duration_s": duration, "comment": args.comment, "author": args.author}
            with audit.action(engine, actor, "silence.create", " ".join(args.matchers), details,
                              source=audit.CLI) as act:
                try:
                    sid = create_silence(engine, args.matchers, duration, args.comment, args.author or actor)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
                act.details["silence_id"] = sid
                act.message = f"silence {sid} created for {args.duration}"
            print(f"{act.message}: {' '.join(args.matchers)}")
    finally:
        engine.dispose()
    return 0
