"""The migration runner against a real PostgreSQL: applies once, in order, and refuses a changed
file. Each test runs on a fresh, empty database (``empty_database_url``)."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from functions.migrate.runner import (
    SQL_DIRECTORY,
    TIMESCALE_DIRECTORY,
    MigrationChecksumError,
    MigrationError,
    TimescaleUnavailable,
    apply_migrations,
    apply_timescale_migrations,
)
from localgw.migrate import main as migrate_main

# Every migration the project has, in order.
ALL = sorted(path.stem for path in SQL_DIRECTORY.glob("*.sql"))


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A directory holding only the first real migration, for the runner's own tests."""
    directory = tmp_path / "sql"
    directory.mkdir()
    shutil.copy(SQL_DIRECTORY / "0001_journal.sql", directory)
    return directory


def _recorded(database_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(version, name) for version, name in rows]


def test_applies_every_migration_once(empty_database_url: str) -> None:
    assert ALL[:2] == ["0001_journal", "0002_read_models"]
    assert apply_migrations(empty_database_url) == ALL
    assert apply_migrations(empty_database_url) == []

    assert _recorded(empty_database_url) == [(int(name[:4]), name) for name in ALL]
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT epoch, engine_id FROM engine_lease").fetchall() == [(0, None)]
        assert conn.execute(
            "SELECT epoch, last_seq, last_event_seq FROM journal_head"
        ).fetchall() == [(0, 0, 0)]
        # The single-row tables stay single-row.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO journal_head (id) VALUES (2)")


def test_applies_new_files_in_version_order(empty_database_url: str, sql_copy: Path) -> None:
    assert apply_migrations(empty_database_url, directory=sql_copy) == ["0001_journal"]
    (sql_copy / "0003_third.sql").write_text("ALTER TABLE second ADD COLUMN note text;\n")
    (sql_copy / "0002_second.sql").write_text("CREATE TABLE second (id int PRIMARY KEY);\n")

    assert apply_migrations(empty_database_url, directory=sql_copy) == ["0002_second", "0003_third"]
    assert _recorded(empty_database_url) == [
        (1, "0001_journal"),
        (2, "0002_second"),
        (3, "0003_third"),
    ]


def test_a_failing_migration_rolls_back_alone(empty_database_url: str, sql_copy: Path) -> None:
    (sql_copy / "0002_broken.sql").write_text(
        "CREATE TABLE half (id int);\nSELECT no_such_function();\n"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        apply_migrations(empty_database_url, directory=sql_copy)

    # 0001 committed in its own transaction; nothing of 0002 remains.
    assert _recorded(empty_database_url) == [(1, "0001_journal")]
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)


def test_refuses_a_changed_applied_migration(empty_database_url: str, sql_copy: Path) -> None:
    apply_migrations(empty_database_url, directory=sql_copy)
    (sql_copy / "0002_next.sql").write_text("CREATE TABLE next_one (id int);\n")
    journal = sql_copy / "0001_journal.sql"
    journal.write_text(journal.read_text() + "\n-- an edit after the fact\n")

    with pytest.raises(
        MigrationChecksumError, match=r"0001_journal\.sql changed after it was applied"
    ):
        apply_migrations(empty_database_url, directory=sql_copy)
    # Refused before anything else was applied.
    assert _recorded(empty_database_url) == [(1, "0001_journal")]


def test_rejects_badly_named_files(empty_database_url: str, sql_copy: Path) -> None:
    (sql_copy / "2_oops.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_description"):
        apply_migrations(empty_database_url, directory=sql_copy)


def test_concurrent_runners_apply_each_file_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(empty_database_url))
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    # Each file once, by whichever runner took the lock for it first (runners lock per file,
    # so one may apply 0001 and another the rest), each runner's in order.
    assert len(results) == 4
    assert sorted(name for applied in results for name in applied) == ALL
    assert all(applied == sorted(applied) for applied in results)
    assert _recorded(empty_database_url) == [(int(name[:4]), name) for name in ALL]


def test_local_command_creates_the_database(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cloudex_m_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(empty_database_url, dbname=name)
    admin_url = make_conninfo(empty_database_url, dbname="postgres")
    try:
        assert migrate_main(["--database-url", url]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"created database {name}",
            *(f"applied {migration}" for migration in ALL),
        ]
        assert migrate_main(["--database-url", url]) == 0
        assert capsys.readouterr().out.splitlines() == [f"database {name} is up to date"]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_timescale_migration_is_optional_and_checks_for_the_extension(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The regular migrations never include it; it has versions of its own.
    assert [path.stem for path in TIMESCALE_DIRECTORY.glob("*.sql")] == ["1001_timescale"]
    assert all(int(name[:4]) < 1000 for name in ALL)
    with psycopg.connect(empty_database_url) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    if available is not None:
        pytest.fail("this server has timescaledb: run the Timescale migration here and test it")
    with pytest.raises(TimescaleUnavailable, match="timescaledb extension is not available"):
        apply_timescale_migrations(empty_database_url)
    assert migrate_main(["--database-url", empty_database_url, "--timescale"]) == 1
    assert "not available" in capsys.readouterr().err
    # Refused before anything changed.
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
