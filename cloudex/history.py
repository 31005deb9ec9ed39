"""History queries on the read models: what the REST API serves from PostgreSQL.

The persister projects the journal into the read models of
``functions/migrate/sql/0002_read_models.sql`` (``markets``, ``orders``, ``trades``, ``fills``,
``klines``). This module is the one place that reads them for clients, and it returns Backpack
JSON shapes (:mod:`cloudex.views`):

* :func:`recent_trades`: ``GET /api/v1/trades`` and ``/api/v1/trades/history?offset=``;
* :func:`klines` (and :func:`kline_candles`, the same rows as :class:`Candle`):
  ``GET /api/v1/klines``;
* :func:`order_history`: ``GET /wapi/v1/history/orders``;
* :func:`fill_history`: ``GET /wapi/v1/history/fills``;
* :func:`market_rules`: the markets as the persister stored them, to shape the rest.

Bounded: no request can make the database or the function handle an unbounded number of rows.
``limit`` is 1..:data:`MAX_LIMIT`, ``offset`` 0..:data:`MAX_OFFSET`, a klines query returns at
most :data:`MAX_KLINES` candles. Bad arguments raise a :class:`HistoryQueryError` (a
``ValueError``) whose ``code`` is the Backpack error code the API answers with (HTTP 400).

Indexed: every query reads through an index of 0002 (the integration tests check the plans with
``EXPLAIN`` on tables large enough that a scan would otherwise win). Walking the index in the
order of the answer, a page costs ``offset + limit`` rows whatever the size of the table; the
planner only prefers to sort the rows of one account or market when it expects them to be few.
Queries are never prepared (``prepare=False``): on a reused connection psycopg prepares a query
after a few runs, and PostgreSQL may then switch to a generic plan, made for an average market
or account; a plan per call knows that this market is quiet or this account small, for ~0.1 ms
of planning.

Order: trades, orders and fills come newest first, and ``offset`` counts back from the newest.
The contract fixes neither (ccxt sorts what it gets, and without ``since`` keeps the newest), so
this follows what a page of recent history means, and what paging ``/trades/history`` by offset
assumes. Klines come oldest first (contract §4.10).

Fast klines: a week of 1m candles is 10,080 of them, too many to shape one
:func:`~cloudex.views.kline_json` at a time within the API's budget (~90 ms). So PostgreSQL
writes the amounts as decimal text (an integer times its increment, a ``numeric`` of the
increment's scale, prints exactly the digits ``kline_json`` prints) and Python writes the times
day by day. The result equals ``kline_json``'s to the character (tested) in a quarter of the
time (~25 ms, ``bench/persister_bench.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg

from cloudex.enums import (
    ErrorCode,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.klines import INTERVAL_SECONDS, INTERVALS, SECOND, bucket_end, is_interval
from cloudex.markets import AssetSpec, MarketRules, MarketSpec, compile_market
from cloudex.messages import Candle, OrderView, TradeExecuted
from cloudex.views import Json, fill_json, order_json, public_trade_json

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "MAX_KLINES",
    "MAX_TIME_S",
    "HistoryQueryError",
    "InvalidLimit",
    "InvalidOffset",
    "InvalidInterval",
    "InvalidTimeRange",
    "UnknownMarket",
    "market_rules",
    "recent_trades",
    "kline_candles",
    "klines",
    "order_history",
    "fill_history",
]

DEFAULT_LIMIT = 100  # Backpack's default page
MAX_LIMIT = 1_000  # Backpack's (and ccxt's) largest page
# Paging by offset walks the index past every skipped row: 100 pages of 1,000 keep the deepest
# page to ~100k rows (tens of ms). Older fills are reached by time (``from``/``to``) instead.
MAX_OFFSET = 100_000
# One week of 1m candles: the largest window a chart asks for at the finest interval. A longer
# range is cut to its first MAX_KLINES candles (ccxt keeps the first ``limit`` anyway, and asks
# again from the last one); it is not an error.
MAX_KLINES = 10_080
# Times after 9999-12-31 cannot be written as Backpack dates: the largest ``startTime`` and
# ``endTime`` accepted, in seconds (in µs, far inside a bigint).
MAX_TIME_S = 253_402_300_799

_US_PER_S = 1_000_000
_US_PER_MS = 1_000
_DAY_S = 86_400


# -- ERRORS -----------------------------------------------------------------------------------


class HistoryQueryError(ValueError):
    """A history request the API must refuse (HTTP 400) with ``code`` and the message."""

    code: ErrorCode = ErrorCode.INVALID_CLIENT_REQUEST


class InvalidLimit(HistoryQueryError):
    """``limit`` is not 1..:data:`MAX_LIMIT`."""


class InvalidOffset(HistoryQueryError):
    """``offset`` is not 0..:data:`MAX_OFFSET`."""


class InvalidInterval(HistoryQueryError):
    """Not a Backpack kline interval (:data:`cloudex.klines.INTERVALS`)."""


class InvalidTimeRange(HistoryQueryError):
    """A start after its end, or a time outside 0..:data:`MAX_TIME_S`."""


class UnknownMarket(HistoryQueryError):
    """A market the rules given do not know."""

    code = ErrorCode.INVALID_MARKET


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidLimit(f"limit must be between 1 and {MAX_LIMIT}, was {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidOffset(f"offset must be between 0 and {MAX_OFFSET}, was {offset}")


def _check_range(start: int, end: int, unit: str, largest: int) -> None:
    for name, value in (("start", start), ("end", end)):
        if not 0 <= value <= largest:
            raise InvalidTimeRange(f"{name} time must be between 0 and {largest} {unit}")
    if start > end:
        raise InvalidTimeRange(f"start time {start} is after end time {end}")


def _rules_for(rules_by_market: Mapping[str, MarketRules], market: str) -> MarketRules:
    rules = rules_by_market.get(market)
    if rules is None:
        raise UnknownMarket(f"unknown market {market!r}")
    return rules


def _int(value: Any) -> int:
    """A ``numeric`` column (psycopg loads it as Decimal) holding a whole number of atoms."""
    return value if isinstance(value, int) else int(value)


# -- MARKETS ----------------------------------------------------------------------------------


def market_rules(conn: psycopg.Connection) -> dict[str, MarketRules]:
    """Every market of the ``markets`` table, compiled, by symbol (fees and state current).

    A whole-table read (a handful of rows): the one query here without an index, by design.
    """
    rules: dict[str, MarketRules] = {}
    rows = conn.execute(
        "SELECT symbol, base, quote, base_decimals, quote_decimals, spec FROM markets "
        "ORDER BY symbol"
    )
    for symbol, base, quote, base_decimals, quote_decimals, spec in rows:
        rules[symbol] = compile_market(
            msgspec.convert(spec, MarketSpec),
            AssetSpec(base, base_decimals),
            AssetSpec(quote, quote_decimals),
        )
    return rules


# -- PUBLIC TRADES ----------------------------------------------------------------------------


def recent_trades(
    conn: psycopg.Connection,
    rules: MarketRules,
    *,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Json]:
    """The trades of ``rules``'s market, newest first, skipping the ``offset`` newest.

    ``offset=0`` is ``GET /api/v1/trades``; ``/api/v1/trades/history`` pages further back.

    Trade ids grow with time, so time then id is id order. Ordering by time lets the planner
    walk ``trades_market_ts`` backwards through the monthly partitions, newest first, and stop
    at the page: ordered by id, it may instead walk the primary key filtering out the other
    markets, which for a market that has not traded lately means most of a month of trades.
    """
    _check_page(limit, offset)
    rows = conn.execute(
        "SELECT trade_id, price, quantity, quote_quantity, buy_order_id, sell_order_id, buyer, "
        "seller, is_buyer_maker, buyer_fee, seller_fee, ts, seq FROM trades "
        "WHERE market = %s ORDER BY ts DESC, trade_id DESC LIMIT %s OFFSET %s",
        (rules.symbol, limit, offset),
        prepare=False,
    )
    market = rules.symbol
    return [
        public_trade_json(
            rules,
            TradeExecuted(
                seq,
                ts,
                market,
                trade_id,
                price,
                quantity,
                _int(quote_quantity),
                buy_order_id,
                sell_order_id,
                buyer,
                seller,
                is_buyer_maker,
                _int(buyer_fee),
                _int(seller_fee),
            ),
        )
        for (
            trade_id,
            price,
            quantity,
            quote_quantity,
            buy_order_id,
            sell_order_id,
            buyer,
            seller,
            is_buyer_maker,
            buyer_fee,
            seller_fee,
            ts,
            seq,
        ) in rows
    ]


# -- KLINES -----------------------------------------------------------------------------------


def _check_interval(interval: str) -> None:
    if not is_interval(interval):
        raise InvalidInterval(
            f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}"
        )


def kline_candles(
    conn: psycopg.Connection, market: str, interval: str, start_us: int, end_us: int
) -> list[Candle]:
    """The stored ``interval`` candles of ``market`` starting in ``[start_us, end_us)``,
    oldest first, at most :data:`MAX_KLINES` (the first ones). A bucket without trades has no
    candle. Primary key ``(market, interval, start)``."""
    _check_interval(interval)
    _check_range(start_us, end_us, "µs", MAX_TIME_S * _US_PER_S)
    rows = conn.execute(
        "SELECT start, open, high, low, close, volume, quote_volume, trades FROM klines "
        "WHERE market = %s AND interval = %s AND start >= %s AND start < %s "
        "ORDER BY start LIMIT %s",
        (market, interval, start_us, end_us, MAX_KLINES),
        prepare=False,
    )
    return [
        Candle(interval, start, open_, high, low, close, volume, _int(quote_volume), trades)
        for start, open_, high, low, close, volume, quote_volume, trades in rows
    ]


# An amount in integer units times its increment, as a numeric of the increment's scale, prints
# with exactly the increment's decimals: the digits views._scaled writes. quote_volume is rounded
# to the quote's decimals rather than trusted to have scale 0. One text per candle, split in
# Python: fewer columns to decode than seven.
_KLINES_SHAPED = """
SELECT start, concat_ws(',', open * %(tick)s::numeric, high * %(tick)s::numeric,
                        low * %(tick)s::numeric, close * %(tick)s::numeric,
                        volume * %(step)s::numeric,
                        round(quote_volume * %(atom)s::numeric, %(quote_decimals)s), trades)
FROM klines
WHERE market = %(market)s AND interval = %(interval)s AND start >= %(start)s AND start < %(end)s
ORDER BY start LIMIT %(limit)s
"""

# Seconds are not stored (the persister keeps 1m and up): "1s" candles are folded from the
# trades themselves, through trades_market_ts, over at most MAX_KLINES seconds.
_KLINES_1S_SHAPED = """
WITH bars AS (
    SELECT ts - ts %% 1000000 AS start,
           (array_agg(price ORDER BY ts, trade_id))[1] AS open, max(price) AS high,
           min(price) AS low, (array_agg(price ORDER BY ts DESC, trade_id DESC))[1] AS close,
           sum(quantity) AS volume, sum(quote_quantity) AS quote_volume, count(*) AS trades
    FROM trades
    WHERE market = %(market)s AND ts >= %(start)s AND ts < %(end)s
    GROUP BY 1
)
SELECT start, concat_ws(',', open * %(tick)s::numeric, high * %(tick)s::numeric,
                        low * %(tick)s::numeric, close * %(tick)s::numeric,
                        volume * %(step)s::numeric,
                        round(quote_volume * %(atom)s::numeric, %(quote_decimals)s), trades)
FROM bars ORDER BY start
"""

_HOUR_MINUTE: tuple[str, ...] = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECOND: tuple[str, ...] = tuple(f"{s:02d}" for s in range(60))


def _date_text(day: int) -> str:
    """``"2025-11-24 "`` for ``day`` days since the epoch."""
    t = time.gmtime(day * _DAY_S)
    return f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d} "


def klines(
    conn: psycopg.Connection, rules: MarketRules, interval: str, start_s: int, end_s: int
) -> list[Json]:
    """``GET /api/v1/klines``: the ``interval`` candles of ``rules``'s market starting in
    ``[start_s, end_s)`` (Unix seconds, as ccxt sends ``startTime``/``endTime``), oldest first,
    at most :data:`MAX_KLINES` (the first ones), each exactly
    :func:`~cloudex.views.kline_json`.

    ``interval`` is a Backpack name (``1s``, ``1m`` .. ``1w``, ``1month``; ccxt sends
    ``1month`` for ``1M``). ``start_s == end_s`` is an empty range.
    """
    seconds = interval == SECOND
    if not seconds:
        _check_interval(interval)
    _check_range(start_s, end_s, "s", MAX_TIME_S)
    if seconds:
        end_s = min(end_s, start_s + MAX_KLINES)
    quote_decimals = rules.quote.decimals
    rows = conn.execute(
        _KLINES_1S_SHAPED if seconds else _KLINES_SHAPED,
        {
            "tick": str(rules.tick),
            "step": str(rules.step),
            "atom": str(rules.quote.atom),
            "quote_decimals": quote_decimals,
            "market": rules.symbol,
            "interval": interval,
            "start": start_s * _US_PER_S,
            "end": end_s * _US_PER_S,
            "limit": MAX_KLINES,
        },
        prepare=False,
    ).fetchall()

    # Times as kline_json writes them ("YYYY-MM-DD HH:MM:SS", UTC), without a gmtime per
    # candle: rows are in time order, so the date is written once per day, and a candle's start
    # is usually the previous one's end.
    length_s = 1 if seconds else INTERVAL_SECONDS.get(interval)  # None: 1month (it varies)
    hour_minute = _HOUR_MINUTE
    second = _SECOND
    day = -1
    date = ""
    previous_end = -1
    previous_end_text = ""
    candles: list[Json] = []
    append = candles.append
    for start_us, amounts in rows:
        start = start_us // _US_PER_S
        if start == previous_end:
            start_text = previous_end_text
        else:
            start_day, in_day = divmod(start, _DAY_S)
            if start_day != day:
                day, date = start_day, _date_text(start_day)
            minute, sec = divmod(in_day, 60)
            start_text = date + hour_minute[minute] + second[sec]
        end = (
            start + length_s
            if length_s is not None
            else bucket_end(start_us, interval) // _US_PER_S
        )
        end_day, in_day = divmod(end, _DAY_S)
        if end_day != day:
            day, date = end_day, _date_text(end_day)
        minute, sec = divmod(in_day, 60)
        end_text = date + hour_minute[minute] + second[sec]
        previous_end, previous_end_text = end, end_text
        open_, high, low, close, volume, quote_volume, trades = amounts.split(",")
        append(
            {
                "start": start_text,
                "end": end_text,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "quoteVolume": quote_volume,
                "trades": trades,
            }
        )
    return candles


# -- ORDERS -----------------------------------------------------------------------------------

_ORDER_COLUMNS = (
    "order_id, account, market, client_id, side, order_type, time_in_force, price, quantity, "
    "quote_quantity, executed_quantity, executed_quote_quantity, status, post_only, "
    "self_trade_prevention, created_at"
)


def order_history(
    conn: psycopg.Connection,
    account: int,
    rules_by_market: Mapping[str, MarketRules],
    *,
    market: str | None = None,
    order_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Json]:
    """``GET /wapi/v1/history/orders``: ``account``'s orders, open and closed, newest first
    (order ids grow with acceptance), as order objects (:func:`~cloudex.views.order_json`),
    each as it stands now.

    ``market`` and ``order_id`` narrow it; no match is ``[]``, never an error (ccxt's
    ``fetch_order`` then falls back to the open order, contract §5.8). Indexes
    ``orders_account``, ``orders_account_market``, or the primary key with ``order_id``.
    """
    _check_page(limit, offset)
    if market is not None:
        _rules_for(rules_by_market, market)
    where = ["account = %s"]
    params: list[object] = [account]
    if order_id is not None:
        where.append("order_id = %s")
        params.append(order_id)
    if market is not None:
        where.append("market = %s")
        params.append(market)
    params += [limit, offset]
    rows = conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {' AND '.join(where)} "
        "ORDER BY order_id DESC LIMIT %s OFFSET %s",
        params,
        prepare=False,
    )
    orders: list[Json] = []
    for (
        id_,
        owner,
        symbol,
        client_id,
        side,
        order_type,
        time_in_force,
        price,
        quantity,
        quote_quantity,
        executed_quantity,
        executed_quote_quantity,
        status,
        post_only,
        self_trade_prevention,
        created_at,
    ) in rows:
        view = OrderView(
            id_,
            owner,
            symbol,
            client_id,
            Side(side),
            OrderType(order_type),
            TimeInForce(time_in_force),
            price,
            quantity,
            None if quote_quantity is None else _int(quote_quantity),
            executed_quantity,
            _int(executed_quote_quantity),
            OrderStatus(status),
            post_only,
            SelfTradePrevention(self_trade_prevention),
            created_at,
        )
        orders.append(order_json(_rules_for(rules_by_market, symbol), view))
    return orders


# -- FILLS ------------------------------------------------------------------------------------

# The page is cut from the fills index first, then each of its (at most MAX_LIMIT) rows looks
# up its order's client id by primary key: the join never runs for the skipped rows.
_FILLS = """
SELECT f.trade_id, f.side, f.order_id, f.market, f.price, f.quantity, f.quote_quantity, f.fee,
       f.is_maker, f.ts, f.seq, o.client_id
FROM (SELECT trade_id, side, order_id, market, price, quantity, quote_quantity, fee, is_maker,
             ts, seq
      FROM fills WHERE {where}
      ORDER BY ts DESC, trade_id DESC LIMIT %s OFFSET %s) f
LEFT JOIN orders o ON o.order_id = f.order_id
ORDER BY f.ts DESC, f.trade_id DESC
"""

_NOBODY = -1  # the counterparty of a fill, which the fills row does not keep (nor fill_json read)


def fill_history(
    conn: psycopg.Connection,
    account: int,
    rules_by_market: Mapping[str, MarketRules],
    *,
    market: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[Json]:
    """``GET /wapi/v1/history/fills``: ``account``'s fills, newest first, as
    :func:`~cloudex.views.fill_json` shapes with ``clientId`` from the order.

    ``from_ms``/``to_ms`` (Backpack's ``from``/``to``, ms) are both inclusive, at the ms
    precision fills are shown with: a fill at 12.345678 s is in ``to=12345``. Indexes
    ``fills_account_ts`` or ``fills_account_market_ts``, then ``orders``' primary key.
    """
    _check_page(limit, offset)
    largest_ms = MAX_TIME_S * 1_000
    if from_ms is not None or to_ms is not None:
        _check_range(
            0 if from_ms is None else from_ms,
            largest_ms if to_ms is None else to_ms,
            "ms",
            largest_ms,
        )
    if market is not None:
        _rules_for(rules_by_market, market)
    where = ["account = %s"]
    params: list[object] = [account]
    if market is not None:
        where.append("market = %s")
        params.append(market)
    if from_ms is not None:
        where.append("ts >= %s")
        params.append(from_ms * _US_PER_MS)
    if to_ms is not None:
        where.append("ts < %s")
        params.append((to_ms + 1) * _US_PER_MS)
    params += [limit, offset]
    rows = conn.execute(_FILLS.format(where=" AND ".join(where)), params, prepare=False)
    fills: list[Json] = []
    for (
        trade_id,
        side,
        order_id,
        symbol,
        price,
        quantity,
        quote_quantity,
        fee,
        is_maker,
        ts,
        seq,
        client_id,
    ) in rows:
        # The fill as a trade seen by `account` on its side: fill_json reads the side's order,
        # fee and maker flag, and the trade's terms.
        fee_atoms = _int(fee)
        buyer = side == Side.BID.value
        trade = TradeExecuted(
            seq,
            ts,
            symbol,
            trade_id,
            price,
            quantity,
            _int(quote_quantity),
            order_id if buyer else _NOBODY,
            _NOBODY if buyer else order_id,
            account if buyer else _NOBODY,
            _NOBODY if buyer else account,
            is_maker if buyer else not is_maker,
            fee_atoms if buyer else 0,
            0 if buyer else fee_atoms,
        )
        fills.append(fill_json(_rules_for(rules_by_market, symbol), trade, account, client_id))
    return fills
