"""`atelier usage` and `atelier audit`: the admin reports, printed in the terminal."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import OperationalError

from ..config import Config
from ..store.db import open_engine, session_factory
from .console import AdminReports

EXIT_NO_DATABASE = 1


async def print_report(config: Config, args: argparse.Namespace) -> int:
    database = open_engine(config.database_url)
    try:
        reports = AdminReports(session_factory(database), config)
        if args.command == "usage":
            print(await reports.usage_table(args.since, args.user))
            print()
            print(await reports.daily_table(args.since, args.user))
        else:
            print(
                await reports.audit_table(
                    args.user, args.action, args.since, args.offset, args.limit
                )
            )
    except OperationalError as error:
        print(
            f"atelier: cannot read the database ({error.orig}); run `atelier db upgrade`",
            file=sys.stderr,
        )
        return EXIT_NO_DATABASE
    finally:
        await database.dispose()
    return 0
