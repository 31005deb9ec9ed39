"""Apply the versioned SQL migrations in ``sql/`` to a PostgreSQL database.

Files are named ``NNNN_description.sql`` and applied in version order, each in its own
transaction, and recorded in ``schema_migrations`` with the sha256 of the file. Runners may start
concurrently (every deploy, every local start): each transaction first takes a transaction-level
advisory lock, so only one applies a given file and the others see it recorded and move on.

An applied file must never change: the database already ran the old text, so a changed file means
the code and the schema disagree. The runner refuses to apply anything then; write a new migration
instead. Since every migration runs inside a transaction, statements PostgreSQL refuses there
(``CREATE INDEX CONCURRENTLY``, ``VACUUM``) cannot be used.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cloudex.aws_connect import connect

__all__ = [
    "SQL_DIRECTORY",
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "MigrationChecksumError",
    "load_migrations",
    "apply_migrations",
    "TIMESCALE_DIRECTORY",
    "TimescaleUnavailable",
    "apply_timescale_migrations",
]

SQL_DIRECTORY = Path(__file__).resolve().parent / "sql"
# Optional: only for servers with the timescaledb extension (not RDS); versions from 1001, so
# they never collide with the regular ones in schema_migrations.
TIMESCALE_DIRECTORY = Path(__file__).resolve().parent / "timescale"

# The advisory lock key every runner takes; b"cloudex\x01" so that it cannot collide with the
# engine lease's key by accident.
MIGRATION_LOCK_KEY = int.from_bytes(b"cloudex\x01", "big", signed=True)

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<description>[a-z0-9_]+)\.sql")

logger = logging.getLogger(__name__)


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they stand; nothing after the problem was applied."""


class MigrationChecksumError(MigrationError):
    """An applied migration's file no longer matches what the database ran."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_journal"
    sql: str
    checksum: str  # sha256 hex of the file's bytes


def load_migrations(directory: Path = SQL_DIRECTORY) -> list[Migration]:
    """The migrations in ``directory``, in version order.

    A ``.sql`` file with a malformed name or a repeated version is an error rather than being
    skipped: a silently ignored migration would surface much later as a missing table.
    """
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migration files are named NNNN_description.sql "
                "(four digits, lower-case letters, digits and underscores)"
            )
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(
                f"{path.name}: version {version} is also {migrations[version].name}.sql"
            )
        data = path.read_bytes()
        migrations[version] = Migration(
            version=version,
            name=path.stem,
            sql=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [migrations[version] for version in sorted(migrations)]


def apply_migrations(database_url: str, directory: Path | str | None = None) -> list[str]:
    """Apply the migrations not yet recorded; return their names (``[]`` if none was due).

    Raises :class:`MigrationChecksumError` before applying anything if an applied file changed.
    """
    migrations = load_migrations(SQL_DIRECTORY if directory is None else Path(directory))
    applied: list[str] = []
    # autocommit, so that each ``transaction()`` block is a real transaction, not a savepoint.
    with connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            _lock(conn)
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version int PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            _verify_applied(conn, migrations)
        for migration in migrations:
            with conn.transaction():
                _lock(conn)
                # Checked again under the lock: another runner may have applied it meanwhile.
                recorded = _recorded(conn)
                if migration.version in recorded:
                    _verify_applied(conn, [migration])
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            logger.info("applied migration %s", migration.name)
            applied.append(migration.name)
    return applied


class TimescaleUnavailable(MigrationError):
    """The server does not offer the timescaledb extension (RDS and Aurora never do)."""


def apply_timescale_migrations(database_url: str) -> list[str]:
    """Apply the regular migrations, then the optional Timescale ones (``timescale/``).

    Raises :class:`TimescaleUnavailable` before changing anything if the server cannot load the
    extension: the plain-PostgreSQL schema is complete without it.
    """
    with connect(database_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    if available is None:
        raise TimescaleUnavailable(
            "the timescaledb extension is not available on this server; the plain PostgreSQL "
            "schema (apply_migrations) is complete without it"
        )
    return apply_migrations(database_url) + apply_migrations(
        database_url, directory=TIMESCALE_DIRECTORY
    )


def _lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def _recorded(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def _verify_applied(conn: psycopg.Connection, migrations: list[Migration]) -> None:
    # Versions recorded without a file here are left alone: they come from a newer release, and
    # rolling the code back must not fail on them (migrations only ever add).
    recorded = _recorded(conn)
    for migration in migrations:
        if migration.version not in recorded:
            continue
        name, checksum = recorded[migration.version]
        if checksum != migration.checksum:
            raise MigrationChecksumError(
                f"migration {migration.name}.sql changed after it was applied (as {name}.sql): "
                f"the database ran sha256 {checksum}, the file is now {migration.checksum}. "
                "Restore the file and put the change in a new migration."
            )
