"""Engine events: sequence numbers, depth updates, heartbeats, market stats, duplicates."""

from __future__ import annotations

from cloudex.enums import ErrorCode, OrderStatus, TimeInForce
from cloudex.klines import INTERVALS, bucket_start
from cloudex.messages import (
    BalanceChanged,
    Deposit,
    DepthChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    Tick,
    TradeExecuted,
)
from engine_service.core import EngineConfig
from tests.stubs import START_TS
from tests.unit.support import (
    ASK,
    BID,
    MKT,
    PRICE,
    TICK_LOT,
    USDC,
    USDC_1,
    CheckedExchange,
    assert_command_rejected,
    depth_events,
    observable,
    of_type,
    trades,
)

MINUTE = 60_000_000


def at(ex: CheckedExchange, ts: int) -> None:
    """Make the next command carry time ``ts``."""
    ex.ts = ts - 1_000


def funded(ex: CheckedExchange) -> CheckedExchange:
    ex.fund(1, sol=100, usdc=10_000)
    ex.fund(2, sol=100, usdc=10_000)
    return ex


# -- SEQUENCE --------------------------------------------------------------------------------


def test_seq_gap_free_across_results_rejections_and_duplicates(ex: CheckedExchange) -> None:
    # Given a mix of accepted, rejected and duplicate commands
    funded(ex)
    ex.rest(2, ASK, PRICE, 3)
    ex.limit(1, MKT, BID, 0, 1)  # rejected
    command = ex.limit_order(1, MKT, BID, PRICE, 2)
    ex.execute(command)
    ex.execute(command)  # duplicate
    ex.tick()
    # Then all events ever emitted carry 1, 2, 3, ... with no gap and no repeat
    assert [e.seq for e in ex.log] == list(range(1, ex.engine.seq + 1))
    assert ex.engine.seq == len(ex.log) > 0


def test_events_crossing_order_accepted_first_depth_last(ex: CheckedExchange) -> None:
    # Given an ask / When a bid fills it
    funded(ex)
    ex.rest(2, ASK, PRICE, 2)
    result = ex.limit(1, MKT, BID, PRICE, 2)
    # Then the order is accepted first, the trade precedes the closes, depth comes last
    kinds = [type(e) for e in result.events]
    assert kinds[0] is OrderAccepted
    assert kinds[-1] is DepthChanged
    assert kinds.index(TradeExecuted) < kinds.index(OrderClosed)
    assert BalanceChanged in kinds
    assert all(e.ts == result.events[0].ts for e in result.events)


# -- DEPTH -----------------------------------------------------------------------------------


def test_depth_update_id_increases_by_one_per_depth_event(ex: CheckedExchange) -> None:
    # Given a fresh book / When commands touch it or not / Then each depth event takes the next id
    funded(ex)
    start = ex.engine.depth(MKT)[0]
    results = [
        ex.limit(1, MKT, BID, 9_900, 2),  # rests: +1
        ex.limit(1, MKT, BID, 9_800, 2, time_in_force=TimeInForce.IOC),  # touches nothing: +0
        ex.limit(2, MKT, ASK, 10_100, 2),  # rests: +1
        ex.limit(2, MKT, ASK, 9_900, 2),  # takes: +1
        ex.cancel_all(2, MKT),  # cancels the 101.00 ask: +1
    ]
    ids = [d.update_id for r in results for d in depth_events(r)]
    assert ids == list(range(start + 1, start + 5))
    assert [len(depth_events(r)) for r in results] == [1, 0, 1, 1, 1]
    assert ex.engine.depth(MKT)[0] == start + 4


def test_depth_levels_carry_absolute_totals(ex: CheckedExchange) -> None:
    # Given 2 lots bid at 99.00 / When 5 more join, then 3 are sold / Then totals 7, then 4
    funded(ex)
    ex.rest(1, BID, 9_900, 2)
    [depth] = depth_events(ex.limit(1, MKT, BID, 9_900, 5))
    assert depth.bids == ((9_900, 7),)
    [depth] = depth_events(ex.limit(2, MKT, ASK, 9_900, 3))
    assert depth.bids == ((9_900, 4),)
    assert depth.asks == ()


def test_depth_emptied_level_by_fill_is_reported_as_zero(ex: CheckedExchange) -> None:
    # Given asks at two levels / When a bid empties the first / Then it is sent as 0
    funded(ex)
    ex.rest(2, ASK, PRICE, 2)
    ex.rest(2, ASK, PRICE + 1, 2)
    [depth] = depth_events(ex.limit(1, MKT, BID, PRICE + 1, 3))
    assert depth.asks == ((PRICE, 0), (PRICE + 1, 1))
    assert ex.engine.depth(MKT)[2] == [(PRICE + 1, 1)]


def test_depth_emptied_level_by_cancel_is_reported_as_zero(ex: CheckedExchange) -> None:
    # Given a single ask at a level / When it is cancelled / Then the level is sent as 0
    funded(ex)
    order_id = ex.rest(2, ASK, PRICE, 2)
    [depth] = depth_events(ex.cancel(2, MKT, order_id=order_id))
    assert (depth.bids, depth.asks) == ((), ((PRICE, 0),))


def test_depth_query_with_limit_returns_best_levels(ex: CheckedExchange) -> None:
    # Given three bid levels and an ask / When depth is asked with limit 2 / Then the best 2
    funded(ex)
    for price in (9_700, 9_900, 9_800):
        ex.rest(1, BID, price, 2)
    ex.rest(2, ASK, 10_100, 3)
    _, bids, asks = ex.engine.depth(MKT, limit=2)
    assert bids == [(9_900, 2), (9_800, 2)]
    assert asks == [(10_100, 3)]
    assert ex.engine.book_ticker(MKT) == ((9_900, 2), (10_100, 3))


# -- TICK: HEARTBEATS AND MARKET STATS -------------------------------------------------------


def test_tick_quiet_market_gets_heartbeat_consuming_update_id() -> None:
    # Given a 1 s quiet period and a depth event on SOL_USDC at t0
    ex = CheckedExchange(EngineConfig(heartbeat_quiet_us=1_000_000))
    funded(ex)
    t0 = START_TS + 10 * MINUTE
    at(ex, t0)
    ex.rest(1, BID, 9_900, 2)
    update_id = ex.engine.depth(MKT)[0]
    # When a tick comes 1 µs before the quiet period ends / Then no heartbeat for SOL_USDC
    at(ex, t0 + 999_999)
    result = ex.tick()
    assert MKT not in {d.market for d in depth_events(result)}
    # (markets that never had a depth event are quiet: they do get one)
    assert {d.market for d in depth_events(result)} == {"BTC_USDC", "ETH_USDC", "TATA_INR"}
    # When a tick comes at exactly the quiet period / Then a level-less DepthChanged, next id
    at(ex, t0 + 1_000_000)
    [heartbeat] = [d for d in depth_events(ex.tick()) if d.market == MKT]
    assert (heartbeat.update_id, heartbeat.bids, heartbeat.asks) == (update_id + 1, (), ())
    assert ex.engine.depth(MKT)[0] == update_id + 1
    # And the heartbeat restarts the quiet period
    at(ex, t0 + 1_500_000)
    assert [d for d in depth_events(ex.tick()) if d.market == MKT] == []


def test_tick_market_stats_only_for_markets_that_traded(ex: CheckedExchange) -> None:
    # Given a book with no trade / When ticks come before and after a trade / Then stats once
    funded(ex)
    ex.rest(2, ASK, PRICE, 2)
    assert of_type(ex.tick(), MarketStats) == []
    ex.limit(1, MKT, BID, PRICE, 1)
    [stats] = of_type(ex.tick(), MarketStats)
    assert stats.market == MKT
    assert stats.best_bid is None and stats.best_ask == (PRICE, 1)
    # Nothing traded since: no stats on the next tick
    assert of_type(ex.tick(), MarketStats) == []


def test_tick_market_stats_carry_ticker_and_every_interval_candle(ex: CheckedExchange) -> None:
    # Given trades: 2 @ 100.00 at minute 0, then 1 @ 100.50 and 2 @ 99.90 at minute 1
    funded(ex)
    ex.rest(2, ASK, PRICE, 2)
    ex.rest(2, ASK, 10_050, 1)
    ex.rest(1, BID, 9_990, 2)
    t0 = START_TS + 10_000_000
    at(ex, t0)
    ex.limit(1, MKT, BID, PRICE, 2)
    at(ex, t0 + MINUTE)
    ex.limit(1, MKT, BID, 10_050, 1)
    ex.limit(2, MKT, ASK, 9_990, 2)
    # When a tick comes in minute 1
    tick_ts = t0 + MINUTE + 5_000_000
    at(ex, tick_ts)
    result = ex.tick()
    [stats] = of_type(result, MarketStats)
    # Then the 24 h ticker covers all three trades
    quote = (2 * PRICE + 10_050 + 2 * 9_990) * TICK_LOT
    ticker = stats.ticker
    assert (ticker.first_price, ticker.last_price, ticker.high, ticker.low) == (
        PRICE,
        9_990,
        10_050,
        9_990,
    )
    assert (ticker.volume, ticker.quote_volume, ticker.trades) == (5, quote, 3)
    # And there is one current candle per interval, starting at its bucket
    assert [c.interval for c in stats.candles] == list(INTERVALS)
    for candle in stats.candles:
        assert candle.start == bucket_start(tick_ts, candle.interval)
    one_minute = stats.candles[0]
    assert (one_minute.open, one_minute.high, one_minute.low, one_minute.close) == (
        10_050,
        10_050,
        9_990,
        9_990,
    )
    assert (one_minute.volume, one_minute.trades) == (3, 2)
    for candle in stats.candles[1:]:
        assert (candle.open, candle.high, candle.low, candle.close) == (PRICE, 10_050, 9_990, 9_990)
        assert (candle.volume, candle.quote_volume, candle.trades) == (5, quote, 3)
    assert stats.ts == tick_ts
    assert ex.engine.market_stats(MKT).ticker == ticker


def test_ticker_trade_older_than_24h_is_dropped(ex: CheckedExchange) -> None:
    # Given a trade in minute m0
    funded(ex)
    ex.rest(2, ASK, PRICE, 2)
    m0 = START_TS + 30 * MINUTE
    at(ex, m0 + 1_000_000)
    ex.limit(1, MKT, BID, PRICE, 1)
    # When the clock is in the 1439th minute after m0 / Then it is still in the 24 h ticker
    at(ex, m0 + 1_439 * MINUTE + 59_000_000)
    ex.tick()
    assert ex.engine.market_stats(MKT).ticker.trades == 1
    # When the clock reaches minute m0 + 1440 / Then it has left the window
    at(ex, m0 + 1_440 * MINUTE)
    ex.tick()
    ticker = ex.engine.market_stats(MKT).ticker
    assert (ticker.trades, ticker.volume, ticker.last_price) == (0, 0, None)


def test_market_stats_query_does_not_change_state(ex: CheckedExchange) -> None:
    # Given a trade in minute 0 and a later command (a deposit) in minute 5, no tick between
    funded(ex)
    ex.rest(2, ASK, PRICE, 5)
    ex.limit(1, MKT, BID, PRICE, 1)
    at(ex, START_TS + 5 * MINUTE)
    ex.deposit(1, USDC, 1)
    state_hash, snapshot = ex.engine.state_hash(), ex.engine.snapshot()
    # When the market statistics are read
    stats = ex.engine.market_stats(MKT)
    assert stats.ticker.trades == 1
    # Then the engine state is unchanged
    assert ex.engine.state_hash() == state_hash
    assert ex.engine.snapshot() == snapshot


# -- DUPLICATES ------------------------------------------------------------------------------


def test_duplicate_command_id_returns_stored_result_and_changes_nothing(
    ex: CheckedExchange,
) -> None:
    # Given an executed order that traded
    funded(ex)
    ex.rest(2, ASK, PRICE, 5)
    command = ex.limit_order(1, MKT, BID, PRICE, 2)
    first = ex.execute(command)
    assert first.ok and trades(first)
    before = observable(ex.engine)
    state_hash = ex.engine.state_hash()
    # When the same command is executed again
    again = ex.execute(command)
    # Then the stored result comes back, marked duplicate, without events, and nothing moves
    assert again.duplicate and again.ok
    assert again.events == []
    assert (again.command_id, again.orders, again.error) == (first.command_id, first.orders, None)
    assert not first.duplicate
    assert observable(ex.engine) == before
    assert ex.engine.state_hash() == state_hash


def test_duplicate_command_id_with_other_content_is_not_executed(ex: CheckedExchange) -> None:
    # Given a deposit with id "dep-1" / When another deposit reuses the id
    first = ex.execute(ex.command(Deposit, id="dep-1", account=1, asset=USDC, amount=USDC_1))
    again = ex.execute(ex.command(Deposit, id="dep-1", account=1, asset=USDC, amount=7))
    # Then only the first one counts
    assert first.ok and again.duplicate and again.events == []
    assert ex.bal(1, USDC) == (USDC_1, 0)


def test_duplicate_of_rejected_command_returns_stored_rejection(ex: CheckedExchange) -> None:
    # Given a rejected command / When resent / Then the same rejection, duplicate, no events
    command = ex.command(Deposit, account=1, asset="DOGE", amount=1)
    first = assert_command_rejected(ex, command, ErrorCode.INVALID_ASSET)
    again = ex.execute(command)
    assert again.duplicate
    assert (again.error, again.message, again.events) == (first.error, first.message, [])


def test_duplicate_tick_emits_nothing(ex: CheckedExchange) -> None:
    # Given an executed tick / When its id comes again / Then duplicate without events
    command = ex.command(Tick)
    assert ex.execute(command).events  # first tick: heartbeats
    again = ex.execute(command)
    assert again.duplicate and again.events == []


def test_result_cache_evicts_oldest_command_id() -> None:
    # Given a cache of 2 results / When 3 commands run / Then the first id executes anew
    ex = CheckedExchange(EngineConfig(result_cache_size=2), markets=False)
    commands = [ex.command(Tick) for _ in range(3)]
    for command in commands:
        assert not ex.execute(command).duplicate
    assert ex.execute(commands[2]).duplicate
    assert not ex.execute(commands[0]).duplicate


def test_open_order_partial_fill_shows_partially_filled(ex: CheckedExchange) -> None:
    # Given an ask / When partially, then fully filled / Then New, PartiallyFilled, gone
    funded(ex)
    order_id = ex.rest(2, ASK, PRICE, 4)
    assert ex.engine.open_order(order_id).status is OrderStatus.NEW  # type: ignore[union-attr]
    ex.limit(1, MKT, BID, PRICE, 1)
    view = ex.engine.open_order(order_id)
    assert view is not None
    assert (view.status, view.executed_quantity, view.executed_quote_quantity) == (
        OrderStatus.PARTIALLY_FILLED,
        1,
        PRICE * TICK_LOT,
    )
    ex.limit(1, MKT, BID, PRICE, 3)
    assert ex.engine.open_order(order_id) is None
