"""Engine: self-trade prevention. An account never trades with itself; the taker's mode decides."""

from __future__ import annotations

import pytest

from cloudex.enums import CloseReason, OrderStatus, SelfTradePrevention, TimeInForce
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
    closed,
    depth_events,
    trades,
)

ME, OTHER = 1, 2
TAKER = SelfTradePrevention.REJECT_TAKER
MAKER = SelfTradePrevention.REJECT_MAKER
BOTH = SelfTradePrevention.REJECT_BOTH


@pytest.fixture
def book(ex: CheckedExchange) -> CheckedExchange:
    """Asks: OTHER 3 @ 100.00, then ME 2 @ 100.00, then OTHER 4 @ 100.05."""
    ex.fund(ME, sol=100, usdc=10_000)
    ex.fund(OTHER, sol=100, usdc=10_000)
    ex.rest(OTHER, ASK, PRICE, 3)
    ex.rest(ME, ASK, PRICE, 2)
    ex.rest(OTHER, ASK, PRICE + 5, 4)
    return ex


def own_ask(ex: CheckedExchange) -> int:
    [order] = ex.engine.open_orders(ME, MKT)
    return order.order_id


def test_stp_unspecified_mode_defaults_to_reject_taker(book: CheckedExchange) -> None:
    # Given my ask in the queue / When my bid has no STP mode / Then RejectTaker applies
    result = book.limit(ME, MKT, BID, PRICE + 5, 10)
    assert result.orders[0].self_trade_prevention is TAKER
    assert result.orders[0].status is OrderStatus.EXPIRED


def test_stp_reject_taker_gtc_stops_and_expires_keeping_earlier_fills(
    book: CheckedExchange,
) -> None:
    # Given my ask behind another account's 3 lots / When my GTC bid for 10 lots arrives
    maker = own_ask(book)
    result = book.limit(ME, MKT, BID, PRICE + 5, 10, self_trade_prevention=TAKER)
    # Then it fills the 3 lots before my ask, then stops: Expired (SelfTradePrevention), not rested
    assert [(t.seller, t.quantity) for t in trades(result)] == [(OTHER, 3)]
    view = result.orders[0]
    assert (view.status, view.executed_quantity) == (OrderStatus.EXPIRED, 3)
    [own] = [c for c in closed(result) if c.order_id == view.order_id]
    assert own.reason is CloseReason.SELF_TRADE_PREVENTION
    assert [c.status for c in closed(result) if c.order_id != view.order_id] == [
        OrderStatus.FILLED  # the other account's maker
    ]
    # My resting ask is untouched; nothing of the bid is locked
    assert [o.order_id for o in book.engine.open_orders(ME)] == [maker]
    assert book.bal(ME, USDC) == (10_000 * USDC_1 - 3 * PRICE * TICK_LOT, 0)
    assert book.engine.depth(MKT)[1:] == ([], [(PRICE, 2), (PRICE + 5, 4)])


def test_stp_reject_taker_own_order_at_best_expires_without_trades(ex: CheckedExchange) -> None:
    # Given my bid at the best / When my ask crosses it / Then the ask expires, no trade
    ex.fund(ME, sol=100, usdc=10_000)
    ex.rest(ME, BID, PRICE, 2)
    result = ex.limit(ME, MKT, ASK, PRICE, 2)
    assert trades(result) == []
    assert [(c.status, c.reason) for c in closed(result)] == [
        (OrderStatus.EXPIRED, CloseReason.SELF_TRADE_PREVENTION)
    ]
    assert ex.bal(ME, SOL) == (100 * SOL_1, 0)
    assert ex.engine.depth(MKT)[1:] == ([(PRICE, 2)], [])


def test_stp_reject_taker_ignores_the_makers_mode(ex: CheckedExchange) -> None:
    # Given my resting bid marked RejectMaker / When my default (RejectTaker) ask crosses it
    ex.fund(ME, sol=100, usdc=10_000)
    maker = ex.rest(ME, BID, PRICE, 2, self_trade_prevention=MAKER)
    result = ex.limit(ME, MKT, ASK, PRICE, 2)
    # Then the taker's mode applies: the taker expires and the maker stays
    assert trades(result) == []
    assert [o.order_id for o in ex.engine.open_orders(ME)] == [maker]


def test_stp_reject_maker_expires_maker_and_keeps_matching(book: CheckedExchange) -> None:
    # Given my ask of 2 lots in the queue / When my RejectMaker bid for 6 lots arrives
    maker = own_ask(book)
    result = book.limit(ME, MKT, BID, PRICE + 5, 6, self_trade_prevention=MAKER)
    # Then my ask is expired (SelfTradePrevention) with its base unlocked,
    # and the bid goes on: 3 @ 100.00 and 3 @ 100.05 from the other account
    assert [(t.seller, t.price, t.quantity) for t in trades(result)] == [
        (OTHER, PRICE, 3),
        (OTHER, PRICE + 5, 3),
    ]
    maker_close = [c for c in closed(result) if c.order_id == maker]
    assert [(c.status, c.reason, c.executed_quantity) for c in maker_close] == [
        (OrderStatus.EXPIRED, CloseReason.SELF_TRADE_PREVENTION, 0)
    ]
    assert result.orders[0].status is OrderStatus.FILLED
    assert book.bal(ME, SOL) == (
        100 * SOL_1 + 6 * LOT - sum(t.buyer_fee for t in trades(result)),
        0,
    )
    assert book.engine.open_orders(ME) == []
    [depth] = depth_events(result)
    assert depth.asks == ((PRICE, 0), (PRICE + 5, 1))


def test_stp_reject_maker_remainder_rests_gtc(book: CheckedExchange) -> None:
    # Given my ask in the queue / When my RejectMaker GTC bid outsizes the book / Then the rest
    # rests
    result = book.limit(ME, MKT, BID, PRICE, 6, self_trade_prevention=MAKER)
    assert sum(t.quantity for t in trades(result)) == 3
    assert result.orders[0].status is OrderStatus.PARTIALLY_FILLED
    assert book.engine.depth(MKT)[1:] == ([(PRICE, 3)], [(PRICE + 5, 4)])
    assert book.bal(ME, USDC)[1] == 3 * PRICE * TICK_LOT
    assert book.bal(ME, SOL)[1] == 0


def test_stp_reject_both_expires_maker_and_taker(book: CheckedExchange) -> None:
    # Given my ask behind 3 lots / When my RejectBoth bid for 10 lots arrives
    maker = own_ask(book)
    result = book.limit(ME, MKT, BID, PRICE + 5, 10, self_trade_prevention=BOTH)
    # Then it fills the 3 lots, then both my ask and the bid expire (SelfTradePrevention)
    assert [(t.seller, t.quantity) for t in trades(result)] == [(OTHER, 3)]
    reasons = {c.order_id: (c.status, c.reason) for c in closed(result) if c.account == ME}
    assert reasons == {
        maker: (OrderStatus.EXPIRED, CloseReason.SELF_TRADE_PREVENTION),
        result.orders[0].order_id: (OrderStatus.EXPIRED, CloseReason.SELF_TRADE_PREVENTION),
    }
    assert book.engine.open_orders(ME) == []
    assert book.bal(ME, SOL)[1] == 0 and book.bal(ME, USDC)[1] == 0
    assert book.engine.depth(MKT)[1:] == ([], [(PRICE + 5, 4)])


def test_stp_reject_both_market_ask_against_own_bid(ex: CheckedExchange) -> None:
    # Given my bid / When my RejectBoth market ask comes / Then both expire, no trade
    ex.fund(ME, sol=100, usdc=10_000)
    maker = ex.rest(ME, BID, PRICE, 2)
    result = ex.market(ME, MKT, ASK, quantity=2, self_trade_prevention=BOTH)
    assert trades(result) == []
    assert {c.order_id for c in closed(result)} == {maker, result.orders[0].order_id}
    assert ex.bal(ME, USDC) == (10_000 * USDC_1, 0)
    assert ex.engine.depth(MKT)[1:] == ([], [])


@pytest.mark.parametrize("mode", [TAKER, MAKER, BOTH])
def test_stp_every_mode_never_trades_with_itself(book: CheckedExchange, mode: object) -> None:
    # Given my ask in the queue / When I take in either direction, any mode / Then no self-trade
    for side, price in ((BID, PRICE + 5), (ASK, PRICE - 100)):
        result = book.limit(ME, MKT, side, price, 5, self_trade_prevention=mode)
        assert all(t.buyer != t.seller for t in trades(result))
    result = book.market(ME, MKT, BID, quantity=5, self_trade_prevention=mode)
    assert all(t.buyer != t.seller for t in trades(result))


def test_stp_reject_taker_market_order_stops_at_own_order(book: CheckedExchange) -> None:
    # Given my ask behind 3 lots / When my market bid for 6 / Then 3 fill, then it expires (STP)
    result = book.market(ME, MKT, BID, quantity=6)
    assert sum(t.quantity for t in trades(result)) == 3
    [own] = [c for c in closed(result) if c.account == ME]
    assert (own.status, own.reason) == (OrderStatus.EXPIRED, CloseReason.SELF_TRADE_PREVENTION)


def test_stp_fok_reject_taker_blocked_by_own_order_is_killed(book: CheckedExchange) -> None:
    # Given my ask inside the FOK's range / When a RejectTaker FOK bid / Then killed, ask kept
    result = book.limit(ME, MKT, BID, PRICE + 5, 4, time_in_force=TimeInForce.FOK)
    assert trades(result) == []
    assert [c.reason for c in closed(result)] == [CloseReason.FILL_OR_KILL]
    assert own_ask(book)  # untouched


def test_stp_fok_reject_maker_fills_past_own_order(book: CheckedExchange) -> None:
    # Given my ask in the queue / When a RejectMaker FOK bid for 5 / Then my ask expires, FOK fills
    maker = own_ask(book)
    result = book.limit(
        ME, MKT, BID, PRICE + 5, 5, time_in_force=TimeInForce.FOK, self_trade_prevention=MAKER
    )
    assert result.orders[0].status is OrderStatus.FILLED
    assert sum(t.quantity for t in trades(result)) == 5
    assert maker in {c.order_id for c in closed(result)}
