"""Engine: limit and market orders, matching, time in force, locking and fees.

SOL_USDC units: price 10000 ticks = 100.00 USDC, 1 lot = 0.01 SOL = 10^7 SOL atoms, and one lot at
10000 ticks costs 10000 x 100 = 10^6 USDC atoms (1 USDC). Maker fee 2 bps, taker 5 bps.
Every command runs through ``CheckedExchange``, which also checks conservation, locks, hash sums
and sequence numbers after each one.
"""

from __future__ import annotations

import pytest

from cloudex.enums import (
    BalanceReason,
    CloseReason,
    ErrorCode,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from cloudex.messages import MarketFeesChanged, OrderAccepted, PlaceOrder, SetMarketFees
from cloudex.names import FEE_ACCOUNT
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
    ceil_fee,
    closed,
    depth_events,
    of_type,
    trades,
)

BUYER, SELLER, OTHER = 1, 2, 3


def funded(ex: CheckedExchange) -> CheckedExchange:
    ex.fund(BUYER, usdc=10_000)
    ex.fund(SELLER, sol=100)
    ex.fund(OTHER, sol=100, usdc=10_000)
    return ex


# -- LIMIT MATCHING --------------------------------------------------------------------------


def test_limit_bid_exact_fill_both_orders_filled(ex: CheckedExchange) -> None:
    # Given a resting ask of 5 lots at 100.00
    funded(ex)
    ask_id = ex.rest(SELLER, ASK, PRICE, 5)
    # When a bid for exactly 5 lots at 100.00 arrives
    result = ex.limit(BUYER, MKT, BID, PRICE, 5)
    # Then one trade of 5 lots at the maker's price, both orders Filled, book empty
    assert result.ok
    [trade] = trades(result)
    quote = 5 * PRICE * TICK_LOT
    assert (trade.price, trade.quantity, trade.quote_quantity) == (PRICE, 5, quote)
    assert (trade.buyer, trade.seller, trade.sell_order_id) == (BUYER, SELLER, ask_id)
    assert trade.buyer_fee == ceil_fee(5 * LOT, 5)  # taker buyer pays 5 bps in SOL
    assert trade.seller_fee == ceil_fee(quote, 2)  # maker seller pays 2 bps in USDC
    view = result.orders[0]
    assert view.status is OrderStatus.FILLED
    assert (view.executed_quantity, view.executed_quote_quantity) == (5, quote)
    assert {(c.order_id, c.status, c.reason) for c in closed(result)} == {
        (ask_id, OrderStatus.FILLED, CloseReason.FILLED),
        (view.order_id, OrderStatus.FILLED, CloseReason.FILLED),
    }
    assert ex.engine.depth(MKT)[1:] == ([], [])
    assert ex.engine.open_orders(BUYER) == ex.engine.open_orders(SELLER) == []
    # Balances: buyer paid exactly the quote, received base less fee; seller the reverse
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - quote, 0)
    assert ex.bal(BUYER, SOL) == (5 * LOT - trade.buyer_fee, 0)
    assert ex.bal(SELLER, SOL) == (100 * SOL_1 - 5 * LOT, 0)
    assert ex.bal(SELLER, USDC) == (quote - trade.seller_fee, 0)
    assert ex.bal(FEE_ACCOUNT, SOL) == (trade.buyer_fee, 0)
    assert ex.bal(FEE_ACCOUNT, USDC) == (trade.seller_fee, 0)
    # Each balance change names its reason and the order it belongs to
    changes = {(e.account, e.asset): (e.reason, e.reference) for e in balance_events(result)}
    taker_id = view.order_id
    assert changes == {
        (SELLER, SOL): (BalanceReason.FILL, ask_id),
        (SELLER, USDC): (BalanceReason.FILL, ask_id),
        (BUYER, USDC): (BalanceReason.ORDER, taker_id),
        (BUYER, SOL): (BalanceReason.ORDER, taker_id),
        (FEE_ACCOUNT, SOL): (BalanceReason.FEE, taker_id),
        (FEE_ACCOUNT, USDC): (BalanceReason.FEE, taker_id),
    }


def test_limit_bid_across_levels_fills_each_at_maker_price(ex: CheckedExchange) -> None:
    # Given asks 2 @ 100.00, 3 @ 100.50, 4 @ 101.00
    funded(ex)
    ex.rest(SELLER, ASK, 10_000, 2)
    ex.rest(OTHER, ASK, 10_050, 3)
    ex.rest(SELLER, ASK, 10_100, 4)
    # When a bid for 6 lots at 101.00 arrives
    result = ex.limit(BUYER, MKT, BID, 10_100, 6)
    # Then three trades, best price first, each at the maker's price
    assert [(t.price, t.quantity, t.quote_quantity) for t in trades(result)] == [
        (10_000, 2, 2 * 10_000 * TICK_LOT),
        (10_050, 3, 3 * 10_050 * TICK_LOT),
        (10_100, 1, 1 * 10_100 * TICK_LOT),
    ]
    assert [t.seller for t in trades(result)] == [SELLER, OTHER, SELLER]
    trade_ids = [t.trade_id for t in trades(result)]
    assert trade_ids == list(range(trade_ids[0], trade_ids[0] + 3))
    assert result.orders[0].status is OrderStatus.FILLED
    spent = sum(t.quote_quantity for t in trades(result))
    assert result.orders[0].executed_quote_quantity == spent
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - spent, 0)
    # And the book keeps only what was not taken
    assert ex.engine.depth(MKT)[2] == [(10_100, 3)]
    [depth] = depth_events(result)
    assert depth.asks == ((10_000, 0), (10_050, 0), (10_100, 3))
    assert depth.bids == ()


def test_limit_ask_across_bids_fills_best_bid_first(ex: CheckedExchange) -> None:
    # Given bids 2 @ 99.00 and 3 @ 100.00
    funded(ex)
    ex.rest(BUYER, BID, 9_900, 2)
    ex.rest(OTHER, BID, 10_000, 3)
    # When an ask for 4 lots at 99.00 arrives
    result = ex.limit(SELLER, MKT, ASK, 9_900, 4)
    # Then it sells 3 @ 100.00 then 1 @ 99.00, and the seller is paid at those prices
    assert [(t.price, t.quantity, t.buyer) for t in trades(result)] == [
        (10_000, 3, OTHER),
        (9_900, 1, BUYER),
    ]
    proceeds = 3 * 10_000 * TICK_LOT + 9_900 * TICK_LOT
    fee = sum(t.seller_fee for t in trades(result))
    assert fee == ceil_fee(3 * 10_000 * TICK_LOT, 5) + ceil_fee(9_900 * TICK_LOT, 5)
    assert ex.bal(SELLER, USDC) == (proceeds - fee, 0)
    assert ex.bal(SELLER, SOL) == (100 * SOL_1 - 4 * LOT, 0)
    assert ex.engine.depth(MKT)[1] == [(9_900, 1)]


def test_limit_same_price_makers_fill_in_time_priority(ex: CheckedExchange) -> None:
    # Given three asks at the same price, placed in order
    funded(ex)
    first = ex.rest(SELLER, ASK, PRICE, 2)
    second = ex.rest(OTHER, ASK, PRICE, 2)
    third = ex.rest(SELLER, ASK, PRICE, 2)
    # When a bid takes 3 lots
    result = ex.limit(BUYER, MKT, BID, PRICE, 3)
    # Then the oldest is filled first, then the next, and the youngest is untouched
    assert [(t.sell_order_id, t.quantity) for t in trades(result)] == [(first, 2), (second, 1)]
    remaining = {o.order_id: o.executed_quantity for o in ex.engine.open_orders(OTHER)}
    assert remaining == {second: 1}
    assert ex.engine.open_order(third).executed_quantity == 0  # type: ignore[union-attr]
    assert ex.engine.depth(MKT)[2] == [(PRICE, 3)]


def test_limit_bid_does_not_cross_beyond_its_price(ex: CheckedExchange) -> None:
    # Given asks at 100.00 (1 lot) and 100.01 (5 lots)
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 1)
    ex.rest(SELLER, ASK, PRICE + 1, 5)
    # When a bid for 3 lots at 100.00 arrives
    result = ex.limit(BUYER, MKT, BID, PRICE, 3)
    # Then it takes only the 100.00 lot and rests 2 lots at 100.00
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 1)]
    assert result.orders[0].status is OrderStatus.PARTIALLY_FILLED
    assert ex.engine.depth(MKT)[1:] == ([(PRICE, 2)], [(PRICE + 1, 5)])


def test_limit_bid_price_improvement_is_never_locked(ex: CheckedExchange) -> None:
    # Given an ask of 5 lots at 100.00
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    # When a bid for 5 lots at 101.00 fills completely at 100.00
    result = ex.limit(BUYER, MKT, BID, 10_100, 5)
    # Then the buyer paid 100.00 per lot, nothing stays locked, and one quote change says so
    assert [t.price for t in trades(result)] == [PRICE]
    paid = 5 * PRICE * TICK_LOT
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - paid, 0)
    [change] = balance_events(result, BUYER, USDC)
    assert (change.available_delta, change.locked_delta) == (-paid, 0)


def test_limit_bid_partial_fill_locks_only_resting_remainder_at_limit(
    ex: CheckedExchange,
) -> None:
    # Given an ask of 5 lots at 100.00
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    # When a bid for 8 lots at 101.00 arrives
    result = ex.limit(BUYER, MKT, BID, 10_100, 8)
    # Then 5 lots are paid at 100.00 and only 3 lots are locked, at 101.00
    paid = 5 * PRICE * TICK_LOT
    lock = 3 * 10_100 * TICK_LOT
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - paid - lock, lock)
    view = result.orders[0]
    assert view.status is OrderStatus.PARTIALLY_FILLED
    assert (view.executed_quantity, view.executed_quote_quantity) == (5, paid)
    assert ex.engine.depth(MKT)[1] == [(10_100, 3)]
    [depth] = depth_events(result)
    assert depth.bids == ((10_100, 3),)
    assert depth.asks == ((PRICE, 0),)
    [open_view] = ex.engine.open_orders(BUYER)
    assert open_view.status is OrderStatus.PARTIALLY_FILLED
    assert open_view.executed_quantity == 5


def test_limit_resting_bid_locks_price_times_quantity(ex: CheckedExchange) -> None:
    # Given a funded buyer / When a non-crossing bid rests / Then exactly its cost is locked
    funded(ex)
    result = ex.limit(BUYER, MKT, BID, 9_950, 7)
    lock = 7 * 9_950 * TICK_LOT
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - lock, lock)
    assert result.orders[0].status is OrderStatus.NEW
    [change] = balance_events(result)
    assert (change.available_delta, change.locked_delta) == (-lock, lock)
    assert (change.available, change.locked) == (10_000 * USDC_1 - lock, lock)


def test_limit_resting_ask_locks_base_lots(ex: CheckedExchange) -> None:
    # Given 100 SOL / When an ask of 7 lots rests / Then 7 lots of base are locked, no quote
    funded(ex)
    ex.rest(SELLER, ASK, 10_500, 7)
    assert ex.bal(SELLER, SOL) == (100 * SOL_1 - 7 * LOT, 7 * LOT)
    assert ex.bal(SELLER, USDC) == (0, 0)


def test_limit_partially_filled_maker_fills_only_its_remainder(ex: CheckedExchange) -> None:
    # Given an ask of 5 lots already filled for 2
    funded(ex)
    ask_id = ex.rest(SELLER, ASK, PRICE, 5)
    assert [t.quantity for t in trades(ex.limit(OTHER, MKT, BID, PRICE, 2))] == [2]
    # When a bid for 10 lots arrives
    result = ex.limit(BUYER, MKT, BID, PRICE, 10)
    # Then the maker gives only its remaining 3 lots and closes Filled with 5 executed
    assert [(t.sell_order_id, t.quantity) for t in trades(result)] == [(ask_id, 3)]
    [maker_closed] = [c for c in closed(result) if c.order_id == ask_id]
    assert maker_closed.status is OrderStatus.FILLED
    assert maker_closed.executed_quantity == 5
    assert maker_closed.executed_quote_quantity == 5 * PRICE * TICK_LOT
    assert ex.bal(SELLER, SOL) == (100 * SOL_1 - 5 * LOT, 0)
    assert ex.engine.depth(MKT)[1] == [(PRICE, 7)]


def test_trade_is_buyer_maker_true_when_resting_order_is_the_bid(ex: CheckedExchange) -> None:
    # Given a resting bid / When an ask takes it / Then isBuyerMaker, maker/taker fees by role
    funded(ex)
    bid_id = ex.rest(BUYER, BID, PRICE, 2)
    [trade] = trades(ex.limit(SELLER, MKT, ASK, PRICE, 2))
    assert trade.is_buyer_maker is True
    assert (trade.buy_order_id, trade.buyer, trade.seller) == (bid_id, BUYER, SELLER)
    # The maker buyer pays the maker rate, the taker seller the taker rate
    assert trade.buyer_fee == ceil_fee(2 * LOT, 2)
    assert trade.seller_fee == ceil_fee(2 * PRICE * TICK_LOT, 5)


def test_trade_is_buyer_maker_false_when_resting_order_is_the_ask(ex: CheckedExchange) -> None:
    # Given a resting ask / When a bid takes it / Then not isBuyerMaker
    funded(ex)
    ask_id = ex.rest(SELLER, ASK, PRICE, 2)
    [trade] = trades(ex.limit(BUYER, MKT, BID, PRICE, 2))
    assert trade.is_buyer_maker is False
    assert (trade.sell_order_id, trade.buyer, trade.seller) == (ask_id, BUYER, SELLER)


def test_limit_accepted_event_echoes_order_fields(ex: CheckedExchange) -> None:
    # Given a funded buyer / When a bid rests / Then OrderAccepted and the view echo it
    funded(ex)
    result = ex.limit(BUYER, MKT, BID, 9_000, 3, client_id=77)
    [accepted] = of_type(result, OrderAccepted)
    view = result.orders[0]
    assert accepted.order_id == view.order_id
    assert (accepted.account, accepted.market, accepted.side) == (BUYER, MKT, BID)
    assert (accepted.price, accepted.quantity, accepted.client_id) == (9_000, 3, 77)
    assert accepted.time_in_force is TimeInForce.GTC
    assert (view.client_id, view.created_at) == (77, accepted.ts)
    assert ex.engine.open_order(view.order_id) == view


def test_order_id_rejected_order_takes_no_id(ex: CheckedExchange) -> None:
    # Given an accepted order / When a rejected one comes between / Then ids stay consecutive
    funded(ex)
    first = ex.rest(BUYER, BID, 9_000, 2)
    ex.limit(BUYER, MKT, BID, 0, 1)  # rejected: takes no id
    second = ex.rest(BUYER, BID, 9_001, 2)
    assert second == first + 1


# -- TIME IN FORCE ---------------------------------------------------------------------------


def test_limit_ioc_remainder_expires_without_resting(ex: CheckedExchange) -> None:
    # Given an ask of 2 lots
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    # When an IOC bid for 5 lots arrives
    result = ex.limit(BUYER, MKT, BID, PRICE, 5, time_in_force=TimeInForce.IOC)
    # Then it fills 2, expires with reason IOC, and locks nothing
    assert [t.quantity for t in trades(result)] == [2]
    view = result.orders[0]
    assert (view.status, view.executed_quantity) == (OrderStatus.EXPIRED, 2)
    [own] = [c for c in closed(result) if c.order_id == view.order_id]
    assert own.reason is CloseReason.IMMEDIATE_OR_CANCEL
    assert own.executed_quantity == 2
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - 2 * PRICE * TICK_LOT, 0)
    assert ex.engine.depth(MKT)[1:] == ([], [])
    assert ex.engine.open_orders(BUYER) == []


def test_limit_ioc_nothing_to_match_expires_and_changes_no_balance(ex: CheckedExchange) -> None:
    # Given an empty book / When an IOC bid comes / Then Expired (IOC), nothing moves
    funded(ex)
    result = ex.limit(BUYER, MKT, BID, PRICE, 5, time_in_force=TimeInForce.IOC)
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert [c.reason for c in closed(result)] == [CloseReason.IMMEDIATE_OR_CANCEL]
    assert balance_events(result) == []
    assert depth_events(result) == []
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1, 0)


def test_limit_ioc_complete_fill_is_filled(ex: CheckedExchange) -> None:
    # Given 5 lots offered / When an IOC bid for 5 comes / Then Filled
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    result = ex.limit(BUYER, MKT, BID, PRICE, 5, time_in_force=TimeInForce.IOC)
    assert result.orders[0].status is OrderStatus.FILLED


def test_limit_fok_fillable_fills_completely(ex: CheckedExchange) -> None:
    # Given 2 + 3 lots on two levels
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    ex.rest(OTHER, ASK, PRICE + 5, 3)
    # When a FOK bid for exactly 5 lots up to 100.05 arrives / Then it fills all of it
    result = ex.limit(BUYER, MKT, BID, PRICE + 5, 5, time_in_force=TimeInForce.FOK)
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 2), (PRICE + 5, 3)]
    assert result.orders[0].status is OrderStatus.FILLED
    assert ex.engine.depth(MKT)[2] == []


def test_limit_fok_not_fillable_expires_without_trades_or_balance_change(
    ex: CheckedExchange,
) -> None:
    # Given 2 lots at 100.00 and 3 more beyond the bid's limit
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    ex.rest(OTHER, ASK, PRICE + 6, 3)
    book = ex.engine.depth(MKT)
    balances = {a: ex.engine.balances(a) for a in ex.engine.accounts()}
    # When a FOK bid for 5 lots up to 100.05 arrives
    result = ex.limit(BUYER, MKT, BID, PRICE + 5, 5, time_in_force=TimeInForce.FOK)
    # Then it is accepted but killed: Expired (FillOrKill), no trade, nothing moves
    assert result.ok
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert result.orders[0].executed_quantity == 0
    assert [(c.status, c.reason) for c in closed(result)] == [
        (OrderStatus.EXPIRED, CloseReason.FILL_OR_KILL)
    ]
    assert trades(result) == [] and balance_events(result) == [] and depth_events(result) == []
    assert ex.engine.depth(MKT) == book
    assert {a: ex.engine.balances(a) for a in ex.engine.accounts()} == balances


def test_limit_fok_more_than_book_expires(ex: CheckedExchange) -> None:
    # Given 5 lots offered / When a FOK bid for 6 comes / Then Expired without trades
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 4)
    result = ex.limit(SELLER, MKT, ASK, PRICE, 1)  # an own ask further back: irrelevant
    assert result.ok
    result = ex.limit(BUYER, MKT, BID, PRICE, 6, time_in_force=TimeInForce.FOK)
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert trades(result) == []


def test_limit_post_only_would_take_is_rejected_and_changes_nothing(
    ex: CheckedExchange,
) -> None:
    # Given an ask at 100.00
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    # When a post-only bid at 100.00 (or higher) is placed / Then INVALID_ORDER, nothing changes
    for price in (PRICE, PRICE + 100):
        assert_rejected(
            ex,
            PlaceOrder,
            ErrorCode.INVALID_ORDER,
            account=BUYER,
            market=MKT,
            side=BID,
            order_type=OrderType.LIMIT,
            price=price,
            quantity=1,
            post_only=True,
        )


def test_limit_post_only_not_crossing_rests_as_maker(ex: CheckedExchange) -> None:
    # Given an ask at 100.00 / When a post-only bid at 99.99 comes / Then it rests and later makes
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    result = ex.limit(BUYER, MKT, BID, PRICE - 1, 3, post_only=True)
    assert result.orders[0].status is OrderStatus.NEW
    assert result.orders[0].post_only
    assert ex.engine.depth(MKT)[1] == [(PRICE - 1, 3)]
    # And as a maker it later trades at its own price
    [trade] = trades(ex.limit(SELLER, MKT, ASK, PRICE - 1, 3))
    assert trade.is_buyer_maker and trade.price == PRICE - 1


def test_limit_post_only_with_ioc_or_fok_is_rejected(ex: CheckedExchange) -> None:
    # Given a book / When post-only is combined with IOC or FOK / Then INVALID_ORDER
    funded(ex)
    for tif in (TimeInForce.IOC, TimeInForce.FOK):
        assert_rejected(
            ex,
            PlaceOrder,
            ErrorCode.INVALID_ORDER,
            account=BUYER,
            market=MKT,
            side=BID,
            order_type=OrderType.LIMIT,
            price=PRICE,
            quantity=1,
            post_only=True,
            time_in_force=tif,
        )


# -- MARKET ORDERS ---------------------------------------------------------------------------


def test_market_order_empty_book_expires_no_liquidity(ex: CheckedExchange) -> None:
    # Given an empty book / When market orders arrive / Then Expired (NoLiquidity), no funds move
    funded(ex)
    for side, fields in (
        (BID, {"quantity": 3}),
        (ASK, {"quantity": 3}),
        (BID, {"quote_quantity": 5 * USDC_1}),
    ):
        result = ex.market(BUYER if side is BID else SELLER, MKT, side, **fields)
        assert result.ok
        assert result.orders[0].status is OrderStatus.EXPIRED
        assert [c.reason for c in closed(result)] == [CloseReason.NO_LIQUIDITY]
        assert balance_events(result) == [] and trades(result) == []
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1, 0)


def test_market_bid_by_quantity_fills_across_levels(ex: CheckedExchange) -> None:
    # Given asks at two levels / When a market bid for 3 lots / Then fills at maker prices
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    ex.rest(SELLER, ASK, PRICE + 50, 2)
    result = ex.market(BUYER, MKT, BID, quantity=3)
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 2), (PRICE + 50, 1)]
    view = result.orders[0]
    assert (view.status, view.executed_quantity, view.order_type) == (
        OrderStatus.FILLED,
        3,
        OrderType.MARKET,
    )
    assert view.price is None
    spent = (2 * PRICE + PRICE + 50) * TICK_LOT
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - spent, 0)


def test_market_bid_by_quantity_more_than_book_expires_no_liquidity(ex: CheckedExchange) -> None:
    # Given 2 lots offered / When a market bid for 5 / Then 2 fill, Expired (NoLiquidity)
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    result = ex.market(BUYER, MKT, BID, quantity=5)
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert result.orders[0].executed_quantity == 2
    [own] = [c for c in closed(result) if c.order_id == result.orders[0].order_id]
    assert own.reason is CloseReason.NO_LIQUIDITY


def test_market_bid_by_quantity_cannot_afford_one_lot_is_rejected(ex: CheckedExchange) -> None:
    # Given a buyer with 0.99 USDC and an ask at 100.00 (1 USDC per lot)
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    ex.deposit(4, USDC, USDC_1 - 10_000)
    # When it sends a market bid / Then INSUFFICIENT_FUNDS, nothing changes
    assert_rejected(
        ex,
        PlaceOrder,
        ErrorCode.INSUFFICIENT_FUNDS,
        account=4,
        market=MKT,
        side=BID,
        order_type=OrderType.MARKET,
        quantity=1,
    )


def test_market_bid_by_quantity_runs_out_of_quote_midway_fills_what_it_can(
    ex: CheckedExchange,
) -> None:
    # Given a buyer with 2.5 USDC and 5 lots offered at 1 USDC each
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    ex.deposit(4, USDC, 2_500_000)
    # When it sends a market bid for 5 lots
    result = ex.market(4, MKT, BID, quantity=5)
    # Then it buys 2 lots, the rest expires, and it never overspends
    assert result.ok
    assert sum(t.quantity for t in trades(result)) == 2
    view = result.orders[0]
    assert (view.status, view.executed_quantity) == (OrderStatus.EXPIRED, 2)
    assert ex.bal(4, USDC) == (500_000, 0)
    assert ex.bal(4, SOL) == (2 * LOT - ceil_fee(2 * LOT, 5), 0)
    assert ex.engine.depth(MKT)[2] == [(PRICE, 3)]


def test_market_bid_by_quantity_spends_at_most_available_quote(ex: CheckedExchange) -> None:
    # Given exactly enough quote for 3 lots across two levels
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 1)
    ex.rest(SELLER, ASK, PRICE * 2, 5)
    ex.deposit(4, USDC, (PRICE + 2 * PRICE * 2) * TICK_LOT)
    result = ex.market(4, MKT, BID, quantity=4)
    assert sum(t.quantity for t in trades(result)) == 3
    assert ex.bal(4, USDC) == (0, 0)


def test_market_ask_by_quantity_without_enough_base_is_rejected(ex: CheckedExchange) -> None:
    # Given 2 lots of SOL / When a market ask for 3 / Then INSUFFICIENT_FUNDS; for 2, Filled
    funded(ex)
    ex.rest(BUYER, BID, PRICE, 5)
    ex.deposit(4, SOL, 2 * LOT)
    assert_rejected(
        ex,
        PlaceOrder,
        ErrorCode.INSUFFICIENT_FUNDS,
        account=4,
        market=MKT,
        side=ASK,
        order_type=OrderType.MARKET,
        quantity=3,
    )
    # With exactly enough base it fills
    result = ex.market(4, MKT, ASK, quantity=2)
    assert result.orders[0].status is OrderStatus.FILLED
    assert ex.bal(4, SOL) == (0, 0)
    assert ex.bal(4, USDC) == (2 * PRICE * TICK_LOT - ceil_fee(2 * PRICE * TICK_LOT, 5), 0)


def test_market_bid_by_quote_quantity_more_than_available_is_rejected(
    ex: CheckedExchange,
) -> None:
    # Given 3 USDC / When a market bid for 3 USDC + 1 atom / Then INSUFFICIENT_FUNDS
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    ex.deposit(4, USDC, 3 * USDC_1)
    assert_rejected(
        ex,
        PlaceOrder,
        ErrorCode.INSUFFICIENT_FUNDS,
        account=4,
        market=MKT,
        side=BID,
        order_type=OrderType.MARKET,
        quote_quantity=3 * USDC_1 + 1,
    )


def test_market_bid_by_quote_quantity_rounds_down_to_whole_lots(ex: CheckedExchange) -> None:
    # Given asks at 1 USDC per lot
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 10)
    # When a market bid for 2.5 USDC arrives
    result = ex.market(BUYER, MKT, BID, quote_quantity=2_500_000)
    # Then it buys 2 whole lots for 2 USDC, never more than the budget, and is Filled
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 2)]
    view = result.orders[0]
    assert view.status is OrderStatus.FILLED
    assert (view.executed_quantity, view.executed_quote_quantity) == (2, 2 * USDC_1)
    assert view.quote_quantity == 2_500_000
    assert ex.bal(BUYER, USDC) == (10_000 * USDC_1 - 2 * USDC_1, 0)
    assert ex.engine.depth(MKT)[2] == [(PRICE, 8)]


def test_market_bid_by_quote_quantity_across_levels_stays_within_budget(
    ex: CheckedExchange,
) -> None:
    # Given 1 lot at 100.00 and 5 at 101.00; budget 3.10 USDC
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 1)
    ex.rest(SELLER, ASK, 10_100, 5)
    result = ex.market(BUYER, MKT, BID, quote_quantity=3_100_000)
    # Then 1 lot at 1.00 and 2 lots at 1.01 (3.02 USDC); a third at 1.01 would exceed it
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 1), (10_100, 2)]
    assert result.orders[0].executed_quote_quantity == 3_020_000
    assert result.orders[0].status is OrderStatus.FILLED
    assert ex.bal(BUYER, USDC)[0] == 10_000 * USDC_1 - 3_020_000


def test_market_bid_by_quote_quantity_exact_budget_spends_all(ex: CheckedExchange) -> None:
    # Given exactly 3 USDC / When a market bid for 3 USDC / Then 3 lots, nothing left
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 10)
    ex.deposit(4, USDC, 3 * USDC_1)
    result = ex.market(4, MKT, BID, quote_quantity=3 * USDC_1)
    assert result.orders[0].status is OrderStatus.FILLED
    assert result.orders[0].executed_quantity == 3
    assert ex.bal(4, USDC) == (0, 0)


def test_market_ask_by_quote_quantity_sells_until_proceeds_reached(ex: CheckedExchange) -> None:
    # Given bids 2 @ 100.00 and 5 @ 99.00
    funded(ex)
    ex.rest(BUYER, BID, PRICE, 2)
    ex.rest(BUYER, BID, 9_900, 5)
    # When a market ask for 4.97 USDC of proceeds arrives
    result = ex.market(SELLER, MKT, ASK, quote_quantity=4_970_000)
    # Then it sells 2 @ 1.00 and 3 @ 0.99: gross proceeds exactly 4.97 USDC
    assert [(t.price, t.quantity) for t in trades(result)] == [(PRICE, 2), (9_900, 3)]
    view = result.orders[0]
    assert view.status is OrderStatus.FILLED
    assert view.executed_quote_quantity == 4_970_000
    fee = sum(t.seller_fee for t in trades(result))
    assert ex.bal(SELLER, USDC) == (4_970_000 - fee, 0)
    assert ex.bal(SELLER, SOL) == (100 * SOL_1 - 5 * LOT, 0)


def test_market_ask_by_quote_quantity_never_exceeds_proceeds(ex: CheckedExchange) -> None:
    # Given bids at 1 USDC per lot / When selling for 2.5 USDC / Then 2 lots, 2 USDC, Filled
    funded(ex)
    ex.rest(BUYER, BID, PRICE, 10)
    result = ex.market(SELLER, MKT, ASK, quote_quantity=2_500_000)
    assert result.orders[0].executed_quote_quantity == 2 * USDC_1
    assert result.orders[0].status is OrderStatus.FILLED


def test_market_order_needs_exactly_one_size(ex: CheckedExchange) -> None:
    # Given a book / When a market order has neither or both sizes / Then INVALID_ORDER
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    for fields in ({}, {"quantity": 1, "quote_quantity": USDC_1}):
        assert_rejected(
            ex,
            PlaceOrder,
            ErrorCode.INVALID_ORDER,
            account=BUYER,
            market=MKT,
            side=BID,
            order_type=OrderType.MARKET,
            **fields,
        )


def test_market_order_with_price_or_post_only_is_rejected(ex: CheckedExchange) -> None:
    # Given a book / When a market order has a price or postOnly / Then INVALID_ORDER
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    for fields in ({"price": PRICE}, {"post_only": True}):
        assert_rejected(
            ex,
            PlaceOrder,
            ErrorCode.INVALID_ORDER,
            account=BUYER,
            market=MKT,
            side=BID,
            order_type=OrderType.MARKET,
            quantity=1,
            **fields,
        )


def test_market_order_quote_quantity_below_min_notional_is_rejected(
    ex: CheckedExchange,
) -> None:
    # Given min notional 1 USDC / When quoteQuantity is 1 atom less / Then INVALID_ORDER
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 5)
    assert_rejected(
        ex,
        PlaceOrder,
        ErrorCode.INVALID_ORDER,
        account=BUYER,
        market=MKT,
        side=BID,
        order_type=OrderType.MARKET,
        quote_quantity=USDC_1 - 1,
    )


def test_market_fok_by_quantity_not_fillable_expires(ex: CheckedExchange) -> None:
    # Given 2 lots offered / When a FOK market bid for 3, then 2 / Then killed, then Filled
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 2)
    result = ex.market(BUYER, MKT, BID, quantity=3, time_in_force=TimeInForce.FOK)
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert [c.reason for c in closed(result)] == [CloseReason.FILL_OR_KILL]
    assert trades(result) == []
    result = ex.market(BUYER, MKT, BID, quantity=2, time_in_force=TimeInForce.FOK)
    assert result.orders[0].status is OrderStatus.FILLED


# -- FEES ------------------------------------------------------------------------------------


def test_fee_exact_amount_is_not_rounded(ex: CheckedExchange) -> None:
    # Given 1 lot at 100.00: 10^6 USDC atoms, 10^7 SOL atoms, both fees exact
    funded(ex)
    ex.rest(SELLER, ASK, PRICE, 1)
    [trade] = trades(ex.limit(BUYER, MKT, BID, PRICE, 1))
    assert trade.seller_fee == 200  # 10^6 * 2 / 10^4
    assert trade.buyer_fee == 5_000  # 10^7 * 5 / 10^4


def test_fee_fractional_amount_rounds_up_one_atom(ex: CheckedExchange) -> None:
    # Given 1 lot at 100.01: the seller receives 1_000_100 USDC atoms
    funded(ex)
    ex.rest(SELLER, ASK, PRICE + 1, 1)
    result = ex.limit(BUYER, MKT, BID, PRICE + 1, 1)
    [trade] = trades(result)
    # Then the maker fee 200.02 atoms is charged as 201
    assert trade.seller_fee == 201
    assert ex.bal(SELLER, USDC) == (1_000_100 - 201, 0)
    assert ex.bal(FEE_ACCOUNT, USDC) == (201, 0)
    [fee_change] = balance_events(result, FEE_ACCOUNT, USDC)
    assert fee_change.available_delta == 201


def test_fee_fractional_taker_fee_rounds_up_one_atom(ex: CheckedExchange) -> None:
    # Given a bid of 1 lot at 100.01 / When a taker sells into it
    funded(ex)
    ex.rest(BUYER, BID, PRICE + 1, 1)
    [trade] = trades(ex.limit(SELLER, MKT, ASK, PRICE + 1, 1))
    # Then the taker fee 500.05 atoms is charged as 501
    assert trade.seller_fee == 501
    assert ex.bal(SELLER, USDC) == (1_000_100 - 501, 0)


def test_fee_fractional_base_fee_rounds_up_one_atom(ex: CheckedExchange) -> None:
    # Given BTC_USDC, where 1 lot is 1000 BTC atoms: a 5 bps fee is 0.5 atoms
    assert ex.deposit(1, "USDC", 10**9).ok
    assert ex.deposit(2, "BTC", 10**8).ok
    assert ex.limit(2, "BTC_USDC", ASK, 1_000_000, 1).ok  # 100000.0 USDC per BTC
    [trade] = trades(ex.limit(1, "BTC_USDC", BID, 1_000_000, 1))
    assert trade.buyer_fee == 1
    assert ex.bal(1, "BTC") == (999, 0)
    assert ex.bal(FEE_ACCOUNT, "BTC") == (1, 0)


def test_fee_per_fill_is_charged_and_credited_to_fee_account(ex: CheckedExchange) -> None:
    # Given two makers at 100.01 / When one bid takes both / Then each fill rounds its own fee
    funded(ex)
    ex.rest(SELLER, ASK, PRICE + 1, 1)
    ex.rest(OTHER, ASK, PRICE + 1, 1)
    result = ex.limit(BUYER, MKT, BID, PRICE + 1, 2)
    fills = trades(result)
    assert [t.seller_fee for t in fills] == [201, 201]  # rounded per fill, not per order
    assert ex.bal(FEE_ACCOUNT, USDC) == (402, 0)
    assert ex.bal(FEE_ACCOUNT, SOL) == (2 * ceil_fee(LOT, 5), 0)


def test_set_fees_new_rates_apply_to_next_fill(ex: CheckedExchange) -> None:
    # Given fees set to 0/100 bps / When a trade happens / Then the new rates apply
    funded(ex)
    result = ex.set_fees(MKT, 0, 100)
    assert result.ok
    [changed] = of_type(result, MarketFeesChanged)
    assert (changed.market, changed.maker_fee_bps, changed.taker_fee_bps) == (MKT, 0, 100)
    [spec] = [m for m in ex.engine.markets() if m.symbol == MKT]
    assert (spec.maker_fee_bps, spec.taker_fee_bps) == (0, 100)
    ex.rest(SELLER, ASK, PRICE, 1)
    result = ex.limit(BUYER, MKT, BID, PRICE, 1)
    [trade] = trades(result)
    assert (trade.seller_fee, trade.buyer_fee) == (0, LOT // 100)
    # A zero fee moves nothing on the fee account's quote balance
    assert balance_events(result, FEE_ACCOUNT, USDC) == []


def test_set_fees_out_of_range_is_rejected(ex: CheckedExchange) -> None:
    # Given fees outside 0..1000 bps or an unknown market / When set / Then rejected
    for maker, taker in ((-1, 5), (2, 1_001)):
        assert_rejected(
            ex,
            SetMarketFees,
            ErrorCode.INVALID_CLIENT_REQUEST,
            market=MKT,
            maker_fee_bps=maker,
            taker_fee_bps=taker,
        )
    assert_rejected(
        ex,
        SetMarketFees,
        ErrorCode.INVALID_MARKET,
        market="NOPE_USDC",
        maker_fee_bps=1,
        taker_fee_bps=1,
    )


def test_market_ask_by_quote_quantity_running_out_of_base_expires_the_rest(
    ex: CheckedExchange,
) -> None:
    # Given a seller holding only 2 lots and 5 lots bid at 1 USDC each
    funded(ex)
    ex.rest(BUYER, BID, PRICE, 5)
    ex.deposit(4, SOL, 2 * LOT)
    # When it asks to sell for 5 USDC of proceeds
    result = ex.market(4, MKT, ASK, quote_quantity=5 * USDC_1)
    # Then it sells the 2 lots it has and the rest expires
    assert sum(t.quantity for t in trades(result)) == 2
    view = result.orders[0]
    assert (view.status, view.executed_quote_quantity) == (OrderStatus.EXPIRED, 2 * USDC_1)
    assert ex.bal(4, SOL) == (0, 0)


@pytest.mark.parametrize("side", [BID, ASK])
def test_market_by_quote_quantity_book_exhausted_with_budget_left_expires(
    ex: CheckedExchange, side: Side
) -> None:
    # Given only 2 lots (2 USDC) on the opposite side
    funded(ex)
    if side is BID:
        ex.rest(SELLER, ASK, PRICE, 2)
    else:
        ex.rest(BUYER, BID, PRICE, 2)
    # When a market order for 5 USDC arrives
    result = ex.market(OTHER, MKT, side, quote_quantity=5 * USDC_1)
    # Then it takes the 2 lots, and since its budget could buy more, it expires: NoLiquidity
    assert result.orders[0].executed_quote_quantity == 2 * USDC_1
    [own] = [c for c in closed(result) if c.order_id == result.orders[0].order_id]
    assert (own.status, own.reason) == (OrderStatus.EXPIRED, CloseReason.NO_LIQUIDITY)
    assert result.orders[0].status is OrderStatus.EXPIRED
