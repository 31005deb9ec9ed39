"""The persister's candles against a direct aggregation of the trades.

:func:`functions.persister.read_models.candle_rows` folds a run of trades into 1m bars and the
1m bars into every coarser interval; the klines projection then upserts each candle, merging it
with the row already stored. Here the trades are grouped directly, interval by interval, with
buckets worked out by calendar arithmetic (``datetime``, not :mod:`cloudex.klines`), and:

- the fold equals the direct grouping, for every interval, trades at and around bucket starts;
- splitting the trades into runs and merging the runs' candles as the upsert does gives the
  same candles as one run.

The helpers (``candle_start``, ``expected_klines``...) are the reference the read-model
integration tests compare the ``klines`` table with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudex.klines import INTERVALS, bucket_end, bucket_start
from cloudex.messages import TradeExecuted
from functions.persister.read_models import candle_rows

__all__ = [
    "candle_start",
    "expected_klines",
    "next_candle_start",
    "us",
    "utc",
]

# Every fixed interval, spelled out: a new one fails these tests until it is added here.
FIXED = {
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "8h": timedelta(hours=8),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),  # aligned to the epoch, like every fixed interval
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Rows = list[tuple[Any, ...]]


def us(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return us(datetime(year, month, day, hour, minute, tzinfo=UTC))


def candle_start(ts: int, interval: str) -> int:
    """Where the candle holding ``ts`` starts, by calendar arithmetic: months on the 1st, weeks
    on Monday, fixed intervals at multiples of their length since the epoch."""
    moment = EPOCH + timedelta(microseconds=ts)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "1month":
        return us(midnight.replace(day=1))
    if interval == "1w":
        return us(midnight - timedelta(days=midnight.weekday()))
    length = FIXED[interval]
    return us(EPOCH + (moment - EPOCH) // length * length)


def next_candle_start(start: int, interval: str) -> int:
    moment = EPOCH + timedelta(microseconds=start)
    if interval == "1month":
        year, month = divmod(moment.year * 12 + moment.month, 12)  # 0-based month
        return us(datetime(year, month + 1, 1, tzinfo=UTC))
    length = timedelta(weeks=1) if interval == "1w" else FIXED[interval]
    return start + length // MICROSECOND


def expected_klines(trades: Iterable[TradeExecuted]) -> Rows:
    """Candles by a plain grouping of the trades, one interval at a time, as ``klines`` rows:
    ``(market, interval, start, open, high, low, close, volume, quote_volume, trades,
    first_trade_id, last_trade_id)``, sorted."""
    candles: dict[tuple[str, str, int], list[TradeExecuted]] = defaultdict(list)
    for trade in sorted(trades, key=lambda t: t.trade_id):
        for interval in INTERVALS:
            candles[trade.market, interval, candle_start(trade.ts, interval)].append(trade)
    return sorted(
        (
            market,
            interval,
            start,
            group[0].price,
            max(t.price for t in group),
            min(t.price for t in group),
            group[-1].price,
            sum(t.quantity for t in group),
            sum(t.quote_quantity for t in group),
            len(group),
            group[0].trade_id,
            group[-1].trade_id,
        )
        for (market, interval, start), group in candles.items()
    )


def upsert(stored: dict[tuple[Any, ...], tuple[Any, ...]], rows: Rows) -> None:
    """What the klines projection's ``INSERT ... ON CONFLICT DO UPDATE`` does with a run."""
    for row in rows:
        key = row[:3]
        old = stored.get(key)
        if old is None:
            stored[key] = row
            continue
        assert old[11] < row[10]  # the upsert's guard: never the same trades twice
        stored[key] = (
            *key,
            old[3],
            max(old[4], row[4]),
            min(old[5], row[5]),
            row[6],
            old[7] + row[7],
            old[8] + row[8],
            old[9] + row[9],
            old[10],
            row[11],
        )


# -- STRATEGIES ---------------------------------------------------------------------------------

LOW, HIGH = utc(1970, 1, 2), utc(2100, 1, 1)


@st.composite
def timestamps(draw: st.DrawFn) -> int:
    """Anywhere, or at, just before or just after a bucket start of some interval."""
    ts = draw(st.integers(LOW, HIGH))
    if draw(st.booleans()):
        interval = draw(st.sampled_from(INTERVALS))
        ts = next_candle_start(candle_start(ts, interval), interval)
        ts += draw(st.sampled_from([-1, 0, 0, 1]))
    return ts


@st.composite
def trade_runs(draw: st.DrawFn) -> list[TradeExecuted]:
    """Trades in journal order: times never go back (several may share one µs), ids increase,
    two markets interleaved. Times cluster (small steps), with jumps of minutes to months."""
    ts = draw(timestamps())
    trades = []
    for trade_id in range(1, draw(st.integers(1, 80)) + 1):
        step = draw(
            st.one_of(
                st.just(0),
                st.integers(1, 10**6),
                st.integers(1, 2 * 3_600_000_000),
                st.integers(1, 100 * 86_400_000_000),
            )
        )
        ts = min(ts + step, HIGH)
        price = draw(st.integers(1, 1_000))
        quantity = draw(st.integers(1, 100))
        trades.append(
            TradeExecuted(
                trade_id,
                ts,
                draw(st.sampled_from(["SOL_USDC", "BTC_USDC"])),
                trade_id,
                price,
                quantity,
                price * quantity * 100,
                2 * trade_id,
                2 * trade_id + 1,
                1,
                2,
                draw(st.booleans()),
                0,
                0,
            )
        )
    return trades


# -- PROPERTIES ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ts=timestamps(), interval=st.sampled_from(INTERVALS))
def test_bucketing_is_calendar_arithmetic(ts: int, interval: str) -> None:
    start = bucket_start(ts, interval)
    assert start == candle_start(ts, interval)
    assert bucket_end(start, interval) == next_candle_start(start, interval)
    assert start <= ts < bucket_end(start, interval)


@settings(max_examples=200, deadline=None)
@given(trades=trade_runs())
def test_candles_equal_a_direct_aggregation(trades: list[TradeExecuted]) -> None:
    assert sorted(candle_rows(trades)) == expected_klines(trades)


@settings(max_examples=200, deadline=None)
@given(trades=trade_runs(), data=st.data())
def test_candles_are_the_same_however_the_trades_are_split(
    trades: list[TradeExecuted], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(trades) - 1)), max_size=10)))
    stored: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for start, end in zip([0, *cuts], [*cuts, len(trades)], strict=True):
        upsert(stored, candle_rows(trades[start:end]))
    assert sorted(stored.values()) == expected_klines(trades)
