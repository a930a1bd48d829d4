"""``gpufleet db upgrade | info | rollup | prune | roles``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sqlalchemy import func, select

from db.engine import current_revision, head_revision, make_engine, parse_url, redact, resolve_url, upgrade
from db.models import Base
from db.retention import RAW_DAYS, ROLLUP_DAYS, plan, prune
from db.rollups import refresh
from gpufleet.cli import UserError


def add_parsers(sub: argparse._SubParsersAction, add_db: Callable[[argparse.ArgumentParser], None]) -> None:
    db = sub.add_parser("db", help="the store's schema and data")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, text in (("upgrade", "create or migrate the schema"), ("info", "schema version and row counts")):
        add_db(db_sub.add_parser(name, help=text))
    rollup = db_sub.add_parser("rollup", help="bring the 1-minute and 1-hour GPU and node rollups up to date")
    add_db(rollup)
    rollup.add_argument("--since", type=float, metavar="T", help="also recompute from epoch time T on "
                        "(after importing history older than the rollups)")
    prune_p = db_sub.add_parser("prune", help="delete samples and rollups past their retention")
    add_db(prune_p)
    prune_p.add_argument("--raw-days", type=float, default=RAW_DAYS,
                         help=f"keep raw samples, heartbeats and batch ids this many days ({RAW_DAYS:g})")
    prune_p.add_argument("--rollup-days", type=float, default=ROLLUP_DAYS,
                         help=f"keep rollups this many days ({ROLLUP_DAYS:g})")
    prune_p.add_argument("--keep", action="append", default=[], metavar="TABLE=DAYS",
                         help="retention of one table, over the two above (repeatable; events are kept "
                              "for ever unless named)")
    roles = db_sub.add_parser("roles", help="least-privilege PostgreSQL roles for agents, dashboard and "
                              "controller: print or apply the GRANTs")
    add_db(roles)
    roles.add_argument("--print", dest="print_sql", action="store_true", help="print the SQL (the default)")
    roles.add_argument("--apply", action="store_true", help="run it (as a superuser or the schema owner "
                       "with CREATEROLE)")
    roles.add_argument("--agent-role", default="gpufleet_agent", metavar="NAME")
    roles.add_argument("--dashboard-role", default="gpufleet_dashboard", metavar="NAME")
    roles.add_argument("--controller-role", default="gpufleet_controller", metavar="NAME")
    roles.add_argument("--login", action="store_true", help="let the roles log in themselves (default: "
                       "group roles; grant them to login users)")


def _keep(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, days = pair.partition("=")
        try:
            out[name.strip()] = float(days)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--keep {pair!r}: expected TABLE=DAYS, e.g. gpu_samples=7")
    return out


def run(args: argparse.Namespace) -> int:
    url = resolve_url(args.db)
    if args.db_command == "roles":
        return _roles(args, url)
    if args.db_command == "prune":
        try:
            plan(raw_days=args.raw_days, rollup_days=args.rollup_days, days=_keep(args.keep))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    engine = make_engine(url)
    try:
        if args.db_command == "upgrade":
            before = current_revision(engine)
            upgrade(engine)
            print(f"{redact(url)}: schema {before or 'empty'} -> {current_revision(engine)}")
        elif args.db_command == "info":
            rev = current_revision(engine)
            print(f"store:   {redact(url)}")
            print(f"schema:  {rev or 'empty'} (this gpufleet: {head_revision()})")
            if rev is not None:
                with engine.connect() as conn:
                    for table in Base.metadata.sorted_tables:
                        n = conn.execute(select(func.count()).select_from(table)).scalar_one()
                        print(f"  {table.name:<24} {n:>12,}")
        elif args.db_command == "rollup":
            for name, n in refresh(engine, since=args.since).items():
                print(f"  {name:<24} {n:>12,} buckets written")
        elif args.db_command == "prune":
            now = time.time()
            refresh(engine, now=now)  # raw rows are only pruned once rolled up
            deleted = prune(engine, now, raw_days=args.raw_days, rollup_days=args.rollup_days,
                            days=_keep(args.keep))
            for name, n in deleted.items():
                print(f"  {name:<24} {n:>12,} rows deleted")
    finally:
        engine.dispose()
    return 0


def _roles(args: argparse.Namespace, url: str) -> int:
    from db.roles import Roles, apply, statements

    try:
        roles = Roles(agent=args.agent_role, dashboard=args.dashboard_role, controller=args.controller_role)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise UserError(f"roles are a PostgreSQL feature; {redact(url)} is {parsed.get_backend_name()}")
    if not args.apply or args.print_sql:
        for stmt in statements(roles, parsed.database or "gpufleet", login=args.login):
            print(f"{stmt};")
    if args.apply:
        engine = make_engine(url)
        try:
            apply(engine, roles, login=args.login)
        finally:
            engine.dispose()
        print(f"-- applied to {redact(url)}: roles {roles.agent}, {roles.dashboard}, {roles.controller}")
    return 0
