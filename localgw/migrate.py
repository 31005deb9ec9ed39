"""Apply the database migrations locally: ``python -m localgw.migrate [--database-url URL]``.

The URL defaults to ``DATABASE_URL``, then to the local PostgreSQL's ``cloudex`` database. The
database is created first if it does not exist and the server's ``postgres`` database accepts a
connection with the same credentials (as a fresh local server does); otherwise it must exist.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from functions.migrate.runner import MigrationError, apply_migrations, apply_timescale_migrations

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cloudex"


def ensure_database(database_url: str) -> bool:
    """Create the URL's database if missing; return whether it was created.

    Returns ``False`` without creating anything if the server's ``postgres`` database cannot be
    reached (a managed server may not allow it): applying the migrations then says what is wrong.
    """
    name = conninfo_to_dict(database_url).get("dbname")
    if not name or name == "postgres":
        return False
    try:
        admin = psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True)
    except psycopg.OperationalError:
        return False
    with admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:
            return False  # another process created it between the check and here
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localgw.migrate", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        help="default: $DATABASE_URL, else %(default)s",
    )
    parser.add_argument(
        "--timescale",
        action="store_true",
        help="also apply the optional TimescaleDB migrations (needs the timescaledb extension)",
    )
    args = parser.parse_args(argv)
    database_url: str = args.database_url
    display_name = conninfo_to_dict(database_url).get("dbname", database_url)

    if ensure_database(database_url):
        print(f"created database {display_name}")
    try:
        applied = (apply_timescale_migrations if args.timescale else apply_migrations)(database_url)
    except (MigrationError, psycopg.Error) as exc:
        print(f"migrations not applied: {exc}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print(f"database {display_name} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
