"""The balance audit (``engine_service.audit``) against a real PostgreSQL: a real journal made by
the pure engine, written and projected by the persister handler, with a snapshot stored the way
the engine service stores it. Clean, it finds nothing; every kind of tampering it must find."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cloudex.messages import Deposit
from engine_service.audit import AT_LEDGER, AT_SNAPSHOT, AuditReport, audit
from engine_service.core import Engine
from engine_service.postgres import EngineDatabase
from functions.persister import handler as persister
from localgw.lambda_context import LambdaContext
from tests.journal_factory import JournalFactory, sqs_events, trading_commands

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Snapshot:
    seq: int
    epoch: int
    event_seq: int
    state_hash: str
    taken_at: int
    data: bytes


@dataclass(frozen=True)
class Journal:
    messages: list[tuple[str, str]]
    snapshot: Snapshot
    last_seq: int
    last_event_seq: int


@pytest.fixture(scope="module")
def journal() -> Journal:
    """A trading journal of ~3,000 records; the snapshot is taken two thirds in, at a block's
    end (the service snapshots between batches, and a batch ends its last block)."""
    factory = JournalFactory()
    commands = list(trading_commands(random.Random(7), accounts=20, orders=3_000))
    cut = len(commands) * 2 // 3
    factory.run(commands[:cut])
    engine = factory.engine
    snapshot = Snapshot(
        factory.seq, factory.epoch, engine.seq, engine.state_hash(), factory.ts, engine.snapshot()
    )
    factory.run(commands[cut:])
    return Journal(factory.take(), snapshot, factory.seq, factory.engine.seq)


def save_snapshot(database_url: str, s: Snapshot) -> None:
    """Through the engine service's own adapter, exactly as a running engine stores it."""
    database = EngineDatabase(database_url, "audit-test")
    try:
        database.save_snapshot(s.seq, s.epoch, s.event_seq, s.state_hash, s.taken_at, s.data)
    finally:
        database.close()


@pytest.fixture
def database(database_url: str, journal: Journal, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The journal written and projected by the persister handler, and the snapshot stored."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    try:
        for event in sqs_events(journal.messages):
            response = persister.handler(event, LambdaContext("persister"))
            assert not response["batchItemFailures"]
    finally:
        persister.database.close()
    save_snapshot(database_url, journal.snapshot)
    yield database_url


def run_audit(database_url: str) -> AuditReport:
    with psycopg.connect(database_url) as conn:
        return audit(conn)


def run_cli(database_url: str) -> tuple[int, dict[str, object], str]:
    """``python -m engine_service.audit``: exit code, its last stdout line parsed, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "engine_service.audit", "--database-url", database_url],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-1]
    return done.returncode, json.loads(last), done.stderr


def execute(database_url: str, sql: str, *params: object) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, params).rowcount  # type: ignore[arg-type]


def ledger_row(database_url: str, where: str = "TRUE") -> tuple[int, int, str]:
    """(seq, account, asset) of a USDC ledger row well inside the journal."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT seq, account, asset FROM balance_ledger WHERE asset = 'USDC' AND account > 0 "
            f"AND {where} ORDER BY seq LIMIT 1 OFFSET 100"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def differing(report: AuditReport, point: str) -> set[tuple[int, str]]:
    comparison = next(c for c in report.comparisons if c.point == point)
    return {(d.account, d.asset) for d in comparison.differences}


def test_a_clean_journal_has_no_differences(database: str, journal: Journal) -> None:
    report = run_audit(database)
    assert report.ok, report.to_text()
    assert report.differences == 0 and report.problems == []
    assert (report.journal_seq, report.journal_event_seq) == (
        journal.last_seq,
        journal.last_event_seq,
    )
    assert report.replay.records == journal.last_seq
    assert report.ledger_seq == journal.last_seq and report.ledger_behind == 0
    assert report.snapshot is not None and report.snapshot.seq == journal.snapshot.seq
    at_snapshot, at_ledger = report.comparisons
    assert at_snapshot.point == AT_SNAPSHOT and at_snapshot.seq == journal.snapshot.seq
    assert at_snapshot.sources == ["snapshot", "replay", "ledger_deltas", "ledger_last"]
    assert at_ledger.point == AT_LEDGER and at_ledger.seq == journal.last_seq
    assert at_ledger.sources == ["replay", "ledger_deltas", "ledger_last"]
    # Every account (and the fee account) is compared, and real money is involved.
    usdc = at_ledger.assets["USDC"]
    assert usdc.accounts == 21
    assert usdc.totals["replay"][0] > 0
    assert len(set(usdc.totals.values())) == 1

    code, summary, stderr = run_cli(database)
    assert code == 0, stderr
    assert summary["audit"] == "balances" and summary["ok"] is True
    assert summary["differences"] == 0
    assert summary["snapshot_seq"] == journal.snapshot.seq
    assert summary["journal_seq"] == journal.last_seq
    assert "Result: OK" in stderr


def test_a_tampered_ledger_row_is_found(database: str) -> None:
    seq, account, asset = ledger_row(database)
    assert (
        execute(database, "UPDATE balance_ledger SET available = available + 1 WHERE seq = %s", seq)
        == 1
    )
    report = run_audit(database)
    assert not report.ok
    # Its row no longer follows from the one before it, and if it is the last of its
    # (account, asset) before a point, the balances differ too.
    assert any(f"ledger row {seq} " in p for p in report.problems), report.problems

    # The last row of an account's asset: every source but ledger_last disagrees with it.
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT max(seq) FROM balance_ledger WHERE account = %s AND asset = %s",
            (account, asset),
        ).fetchone()
    assert row is not None
    execute(database, "UPDATE balance_ledger SET available = available - 5 WHERE seq = %s", row[0])
    report = run_audit(database)
    assert (account, asset) in differing(report, AT_LEDGER)
    difference = next(d for c in report.comparisons for d in c.differences if c.point == AT_LEDGER)
    values = difference.values
    assert values["replay"] == values["ledger_deltas"] != values["ledger_last"]

    code, summary, _ = run_cli(database)
    assert code == 1
    assert summary["ok"] is False and summary["differences"] == report.differences
    listed = summary["difference_list"]
    assert isinstance(listed, list)
    assert {"point": "ledger", "account": account, "asset": asset}.items() <= listed[-1].items()


def test_a_missing_ledger_row_is_found(database: str, journal: Journal) -> None:
    # A row before the snapshot whose account changes again later: both points see it.
    seq, account, asset = ledger_row(database, f"seq <= {journal.snapshot.event_seq}")
    assert execute(database, "DELETE FROM balance_ledger WHERE seq = %s", seq) == 1
    report = run_audit(database)
    assert not report.ok
    assert differing(report, AT_SNAPSHOT) == {(account, asset)}
    assert differing(report, AT_LEDGER) == {(account, asset)}
    for comparison in report.comparisons:
        (difference,) = comparison.differences
        values = difference.values
        assert values["replay"] == values["ledger_last"] != values["ledger_deltas"]
        if comparison.point == AT_SNAPSHOT:
            assert values["snapshot"] == values["replay"]
    assert any("do not follow" in p for p in report.problems)
    code, summary, _ = run_cli(database)
    assert code == 1 and summary["differences"] == 2


def test_a_snapshot_that_disagrees_is_found(database: str, journal: Journal) -> None:
    # A sound snapshot (it restores, its hash is its own), but of a state the journal never had:
    # one deposit more. Stored at the end of the block after the real snapshot's (a seq the
    # journal has), so it is the latest.
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT last_seq FROM journal WHERE first_seq = %s", (journal.snapshot.seq + 1,)
        ).fetchone()
    assert row is not None
    engine = Engine.restore(journal.snapshot.data)
    engine.execute(
        Deposit(id="forged", ts=engine.clock, account=3, asset="USDC", amount=7, reference="x")
    )
    forged = Snapshot(
        int(row[0]),
        journal.snapshot.epoch,
        engine.seq,
        engine.state_hash(),
        journal.snapshot.taken_at,
        engine.snapshot(),
    )
    save_snapshot(database, forged)

    report = run_audit(database)
    assert not report.ok
    assert report.snapshot is not None and report.snapshot.seq == forged.seq
    assert (3, "USDC") in differing(report, AT_SNAPSHOT)
    assert differing(report, AT_LEDGER) == set()
    assert any("state hash differs from the replay" in p for p in report.problems)
    code, summary, stderr = run_cli(database)
    assert code == 1 and summary["snapshot_seq"] == forged.seq, stderr


def test_a_ledger_projection_behind_is_compared_at_its_checkpoint(
    database: str, journal: Journal
) -> None:
    # As if the projection had only reached the block after the snapshot's.
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_seq, last_event_seq FROM journal WHERE first_seq = %s",
            (journal.snapshot.seq + 1,),
        ).fetchone()
        assert row is not None
        checkpoint, event_seq = int(row[0]), int(row[1])
        conn.execute("DELETE FROM balance_ledger WHERE seq > %s", (event_seq,))
        conn.execute(
            "UPDATE projection_checkpoints SET last_seq = %s WHERE name = 'balance_ledger'",
            (checkpoint,),
        )
    report = run_audit(database)
    assert report.ok, report.to_text()
    assert report.ledger_seq == checkpoint
    assert report.ledger_behind == journal.last_seq - checkpoint
    assert report.comparisons[1].seq == checkpoint
    assert report.comparisons[1].event_seq == event_seq
    assert any("behind" in n for n in report.notes)
    # Still the whole journal is replayed and checked.
    assert report.replay.seq == journal.last_seq


def test_a_tampered_journal_block_stops_the_replay(database: str, journal: Journal) -> None:
    execute(
        database,
        "UPDATE journal SET state_hash = 'f00d' WHERE first_seq = %s",
        journal.snapshot.seq + 1,
    )
    report = run_audit(database)
    assert not report.ok
    assert report.replay.seq == journal.snapshot.seq
    assert any("columns differ" in p for p in report.problems)
    # The snapshot point was reached and compared; the ledger's head was not.
    assert report.comparisons[0].sources[:2] == ["snapshot", "replay"]
    assert "replay" in report.comparisons[1].skipped


def test_usage_and_connection_errors_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "engine_service.audit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine_service.audit",
            "--database-url",
            "postgresql://postgres@127.0.0.1:5432/cloudex_no_such_database",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2


def test_a_snapshot_that_does_not_restore_is_a_problem(database: str, journal: Journal) -> None:
    execute(
        database,
        "UPDATE snapshots SET data = %s WHERE seq = %s",
        b"not a snapshot",
        journal.snapshot.seq,
    )
    report = run_audit(database)
    assert not report.ok and report.differences == 0
    assert any("does not restore" in p for p in report.problems)
    # The replay and the ledger are still compared at the snapshot's point.
    at_snapshot = report.comparisons[0]
    assert at_snapshot.sources == ["replay", "ledger_deltas", "ledger_last"]
    assert "snapshot" in at_snapshot.skipped
