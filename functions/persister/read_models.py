"""The read models: markets, orders, trades, fills, the balance ledger and klines.

Each projection turns a run of journal events (:class:`ProjectedEvents`) into rows with as few
statements as it can: append-only models are loaded with one ``COPY`` each; models updated in
place (orders, klines) fold the run in memory first, so each row is written once per run,
through a ``COPY`` into a temporary table and one set-based ``INSERT``/``UPDATE``.

Rows must never be applied twice: the runner moves the checkpoint in the same transaction. So a
conflict here (an order inserted twice, a fill for an order the model has never seen) means the
journal and the model disagree, and the projection raises rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import psycopg

from cloudex.enums import OrderStatus
from cloudex.klines import INTERVALS, Bar, bucket_start, merge_bar
from cloudex.messages import (
    MarketAdded,
    MarketFeesChanged,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
)
from functions.persister.projection import ProjectedEvents, Projection, ProjectionError

__all__ = [
    "MarketsProjection",
    "OrdersProjection",
    "TradesProjection",
    "FillsProjection",
    "BalanceLedgerProjection",
    "KlinesProjection",
    "ALL_PROJECTIONS",
]

_DAY_US = 86_400_000_000
_PARTIAL = OrderStatus.PARTIALLY_FILLED.value
_FILLED = OrderStatus.FILLED.value


def _ensure_partitions(conn: psycopg.Connection, table: str, days: Iterable[int]) -> None:
    """Create the monthly partitions of ``table`` for the days (``ts // _DAY_US``) given."""
    months = {bucket_start(day * _DAY_US, "1month") for day in set(days)}
    for month in sorted(months):
        conn.execute("SELECT ensure_month_partition(%s::regclass, %s)", (table, month))


class MarketsProjection:
    name = "markets"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        for event in events.markets:
            if isinstance(event, MarketAdded):
                spec = event.market
                conn.execute(
                    """
                    INSERT INTO markets (symbol, base, quote, base_decimals, quote_decimals, spec,
                                         state, maker_fee_bps, taker_fee_bps, added_at,
                                         updated_at, seq)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    """,
                    (
                        spec.symbol,
                        event.base.symbol,
                        event.quote.symbol,
                        event.base.decimals,
                        event.quote.decimals,
                        msgspec.json.encode(spec).decode(),
                        spec.state.value,
                        spec.maker_fee_bps,
                        spec.taker_fee_bps,
                        event.ts,
                        event.ts,
                        event.seq,
                    ),
                )
                continue
            if isinstance(event, MarketFeesChanged):
                changed = {
                    "maker_fee_bps": event.maker_fee_bps,
                    "taker_fee_bps": event.taker_fee_bps,
                }
                cursor = conn.execute(
                    """
                    UPDATE markets SET maker_fee_bps = %s, taker_fee_bps = %s,
                        spec = spec || %s::jsonb, updated_at = %s, seq = %s
                    WHERE symbol = %s
                    """,
                    (
                        event.maker_fee_bps,
                        event.taker_fee_bps,
                        msgspec.json.encode(changed).decode(),
                        event.ts,
                        event.seq,
                        event.market,
                    ),
                )
            else:
                cursor = conn.execute(
                    """
                    UPDATE markets SET state = %s, spec = spec || %s::jsonb, updated_at = %s,
                        seq = %s
                    WHERE symbol = %s
                    """,
                    (
                        event.state.value,
                        msgspec.json.encode({"state": event.state.value}).decode(),
                        event.ts,
                        event.seq,
                        event.market,
                    ),
                )
            if cursor.rowcount != 1:
                raise ProjectionError(f"event {event.seq} changes unknown market {event.market}")


_ORDER_COLUMNS = (
    "order_id, account, market, client_id, side, order_type, time_in_force, price, quantity, "
    "quote_quantity, executed_quantity, executed_quote_quantity, status, close_reason, "
    "post_only, self_trade_prevention, created_at, updated_at, closed_at, accepted_seq, last_seq"
)

# Indexes into an order row (a list in _ORDER_COLUMNS order) that fills and closes change.
_QTY, _EXEC, _EXEC_QUOTE, _STATUS, _REASON, _UPDATED, _CLOSED, _LAST_SEQ = (
    8,
    10,
    11,
    12,
    13,
    17,
    18,
    20,
)


class OrdersProjection:
    """Every accepted order, current state. Orders accepted in the run are inserted as they
    stand at its end; orders from before it get one update each, with the run's fills added to
    what they had executed (or the totals of their close, which carries them)."""

    name = "orders"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        new: dict[int, list[object]] = {}
        # order id -> [executed delta, executed quote delta, closed?, status, reason,
        #              executed total, executed quote total, updated_at, closed_at, last_seq]
        changed: dict[int, list[object]] = {}
        for event in events.orders:
            kind = type(event)
            if kind is TradeExecuted:
                trade: TradeExecuted = event  # type: ignore[assignment]
                for order_id in (trade.buy_order_id, trade.sell_order_id):
                    row = new.get(order_id)
                    if row is not None:
                        executed = row[_EXEC] + trade.quantity  # type: ignore[operator]
                        row[_EXEC] = executed
                        row[_EXEC_QUOTE] += trade.quote_quantity  # type: ignore[operator]
                        quantity = row[_QTY]
                        row[_STATUS] = (
                            _FILLED
                            if quantity is not None and executed >= quantity  # type: ignore[operator]
                            else _PARTIAL
                        )
                        row[_UPDATED] = trade.ts
                        row[_LAST_SEQ] = trade.seq
                        continue
                    change = changed.get(order_id)
                    if change is None:
                        change = changed[order_id] = [0, 0, False, _PARTIAL, None, 0, 0, 0, None, 0]
                    change[0] += trade.quantity  # type: ignore[operator]
                    change[1] += trade.quote_quantity  # type: ignore[operator]
                    change[7] = trade.ts
                    change[9] = trade.seq
            elif kind is OrderAccepted:
                a: OrderAccepted = event  # type: ignore[assignment]
                if a.order_id in new:
                    raise ProjectionError(f"order {a.order_id} accepted twice")
                new[a.order_id] = [
                    a.order_id,
                    a.account,
                    a.market,
                    a.client_id,
                    a.side.value,
                    a.order_type.value,
                    a.time_in_force.value,
                    a.price,
                    a.quantity,
                    a.quote_quantity,
                    0,
                    0,
                    OrderStatus.NEW.value,
                    None,
                    a.post_only,
                    a.self_trade_prevention.value,
                    a.ts,
                    a.ts,
                    None,
                    a.seq,
                    a.seq,
                ]
            else:
                c: OrderClosed = event  # type: ignore[assignment]
                row = new.get(c.order_id)
                if row is not None:
                    row[_EXEC] = c.executed_quantity
                    row[_EXEC_QUOTE] = c.executed_quote_quantity
                    row[_STATUS] = c.status.value
                    row[_REASON] = c.reason.value
                    row[_UPDATED] = c.ts
                    row[_CLOSED] = c.ts
                    row[_LAST_SEQ] = c.seq
                    continue
                changed[c.order_id] = [
                    0,
                    0,
                    True,
                    c.status.value,
                    c.reason.value,
                    c.executed_quantity,
                    c.executed_quote_quantity,
                    c.ts,
                    c.ts,
                    c.seq,
                ]
        if new:
            with conn.cursor().copy(f"COPY orders ({_ORDER_COLUMNS}) FROM STDIN") as copy:
                for row in new.values():
                    copy.write_row(row)
        if changed:
            self._update(conn, changed)

    def _update(self, conn: psycopg.Connection, changed: dict[int, list[object]]) -> None:
        conn.execute(
            """
            CREATE TEMP TABLE IF NOT EXISTS order_changes (
                order_id bigint, executed_delta bigint, executed_quote_delta numeric,
                closed boolean, status text, close_reason text, executed_total bigint,
                executed_quote_total numeric, updated_at bigint, closed_at bigint, last_seq bigint
            ) ON COMMIT DELETE ROWS
            """
        )
        with conn.cursor().copy("COPY order_changes FROM STDIN") as copy:
            for order_id, change in changed.items():
                copy.write_row((order_id, *change))
        updated = conn.execute(
            """
            UPDATE orders o SET
                executed_quantity = CASE WHEN c.closed THEN c.executed_total
                                         ELSE o.executed_quantity + c.executed_delta END,
                executed_quote_quantity = CASE WHEN c.closed THEN c.executed_quote_total
                                               ELSE o.executed_quote_quantity
                                                    + c.executed_quote_delta END,
                status = c.status,
                close_reason = c.close_reason,
                updated_at = c.updated_at,
                closed_at = c.closed_at,
                last_seq = c.last_seq
            FROM order_changes c
            WHERE o.order_id = c.order_id AND o.closed_at IS NULL
            """
        ).rowcount
        conn.execute("TRUNCATE order_changes")
        if updated != len(changed):
            raise ProjectionError(
                f"{len(changed) - updated} of {len(changed)} fills or closes are for orders "
                "that are not open in the read model"
            )


class TradesProjection:
    name = "trades"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        trades = events.trades
        if not trades:
            return
        _ensure_partitions(conn, "trades", (t.ts // _DAY_US for t in trades))
        with conn.cursor().copy(
            "COPY trades (trade_id, market, price, quantity, quote_quantity, is_buyer_maker, "
            "buy_order_id, sell_order_id, buyer, seller, buyer_fee, seller_fee, ts, seq) "
            "FROM STDIN"
        ) as copy:
            for t in trades:
                copy.write_row(
                    (
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
                )


class FillsProjection:
    """Each trade twice, as its buyer and as its seller saw it. The buyer pays its fee in the
    base asset, the seller in the quote asset (each in what it receives)."""

    name = "fills"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        trades = events.trades
        if not trades:
            return
        assets = {
            str(symbol): (str(base), str(quote))
            for symbol, base, quote in conn.execute("SELECT symbol, base, quote FROM markets")
        }
        _ensure_partitions(conn, "fills", (t.ts // _DAY_US for t in trades))
        with conn.cursor().copy(
            "COPY fills (account, trade_id, side, order_id, market, price, quantity, "
            "quote_quantity, fee, fee_asset, is_maker, ts, seq) FROM STDIN"
        ) as copy:
            for t in trades:
                pair = assets.get(t.market)
                if pair is None:
                    raise ProjectionError(f"trade {t.trade_id} is in unknown market {t.market}")
                base, quote = pair
                buyer_maker = t.is_buyer_maker
                copy.write_row(
                    (
                        t.buyer,
                        t.trade_id,
                        "Bid",
                        t.buy_order_id,
                        t.market,
                        t.price,
                        t.quantity,
                        t.quote_quantity,
                        t.buyer_fee,
                        base,
                        buyer_maker,
                        t.ts,
                        t.seq,
                    )
                )
                copy.write_row(
                    (
                        t.seller,
                        t.trade_id,
                        "Ask",
                        t.sell_order_id,
                        t.market,
                        t.price,
                        t.quantity,
                        t.quote_quantity,
                        t.seller_fee,
                        quote,
                        not buyer_maker,
                        t.ts,
                        t.seq,
                    )
                )


class BalanceLedgerProjection:
    name = "balance_ledger"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        changes = events.balances
        if not changes:
            return
        _ensure_partitions(conn, "balance_ledger", (c.ts // _DAY_US for c in changes))
        with conn.cursor().copy(
            "COPY balance_ledger (seq, account, asset, available, locked, available_delta, "
            "locked_delta, reason, reference, command_id, ts) FROM STDIN"
        ) as copy:
            for c, command_id in zip(changes, events.balance_commands, strict=True):
                copy.write_row(
                    (
                        c.seq,
                        c.account,
                        c.asset,
                        c.available,
                        c.locked,
                        c.available_delta,
                        c.locked_delta,
                        c.reason.value,
                        str(c.reference),
                        command_id,
                        c.ts,
                    )
                )


_COARSE_INTERVALS = INTERVALS[1:]


class KlinesProjection:
    """Candles of every interval. The run's trades are folded into 1m bars, the 1m bars into
    every coarser interval (bucketed by :func:`cloudex.klines.bucket_start`), and each touched
    candle is upserted once: high and low widen, close moves, volumes and counts add up. The
    stored ``open`` stays, since the journal is in time order (the engine's clock never goes
    back), so a row already there began earlier."""

    name = "klines"

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None:
        trades = events.trades
        if not trades:
            return
        rows = candle_rows(trades)
        conn.execute(
            """
            CREATE TEMP TABLE IF NOT EXISTS kline_changes (LIKE klines) ON COMMIT DELETE ROWS
            """
        )
        with conn.cursor().copy("COPY kline_changes FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        upserted = conn.execute(
            """
            INSERT INTO klines SELECT * FROM kline_changes
            ON CONFLICT (market, interval, start) DO UPDATE SET
                high = GREATEST(klines.high, EXCLUDED.high),
                low = LEAST(klines.low, EXCLUDED.low),
                close = EXCLUDED.close,
                volume = klines.volume + EXCLUDED.volume,
                quote_volume = klines.quote_volume + EXCLUDED.quote_volume,
                trades = klines.trades + EXCLUDED.trades,
                last_trade_id = EXCLUDED.last_trade_id
            WHERE klines.last_trade_id < EXCLUDED.first_trade_id
            """
        ).rowcount
        conn.execute("TRUNCATE kline_changes")
        if upserted != len(rows):
            raise ProjectionError(
                f"{len(rows) - upserted} of {len(rows)} candles already hold these trades"
            )


# Bars here (cloudex.klines.Bar) end with the first and last trade ids: [start, open, high,
# low, close, volume, quote_volume, trades, first_trade_id, last_trade_id].


def candle_rows(trades: Sequence[TradeExecuted]) -> list[tuple[object, ...]]:
    """The candles of every interval that ``trades`` (in journal order) make, as ``klines``
    rows: ``(market, interval, start, open, high, low, close, volume, quote_volume, trades,
    first_trade_id, last_trade_id)``."""
    minutes: dict[str, dict[int, Bar]] = {}
    for t in trades:
        by_start = minutes.get(t.market)
        if by_start is None:
            by_start = minutes[t.market] = {}
        start = bucket_start(t.ts, "1m")
        bar = by_start.get(start)
        price = t.price
        if bar is None:
            by_start[start] = [
                start,
                price,
                price,
                price,
                price,
                t.quantity,
                t.quote_quantity,
                1,
                t.trade_id,
                t.trade_id,
            ]
            continue
        if price > bar[2]:
            bar[2] = price
        elif price < bar[3]:
            bar[3] = price
        bar[4] = price
        bar[5] += t.quantity
        bar[6] += t.quote_quantity
        bar[7] += 1
        bar[9] = t.trade_id

    rows: list[tuple[object, ...]] = []
    for market, by_start in minutes.items():
        bars = list(by_start.values())
        rows.extend((market, "1m", *bar) for bar in bars)
        for interval in _COARSE_INTERVALS:
            rows.extend((market, interval, *bar) for bar in fold_bars(bars, interval))
    return rows


def fold_bars(bars: Iterable[Bar], interval: str) -> list[Bar]:
    """``bars`` (in time order, each inside one ``interval`` bucket) folded into the
    ``interval`` candles they make, in order."""
    coarse: dict[int, Bar] = {}
    for bar in bars:
        start = bucket_start(bar[0], interval)
        into = coarse.get(start)
        if into is None:
            coarse[start] = [start, *bar[1:]]
            continue
        merge_bar(into, bar)
        into[9] = bar[9]
    return list(coarse.values())


# In dependency order: fills read the markets table.
ALL_PROJECTIONS: tuple[Projection, ...] = (
    MarketsProjection(),
    OrdersProjection(),
    TradesProjection(),
    FillsProjection(),
    BalanceLedgerProjection(),
    KlinesProjection(),
)
