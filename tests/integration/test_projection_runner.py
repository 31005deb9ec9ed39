"""The projection runner's failure handling against a real PostgreSQL: a projection that keeps
failing stays at its checkpoint with the failure recorded, and never holds the others back."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator

import psycopg
import pytest

from cloudex.journal import JournalBlock, decode_journal_bytes, decode_journal_message
from functions.persister.journal_writer import Outcome, write_journal_message
from functions.persister.projection import ProjectedEvents, run_projections, sort_block
from functions.persister.read_models import ALL_PROJECTIONS, candle_rows
from tests.journal_factory import JournalFactory, trading_commands


class BrokenKlines:
    """The klines projection with a bug: it always raises."""

    name = "klines"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        raise RuntimeError("klines are broken")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def write_raw(conn: psycopg.Connection, factory: JournalFactory) -> int:
    """Write the factory's messages to the journal table only; return the journal head seq."""
    for _, body in factory.take():
        message = decode_journal_message(body)
        assert write_journal_message(conn, message, base64.b64decode(body)) is Outcome.WRITTEN
    return factory.seq


def checkpoints(conn: psycopg.Connection) -> dict[str, tuple[int, int, str | None]]:
    rows = conn.execute("SELECT name, last_seq, failures, last_error FROM projection_checkpoints")
    return {name: (last_seq, failures, error) for name, last_seq, failures, error in rows}


def test_a_failing_projection_far_behind_never_starves_the_others(
    conn: psycopg.Connection,
) -> None:
    factory = JournalFactory(records_per_block=5)
    factory.run(trading_commands(random.Random(7), accounts=10, orders=400))
    head = write_raw(conn, factory)
    blocks = conn.execute("SELECT count(*) FROM journal").fetchone()
    assert blocks is not None and blocks[0] > 60  # far more than one round's 20 blocks

    broken = [p for p in ALL_PROJECTIONS if p.name != "klines"] + [BrokenKlines()]
    report = run_projections(conn, broken)
    assert set(report.failed) == {"klines"}
    state = checkpoints(conn)
    assert state["klines"][:2] == (0, 1)
    assert "klines are broken" in (state["klines"][2] or "")
    assert all(state[name][:2] == (head, 0) for name in state if name != "klines")
    assert conn.execute("SELECT count(*) FROM klines").fetchone() == (0,)

    # More journal, another invocation: the others move on again, klines fails once more.
    factory.run(trading_commands(random.Random(8), accounts=10, orders=200, deposits=False))
    head = write_raw(conn, factory)
    run_projections(conn, broken)
    state = checkpoints(conn)
    assert state["klines"][:2] == (0, 2)
    assert all(state[name][:2] == (head, 0) for name in state if name != "klines")

    # Fixed: it catches up from its checkpoint, and its failure record clears.
    report = run_projections(conn, ALL_PROJECTIONS)
    assert report.failed == {}
    assert checkpoints(conn)["klines"] == (head, 0, None)
    trades = []
    for (raw,) in conn.execute("SELECT block FROM journal ORDER BY first_seq"):
        block = decode_journal_bytes(bytes(raw))
        assert isinstance(block, JournalBlock)
        trades += sort_block(block).trades
    expected = sorted(candle_rows(trades), key=lambda row: (row[0], row[1], row[2]))
    stored = conn.execute(
        "SELECT market, interval, start, open, high, low, close, volume, quote_volume, trades, "
        "first_trade_id, last_trade_id FROM klines"
    ).fetchall()
    assert sorted(tuple(row) for row in stored) == [tuple(row) for row in expected]
