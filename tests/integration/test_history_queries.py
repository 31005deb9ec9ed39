"""The history queries (cloudex.history) on read models the persister built from a real journal:
each answer is what the pure engine said (its trades, its closed orders and open orders, its
candles), in Backpack shapes, paged without gaps or overlaps, bounded, and served by an index.

The journal runs two markets (SOL_USDC and TATA_INR) from 2025-11-30 23:30 UTC, one command a
second, so trades fall in two monthly partitions and candles cross a day, a week (Monday
2025-12-01) and a month boundary.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from cloudex import history
from cloudex.history import (
    MAX_KLINES,
    MAX_LIMIT,
    MAX_OFFSET,
    InvalidInterval,
    InvalidLimit,
    InvalidOffset,
    InvalidTimeRange,
    UnknownMarket,
)
from cloudex.journal import JournalBlock, decode_journal_message
from cloudex.klines import INTERVALS, SECOND, bucket_start
from cloudex.markets import AssetSpec, MarketRules, MarketSpec, compile_market
from cloudex.messages import (
    Candle,
    Deposit,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
)
from cloudex.views import Json, fill_json, kline_json, order_json, public_trade_json
from engine_service.core import Engine
from functions.persister import handler as persister
from localgw.lambda_context import LambdaContext
from tests.journal_factory import JournalFactory, sqs_events, trading_commands
from tests.stubs import markets_config

START_TS = 1_764_545_400_000_000  # 2025-11-30 23:30:00 UTC
ACCOUNTS = 12
MARKETS = ("SOL_USDC", "TATA_INR")


# -- THE JOURNAL AND WHAT THE ENGINE SAID -----------------------------------------------------


@dataclass
class Journal:
    messages: list[tuple[str, str]]
    engine: Engine
    trades: list[TradeExecuted] = field(default_factory=list)
    accepted: dict[int, OrderAccepted] = field(default_factory=dict)
    closed: dict[int, OrderClosed] = field(default_factory=dict)

    def rules(self, market: str) -> MarketRules:
        rules = self.engine.market_rules(market)
        assert rules is not None
        return rules

    def expected_orders(self, account: int) -> list[Json]:
        """The account's orders newest first: as they closed, or as the engine has them open."""
        out = []
        for order_id in sorted(self.accepted, reverse=True):
            accepted = self.accepted[order_id]
            if accepted.account != account:
                continue
            closed = self.closed.get(order_id)
            rules = self.rules(accepted.market)
            if closed is not None:
                out.append(order_json(rules, closed))
            else:
                view = self.engine.open_order(order_id)
                assert view is not None, f"order {order_id} neither closed nor open"
                out.append(order_json(rules, view))
        return out

    def account_trades(self, account: int) -> list[TradeExecuted]:
        """The account's trades, newest first."""
        mine = [t for t in self.trades if account in (t.buyer, t.seller)]
        assert all(t.buyer != t.seller for t in mine)  # no self-trade: one fill per trade
        return sorted(mine, key=lambda t: (t.ts, t.trade_id), reverse=True)

    def expected_fills(self, account: int, trades: list[TradeExecuted]) -> list[Json]:
        out = []
        for t in trades:
            order_id = t.buy_order_id if t.buyer == account else t.sell_order_id
            client_id = self.accepted[order_id].client_id
            out.append(fill_json(self.rules(t.market), t, account, client_id))
        return out


@pytest.fixture(scope="module")
def journal() -> Journal:
    factory = JournalFactory(start_ts=START_TS, step_us=1_000_000)
    rng = random.Random(20251130)
    factory.run(
        Deposit(id=f"hist-{asset}-{account}", ts=0, account=account, asset=asset, amount=amount)
        for account in range(1, ACCOUNTS + 1)
        for asset, amount in (("TATA", 10**6), ("INR", 10**10))
    )
    # Both markets trade the whole time: their commands interleave at random.
    sol = trading_commands(rng, accounts=ACCOUNTS, orders=1_800)
    tata = trading_commands(rng, accounts=ACCOUNTS, orders=900, market="TATA_INR", deposits=False)
    sources = [sol, sol, tata]
    commands = []
    while sources:
        source = rng.choice(sources)
        command = next(source, None)
        if command is None:
            sources = [s for s in sources if s is not source]
        else:
            commands.append(command)
    factory.run(commands)
    result = Journal(factory.take(), factory.engine)
    for _, body in result.messages:
        message = decode_journal_message(body)
        if not isinstance(message, JournalBlock):
            continue
        for record in message.records:
            for event in record.result.events:
                if isinstance(event, TradeExecuted):
                    result.trades.append(event)
                elif isinstance(event, OrderAccepted):
                    result.accepted[event.order_id] = event
                elif isinstance(event, OrderClosed):
                    result.closed[event.order_id] = event
    # The journal is worth testing on: both markets traded, over several minutes and months.
    for market in MARKETS:
        assert sum(t.market == market for t in result.trades) > 100
    months = {bucket_start(t.ts, "1month") for t in result.trades}
    assert len(months) == 2
    return result


@pytest.fixture
def conn(
    journal: Journal, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[psycopg.Connection]:
    """A fresh database with the journal fed through the persister, as Lambda would: SQS
    batches of 10, each followed by the projections' catch-up."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    context = LambdaContext("persister")
    try:
        for event in sqs_events(journal.messages):
            response = persister.handler(event, context)
            assert not response["batchItemFailures"], response
    finally:
        persister.database.close()
    with psycopg.connect(database_url, autocommit=True) as connection:
        lag = connection.execute(
            "SELECT c.name, h.last_seq - c.last_seq, c.failures FROM projection_checkpoints c, "
            "journal_head h"
        ).fetchall()
        assert all(behind == 0 and failures == 0 for _, behind, failures in lag), lag
        yield connection


def pages(fetch: Any, size: int) -> list[Json]:
    """Every page of ``fetch(limit, offset)`` until a short one, concatenated."""
    out: list[Json] = []
    while True:
        page = fetch(size, len(out))
        out += page
        if len(page) < size:
            return out


# -- ANSWERS AGAINST THE ENGINE ---------------------------------------------------------------


def test_market_rules_are_the_engines(journal: Journal, conn: psycopg.Connection) -> None:
    rules = history.market_rules(conn)
    assert sorted(rules) == sorted(spec.symbol for spec in journal.engine.markets())
    for symbol, got in rules.items():
        engine_rules = journal.rules(symbol)
        # The table keeps an asset's symbol and decimals, not its display name.
        assert got == compile_market(
            engine_rules.spec,
            AssetSpec(engine_rules.base.symbol, engine_rules.base.decimals),
            AssetSpec(engine_rules.quote.symbol, engine_rules.quote.decimals),
        )


def test_recent_trades_newest_first_and_paged(journal: Journal, conn: psycopg.Connection) -> None:
    rules = history.market_rules(conn)
    for market in MARKETS:
        expected = [
            public_trade_json(rules[market], t)
            for t in reversed(journal.trades)
            if t.market == market
        ]
        assert history.recent_trades(conn, rules[market]) == expected[:100]
        assert history.recent_trades(conn, rules[market], limit=5, offset=3) == expected[3:8]
        # Pages of 97 (not a divisor) cover the whole history once, in order, across the two
        # monthly partitions.
        every = pages(
            lambda limit, offset, r=rules[market]: history.recent_trades(
                conn, r, limit=limit, offset=offset
            ),
            97,
        )
        assert every == expected
        assert len({trade["id"] for trade in every}) == len(expected)
        past = history.recent_trades(conn, rules[market], offset=len(expected))
        assert past == []


def test_order_history_is_every_order_as_it_stands(
    journal: Journal, conn: psycopg.Connection
) -> None:
    rules = history.market_rules(conn)
    statuses: set[str] = set()
    for account in range(1, ACCOUNTS + 1):
        expected = journal.expected_orders(account)
        statuses.update(order["status"] for order in expected)
        every = pages(
            lambda limit, offset, a=account: history.order_history(
                conn, a, rules, limit=limit, offset=offset
            ),
            61,
        )
        assert every == expected
        for market in MARKETS:
            in_market = [order for order in expected if order["symbol"] == market]
            got = history.order_history(conn, account, rules, market=market, limit=MAX_LIMIT)
            assert got == in_market[:MAX_LIMIT]
        assert history.order_history(conn, account, rules, market="BTC_USDC") == []
    # Open, partially filled, filled, cancelled and expired orders were all compared.
    assert statuses >= {"New", "PartiallyFilled", "Filled", "Cancelled", "Expired"}, statuses

    # One order by id (ccxt's fetch_order): an array of that order, or [] when it is not the
    # account's or not in the market asked for.
    some = journal.expected_orders(3)[17]
    order_id = int(some["id"])
    assert history.order_history(conn, 3, rules, order_id=order_id) == [some]
    assert history.order_history(conn, 3, rules, order_id=order_id, market=some["symbol"]) == [some]
    other = "TATA_INR" if some["symbol"] == "SOL_USDC" else "SOL_USDC"
    assert history.order_history(conn, 3, rules, order_id=order_id, market=other) == []
    assert history.order_history(conn, 4, rules, order_id=order_id) == []
    assert history.order_history(conn, 3, rules, order_id=10**12) == []


def test_fill_history_is_each_accounts_side_of_its_trades(
    journal: Journal, conn: psycopg.Connection
) -> None:
    rules = history.market_rules(conn)
    for account in range(1, ACCOUNTS + 1):
        trades = journal.account_trades(account)
        expected = journal.expected_fills(account, trades)
        assert any(fill["clientId"] is not None for fill in expected)
        every = pages(
            lambda limit, offset, a=account: history.fill_history(
                conn, a, rules, limit=limit, offset=offset
            ),
            53,
        )
        assert every == expected
        for market in MARKETS:
            got = history.fill_history(conn, account, rules, market=market, limit=MAX_LIMIT)
            assert got == [fill for fill in expected if fill["symbol"] == market][:MAX_LIMIT]

    # from/to are ms and both inclusive: a window whose ends are the ms of two fills holds both.
    account = 5
    trades = journal.account_trades(account)
    newest_ms, oldest_ms = trades[10].ts // 1000, trades[40].ts // 1000
    window = [t for t in trades if oldest_ms <= t.ts // 1000 <= newest_ms]
    assert trades[10] in window and trades[40] in window
    got = history.fill_history(
        conn, account, rules, from_ms=oldest_ms, to_ms=newest_ms, limit=MAX_LIMIT
    )
    assert got == journal.expected_fills(account, window)
    after = [t for t in trades if t.ts // 1000 >= newest_ms]
    got = history.fill_history(conn, account, rules, from_ms=newest_ms, limit=MAX_LIMIT)
    assert got == journal.expected_fills(account, after)
    before = [t for t in trades if t.ts // 1000 <= oldest_ms]
    got = history.fill_history(
        conn, account, rules, market="SOL_USDC", to_ms=oldest_ms, limit=3, offset=1
    )
    assert (
        got == journal.expected_fills(account, [t for t in before if t.market == "SOL_USDC"])[1:4]
    )
    assert history.fill_history(conn, account, rules, from_ms=0, to_ms=0) == []


def reference_candles(trades: list[TradeExecuted], interval: str) -> list[Candle]:
    """The candles of ``trades`` (one market, in journal order), bucketed the naive way."""
    candles: dict[int, Candle] = {}
    for t in trades:
        start = bucket_start(t.ts, interval)
        c = candles.get(start)
        if c is None:
            candles[start] = Candle(
                interval, start, t.price, t.price, t.price, t.price, t.quantity,
                t.quote_quantity, 1,
            )  # fmt: skip
            continue
        c.high = max(c.high, t.price)
        c.low = min(c.low, t.price)
        c.close = t.price
        c.volume += t.quantity
        c.quote_volume += t.quote_quantity
        c.trades += 1
    return sorted(candles.values(), key=lambda c: c.start)


def test_klines_are_the_trades_candles(journal: Journal, conn: psycopg.Connection) -> None:
    rules = history.market_rules(conn)
    first_s = START_TS // 1_000_000
    last_s = journal.trades[-1].ts // 1_000_000 + 1
    for market in MARKETS:
        trades = [t for t in journal.trades if t.market == market]
        current = {c.interval: c for c in journal.engine.market_stats(market).candles}
        assert "1month" in current and "1w" in current
        for interval in INTERVALS:
            expected = reference_candles(trades, interval)
            since = bucket_start(START_TS, interval)
            got = history.kline_candles(conn, market, interval, since, last_s * 1_000_000)
            assert got == expected, interval
            # The engine's live candle of the interval is the stored one of its bucket.
            if interval in current:
                assert current[interval] in got, interval
            shaped = history.klines(conn, rules[market], interval, since // 1_000_000, last_s)
            assert shaped == [kline_json(rules[market], c) for c in expected], interval
        # startTime is inclusive, endTime exclusive, in seconds.
        minutes = reference_candles(trades, "1m")
        middle = minutes[len(minutes) // 2].start // 1_000_000
        got = history.klines(conn, rules[market], "1m", middle, middle + 180)
        assert got == [
            kline_json(rules[market], c)
            for c in minutes
            if middle <= c.start // 1_000_000 < middle + 180
        ]
        assert len(got) == 3
        assert history.klines(conn, rules[market], "1m", middle, middle) == []
        assert history.klines(conn, rules[market], "1h", first_s - 7200, first_s - 3600) == []


def test_second_klines_are_folded_from_the_trades(
    journal: Journal, conn: psycopg.Connection
) -> None:
    rules = history.market_rules(conn)
    for market in MARKETS:
        trades = [t for t in journal.trades if t.market == market]
        expected = reference_candles(trades, SECOND)
        assert len(expected) > 1
        first_s = expected[0].start // 1_000_000
        got = history.klines(conn, rules[market], SECOND, first_s, first_s + 3_600)
        assert got == [
            kline_json(rules[market], c) for c in expected if c.start // 1_000_000 < first_s + 3_600
        ]
        # At most MAX_KLINES seconds, from startTime.
        wide = history.klines(conn, rules[market], SECOND, first_s, first_s + 10**9)
        last_allowed = first_s + history.MAX_KLINES
        assert wide == [
            kline_json(rules[market], c) for c in expected if c.start // 1_000_000 < last_allowed
        ]


def test_shaped_klines_equal_kline_json(database_url: str) -> None:
    """The SQL-formatted klines equal views.kline_json for every interval and every kind of
    increment: ticks of 0.01, 0.1 and 0.05, steps finer and coarser than the asset's atom, an
    18-decimal quote whose volumes pass 2**63, values below one, and a month's and a week's
    end."""
    config = markets_config()
    rules = {r.symbol: r for r in config.compiled()}
    rules["WEI_ETHX"] = compile_market(
        MarketSpec(
            symbol="WEI_ETHX", base="WEI", quote="ETHX", tick_size="0.000000000001",
            step_size="1000", min_quantity="1000", max_quantity="1000000000",
            max_price="1", min_notional="0", maker_fee_bps=0, taker_fee_bps=0,
        ),
        AssetSpec("WEI", 0),
        AssetSpec("ETHX", 18),
    )  # fmt: skip
    rng = random.Random(5)
    starts = [
        1_735_689_540_000_000,  # 2024-12-31 23:59 UTC: the year ends inside some candles
        1_764_547_140_000_000,  # 2025-11-30 23:59 UTC
        1_709_164_800_000_000,  # 2024-02-29 00:00 UTC
        864_000_000_000,  # 1970-01-11, a Sunday: its week began in 1970 too
    ]
    rows = []
    for market in rules:
        for interval in INTERVALS:
            for ts in starts:
                start = bucket_start(ts, interval)
                volume = rng.choice([1, 7, 10**4, 123_456_789])
                quote = rng.choice([0, 1, 99, 10**6 + 5, 2**64 + 12345, 10**30 + 1])
                low = rng.choice([1, 2, 9, 10, 100])
                rows.append(
                    (market, interval, start, low + 3, low + 20, low, low + 5, volume, quote, 1)
                )
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY klines (market, interval, start, open, high, low, close, volume, "
            "quote_volume, trades, first_trade_id, last_trade_id) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row((*row, 1, 1))
        for market, market_rules in rules.items():
            for interval in INTERVALS:
                candles = history.kline_candles(conn, market, interval, 0, 2**32 * 10**6)
                assert len(candles) == len(starts)
                got = history.klines(conn, market_rules, interval, 0, 2**32)
                assert got == [kline_json(market_rules, c) for c in candles], (market, interval)
                assert len({k["start"] for k in got}) == len(got)
        november = 1_761_955_200  # 2025-11-01: a 1month candle starts in [startTime, endTime)
        month = history.klines(conn, rules["SOL_USDC"], "1month", november, november + 1)
        assert (month[0]["start"], month[0]["end"]) == (
            "2025-11-01 00:00:00",
            "2025-12-01 00:00:00",
        )
        week = history.klines(conn, rules["SOL_USDC"], "1w", 1_735_000_000, 1_736_000_000)
        assert (week[0]["start"], week[0]["end"]) == ("2024-12-30 00:00:00", "2025-01-06 00:00:00")


# -- BOUNDS -----------------------------------------------------------------------------------


def test_bad_arguments_are_refused(database_url: str) -> None:
    rules = {r.symbol: r for r in markets_config().compiled()}
    sol = rules["SOL_USDC"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for limit, offset, error in (
            (0, 0, InvalidLimit),
            (MAX_LIMIT + 1, 0, InvalidLimit),
            (-1, 0, InvalidLimit),
            (10, -1, InvalidOffset),
            (10, MAX_OFFSET + 1, InvalidOffset),
        ):
            with pytest.raises(error, match="between"):
                history.recent_trades(conn, sol, limit=limit, offset=offset)
            with pytest.raises(error):
                history.order_history(conn, 1, rules, limit=limit, offset=offset)
            with pytest.raises(error):
                history.fill_history(conn, 1, rules, limit=limit, offset=offset)
        assert history.recent_trades(conn, sol, limit=MAX_LIMIT, offset=MAX_OFFSET) == []

        for interval in ("2m", "1M", "", "1MONTH", "1S"):
            with pytest.raises(InvalidInterval, match="unknown interval"):
                history.klines(conn, sol, interval, 0, 60)
            with pytest.raises(InvalidInterval):
                history.kline_candles(conn, "SOL_USDC", interval, 0, 60)
        # 1s candles are folded from trades on request, never stored.
        with pytest.raises(InvalidInterval):
            history.kline_candles(conn, "SOL_USDC", "1s", 0, 60)
        for start, end in ((61, 60), (-60, 60), (0, history.MAX_TIME_S + 1)):
            with pytest.raises(InvalidTimeRange):
                history.klines(conn, sol, "1m", start, end)
        with pytest.raises(InvalidTimeRange, match="after"):
            history.kline_candles(conn, "SOL_USDC", "1m", 120_000_000, 60_000_000)
        with pytest.raises(InvalidTimeRange, match="after"):
            history.fill_history(conn, 1, rules, from_ms=2_000, to_ms=1_999)
        with pytest.raises(InvalidTimeRange):
            history.fill_history(conn, 1, rules, from_ms=-1)

        with pytest.raises(UnknownMarket) as unknown:
            history.order_history(conn, 1, rules, market="DOGE_USDC")
        assert unknown.value.code == "INVALID_MARKET"
        with pytest.raises(UnknownMarket):
            history.fill_history(conn, 1, rules, market="DOGE_USDC")
        # Every refusal is a ValueError the API answers with a 400 and a Backpack code.
        assert issubclass(history.HistoryQueryError, ValueError)
        assert InvalidLimit("x").code == "INVALID_CLIENT_REQUEST"


# -- INDEXES ----------------------------------------------------------------------------------

_recorded: list[tuple[Any, Any]] = []


class RecordingCursor(psycopg.Cursor[Any]):
    """Keeps every statement run through it, to EXPLAIN it afterwards."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> RecordingCursor:  # type: ignore[override]
        _recorded.append((query, params))
        super().execute(query, params, **kwargs)
        return self


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


# Synthetic read models big enough that a scan of a whole table would look cheap to nobody:
# 200k orders and trades (400k fills) over 2,000 accounts and four markets, in two monthly
# partitions, and 120k klines.
_BULK = """
SELECT ensure_month_partition('trades', 1764000000000000);
SELECT ensure_month_partition('trades', 1765000000000000);
SELECT ensure_month_partition('fills', 1764000000000000);
SELECT ensure_month_partition('fills', 1765000000000000);
INSERT INTO orders
SELECT g, g % 2000, (ARRAY['SOL_USDC','BTC_USDC','ETH_USDC','TATA_INR'])[1 + g % 4],
       CASE WHEN g % 3 = 0 THEN g END, CASE WHEN g % 2 = 0 THEN 'Bid' ELSE 'Ask' END, 'Limit',
       'GTC', 10000 + g % 50, 10, NULL, 10, 100000, 'Filled', 'Filled', false, 'RejectTaker',
       1764000000000000 + g * 5000000, 1764000000000000 + g * 5000000,
       1764000000000000 + g * 5000000, g, g
FROM generate_series(1::bigint, 200000) g;
INSERT INTO trades
SELECT g, (ARRAY['SOL_USDC','BTC_USDC','ETH_USDC','TATA_INR'])[1 + g % 4], 10000 + g % 50, 10,
       100000, g % 2 = 0, g, g + 1, g % 2000, (g + 1) % 2000, 1, 1,
       1764000000000000 + g * 5000000, g
FROM generate_series(1::bigint, 200000) g;
INSERT INTO fills
SELECT a.account, t.trade_id, a.side, t.buy_order_id, t.market, t.price, t.quantity,
       t.quote_quantity, 1, 'USDC', a.side = 'Bid', t.ts, t.seq
FROM trades t, LATERAL (VALUES (t.buyer, 'Bid'), (t.seller, 'Ask')) a(account, side);
INSERT INTO klines
SELECT (ARRAY['SOL_USDC','BTC_USDC'])[1 + g % 2], (ARRAY['1m','5m','1h'])[1 + g % 3],
       1764000000000000 + g * 60000000, 100, 110, 90, 105, 10, 1000, 3, g, g
FROM generate_series(1::bigint, 120000) g;
ANALYZE;
"""


def test_every_query_uses_an_index(database_url: str) -> None:
    rules = {r.symbol: r for r in markets_config().compiled()}
    with psycopg.connect(database_url, autocommit=True) as setup:
        setup.execute(_BULK)
    ts_ms = 1_764_000_000_000 + 150_000 * 5_000  # inside the second month
    # (what it is, the tables it reads, the indexes it may use (partitions' indexes are named
    # after the parent's columns), the call)
    trades_index = {"market_ts_trade_id"}
    fills_index = {"account_ts_trade_id", "account_market_ts_trade_id", "orders_pkey"}
    calls: list[tuple[str, set[str], set[str], Any]] = [
        (
            "recent trades",
            {"trades"},
            trades_index,
            lambda c: history.recent_trades(c, rules["SOL_USDC"]),
        ),
        (
            "a deep page of trades",
            {"trades"},
            trades_index,
            lambda c: history.recent_trades(c, rules["ETH_USDC"], limit=MAX_LIMIT, offset=5_000),
        ),
        (
            "orders",
            {"orders"},
            # A small account's orders, sorted, or a big one's walked in order.
            {"orders_account", "orders_account_market"},
            lambda c: history.order_history(c, 42, rules),
        ),
        (
            "orders of a market",
            {"orders"},
            {"orders_account_market"},
            lambda c: history.order_history(c, 42, rules, market="TATA_INR", offset=20),
        ),
        (
            "one order",
            {"orders"},
            {"orders_account", "orders_pkey"},
            lambda c: history.order_history(c, 42, rules, order_id=2042),
        ),
        ("fills", {"fills", "orders"}, fills_index, lambda c: history.fill_history(c, 42, rules)),
        (
            "fills of a market since",
            {"fills", "orders"},
            fills_index,
            lambda c: history.fill_history(
                c, 42, rules, market="BTC_USDC", from_ms=ts_ms, limit=MAX_LIMIT
            ),
        ),
        (
            "fills between",
            {"fills", "orders"},
            fills_index,
            lambda c: history.fill_history(c, 42, rules, from_ms=ts_ms, to_ms=ts_ms + 3_600_000),
        ),
        (
            "a week of 1m klines",
            {"klines"},
            {"klines_pkey"},
            lambda c: history.klines(c, rules["SOL_USDC"], "1m", 1_764_000_000, 1_764_604_800),
        ),
        (
            "1s klines folded from the trades of a day",
            {"trades"},
            trades_index,
            lambda c: history.klines(c, rules["SOL_USDC"], "1s", 1_764_000_000, 1_764_086_400),
        ),
        (
            "candles",
            {"klines"},
            {"klines_pkey"},
            lambda c: history.kline_candles(
                c, "BTC_USDC", "1h", 1_764_000_000_000_000, 1_766_000_000_000_000
            ),
        ),
    ]
    with psycopg.connect(database_url, autocommit=True, cursor_factory=RecordingCursor) as conn:
        for name, tables, allowed, call in calls:
            _recorded.clear()
            call(conn)
            assert len(_recorded) == 1, _recorded
            query, params = _recorded[0]
            _recorded.clear()
            (plan_json,) = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
            nodes = list(plan_nodes(plan_json[0]["Plan"]))
            scanned = {
                node["Relation Name"]: node["Node Type"]
                for node in nodes
                if "Relation Name" in node
            }
            # Partitions are named after their table (trades_2025_11).
            assert {rel.split("_20")[0] for rel in scanned} == tables, (name, scanned)
            assert not any(node["Node Type"] == "Seq Scan" for node in nodes), (name, scanned)
            assert all(
                kind in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan")
                for kind in scanned.values()
            ), (name, scanned)
            indexes = {node["Index Name"] for node in nodes if "Index Name" in node}
            # Every table read through an index, each one of those meant for the query.
            assert len(indexes) >= len(scanned), (name, scanned, indexes)
            for index in indexes:
                assert any(index == want or index.endswith(f"_{want}_idx") for want in allowed), (
                    name,
                    index,
                )

        # The bound holds with plenty of rows: at most MAX_KLINES candles, the first ones.
        got = history.klines(conn, rules["SOL_USDC"], "1m", 1_764_000_000, 1_764_000_000 + 10**8)
        assert len(got) == MAX_KLINES
        assert got[0]["start"] == "2025-11-24 16:06:00"  # the first 1m SOL_USDC row: g = 6
        assert [k["start"] for k in got] == sorted(k["start"] for k in got)
