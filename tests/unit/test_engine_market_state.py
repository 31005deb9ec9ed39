"""Engine: market states Open, PostOnly, CancelOnly and Closed."""

from __future__ import annotations

import pytest

from cloudex.enums import CloseReason, ErrorCode, MarketState, OrderStatus, OrderType
from cloudex.messages import (
    CancelAllOrders,
    CancelOrder,
    MarketStateChanged,
    PlaceOrder,
    SetMarketState,
)
from tests.unit.support import (
    ASK,
    BID,
    LOT,
    MKT,
    PRICE,
    SOL,
    SOL_1,
    TICK_LOT,
    USDC,
    USDC_1,
    CheckedExchange,
    assert_rejected,
    balance_events,
    closed,
    depth_events,
    of_type,
    trades,
)


@pytest.fixture
def market(ex: CheckedExchange) -> CheckedExchange:
    """Account 1 bids 3 @ 99.00 (clientId 11), account 2 asks 4 @ 101.00; ETH_USDC has a bid."""
    ex.fund(1, sol=100, usdc=10_000)
    ex.fund(2, sol=100, usdc=10_000)
    ex.rest(1, BID, 9_900, 3, client_id=11)
    ex.rest(2, ASK, 10_100, 4)
    assert ex.limit(1, "ETH_USDC", BID, 300_000, 10).ok
    return ex


def place(ex: CheckedExchange, code: ErrorCode, **fields: object) -> None:
    fields.setdefault("account", 1)
    fields.setdefault("market", MKT)
    fields.setdefault("side", BID)
    fields.setdefault("order_type", OrderType.LIMIT)
    assert_rejected(ex, PlaceOrder, code, **fields)


def state_of(ex: CheckedExchange, symbol: str = MKT) -> MarketState:
    [spec] = [m for m in ex.engine.markets() if m.symbol == symbol]
    return spec.state


def test_set_state_emits_market_state_changed(market: CheckedExchange) -> None:
    # Given an open market / When set PostOnly / Then one MarketStateChanged, other markets open
    result = market.set_state(MKT, MarketState.POST_ONLY)
    [event] = of_type(result, MarketStateChanged)
    assert (event.market, event.state) == (MKT, MarketState.POST_ONLY)
    assert state_of(market) is MarketState.POST_ONLY
    assert state_of(market, "ETH_USDC") is MarketState.OPEN


# -- POST ONLY -------------------------------------------------------------------------------


def test_post_only_state_accepts_only_post_only_limits(market: CheckedExchange) -> None:
    # Given a PostOnly market
    market.set_state(MKT, MarketState.POST_ONLY)
    # When plain limits (crossing or not) and market orders arrive / Then INVALID_ORDER
    place(market, ErrorCode.INVALID_ORDER, price=9_950, quantity=2)
    place(market, ErrorCode.INVALID_ORDER, price=10_100, quantity=2)
    place(market, ErrorCode.INVALID_ORDER, order_type=OrderType.MARKET, quantity=1)
    place(
        market,
        ErrorCode.INVALID_ORDER,
        order_type=OrderType.MARKET,
        side=ASK,
        quote_quantity=USDC_1,
    )
    # A post-only limit that would take is still refused
    place(market, ErrorCode.INVALID_ORDER, price=10_100, quantity=2, post_only=True)
    # And a post-only limit that rests is accepted
    result = market.limit(1, MKT, BID, 9_950, 2, post_only=True)
    assert result.ok and result.orders[0].status is OrderStatus.NEW
    assert market.engine.depth(MKT)[1] == [(9_950, 2), (9_900, 3)]


def test_post_only_state_cancels_work(market: CheckedExchange) -> None:
    # Given a PostOnly market / When orders are cancelled / Then they are
    market.set_state(MKT, MarketState.POST_ONLY)
    assert market.cancel(1, MKT, client_id=11).ok
    assert market.cancel_all(2, MKT).ok
    assert market.engine.depth(MKT)[1:] == ([], [])


# -- CANCEL ONLY -----------------------------------------------------------------------------


def test_cancel_only_state_placing_trading_paused(market: CheckedExchange) -> None:
    # Given a CancelOnly market / When any order is placed / Then TRADING_PAUSED
    market.set_state(MKT, MarketState.CANCEL_ONLY)
    place(market, ErrorCode.TRADING_PAUSED, price=9_950, quantity=2)
    place(market, ErrorCode.TRADING_PAUSED, price=9_950, quantity=2, post_only=True)
    place(market, ErrorCode.TRADING_PAUSED, order_type=OrderType.MARKET, quantity=1)
    # Other markets are unaffected
    assert market.limit(1, "ETH_USDC", BID, 300_000, 10).ok


def test_cancel_only_state_keeps_book_and_cancels_work(market: CheckedExchange) -> None:
    # Given a CancelOnly market / When cancelling / Then the book stayed and cancels work
    before = market.engine.depth(MKT)[1:]
    market.set_state(MKT, MarketState.CANCEL_ONLY)
    assert market.engine.depth(MKT)[1:] == before
    result = market.cancel(1, MKT, client_id=11)
    assert result.ok
    assert [(c.status, c.reason) for c in closed(result)] == [
        (OrderStatus.CANCELLED, CloseReason.USER_CANCEL)
    ]
    assert market.cancel_all(2, MKT).ok
    assert market.bal(2, SOL) == (100 * SOL_1, 0)


# -- CLOSED ----------------------------------------------------------------------------------


def test_closed_state_expires_every_resting_order_and_unlocks(market: CheckedExchange) -> None:
    # Given resting orders on SOL_USDC (one partially filled) and on ETH_USDC
    market.fund(3, usdc=100)
    market.limit(3, MKT, BID, 10_100, 1)  # fills 1 of account 2's 4 lots
    update_id = market.engine.depth(MKT)[0]
    # When SOL_USDC is closed
    result = market.set_state(MKT, MarketState.CLOSED)
    # Then every SOL_USDC order is expired (MarketClosed) with its funds unlocked
    assert {(c.account, c.status, c.reason, c.executed_quantity) for c in closed(result)} == {
        (1, OrderStatus.EXPIRED, CloseReason.MARKET_CLOSED, 0),
        (2, OrderStatus.EXPIRED, CloseReason.MARKET_CLOSED, 1),
    }
    unlocks = {(e.account, e.asset): e.available_delta for e in balance_events(result)}
    assert unlocks == {(1, USDC): 3 * 9_900 * TICK_LOT, (2, SOL): 3 * LOT}
    assert market.bal(1, USDC)[1] == 10 * 300_000  # only the ETH_USDC bid stays locked
    assert market.bal(2, SOL) == (100 * SOL_1 - LOT, 0)
    assert market.engine.open_orders(1, MKT) == market.engine.open_orders(2) == []
    # The book empties with one depth event reporting both levels at 0
    [depth] = depth_events(result)
    assert (depth.update_id, depth.bids, depth.asks) == (
        update_id + 1,
        ((9_900, 0),),
        ((10_100, 0),),
    )
    assert market.engine.depth(MKT) == (update_id + 1, [], [])
    assert len(market.engine.open_orders(1, "ETH_USDC")) == 1


def test_closed_state_placing_trading_paused(market: CheckedExchange) -> None:
    # Given a Closed market / When any order is placed / Then TRADING_PAUSED
    market.set_state(MKT, MarketState.CLOSED)
    place(market, ErrorCode.TRADING_PAUSED, price=9_950, quantity=2)
    place(market, ErrorCode.TRADING_PAUSED, price=9_950, quantity=2, post_only=True)
    place(market, ErrorCode.TRADING_PAUSED, order_type=OrderType.MARKET, quantity=1)


def test_closed_state_cancel_all_trading_paused(market: CheckedExchange) -> None:
    # Given a Closed market / When cancel-all runs / Then TRADING_PAUSED
    market.set_state(MKT, MarketState.CLOSED)
    assert_rejected(market, CancelAllOrders, ErrorCode.TRADING_PAUSED, account=1, market=MKT)


def test_closed_state_cancel_trading_paused(market: CheckedExchange) -> None:
    # Given account 1's order (clientId 11) expired by closing the market
    [order] = market.engine.open_orders(1, MKT)
    market.set_state(MKT, MarketState.CLOSED)
    # When it cancels by order id or clientId / Then TRADING_PAUSED, as for every cancel
    assert_rejected(
        market,
        CancelOrder,
        ErrorCode.TRADING_PAUSED,
        account=1,
        market=MKT,
        order_id=order.order_id,
    )
    assert_rejected(
        market, CancelOrder, ErrorCode.TRADING_PAUSED, account=1, market=MKT, client_id=11
    )


def test_closed_state_reopened_trades_again(market: CheckedExchange) -> None:
    # Given a Closed market / When set Open again / Then orders match
    market.set_state(MKT, MarketState.CLOSED)
    assert market.set_state(MKT, MarketState.OPEN).ok
    assert state_of(market) is MarketState.OPEN
    market.rest(2, ASK, PRICE, 2)
    assert [t.quantity for t in trades(market.limit(1, MKT, BID, PRICE, 2))] == [2]


def test_closing_empty_market_emits_only_the_state_change(ex: CheckedExchange) -> None:
    # Given an empty book / When closed / Then only MarketStateChanged
    result = ex.set_state(MKT, MarketState.CLOSED)
    assert [type(e) for e in result.events] == [MarketStateChanged]
    assert_rejected(
        ex, SetMarketState, ErrorCode.INVALID_MARKET, market="NOPE", state=MarketState.OPEN
    )
