"""Rebuild one read model from the journal: ``python -m functions.persister.rebuild NAME``.

For when a read model is wrong (a projection bug, fixed since; rows damaged by hand): its table
is emptied and its checkpoint reset to 0 in one transaction, then it is projected again from the
first journal record, the other read models untouched. The persister keeps running meanwhile:
the checkpoint row lock keeps it from applying the same blocks (it skips a locked projection),
and from the reset on it simply helps the rebuild along. Readers see the table empty, then
filling up, until it has caught up: rebuild when that is acceptable.

``markets`` is read by the ``fills`` projection: while it is rebuilt, fills of a market not yet
back fail and are retried (their checkpoint holds), so rebuild it on its own.
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
from psycopg import sql

from cloudex import aws_connect
from cloudex.env_settings import SettingsError
from functions.persister.projection import Projection, RunReport, run_projections
from functions.persister.read_models import ALL_PROJECTIONS

__all__ = ["reset_projection", "rebuild", "main"]

BY_NAME: dict[str, Projection] = {projection.name: projection for projection in ALL_PROJECTIONS}


def reset_projection(conn: psycopg.Connection, projection: Projection) -> None:
    """Empty the projection's table and move its checkpoint back to the journal's start, in one
    transaction. Raise ``psycopg.errors.LockNotAvailable`` if a persister is applying it now."""
    with conn.transaction():
        conn.execute(
            "SELECT 1 FROM projection_checkpoints WHERE name = %s FOR UPDATE NOWAIT",
            (projection.name,),
        )
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(projection.name)))
        conn.execute(
            "UPDATE projection_checkpoints SET last_seq = 0, updated_at = now(), failures = 0, "
            "last_error = NULL, failed_at = NULL WHERE name = %s",
            (projection.name,),
        )


def rebuild(conn: psycopg.Connection, projection: Projection) -> RunReport:
    """Reset ``projection`` and project the whole journal into it again. ``conn`` must be idle
    and in autocommit mode. Returns the runs' report: ``events`` applied by this rebuild (a
    running persister may have applied some too), ``failed`` if it stopped on a failure."""
    reset_projection(conn, projection)
    total = RunReport()
    while True:
        report = run_projections(conn, [projection])
        total.rounds += report.rounds
        total.events += report.events
        total.failed.update(report.failed)
        total.lag = report.lag
        if report.failed or report.lag.get(projection.name, 0) <= 0:
            return total
        if report.events == 0:
            time.sleep(0.05)  # a persister holds the checkpoint this moment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m functions.persister.rebuild", description=__doc__
    )
    parser.add_argument("name", choices=sorted(BY_NAME), help="the read model to rebuild")
    parser.add_argument(
        "--database-url",
        help="default: $DATABASE_URL, or in AWS the variables of cloudex/aws_connect.py "
        "(DATABASE_SECRET_ARN, or RDS IAM authentication)",
    )
    args = parser.parse_args(argv)
    try:
        database_url = args.database_url or aws_connect.database_url()
    except SettingsError as exc:
        print(f"no database: pass --database-url or set DATABASE_URL ({exc})", file=sys.stderr)
        return 2
    projection = BY_NAME[args.name]
    try:
        with aws_connect.connect(database_url, autocommit=True) as conn:
            report = rebuild(conn, projection)
    except psycopg.errors.LockNotAvailable:
        print(f"{args.name} is being applied right now; try again", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"rebuild of {args.name} failed: {exc}", file=sys.stderr)
        return 2
    if report.failed:
        print(f"rebuild of {args.name} stopped: {report.failed[args.name]}", file=sys.stderr)
        return 1
    print(f"{args.name} rebuilt from the journal: {report.events} events applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
