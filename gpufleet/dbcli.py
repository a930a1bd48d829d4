"""``gpufleet db upgrade | info | prune``."""

from __future__ import annotations

import argparse
import time

from sqlalchemy import func, select

from db.engine import current_revision, head_revision, make_engine, redact, resolve_url, upgrade
from db.models import Base
from db.retention import prune


def run(args: argparse.Namespace) -> int:
    url = resolve_url(args.db)
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
        elif args.db_command == "prune":
            deleted = prune(engine, time.time(), raw_days=args.raw_days, rollup_days=args.rollup_days)
            for name, n in deleted.items():
                print(f"  {name:<24} {n:>12,} rows deleted")
    finally:
        engine.dispose()
    return 0
