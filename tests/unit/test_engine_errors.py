"""Engine: every rejection has its Backpack error code and changes nothing.

``assert_rejected`` checks the code, that the result carries no events and no orders, and that
sequence, balances, accounts, depth, open orders, hash sums and the snapshot contents (all but the
engine clock and the result cache) are identical before and after.
"""

from __future__ import annotations

import pytest

from cloudex.enums import ErrorCode, MarketState, OrderStatus, OrderType, TimeInForce
from cloudex.markets import AssetSpec, MarketSpec
from cloudex.messages import (
    AddMarket,
    CancelAllOrders,
    CancelOrder,
    Deposit,
    PlaceOrder,
    SetMarketState,
    Withdraw,
)
from cloudex.names import FEE_ACCOUNT
from engine_service.core import EngineConfig
from engine_service.core.engine import MAX_CLIENT_ID
from tests.unit.support import (
    ASK,
    BID,
    LOT,
    MKT,
    PRICE,
    SOL,
    TICK_LOT,
    USDC,
    USDC_1,
    CheckedExchange,
    assert_command_rejected,
    assert_rejected,
    ceil_fee,
    observable,
    trades,
)

MAX_TICKS = 10**8  # 1000000 / 0.01
MAX_LOTS = 10**7  # 100000 / 0.01


def place(ex: CheckedExchange, code: ErrorCode, **fields: object) -> None:
    fields.setdefault("account", 1)
    fields.setdefault("market", MKT)
    fields.setdefault("side", BID)
    fields.setdefault("order_type", OrderType.LIMIT)
    assert_rejected(ex, PlaceOrder, code, **fields)


@pytest.fixture
def rich(ex: CheckedExchange) -> CheckedExchange:
    """Accounts 1 and 2 with plenty of both assets, and a small book around 100.00."""
    for account in (1, 2):
        ex.fund(account, sol=10**6, usdc=10**8)
    ex.rest(2, ASK, PRICE + 10, 5)
    ex.rest(2, BID, PRICE - 10, 5)
    return ex


# -- INVALID_MARKET ----------------------------------------------------------------------------


def test_place_unknown_market_invalid_market(rich: CheckedExchange) -> None:
    # Given funded accounts / When an order names an unknown market / Then INVALID_MARKET
    place(rich, ErrorCode.INVALID_MARKET, market="DOGE_USDC", price=PRICE, quantity=1)


def test_cancel_unknown_market_invalid_market(rich: CheckedExchange) -> None:
    # Given a book / When cancel or cancel-all names an unknown market / Then INVALID_MARKET
    assert_rejected(
        rich, CancelOrder, ErrorCode.INVALID_MARKET, account=2, market="X_Y", order_id=1
    )
    assert_rejected(rich, CancelAllOrders, ErrorCode.INVALID_MARKET, account=2, market="X_Y")


def test_set_state_unknown_market_invalid_market(rich: CheckedExchange) -> None:
    # Given no market X_Y / When its state is set / Then INVALID_MARKET
    assert_rejected(
        rich, SetMarketState, ErrorCode.INVALID_MARKET, market="X_Y", state=MarketState.CLOSED
    )


@pytest.mark.parametrize(
    ("market", "base", "quote", "code"),
    [
        pytest.param(
            None,
            AssetSpec("SOL", 9),
            AssetSpec("USDC", 6),
            ErrorCode.INVALID_MARKET,
            id="existing-symbol",
        ),
        pytest.param(
            MarketSpec("SOL_USD", "SOL", "USD", "0.01", "0.01", "0.01", "10", "100", "1", 2, 5),
            AssetSpec("SOL", 9),
            AssetSpec("USD", 2),
            ErrorCode.INVALID_MARKET,
            id="tick-x-step-finer-than-quote-atom",
        ),
        pytest.param(
            MarketSpec("SOL_EUR", "SOL", "EUR", "0.01", "0.01", "0.01", "10", "100", "1", 2, 5),
            AssetSpec("SOL", 8),
            AssetSpec("EUR", 6),
            ErrorCode.INVALID_ASSET,
            id="known-asset-other-decimals",
        ),
    ],
)
def test_add_market_invalid_spec_rejected(
    ex: CheckedExchange,
    market: MarketSpec | None,
    base: AssetSpec,
    quote: AssetSpec,
    code: ErrorCode,
) -> None:
    # Given SOL_USDC exists and SOL has 9 decimals
    # When a market is added again, inexact, or redefining SOL / Then rejected, nothing changes
    if market is None:
        [market] = [m for m in ex.engine.markets() if m.symbol == MKT]
    assert_rejected(ex, AddMarket, code, market=market, base=base, quote=quote)


def test_add_market_new_market_and_asset_is_tradeable(ex: CheckedExchange) -> None:
    # Given an existing account / When a market with a new asset is added / Then it trades
    assert ex.deposit(2, SOL, 10**9).ok
    spec = MarketSpec("SOL_EUR", "SOL", "EUR", "0.01", "0.01", "0.01", "10", "100", "1", 2, 5)
    result = ex.run(AddMarket, market=spec, base=AssetSpec("SOL", 9), quote=AssetSpec("EUR", 6))
    assert result.ok
    assert "EUR" in {a.symbol for a in ex.engine.assets()}
    assert ex.engine.balances(2)["EUR"] == (0, 0)  # existing accounts get the new asset
    assert ex.deposit(1, "EUR", 10**8).ok
    assert ex.limit(2, "SOL_EUR", ASK, 5_000, 3).ok
    assert [t.quantity for t in trades(ex.limit(1, "SOL_EUR", BID, 5_000, 3))] == [3]
    assert ex.bal(2, "EUR")[0] == 3 * 5_000 * 100 - ceil_fee(3 * 5_000 * 100, 2)


# -- INVALID_PRICE / INVALID_QUANTITY / INVALID_ORDER ------------------------------------------


@pytest.mark.parametrize("price", [0, -1, -PRICE, MAX_TICKS + 1])
def test_place_price_out_of_range_invalid_price(rich: CheckedExchange, price: int) -> None:
    # Given a book / When the price is <= 0 or above max_price / Then INVALID_PRICE
    place(rich, ErrorCode.INVALID_PRICE, price=price, quantity=1)
    place(rich, ErrorCode.INVALID_PRICE, side=ASK, price=price, quantity=1)


def test_place_price_at_max_is_accepted(rich: CheckedExchange) -> None:
    # Given max_price 1000000 / When an ask is placed exactly there / Then it rests
    result = rich.limit(1, MKT, ASK, MAX_TICKS, 1)
    assert result.ok and result.orders[0].status is OrderStatus.NEW


@pytest.mark.parametrize("quantity", [0, -1, MAX_LOTS + 1])
def test_place_quantity_out_of_range_invalid_quantity(rich: CheckedExchange, quantity: int) -> None:
    # Given min 1 lot, max 10^7 lots / When outside / Then INVALID_QUANTITY
    place(rich, ErrorCode.INVALID_QUANTITY, price=PRICE, quantity=quantity)
    place(
        rich, ErrorCode.INVALID_QUANTITY, order_type=OrderType.MARKET, side=ASK, quantity=quantity
    )


def test_place_quantity_at_bounds_is_accepted(rich: CheckedExchange) -> None:
    # Given min 1 lot, max 10^7 lots / When exactly at either / Then accepted
    assert rich.limit(1, MKT, ASK, 2 * PRICE, 1).ok  # min 1 lot (2 USDC notional)
    assert rich.limit(1, MKT, ASK, 2 * PRICE, MAX_LOTS).ok


@pytest.mark.parametrize("quote_quantity", [0, -1, 2**63])
def test_place_market_quote_quantity_not_positive_invalid_quantity(
    rich: CheckedExchange, quote_quantity: int
) -> None:
    # Given a book / When quoteQuantity <= 0 / Then INVALID_QUANTITY
    place(
        rich, ErrorCode.INVALID_QUANTITY, order_type=OrderType.MARKET, quote_quantity=quote_quantity
    )


def test_place_notional_below_minimum_invalid_order(rich: CheckedExchange) -> None:
    # Given min notional 1 USDC: 1 lot at 99.99 is 0.9999 USDC
    place(rich, ErrorCode.INVALID_ORDER, price=9_999, quantity=1)
    place(rich, ErrorCode.INVALID_ORDER, side=ASK, price=9_999, quantity=1)
    # And exactly the minimum is accepted
    assert PRICE * 1 * TICK_LOT == USDC_1
    assert rich.limit(1, MKT, BID, PRICE - 20, 2).ok
    result = rich.limit(1, MKT, ASK, PRICE * 2, 1)
    assert result.ok


def test_place_notional_exactly_minimum_is_accepted(ex: CheckedExchange) -> None:
    # Given exactly 1 USDC / When a 1 USDC bid is placed / Then it rests, all locked
    ex.fund(1, usdc=1)
    result = ex.limit(1, MKT, BID, PRICE, 1)
    assert result.ok
    assert ex.bal(1, USDC) == (0, USDC_1)


@pytest.mark.parametrize(
    "fields",
    [
        {"quantity": 1},  # no price
        {"price": PRICE},  # no quantity
        {"price": PRICE, "quantity": 1, "quote_quantity": USDC_1},
    ],
)
def test_place_limit_malformed_invalid_order(rich: CheckedExchange, fields: dict[str, int]) -> None:
    # Given a book / When a limit lacks price or quantity or has quoteQuantity / Then INVALID_ORDER
    place(rich, ErrorCode.INVALID_ORDER, **fields)


def test_place_market_fok_by_quote_quantity_invalid_order(rich: CheckedExchange) -> None:
    # Given a book / When a FOK market order is sized in quote / Then INVALID_ORDER
    place(
        rich,
        ErrorCode.INVALID_ORDER,
        order_type=OrderType.MARKET,
        quote_quantity=USDC_1 * 2,
        time_in_force=TimeInForce.FOK,
    )


# -- CLIENT IDS --------------------------------------------------------------------------------


def test_client_id_used_by_open_order_invalid_order(rich: CheckedExchange) -> None:
    # Given an open order with clientId 7
    rich.rest(1, BID, PRICE - 50, 2, client_id=7)
    # When the same account reuses clientId 7, for any order type / Then INVALID_ORDER
    place(rich, ErrorCode.INVALID_ORDER, price=PRICE - 60, quantity=2, client_id=7)
    place(
        rich,
        ErrorCode.INVALID_ORDER,
        order_type=OrderType.MARKET,
        side=ASK,
        quantity=1,
        client_id=7,
    )


def test_client_id_same_value_other_account_is_accepted(rich: CheckedExchange) -> None:
    # Given account 1 uses clientId 7 / When account 2 uses 7 too / Then accepted
    rich.rest(1, BID, PRICE - 50, 2, client_id=7)
    rich.rest(2, BID, PRICE - 50, 2, client_id=7)
    assert sorted(
        o.client_id for a in (1, 2) for o in rich.engine.open_orders(a) if o.client_id is not None
    ) == [7, 7]


def test_client_id_reusable_after_cancel_and_after_fill(rich: CheckedExchange) -> None:
    # Given clientId 7 on an order / When that order is cancelled, then filled / Then 7 is free
    # again
    rich.rest(1, BID, PRICE - 50, 2, client_id=7)
    assert rich.cancel(1, MKT, client_id=7).ok
    rich.rest(1, BID, PRICE - 50, 2, client_id=7)  # reusable once closed
    rich.fund(3, sol=1)
    assert rich.limit(3, MKT, ASK, PRICE - 50, 7).ok  # takes 5 lots of account 2, then it
    assert rich.engine.open_orders(1) == []
    assert rich.limit(1, MKT, BID, PRICE - 50, 2, client_id=7).ok


def test_client_id_of_non_resting_order_is_not_reserved(rich: CheckedExchange) -> None:
    # Given an IOC order with clientId 9 that expired / When 9 is reused / Then accepted
    result = rich.limit(1, MKT, BID, PRICE - 50, 2, client_id=9, time_in_force=TimeInForce.IOC)
    assert result.orders[0].status is OrderStatus.EXPIRED
    assert rich.limit(1, MKT, BID, PRICE - 50, 2, client_id=9).ok


@pytest.mark.parametrize("client_id", [-1, MAX_CLIENT_ID + 1, 2**63])
def test_client_id_outside_u32_invalid_client_request(
    rich: CheckedExchange, client_id: int
) -> None:
    # Given a book / When clientId is outside 0..2^32-1 / Then INVALID_CLIENT_REQUEST
    place(rich, ErrorCode.INVALID_CLIENT_REQUEST, price=PRICE - 50, quantity=2, client_id=client_id)


@pytest.mark.parametrize("client_id", [0, MAX_CLIENT_ID])
def test_client_id_u32_bounds_are_accepted(rich: CheckedExchange, client_id: int) -> None:
    # Given a book / When clientId is 0 or 2^32-1 / Then accepted and echoed
    result = rich.limit(1, MKT, BID, PRICE - 50, 2, client_id=client_id)
    assert result.ok and result.orders[0].client_id == client_id
    assert MAX_CLIENT_ID == 2**32 - 1


# -- ORDER_LIMIT -------------------------------------------------------------------------------


def test_order_limit_exceeded_order_limit() -> None:
    # Given an engine allowing 3 open orders per account, with 3 open over two markets
    ex = CheckedExchange(EngineConfig(order_limit=3))
    ex.fund(1, sol=100, usdc=10_000)
    assert ex.deposit(1, "BTC", 10**8).ok
    for price in (9_000, 9_001):
        ex.rest(1, BID, price, 2)
    assert ex.limit(1, "BTC_USDC", ASK, 1_000_000, 10).ok
    # When a 4th resting order is placed / Then ORDER_LIMIT, in any market
    place(ex, ErrorCode.ORDER_LIMIT, price=9_002, quantity=2)
    place(ex, ErrorCode.ORDER_LIMIT, side=ASK, price=20_000, quantity=1)
    # An order that never rests is still allowed; other accounts are not limited
    assert ex.limit(1, MKT, BID, 9_002, 2, time_in_force=TimeInForce.IOC).ok
    ex.fund(2, usdc=100)
    ex.rest(2, BID, 9_003, 2)
    # After one is cancelled, a new one fits again
    oid = ex.engine.open_orders(1, MKT)[0].order_id
    assert ex.cancel(1, MKT, order_id=oid).ok
    assert ex.limit(1, MKT, BID, 9_004, 2).ok
    place(ex, ErrorCode.ORDER_LIMIT, price=9_005, quantity=2)


# -- FORBIDDEN ---------------------------------------------------------------------------------


def test_fee_account_placing_order_forbidden(rich: CheckedExchange) -> None:
    # Given the fee account holds fees
    rich.limit(1, MKT, BID, PRICE + 10, 1)
    assert rich.bal(FEE_ACCOUNT, SOL)[0] > 0
    place(rich, ErrorCode.FORBIDDEN, account=FEE_ACCOUNT, side=ASK, price=PRICE + 10, quantity=1)
    place(rich, ErrorCode.FORBIDDEN, account=FEE_ACCOUNT, order_type=OrderType.MARKET, quantity=1)


def test_deposit_to_fee_account_forbidden(ex: CheckedExchange) -> None:
    # Given the fee account 0 (and a negative id) / When deposited to / Then FORBIDDEN
    assert_rejected(
        ex, Deposit, ErrorCode.FORBIDDEN, account=FEE_ACCOUNT, asset=USDC, amount=USDC_1
    )
    assert_rejected(ex, Deposit, ErrorCode.FORBIDDEN, account=-1, asset=USDC, amount=USDC_1)


# -- INSUFFICIENT_FUNDS ------------------------------------------------------------------------


def test_place_account_without_balances_insufficient_funds(rich: CheckedExchange) -> None:
    # Given account 42 never funded / When it places any order / Then INSUFFICIENT_FUNDS
    assert rich.engine.balances(42) == {}
    place(rich, ErrorCode.INSUFFICIENT_FUNDS, account=42, price=PRICE - 50, quantity=2)
    place(rich, ErrorCode.INSUFFICIENT_FUNDS, account=42, side=ASK, price=PRICE + 50, quantity=2)
    place(rich, ErrorCode.INSUFFICIENT_FUNDS, account=42, order_type=OrderType.MARKET, quantity=1)
    assert rich.engine.balances(42) == {}


def test_place_limit_bid_one_atom_short_insufficient_funds(ex: CheckedExchange) -> None:
    # Given 1 atom less than 3 lots cost / When bidding / Then INSUFFICIENT_FUNDS; with it, accepted
    ex.deposit(3, USDC, 3 * PRICE * TICK_LOT - 1)
    place(ex, ErrorCode.INSUFFICIENT_FUNDS, account=3, price=PRICE, quantity=3)
    ex.deposit(3, USDC, 1)
    assert ex.limit(3, MKT, BID, PRICE, 3).ok
    assert ex.bal(3, USDC) == (0, 3 * PRICE * TICK_LOT)


def test_place_market_ask_by_quote_without_one_lot_of_base_insufficient_funds(
    rich: CheckedExchange,
) -> None:
    # Given account 3 holding USDC and less than one lot of SOL, and bids on the book
    rich.fund(3, usdc=100)
    rich.deposit(3, SOL, LOT - 1)
    # When it sells for 5 USDC of proceeds / Then INSUFFICIENT_FUNDS
    place(
        rich,
        ErrorCode.INSUFFICIENT_FUNDS,
        account=3,
        side=ASK,
        order_type=OrderType.MARKET,
        quote_quantity=5 * USDC_1,
    )


def test_place_limit_ask_one_atom_short_insufficient_funds(ex: CheckedExchange) -> None:
    # Given 1 atom less than 3 lots / When asking 3 lots / Then INSUFFICIENT_FUNDS
    ex.deposit(3, SOL, 3 * LOT - 1)
    place(ex, ErrorCode.INSUFFICIENT_FUNDS, account=3, side=ASK, price=PRICE, quantity=3)


def test_place_locked_funds_cannot_be_spent_twice(ex: CheckedExchange) -> None:
    # Given 5 USDC with 3 locked by a bid / When another 3 USDC bid comes / Then INSUFFICIENT_FUNDS
    ex.fund(3, usdc=5)
    ex.rest(3, BID, PRICE, 3)
    place(ex, ErrorCode.INSUFFICIENT_FUNDS, account=3, price=PRICE, quantity=3)
    assert ex.limit(3, MKT, BID, PRICE, 2).ok


# -- EXPIRED COMMANDS --------------------------------------------------------------------------


def test_command_deadline_before_ts_invalid_client_request(rich: CheckedExchange) -> None:
    # Given a command stamped after its deadline / Then rejected as expired
    ts = rich.ts + 1_000
    command = rich.limit_order(1, MKT, BID, PRICE, 1, ts=ts, deadline=ts - 1)
    result = assert_command_rejected(rich, command, ErrorCode.INVALID_CLIENT_REQUEST)
    assert "expired" in result.message.lower()
    # Any command type can expire
    ts = rich.ts + 1_000
    assert_command_rejected(
        rich,
        rich.command(Deposit, account=1, asset=USDC, amount=1, ts=ts, deadline=ts - 1),
        ErrorCode.INVALID_CLIENT_REQUEST,
    )


def test_command_deadline_equal_to_ts_is_executed(rich: CheckedExchange) -> None:
    # Given deadline == ts / When executed / Then it takes effect
    ts = rich.ts + 1_000
    result = rich.execute(
        rich.command(Deposit, account=1, asset=USDC, amount=1, ts=ts, deadline=ts)
    )
    assert result.ok


def test_command_deadline_before_engine_clock_is_expired(rich: CheckedExchange) -> None:
    # Given the engine clock is ahead of a late-stamped command (engine time never goes back)
    clock = rich.engine.clock
    command = rich.command(
        Deposit, account=1, asset=USDC, amount=1, ts=clock - 10, deadline=clock - 5
    )
    assert_command_rejected(rich, command, ErrorCode.INVALID_CLIENT_REQUEST)
    assert rich.engine.clock == clock


# -- INVALID_ASSET / deposits and withdrawals --------------------------------------------------


def test_deposit_unknown_asset_invalid_asset(ex: CheckedExchange) -> None:
    # Given no asset DOGE / When deposited / Then INVALID_ASSET
    assert_rejected(ex, Deposit, ErrorCode.INVALID_ASSET, account=1, asset="DOGE", amount=1)


def test_withdraw_unknown_asset_invalid_asset(rich: CheckedExchange) -> None:
    # Given no asset DOGE / When withdrawn / Then INVALID_ASSET
    assert_rejected(rich, Withdraw, ErrorCode.INVALID_ASSET, account=1, asset="DOGE", amount=1)


@pytest.mark.parametrize("amount", [0, -1])
def test_deposit_or_withdraw_not_positive_invalid_quantity(
    rich: CheckedExchange, amount: int
) -> None:
    # Given a funded account / When the amount is 0 or negative / Then INVALID_QUANTITY
    assert_rejected(rich, Deposit, ErrorCode.INVALID_QUANTITY, account=1, asset=USDC, amount=amount)
    assert_rejected(
        rich, Withdraw, ErrorCode.INVALID_QUANTITY, account=1, asset=USDC, amount=amount
    )


def test_withdraw_more_than_available_insufficient_funds(ex: CheckedExchange) -> None:
    # Given 10 USDC with 4 locked / When withdrawing 6 USDC + 1 atom / Then INSUFFICIENT_FUNDS
    ex.fund(1, usdc=10)
    ex.rest(1, BID, PRICE, 4)  # locks 4 USDC
    assert_rejected(
        ex, Withdraw, ErrorCode.INSUFFICIENT_FUNDS, account=1, asset=USDC, amount=6 * USDC_1 + 1
    )
    assert_rejected(ex, Withdraw, ErrorCode.INSUFFICIENT_FUNDS, account=77, asset=USDC, amount=1)
    assert ex.withdraw(1, USDC, 6 * USDC_1).ok
    assert ex.bal(1, USDC) == (0, 4 * USDC_1)


def test_deposit_over_max_balance_on_existing_account_invalid_quantity(
    ex: CheckedExchange,
) -> None:
    # Given 2^62 held / When 2^62 more would pass 2^63-1 / Then INVALID_QUANTITY
    ex.deposit(1, USDC, 2**62)
    assert_rejected(ex, Deposit, ErrorCode.INVALID_QUANTITY, account=1, asset=USDC, amount=2**62)


def test_deposit_over_max_balance_on_new_account_changes_nothing(ex: CheckedExchange) -> None:
    # Given account 7 does not exist / When it is sent a deposit over the maximum balance
    # Then INVALID_QUANTITY and the account still does not exist
    assert_rejected(ex, Deposit, ErrorCode.INVALID_QUANTITY, account=7, asset=USDC, amount=2**63)


def test_rejected_command_changes_only_engine_clock_and_result_cache(
    rich: CheckedExchange,
) -> None:
    # Given a busy engine / When a command is rejected
    before = observable(rich.engine)
    clock = rich.engine.clock
    command = rich.limit_order(1, MKT, BID, 0, 1)
    result = rich.execute(command)
    assert result.error is ErrorCode.INVALID_PRICE
    # Then everything but the engine clock (the command's ts) and the remembered result
    # (so a resend gets the same answer) is unchanged
    assert observable(rich.engine) == before
    assert rich.engine.clock == command.ts > clock
    assert rich.execute(command).duplicate
