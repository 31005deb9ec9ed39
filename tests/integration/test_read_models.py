"""The read-model projections against a real PostgreSQL, fed real journals (commands run through
the pure engine and sealed into blocks as the engine service does):

- redelivered blocks, out-of-order delivery and re-run projections never duplicate a row, and a
  rewound checkpoint is refused rather than applied twice;
- a projection that fails midway stays at its checkpoint, its failure is recorded, the others go
  on, the raw journal (and the batch's response) is unaffected, and a later run catches up to
  exactly the tables of a run that never failed;
- klines equal a direct aggregation of the trades for every interval, across bucket boundaries
  (1 µs before and at a bucket's start, Monday weeks, months with December -> January and
  February), with no row for a bucket without trades, however the trades are split into blocks;
- every read model equals what the pure engine says for the same commands.
"""

from __future__ import annotations

import base64
import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudex.enums import (
    MarketState,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.journal import JournalBlock, JournalRecord, decode_journal_message
from cloudex.klines import INTERVALS
from cloudex.messages import (
    AnyCommand,
    AnyEvent,
    BalanceChanged,
    CancelAllOrders,
    Deposit,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    OrderAccepted,
    OrderClosed,
    PlaceOrder,
    SetMarketFees,
    SetMarketState,
    TradeExecuted,
)
from cloudex.names import FEE_ACCOUNT
from engine_service.core import Engine
from functions.persister import handler as persister
from functions.persister.journal_writer import Outcome, write_journal_message
from functions.persister.projection import (
    DEFAULT_BLOCKS_PER_ROUND,
    ProjectedEvents,
    Projection,
    RunReport,
    run_projections,
    run_round,
)
from functions.persister.read_models import ALL_PROJECTIONS
from functions.persister.rebuild import main as rebuild_main
from localgw.lambda_context import LambdaContext
from tests.integration.conftest import PG_ADMIN_URL
from tests.journal_factory import JournalFactory, sqs_events, trading_commands
from tests.property.test_klines_aggregation import (
    FIXED,
    candle_start,
    expected_klines,
    next_candle_start,
    utc,
)

# -- DATABASES ----------------------------------------------------------------------------------


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


class Databases:
    """Fresh migrated databases cloned from the session's template, dropped by ``drop_all``."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.names: list[str] = []

    def new(self) -> str:
        name = f"cloudex_rm_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.names.append(name)
        base, _, _ = PG_ADMIN_URL.rpartition("/")
        return f"{base}/{name}"

    def drop_all(self) -> None:
        persister.database.close()
        while self.names:
            _admin(f'DROP DATABASE IF EXISTS "{self.names.pop()}" WITH (FORCE)')


@pytest.fixture
def databases(database_template: str) -> Iterator[Databases]:
    made = Databases(database_template)
    yield made
    made.drop_all()


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


# -- JOURNALS -----------------------------------------------------------------------------------


@dataclass
class Journal:
    """A journal's SQS messages (the epoch marker first), decoded, and the engine that made it."""

    engine: Engine
    messages: list[tuple[str, str]]
    blocks: list[JournalBlock] = field(init=False)

    def __post_init__(self) -> None:
        decoded = [decode_journal_message(body) for _, body in self.messages]
        self.blocks = [m for m in decoded if isinstance(m, JournalBlock)]

    @property
    def head(self) -> int:
        return self.blocks[-1].last_seq

    def records(self) -> Iterator[JournalRecord]:
        for block in self.blocks:
            yield from block.records

    def events(self) -> Iterator[tuple[str, AnyEvent]]:
        """``(command id, event)`` of every event, in journal order."""
        for record in self.records():
            for event in record.result.events:
                yield record.command.id, event

    def trades(self) -> list[TradeExecuted]:
        return [e for _, e in self.events() if isinstance(e, TradeExecuted)]

    def through(self, last_seq: int) -> list[tuple[str, str]]:
        """The messages of the journal up to the block that ends at ``last_seq``."""
        if last_seq == 0:
            return self.messages[:1]
        ends = [block.last_seq for block in self.blocks]
        return self.messages[: 2 + ends.index(last_seq)]


_extra_ids = itertools.count(1)


def mixed_commands(
    rng: random.Random, *, accounts: int, orders: int, spread: int = 10
) -> Iterator[AnyCommand]:
    """:func:`trading_commands` (SOL_USDC), with fee and state changes, cancel-alls and the other
    kinds of order mixed in: IOC, FOK, post-only, quote-sized market orders, every STP mode."""
    market = "SOL_USDC"
    reopen_in = 0
    # A fee change a third of the way and the market closed two thirds of the way, at least.
    forced = {orders // 3: 0.005, 2 * orders // 3: 0.0}
    trading = 0
    for command in trading_commands(rng, accounts=accounts, orders=orders, spread=spread):
        yield command
        if isinstance(command, Deposit):
            continue
        trading += 1
        n = next(_extra_ids)
        if reopen_in:
            reopen_in -= 1
            if not reopen_in:
                yield SetMarketState(id=f"k{n}", ts=0, market=market, state=MarketState.OPEN)
            continue
        account = rng.randint(1, accounts)
        roll = forced.get(trading, rng.random())
        if roll < 0.003:
            reopen_in = rng.randint(1, 15)
            state = rng.choice([MarketState.CLOSED, MarketState.POST_ONLY, MarketState.CANCEL_ONLY])
            yield SetMarketState(id=f"k{n}", ts=0, market=market, state=state)
        elif roll < 0.008:
            yield SetMarketFees(
                id=f"k{n}",
                ts=0,
                market=market,
                maker_fee_bps=rng.randint(0, 10),
                taker_fee_bps=rng.randint(0, 25),
            )
        elif roll < 0.013:
            yield CancelAllOrders(id=f"k{n}", ts=0, account=account, market=market)
        elif roll < 0.08:
            side = rng.choice([Side.BID, Side.ASK])
            stp = rng.choice(list(SelfTradePrevention))
            kind = rng.randrange(4)
            if kind == 0:
                yield PlaceOrder(
                    id=f"k{n}",
                    ts=0,
                    account=account,
                    market=market,
                    side=side,
                    order_type=OrderType.MARKET,
                    quote_quantity=rng.randint(1, 3_000) * 10**6,
                    self_trade_prevention=stp,
                )
            else:
                yield PlaceOrder(
                    id=f"k{n}",
                    ts=0,
                    account=account,
                    market=market,
                    side=side,
                    order_type=OrderType.LIMIT,
                    price=rng.randint(9_990, 10_010),
                    quantity=rng.randint(1, 60),
                    time_in_force=(TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK)[kind - 1],
                    post_only=kind == 1 and rng.random() < 0.5,
                    self_trade_prevention=stp,
                )


def trading_journal(
    seed: int,
    *,
    orders: int,
    accounts: int = 10,
    records_per_block: int = 20,
    step_us: int = 1_000,
    spread: int = 10,
) -> Journal:
    factory = JournalFactory(records_per_block=records_per_block, step_us=step_us)
    rng = random.Random(seed)
    factory.run(mixed_commands(rng, accounts=accounts, orders=orders, spread=spread))
    return Journal(factory.engine, factory.take())


def growing_journal(
    seed: int,
    *,
    orders: int,
    commands_per_step: int,
    accounts: int = 10,
    records_per_block: int = 20,
    step_us: int = 1_000,
    spread: int = 10,
) -> Iterator[Journal]:
    """A trading journal, ``commands_per_step`` commands at a time: after each step, the journal
    so far and the engine as it stands then (the same engine: check it before the next step)."""
    factory = JournalFactory(records_per_block=records_per_block, step_us=step_us)
    rng = random.Random(seed)
    commands = mixed_commands(rng, accounts=accounts, orders=orders, spread=spread)
    messages: list[tuple[str, str]] = []
    while step := list(itertools.islice(commands, commands_per_step)):
        factory.run(step)
        messages += factory.take()
        yield Journal(factory.engine, list(messages))


# -- FEEDING THE PERSISTER ----------------------------------------------------------------------


def write_journal(conn: psycopg.Connection, messages: Iterable[tuple[str, str]]) -> None:
    """Write journal messages without projecting them."""
    for _, body in messages:
        outcome = write_journal_message(conn, decode_journal_message(body), base64.b64decode(body))
        assert outcome in (Outcome.WRITTEN, Outcome.DUPLICATE)


def invoke(event: dict[str, Any]) -> list[str]:
    """Invoke the persister Lambda; return the ids of the records it reports failed."""
    response = persister.handler(event, LambdaContext("persister"))
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def feed(messages: list[tuple[str, str]], batch_size: int = 10) -> None:
    for event in sqs_events(messages, batch_size):
        assert invoke(event) == []


def project_at_once(url: str, journal: Journal) -> None:
    """Write the whole journal, then project it in one round: one apply per projection."""
    with connect(url) as conn:
        write_journal(conn, journal.messages)
        report = run_projections(conn, ALL_PROJECTIONS, max_blocks=len(journal.blocks) + 1)
        assert report.rounds == 1 and not report.failed, report


# -- READING THE READ MODELS --------------------------------------------------------------------

COLUMNS: dict[str, str] = {
    "markets": "symbol, base, quote, base_decimals, quote_decimals, spec, state, maker_fee_bps, "
    "taker_fee_bps, added_at, updated_at, seq",
    "orders": "order_id, account, market, client_id, side, order_type, time_in_force, price, "
    "quantity, quote_quantity, executed_quantity, executed_quote_quantity, status, close_reason, "
    "post_only, self_trade_prevention, created_at, updated_at, closed_at, accepted_seq, last_seq",
    "trades": "trade_id, market, price, quantity, quote_quantity, is_buyer_maker, buy_order_id, "
    "sell_order_id, buyer, seller, buyer_fee, seller_fee, ts, seq",
    "fills": "account, trade_id, side, order_id, market, price, quantity, quote_quantity, fee, "
    "fee_asset, is_maker, ts, seq",
    "balance_ledger": "seq, account, asset, available, locked, available_delta, locked_delta, "
    "reason, reference, command_id, ts",
    "klines": "market, interval, start, open, high, low, close, volume, quote_volume, trades, "
    "first_trade_id, last_trade_id",
}
Rows = list[tuple[Any, ...]]
Models = dict[str, Rows]


def read_models(conn: psycopg.Connection) -> Models:
    """Every read model's full contents, sorted by key (in Python: no collation in the way)."""
    return {
        table: sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
        for table, columns in COLUMNS.items()
    }


def read_url(url: str) -> Models:
    with connect(url) as conn:
        return read_models(conn)


@dataclass(frozen=True)
class Checkpoint:
    last_seq: int
    failures: int
    last_error: str | None
    failed: bool  # failed_at is set


def checkpoints(conn: psycopg.Connection) -> dict[str, Checkpoint]:
    rows = conn.execute(
        "SELECT name, last_seq, failures, last_error, failed_at IS NOT NULL "
        "FROM projection_checkpoints"
    ).fetchall()
    return {
        name: Checkpoint(seq, failures, error, failed)
        for name, seq, failures, error, failed in rows
    }


def journal_count(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT count(*), coalesce(max(last_seq), 0) FROM journal").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def assert_caught_up(conn: psycopg.Connection, head: int) -> None:
    for name, checkpoint in checkpoints(conn).items():
        assert checkpoint == Checkpoint(head, 0, None, checkpoint.failed), name


def assert_no_duplicates(models: Models) -> None:
    keys = {"fills": 3, "klines": 3}
    for table, rows in models.items():
        width = keys.get(table, 1)
        assert len({row[:width] for row in rows}) == len(rows), table


# -- FAULTY PROJECTIONS -------------------------------------------------------------------------


class Flaky:
    """A projection that raises on the given calls of ``apply`` (counted from 1), or on every
    call, after the real projection has written its rows: a failure midway through."""

    def __init__(
        self, inner: Projection, fail_on: Iterable[int] = (), always: bool = False
    ) -> None:
        self.name = inner.name
        self.inner = inner
        self.fail_on = set(fail_on)
        self.always = always
        self.calls = 0
        self.failures = 0
        self.applied_through = 0  # last_seq of the last apply that did not raise

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        self.calls += 1
        self.inner.apply(conn, events)
        if self.always or self.calls in self.fail_on:
            self.failures += 1
            raise RuntimeError(f"injected failure of {self.name}, apply {self.calls}")
        self.applied_through = events.last_seq


def with_flaky(flaky: Sequence[Flaky]) -> tuple[Projection, ...]:
    by_name = {f.name: f for f in flaky}
    return tuple(by_name.get(p.name, p) for p in ALL_PROJECTIONS)


# -- FIXTURES -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trading() -> Journal:
    """A trading journal of ~40 blocks with every kind of order and admin command in it, over
    half a day (37 s between commands)."""
    return trading_journal(7, orders=700, records_per_block=20, step_us=37_000_000)


@pytest.fixture(scope="module")
def reference(database_template: str, trading: Journal) -> Models:
    """The read models of ``trading`` projected in one round (one apply per projection)."""
    made = Databases(database_template)
    try:
        url = made.new()
        project_at_once(url, trading)
        return read_url(url)
    finally:
        made.drop_all()


@pytest.fixture
def persister_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``use(url)``: point the persister Lambda at a database."""

    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)

    yield use
    persister.database.close()


def test_reference_journal_is_rich(trading: Journal, reference: Models) -> None:
    """The journal the failure and redelivery tests share exercises every read model."""
    assert len(trading.blocks) >= 30
    closes = {e.reason for _, e in trading.events() if isinstance(e, OrderClosed)}
    assert len(closes) >= 5, closes
    assert any(isinstance(e, MarketFeesChanged) for _, e in trading.events())
    assert any(isinstance(e, MarketStateChanged) for _, e in trading.events())
    assert {row[12] for row in reference["orders"]} >= {"New", "PartiallyFilled", "Filled"}
    assert all(reference[table] for table in COLUMNS)
    assert_read_models_match_engine(reference, trading)


# -- 1. REDELIVERY AND RE-RUNS ------------------------------------------------------------------


def test_redelivered_blocks_and_rerun_projections_change_nothing(
    databases: Databases,
    persister_env: Callable[[str], None],
    trading: Journal,
    reference: Models,
) -> None:
    url = databases.new()
    persister_env(url)
    feed(trading.messages)
    with connect(url) as conn:
        assert read_models(conn) == reference
        journal = journal_count(conn)
        assert journal == (len(trading.blocks), trading.head)
        assert_caught_up(conn, trading.head)

        # Everything again, in the same batches: every record a duplicate, nothing re-applied.
        feed(trading.messages)
        # Random redeliveries of old messages, shuffled within and across batches.
        rng = random.Random(3)
        for _ in range(5):
            again = rng.sample(trading.messages, rng.randint(1, 10))
            assert invoke(next(sqs_events(again))) == []
        assert journal_count(conn) == journal

        # The projections run again: nothing to apply, nothing changes.
        report = persister.project()
        assert report is not None
        assert (report.events, report.failed) == (0, {})
        assert set(report.lag.values()) == {0}
        report = run_projections(conn, ALL_PROJECTIONS, max_blocks=1)
        assert (report.rounds, report.events, report.failed) == (1, 0, {})

        assert read_models(conn) == reference
        assert_caught_up(conn, trading.head)


def test_out_of_order_delivery_ends_with_the_same_read_models(
    databases: Databases,
    persister_env: Callable[[str], None],
    trading: Journal,
    reference: Models,
) -> None:
    """Batches where later blocks come before earlier ones (their records fail with a gap and
    come back), mixed with redeliveries of what was already written."""
    url = databases.new()
    persister_env(url)
    rng = random.Random(11)
    indexed = list(enumerate(trading.messages))
    pending = list(indexed)
    delivered: list[tuple[int, tuple[str, str]]] = []
    gaps = invocations = 0
    while pending:
        invocations += 1
        assert invocations < 500
        batch = pending[: rng.randint(1, 10)]
        if len(pending) > 1 and rng.random() < 0.4:
            # A later message jumps the queue (to the front, or in the middle of the batch).
            late = rng.choice(pending[len(batch) :] or pending[1:])
            batch = [b for b in batch if b != late]
            batch.insert(rng.randrange(len(batch) + 1) if rng.random() < 0.5 else 0, late)
        if delivered and rng.random() < 0.3:
            batch.insert(rng.randrange(len(batch) + 1), rng.choice(delivered))
        event = next(sqs_events([message for _, message in batch], batch_size=len(batch)))
        failed = set(invoke(event))
        for position, (index, message) in enumerate(batch):
            if f"m-{position}" in failed:
                gaps += 1
            elif (index, message) in pending:
                pending.remove((index, message))
                delivered.append((index, message))
    assert gaps > 0  # out-of-order delivery did happen

    with connect(url) as conn:
        assert journal_count(conn) == (len(trading.blocks), trading.head)
        # The last invocations may have left projection work: the next one does it.
        report = persister.project()
        assert report is not None and not report.failed
        assert report.lag == dict.fromkeys(COLUMNS, 0)
        assert read_models(conn) == reference
        assert_caught_up(conn, trading.head)


def test_rewound_checkpoints_are_refused_not_applied_twice(
    databases: Databases, trading: Journal, reference: Models
) -> None:
    """A checkpoint moved back (by hand, or a bug) must not duplicate rows: each projection
    whose rows the rewound blocks would repeat refuses them and stays there, recorded failed."""
    url = databases.new()
    project_at_once(url, trading)
    middle = trading.blocks[len(trading.blocks) // 2].last_seq
    with connect(url) as conn:
        conn.execute("UPDATE projection_checkpoints SET last_seq = %s", (middle,))
        report = run_projections(conn, ALL_PROJECTIONS, max_blocks=7)
        models = read_models(conn)
        after = checkpoints(conn)

    assert models == reference
    assert_no_duplicates(models)
    # Every projection with rows in the rewound blocks refuses them; markets (whose rows came
    # from earlier blocks, and are updated in place by later ones) is the exception.
    refusing = set(COLUMNS) - {"markets"}
    assert set(report.failed) == refusing
    for name in refusing:
        assert after[name].last_seq == middle
        assert after[name].failures == 1 and after[name].failed
        assert after[name].last_error == report.failed[name]


def test_overlapping_runs_never_apply_a_block_twice(
    databases: Databases, trading: Journal, reference: Models
) -> None:
    """A checkpoint row another invocation holds is skipped, not waited for nor applied twice;
    and runs on several connections at once end with the same read models."""
    url = databases.new()
    with connect(url) as conn, connect(url) as holder:
        write_journal(conn, trading.messages)
        with holder.transaction():
            holder.execute(
                "SELECT 1 FROM projection_checkpoints WHERE name IN ('orders', 'klines') FOR UPDATE"
            )
            report = run_round(conn, ALL_PROJECTIONS, max_blocks=5)
            assert sorted(report.skipped) == ["klines", "orders"]
            assert set(report.applied) == set(COLUMNS) - {"klines", "orders"}
        models = read_models(conn)
        assert models["orders"] == models["klines"] == []
        assert {n: c.last_seq for n, c in checkpoints(conn).items()} == {
            n: 0 if n in ("orders", "klines") else trading.blocks[4].last_seq for n in COLUMNS
        }

    with ThreadPoolExecutor(4) as pool:

        def run(max_blocks: int) -> RunReport:
            with connect(url) as conn:
                return run_projections(conn, ALL_PROJECTIONS, max_blocks=max_blocks)

        reports = list(pool.map(run, [1, 2, 3, 4]))
    assert not any(report.failed for report in reports)
    with connect(url) as conn:
        # One of them may have stopped while another held a row: the next run finishes.
        assert not run_projections(conn, ALL_PROJECTIONS).failed
        assert_caught_up(conn, trading.head)
        assert read_models(conn) == reference


# -- 2. FAILURES --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COLUMNS))
def test_failed_projection_resumes_from_its_checkpoint(
    name: str, databases: Databases, trading: Journal, reference: Models
) -> None:
    url = databases.new()
    flaky = Flaky(next(p for p in ALL_PROJECTIONS if p.name == name), fail_on={3, 4})
    projections = with_flaky([flaky])
    with connect(url) as conn:
        write_journal(conn, trading.messages)

        # Run 1: two applies go through, the third writes its rows and raises.
        report = run_projections(conn, projections, max_blocks=4)
        assert set(report.failed) == {name}
        assert report.failed[name] == f"RuntimeError: injected failure of {name}, apply 3"
        assert flaky.calls == 3
        stuck = flaky.applied_through
        assert 0 < stuck < trading.head
        after = checkpoints(conn)
        assert after[name] == Checkpoint(stuck, 1, report.failed[name], True)
        for other in set(COLUMNS) - {name}:
            assert after[other] == Checkpoint(trading.head, 0, None, False), other
        assert report.lag == {n: trading.head - after[n].last_seq for n in COLUMNS}
        partial = read_models(conn)

        # Run 2: it fails again, straight away: one more consecutive failure, still there.
        report = run_projections(conn, projections, max_blocks=4)
        assert set(report.failed) == {name} and flaky.calls == 4
        assert checkpoints(conn)[name] == Checkpoint(
            stuck, 2, f"RuntimeError: injected failure of {name}, apply 4", True
        )
        assert read_models(conn) == partial

        # Run 3: it catches up, from where it stopped.
        report = run_projections(conn, projections, max_blocks=4)
        assert not report.failed
        assert_caught_up(conn, trading.head)
        assert read_models(conn) == reference

    # Nothing lost, nothing applied twice: the failed projection's table held exactly what the
    # journal up to its checkpoint makes, and the others were complete.
    prefix_url = databases.new()
    project_at_once_through(prefix_url, trading, stuck)
    prefix = read_url(prefix_url)
    for table in COLUMNS:
        assert partial[table] == (prefix[table] if table == name else reference[table]), table


def project_at_once_through(url: str, journal: Journal, last_seq: int) -> None:
    with connect(url) as conn:
        write_journal(conn, journal.through(last_seq))
        report = run_projections(conn, ALL_PROJECTIONS, max_blocks=len(journal.blocks) + 1)
        assert not report.failed


def test_failing_projections_never_fail_the_batch(
    databases: Databases,
    persister_env: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    trading: Journal,
    reference: Models,
) -> None:
    """Every projection fails now and then while the Lambda runs: every batch still succeeds,
    the journal is complete, and the read models end up as if nothing had failed."""
    url = databases.new()
    persister_env(url)
    flaky = [
        Flaky(projection, fail_on=fail_on)
        for projection, fail_on in zip(
            ALL_PROJECTIONS, [{1}, {2, 3}, {4}, {2}, {5, 7}, {3, 6}], strict=True
        )
    ]
    monkeypatch.setattr(persister, "ALL_PROJECTIONS", with_flaky(flaky))
    feed(trading.messages, batch_size=3)
    with connect(url) as conn:
        assert journal_count(conn) == (len(trading.blocks), trading.head)
    assert [f.failures for f in flaky] == [1, 2, 1, 1, 2, 2]
    report = persister.project()
    assert report is not None and not report.failed
    with connect(url) as conn:
        assert_caught_up(conn, trading.head)
        assert read_models(conn) == reference


def test_a_projection_that_always_fails_holds_back_nothing_else(
    databases: Databases,
    persister_env: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    trading: Journal,
    reference: Models,
) -> None:
    """The other read models keep up with the journal, however far behind the broken one is (the
    journal here is twice as many blocks as a round reads). A run used to stop after a round in
    which nothing was applied: once the broken one was a round's worth of blocks behind, the
    first round read only blocks the others were past, and all of them stalled."""
    assert len(trading.blocks) > 2 * DEFAULT_BLOCKS_PER_ROUND
    url = databases.new()
    persister_env(url)
    broken = Flaky(ALL_PROJECTIONS[3], always=True)
    monkeypatch.setattr(persister, "ALL_PROJECTIONS", with_flaky([broken]))
    events = list(sqs_events(trading.messages, 10))
    for event in events:
        assert invoke(event) == []
    with connect(url) as conn:
        assert journal_count(conn) == (len(trading.blocks), trading.head)
        after = checkpoints(conn)
        # One failure per invocation (a failed projection is not retried within one).
        assert broken.failures == len(events)
        assert after[broken.name] == Checkpoint(
            0, len(events), f"RuntimeError: injected failure of fills, apply {len(events)}", True
        )
        models = read_models(conn)
    assert models["fills"] == []
    for table in set(COLUMNS) - {broken.name}:
        assert models[table] == reference[table], table


def test_projection_round_crash_never_fails_the_batch(
    databases: Databases,
    persister_env: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    trading: Journal,
) -> None:
    """Even the projection runner itself blowing up (the connection lost mid-round) leaves the
    batch's response alone: the journal is written."""
    url = databases.new()
    persister_env(url)

    def crash(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(persister, "run_projections", crash)
    feed(trading.messages)
    assert persister.project() is None
    with connect(url) as conn:
        assert journal_count(conn) == (len(trading.blocks), trading.head)
        assert {c.last_seq for c in checkpoints(conn).values()} == {0}


@pytest.mark.parametrize("name", [projection.name for projection in ALL_PROJECTIONS])
def test_a_damaged_read_model_is_rebuilt_from_the_journal(
    databases: Databases, trading: Journal, reference: Models, name: str
) -> None:
    """``python -m functions.persister.rebuild NAME`` empties one read model and projects the
    whole journal into it again: damaged rows come back right, the others are not touched."""
    url = databases.new()
    project_at_once(url, trading)
    with connect(url) as conn:
        conn.execute(f"DELETE FROM {name} WHERE ctid IN (SELECT ctid FROM {name} LIMIT 3)")
        others = {table: rows for table, rows in read_models(conn).items() if table != name}
        assert read_models(conn)[name] != reference[name]
    assert rebuild_main([name, "--database-url", url]) == 0
    with connect(url) as conn:
        models = read_models(conn)
        assert models == reference
        assert {table: rows for table, rows in models.items() if table != name} == others
        assert checkpoints(conn)[name].last_seq == trading.head

        # Not while a persister is applying it: the checkpoint row is locked.
        with connect(url) as holder, holder.transaction():
            holder.execute(
                "SELECT 1 FROM projection_checkpoints WHERE name = %s FOR UPDATE", (name,)
            )
            assert rebuild_main([name, "--database-url", url]) == 1
        assert read_models(conn) == reference


# -- 3. KLINES ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTrade:
    ts: int
    market: str
    price: int
    quantity: int
    buyer_maker: bool


# µs before and at a bucket's start: month starts (Nov -> Dec on a Monday, Dec -> Jan, into and
# out of a 28-day and a 29-day February), Monday week starts, and the fixed intervals.
MONTH_STARTS = [
    utc(2025, 12, 1),
    utc(2026, 1, 1),
    utc(2026, 2, 1),
    utc(2026, 3, 1),
    utc(2028, 2, 1),
    utc(2028, 3, 1),
]
WEEK_STARTS = [utc(2025, 12, 1), utc(2026, 1, 5), utc(2026, 2, 23), utc(2028, 2, 28)]
DAY_STARTS = [utc(2028, 2, 29)]  # a leap day


def fixed_boundaries(rng: random.Random) -> list[int]:
    """For each fixed interval, a bucket start in late November 2025 (after the deposits)."""
    starts = []
    for interval in FIXED:
        moment = utc(2025, 11, 25) + rng.randrange(5 * 86_400) * 1_000_000
        starts.append(next_candle_start(candle_start(moment, interval), interval))
    return starts


def kline_plan(seed: int) -> tuple[list[PlannedTrade], list[int]]:
    """Trades at every boundary (1 µs before, at, and sometimes more at the same µs), clusters of
    random trades around them, and long empty stretches between; and the boundaries."""
    rng = random.Random(seed)
    boundaries = sorted({*MONTH_STARTS, *WEEK_STARTS, *DAY_STARTS, *fixed_boundaries(rng)})
    times: list[int] = []
    for boundary in boundaries:
        times += [boundary - 1, boundary]
        times += [boundary] * rng.randrange(2)  # more trades in the same µs
        # A cluster around it, off the boundary itself.
        for _ in range(rng.randint(3, 8)):
            offset = rng.choice([1, -1]) * rng.randint(2, 3 * 3_600_000_000)
            times.append(boundary + offset)
    times.sort()
    plan = [
        PlannedTrade(
            ts,
            market,
            rng.randint(9_000, 11_000) if market == "SOL_USDC" else rng.randint(900_000, 1_100_000),
            rng.randint(2, 30),
            rng.random() < 0.5,
        )
        for ts in times
        for market in [rng.choice(["SOL_USDC", "SOL_USDC", "BTC_USDC"])]
    ]
    return plan, boundaries


def kline_journal(plan: list[PlannedTrade], **factory_args: Any) -> Journal:
    """Each planned trade: a maker and a taker for the same price and quantity, both stamped
    with the trade's time (the book is empty again after it)."""
    factory = JournalFactory(**factory_args)
    deposits = [
        Deposit(id=f"kd-{account}-{asset}", ts=0, account=account, asset=asset, amount=amount)
        for account in (1, 2, 3)
        for asset, amount in (
            ("USDC", 10**9 * 10**6),
            ("SOL", 10**6 * 10**9),
            ("BTC", 10**4 * 10**8),
        )
    ]
    factory.run(deposits, seal=False)
    factory.step_us = 0
    for n, trade in enumerate(plan):
        maker_side, taker_side = (Side.BID, Side.ASK) if trade.buyer_maker else (Side.ASK, Side.BID)
        factory.ts = trade.ts
        factory.run(
            [
                PlaceOrder(
                    id=f"km-{n}",
                    ts=0,
                    account=1 + 2 * (n % 2),
                    market=trade.market,
                    side=maker_side,
                    order_type=OrderType.LIMIT,
                    price=trade.price,
                    quantity=trade.quantity,
                ),
                PlaceOrder(
                    id=f"kt-{n}",
                    ts=0,
                    account=2,
                    market=trade.market,
                    side=taker_side,
                    order_type=OrderType.LIMIT,
                    price=trade.price,
                    quantity=trade.quantity,
                    time_in_force=TimeInForce.IOC,
                ),
            ],
            seal=False,
        )
    factory.seal()
    journal = Journal(factory.engine, factory.take())
    trades = journal.trades()
    assert [(t.ts, t.market, t.price, t.quantity, t.is_buyer_maker) for t in trades] == [
        (p.ts, p.market, p.price, p.quantity, p.buyer_maker) for p in plan
    ]
    return journal


def test_candle_start_reference() -> None:
    """The test's own bucketing, on dates checked by hand."""
    assert datetime(2025, 12, 1, tzinfo=UTC).weekday() == 0  # a Monday and a month start
    before_new_year = utc(2026, 1, 1) - 1
    assert candle_start(before_new_year, "1month") == utc(2025, 12, 1)
    assert candle_start(before_new_year, "1w") == utc(2025, 12, 29)
    assert candle_start(before_new_year, "1d") == utc(2025, 12, 31)
    assert candle_start(before_new_year, "12h") == utc(2025, 12, 31, 12)
    assert candle_start(utc(2028, 2, 29, 13, 7), "1month") == utc(2028, 2, 1)
    assert next_candle_start(utc(2028, 2, 1), "1month") == utc(2028, 3, 1)
    assert next_candle_start(utc(2025, 12, 1), "1month") == utc(2026, 1, 1)
    assert candle_start(utc(2026, 1, 4, 23, 59), "1w") == utc(2025, 12, 29)
    assert candle_start(utc(2026, 1, 5), "1w") == utc(2026, 1, 5)
    assert candle_start(utc(1970, 1, 4, 5), "3d") == utc(1970, 1, 4)


def test_klines_equal_a_direct_aggregation_of_the_trades(databases: Databases) -> None:
    plan, boundaries = kline_plan(2024)
    # The same trades three ways: a block per record and a round per block (every candle
    # upserted trade by trade); one big block in one round; odd blocks through the Lambda.
    small = kline_journal(plan, records_per_block=1)
    big = kline_journal(plan, records_per_block=10**6, max_bytes=10**9)
    odd = kline_journal(plan, records_per_block=7)
    # (The factory seals the market seed into a block of its own.)
    assert len(big.blocks) == 2 and len(small.blocks) > 2 * len(plan)
    assert small.trades() == big.trades() == odd.trades()
    expected = expected_klines(big.trades())

    small_url, big_url, odd_url = databases.new(), databases.new(), databases.new()
    with connect(small_url) as conn:
        write_journal(conn, small.messages)
        report = run_projections(conn, ALL_PROJECTIONS, max_blocks=1, max_rounds=10**6)
        assert not report.failed and report.rounds == len(small.blocks) + 1
    project_at_once(big_url, big)
    with connect(odd_url) as conn:
        for start in range(0, len(odd.messages), 5):
            write_journal(conn, odd.messages[start : start + 5])
            assert not run_projections(conn, ALL_PROJECTIONS, max_blocks=3).failed

    by_split = {url: read_url(url) for url in (small_url, big_url, odd_url)}
    for models in by_split.values():
        assert models["klines"] == expected
        # The trades table is what the klines are made of: the same trades.
        assert models["trades"] == sorted(trade_row(t) for t in big.trades())

    klines = {(row[0], row[1], row[2]): row for row in expected}
    trade_ids_at: dict[int, list[int]] = defaultdict(list)
    for trade in big.trades():
        trade_ids_at[trade.ts].append(trade.trade_id)
    by_interval: dict[str, list[int]] = defaultdict(list)
    markets = {t.market for t in big.trades()}
    for _, interval, start in klines:
        by_interval[interval].append(start)

    # Boundaries: the trade 1 µs before a start closes the candle before; the first trade at the
    # start opens its own, in every interval the start is a boundary of.
    for boundary in boundaries:
        before = trade_ids_at[boundary - 1]
        at = trade_ids_at[boundary]
        assert len(before) == 1 and at
        for interval in INTERVALS:
            if candle_start(boundary, interval) != boundary:
                continue
            opening = [
                row for m in markets if (row := klines.get((m, interval, boundary))) is not None
            ]
            assert min(row[10] for row in opening) == at[0], (interval, boundary)
            previous = [
                row
                for m in markets
                if (row := klines.get((m, interval, candle_start(boundary - 1, interval))))
            ]
            assert max(row[11] for row in previous) == before[0], (interval, boundary)
            assert candle_start(boundary - 1, interval) < boundary

    # Empty buckets: a candle for each bucket with a trade, none for any other, and every
    # interval has stretches of several empty buckets between candles.
    for interval in INTERVALS:
        starts = sorted(by_interval[interval])
        assert set(starts) == {candle_start(t.ts, interval) for t in big.trades()}
        assert max(empty_buckets(a, b, interval) for a, b in itertools.pairwise(starts)) >= 3
    # None for the months of the long stretch between March 2026 and January 2028.
    assert not [s for s in by_interval["1month"] if utc(2026, 4, 1) <= s < utc(2028, 1, 1)]


def empty_buckets(start: int, end: int, interval: str) -> int:
    """How many buckets lie strictly between the candles starting at ``start`` and ``end``."""
    if interval in FIXED:
        return (end - start) // (FIXED[interval] // timedelta(microseconds=1)) - 1
    if interval == "1w":
        return (end - start) // (timedelta(weeks=1) // timedelta(microseconds=1)) - 1
    count = -1
    while start < end:
        start = next_candle_start(start, interval)
        count += 1
    return count


def trade_row(t: TradeExecuted) -> tuple[Any, ...]:
    return (
        t.trade_id,
        t.market,
        t.price,
        t.quantity,
        t.quote_quantity,
        t.is_buyer_maker,
        t.buy_order_id,
        t.sell_order_id,
        t.buyer,
        t.seller,
        t.buyer_fee,
        t.seller_fee,
        t.ts,
        t.seq,
    )


# -- 4. THE READ MODELS ARE THE ENGINE'S VIEW ---------------------------------------------------


# An OrderClosed's fields after seq and ts: the order's id, owner, close and terms.
ORDER_TERMS = (
    "order_id",
    "account",
    "market",
    "status",
    "reason",
    "executed_quantity",
    "executed_quote_quantity",
    "side",
    "order_type",
    "time_in_force",
    "price",
    "quantity",
    "quote_quantity",
    "client_id",
    "post_only",
    "self_trade_prevention",
    "created_at",
)


def assert_read_models_match_engine(models: Models, journal: Journal) -> None:
    """Every read model equals what the engine said (its events) and says (its state)."""
    engine = journal.engine
    assert_no_duplicates(models)

    # Markets: the engine's current specs, with when they were added and last changed.
    added: dict[str, MarketAdded] = {}
    changed: dict[str, AnyEvent] = {}
    fees: dict[str, tuple[int, int]] = {}
    for _, event in journal.events():
        if isinstance(event, MarketAdded):
            added[event.market.symbol] = changed[event.market.symbol] = event
            fees[event.market.symbol] = (event.market.maker_fee_bps, event.market.taker_fee_bps)
        elif isinstance(event, MarketFeesChanged | MarketStateChanged):
            changed[event.market] = event
            if isinstance(event, MarketFeesChanged):
                fees[event.market] = (event.maker_fee_bps, event.taker_fee_bps)
    assert models["markets"] == sorted(
        (
            spec.symbol,
            spec.base,
            spec.quote,
            added[spec.symbol].base.decimals,
            added[spec.symbol].quote.decimals,
            msgspec.to_builtins(spec),
            spec.state.value,
            spec.maker_fee_bps,
            spec.taker_fee_bps,
            added[spec.symbol].ts,
            changed[spec.symbol].ts,
            changed[spec.symbol].seq,
        )
        for spec in engine.markets()
    )
    for spec in engine.markets():
        assert fees[spec.symbol] == (spec.maker_fee_bps, spec.taker_fee_bps)
    assets = {spec.symbol: (spec.base, spec.quote) for spec in engine.markets()}

    # Orders: open ones as the engine has them now, closed ones as their OrderClosed says.
    accepted: dict[int, OrderAccepted] = {}
    closed: dict[int, OrderClosed] = {}
    last_touch: dict[int, tuple[int, int]] = {}  # order id -> (ts, seq) of its last event
    for _, event in journal.events():
        if isinstance(event, OrderAccepted):
            accepted[event.order_id] = event
            last_touch[event.order_id] = (event.ts, event.seq)
        elif isinstance(event, OrderClosed):
            closed[event.order_id] = event
            last_touch[event.order_id] = (event.ts, event.seq)
        elif isinstance(event, TradeExecuted):
            last_touch[event.buy_order_id] = last_touch[event.sell_order_id] = (
                event.ts,
                event.seq,
            )
    open_views = {
        view.order_id: view for account in engine.accounts() for view in engine.open_orders(account)
    }
    assert open_views.keys() == accepted.keys() - closed.keys()
    expected_orders = []
    for order_id, a in accepted.items():
        c = closed.get(order_id)
        if c is None:
            view = open_views[order_id]
            assert engine.open_order(order_id) == view
            assert (view.account, view.market, view.side, view.price, view.quantity) == (
                a.account,
                a.market,
                a.side,
                a.price,
                a.quantity,
            )
            assert view.created_at == a.ts
            done = (view.executed_quantity, view.executed_quote_quantity, view.status.value)
            close_reason, closed_at = None, None
        else:
            assert engine.open_order(order_id) is None
            # A close carries the order's terms: the same as when it was accepted.
            assert c.__struct_fields__[2:] == ORDER_TERMS
            assert [getattr(c, f) for f in ORDER_TERMS if f in a.__struct_fields__] == [
                getattr(a, f) for f in ORDER_TERMS if f in a.__struct_fields__
            ]
            assert c.created_at == a.ts
            done = (c.executed_quantity, c.executed_quote_quantity, c.status.value)
            close_reason, closed_at = c.reason.value, c.ts
        updated_at, last_seq = last_touch[order_id]
        expected_orders.append(
            (
                order_id,
                a.account,
                a.market,
                a.client_id,
                a.side.value,
                a.order_type.value,
                a.time_in_force.value,
                a.price,
                a.quantity,
                a.quote_quantity,
                *done,
                close_reason,
                a.post_only,
                a.self_trade_prevention.value,
                a.ts,
                updated_at,
                closed_at,
                a.seq,
                last_seq,
            )
        )
    assert models["orders"] == sorted(expected_orders)
    # Executed amounts in the orders agree with the trades.
    executed: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    trades = journal.trades()
    for t in trades:
        for order_id in (t.buy_order_id, t.sell_order_id):
            executed[order_id][0] += t.quantity
            executed[order_id][1] += t.quote_quantity
    for row in models["orders"]:
        assert [row[10], row[11]] == executed.get(row[0], [0, 0]), row
        if row[12] in (OrderStatus.NEW.value,):
            assert row[10] == 0

    # Trades: every TradeExecuted, once.
    assert models["trades"] == sorted(trade_row(t) for t in trades)

    # Fills: two per trade, each party's fee in what it receives, at its maker or taker rate.
    fee_rates: dict[str, tuple[int, int]] = {}
    fills = []
    for _, event in journal.events():
        if isinstance(event, MarketAdded):
            fee_rates[event.market.symbol] = (
                event.market.maker_fee_bps,
                event.market.taker_fee_bps,
            )
        elif isinstance(event, MarketFeesChanged):
            fee_rates[event.market] = (event.maker_fee_bps, event.taker_fee_bps)
        elif isinstance(event, TradeExecuted):
            t = event
            maker_bps, taker_bps = fee_rates[t.market]
            rules = engine.market_rules(t.market)
            assert rules is not None
            base_atoms = t.quantity * rules.base_atoms_per_lot
            buyer_bps = maker_bps if t.is_buyer_maker else taker_bps
            seller_bps = taker_bps if t.is_buyer_maker else maker_bps
            assert t.buyer_fee == -(-base_atoms * buyer_bps // 10_000)
            assert t.seller_fee == -(-t.quote_quantity * seller_bps // 10_000)
            assert t.quote_quantity == t.quantity * t.price * rules.quote_atoms_per_tick_lot
            base, quote = assets[t.market]
            common = (t.market, t.price, t.quantity, t.quote_quantity)
            buyer = (t.buy_order_id, *common, t.buyer_fee, base, t.is_buyer_maker, t.ts, t.seq)
            seller = (t.sell_order_id, *common, t.seller_fee, quote, not t.is_buyer_maker)
            fills.append((t.buyer, t.trade_id, "Bid", *buyer))
            fills.append((t.seller, t.trade_id, "Ask", *seller, t.ts, t.seq))
    assert len(fills) == 2 * len(trades)
    assert models["fills"] == sorted(fills)

    # The balance ledger: every BalanceChanged, with its command; each row follows from the one
    # before, the last is the balance the engine holds, and the deltas add up to it.
    assert models["balance_ledger"] == sorted(
        (
            e.seq,
            e.account,
            e.asset,
            e.available,
            e.locked,
            e.available_delta,
            e.locked_delta,
            e.reason.value,
            str(e.reference),
            command_id,
            e.ts,
        )
        for command_id, e in journal.events()
        if isinstance(e, BalanceChanged)
    )
    last: dict[tuple[int, str], tuple[int, int]] = {}
    sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for seq, account, asset, available, locked, d_available, d_locked, *_ in models[
        "balance_ledger"
    ]:
        before = last.get((account, asset), (0, 0))
        assert (available, locked) == (before[0] + d_available, before[1] + d_locked), seq
        last[account, asset] = (available, locked)
        sums[account, asset][0] += d_available
        sums[account, asset][1] += d_locked
    held = {
        (account, asset): balance
        for account in engine.accounts()
        for asset, balance in engine.balances(account).items()
        if balance != (0, 0)
    }
    assert held.keys() <= last.keys()
    for key, balance in last.items():
        assert balance == engine.balances(key[0]).get(key[1], (0, 0)), key
        assert tuple(sums[key]) == balance, key
    assert any(account == FEE_ACCOUNT for account, _ in last) == any(
        t.buyer_fee or t.seller_fee for t in trades
    )

    # Klines: the trades, aggregated.
    assert models["klines"] == expected_klines(trades)


def test_read_models_equal_the_engine(
    databases: Databases, persister_env: Callable[[str], None]
) -> None:
    """A few thousand commands through the Lambda, batch by batch, over three weeks (ten minutes
    between commands: across a month's start, so into a second month's partitions), the read
    models checked against the engine every 400 commands."""
    url = databases.new()
    persister_env(url)
    fed = steps = partial = 0
    for journal in growing_journal(
        2025,
        orders=3_000,
        commands_per_step=400,
        accounts=30,
        records_per_block=50,
        step_us=600_000_000,
        spread=25,
    ):
        feed(journal.messages[fed:])
        fed = len(journal.messages)
        steps += 1
        with connect(url) as conn:
            assert_caught_up(conn, journal.head)
            models = read_models(conn)
        assert_read_models_match_engine(models, journal)
        partial += sum(row[12] == OrderStatus.PARTIALLY_FILLED.value for row in models["orders"])
    assert steps > 5
    assert len(journal.trades()) > 1_000
    # Open orders partly filled (some in a later invocation than the one they came in).
    assert partial > 20


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**32),
    orders=st.integers(1, 300),
    commands_per_step=st.integers(1, 150),
    accounts=st.integers(2, 8),
    spread=st.integers(0, 40),
    records_per_block=st.integers(1, 40),
    messages_per_write=st.integers(1, 12),
    max_blocks=st.integers(1, 25),
    step_us=st.sampled_from([1, 1_000, 1_000_000, 60_000_000, 3_600_000_000]),
)
def test_read_models_equal_the_engine_for_any_commands_and_blocks(
    database_template: str,
    seed: int,
    orders: int,
    commands_per_step: int,
    accounts: int,
    spread: int,
    records_per_block: int,
    messages_per_write: int,
    max_blocks: int,
    step_us: int,
) -> None:
    """Random command sequences, cut into random blocks, written a few messages at a time with
    projection runs of random round sizes in between; the read models checked against the
    engine after every step of commands."""
    made = Databases(database_template)
    try:
        url = made.new()
        with connect(url) as conn:
            written = 0
            for journal in growing_journal(
                seed,
                orders=orders,
                commands_per_step=commands_per_step,
                accounts=accounts,
                records_per_block=records_per_block,
                step_us=step_us,
                spread=spread,
            ):
                for start in range(written, len(journal.messages), messages_per_write):
                    write_journal(conn, journal.messages[start : start + messages_per_write])
                    report = run_projections(conn, ALL_PROJECTIONS, max_blocks=max_blocks)
                    assert not report.failed, report
                written = len(journal.messages)
                assert_caught_up(conn, journal.head)
                assert_read_models_match_engine(read_models(conn), journal)
    finally:
        made.drop_all()
