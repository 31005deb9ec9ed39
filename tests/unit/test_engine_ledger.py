"""Engine ledger: deposits, withdrawals, cancels and what they lock and unlock, conservation."""

from __future__ import annotations

import random

from cloudex.enums import (
    BalanceReason,
    CloseReason,
    ErrorCode,
    OrderStatus,
    SelfTradePrevention,
    TimeInForce,
)
from cloudex.messages import (
    BalanceChanged,
    CancelAllOrders,
    CancelOrder,
    Deposit,
    Withdraw,
)
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
    closed,
    depth_events,
    trades,
)

# -- DEPOSITS AND WITHDRAWALS -----------------------------------------------------------------


def test_deposit_new_account_credits_available(ex: CheckedExchange) -> None:
    # Given no account 5 / When 2.5 USDC is deposited with a reference
    result = ex.run(Deposit, account=5, asset=USDC, amount=2_500_000, reference="tx-1")
    # Then one BalanceChanged with absolute balance and delta, reason deposit
    assert result.ok
    [event] = result.events
    assert isinstance(event, BalanceChanged)
    assert (event.account, event.asset, event.available, event.locked) == (5, USDC, 2_500_000, 0)
    assert (event.available_delta, event.locked_delta) == (2_500_000, 0)
    assert (event.reason, event.reference) == (BalanceReason.DEPOSIT, "tx-1")
    assert ex.engine.balances(5)[USDC] == (2_500_000, 0)
    # Every known asset is listed, untouched ones at zero
    assert ex.engine.balances(5)[SOL] == (0, 0)


def test_deposit_twice_accumulates(ex: CheckedExchange) -> None:
    # Given 7 atoms deposited / When 3 more come / Then 10 available, delta 3
    ex.deposit(5, USDC, 7)
    [event] = balance_events(ex.deposit(5, USDC, 3))
    assert (event.available, event.available_delta) == (10, 3)


def test_withdraw_debits_available(ex: CheckedExchange) -> None:
    # Given 10 USDC / When 4, then 6 are withdrawn / Then 0 left, and a further atom is refused
    ex.fund(5, usdc=10)
    result = ex.withdraw(5, USDC, 4 * USDC_1)
    [event] = result.events
    assert isinstance(event, BalanceChanged)
    assert (event.available, event.available_delta) == (6 * USDC_1, -4 * USDC_1)
    assert event.reason is BalanceReason.WITHDRAWAL
    # Withdrawing everything leaves zero, never negative
    assert ex.withdraw(5, USDC, 6 * USDC_1).ok
    assert ex.bal(5, USDC) == (0, 0)
    assert_rejected(ex, Withdraw, ErrorCode.INSUFFICIENT_FUNDS, account=5, asset=USDC, amount=1)


def test_withdraw_fee_account_income_is_allowed(ex: CheckedExchange) -> None:
    # Given fees earned by account 0 / When withdrawn / Then accepted
    ex.fund(1, usdc=100)
    ex.fund(2, sol=10)
    ex.rest(2, ASK, PRICE, 5)
    ex.limit(1, MKT, BID, PRICE, 5)
    fees = ex.bal(FEE_ACCOUNT, USDC)[0]
    assert fees == 1_000
    assert ex.withdraw(FEE_ACCOUNT, USDC, fees).ok
    assert ex.bal(FEE_ACCOUNT, USDC) == (0, 0)


# -- CANCEL ----------------------------------------------------------------------------------


def test_cancel_bid_by_order_id_unlocks_quote(ex: CheckedExchange) -> None:
    # Given a resting bid locking 3 lots x 99.00
    ex.fund(1, usdc=100)
    order_id = ex.rest(1, BID, 9_900, 3)
    lock = 3 * 9_900 * TICK_LOT
    assert ex.bal(1, USDC) == (100 * USDC_1 - lock, lock)
    # When cancelled by order id
    result = ex.cancel(1, MKT, order_id=order_id)
    # Then exactly the lock returns, the order is Cancelled (UserCancel), the level reads 0
    assert ex.bal(1, USDC) == (100 * USDC_1, 0)
    [change] = balance_events(result)
    assert (change.asset, change.available_delta, change.locked_delta) == (USDC, lock, -lock)
    assert change.reason is BalanceReason.UNLOCK
    [close] = closed(result)
    assert (close.order_id, close.status, close.reason) == (
        order_id,
        OrderStatus.CANCELLED,
        CloseReason.USER_CANCEL,
    )
    [view] = result.orders
    assert (view.order_id, view.status) == (order_id, OrderStatus.CANCELLED)
    [depth] = depth_events(result)
    assert (depth.bids, depth.asks) == (((9_900, 0),), ())
    assert ex.engine.open_orders(1) == []


def test_cancel_sell_unlocks_base_not_quote(ex: CheckedExchange) -> None:
    # Given a resting ask of 4 lots (and some quote the seller also holds)
    ex.fund(2, sol=10, usdc=50)
    order_id = ex.rest(2, ASK, 10_100, 4)
    assert ex.bal(2, SOL) == (10 * SOL_1 - 4 * LOT, 4 * LOT)
    # When cancelled
    result = ex.cancel(2, MKT, order_id=order_id)
    # Then the base comes back and the quote balance is untouched
    [change] = balance_events(result)
    assert (change.asset, change.available_delta, change.locked_delta) == (SOL, 4 * LOT, -4 * LOT)
    assert ex.bal(2, SOL) == (10 * SOL_1, 0)
    assert ex.bal(2, USDC) == (50 * USDC_1, 0)


def test_cancel_by_client_id_cancels_that_order(ex: CheckedExchange) -> None:
    # Given two orders with clientIds 1 and 2 / When cancelling clientId 2 / Then only it closes
    ex.fund(1, usdc=100)
    keep = ex.rest(1, BID, 9_900, 2, client_id=1)
    target = ex.rest(1, BID, 9_800, 2, client_id=2)
    result = ex.cancel(1, MKT, client_id=2)
    assert result.ok
    assert [c.order_id for c in closed(result)] == [target]
    assert [o.order_id for o in ex.engine.open_orders(1)] == [keep]


def test_cancel_by_order_id_and_matching_client_id_cancels(ex: CheckedExchange) -> None:
    # Given two orders / When id and clientId disagree / Then not found; when they agree, cancelled
    ex.fund(1, usdc=100)
    target = ex.rest(1, BID, 9_900, 2, client_id=5)
    other = ex.rest(1, BID, 9_800, 2, client_id=6)
    assert_rejected(
        ex,
        CancelOrder,
        ErrorCode.RESOURCE_NOT_FOUND,
        account=1,
        market=MKT,
        order_id=target,
        client_id=6,
    )
    assert ex.cancel(1, MKT, order_id=target, client_id=5).ok
    assert [o.order_id for o in ex.engine.open_orders(1)] == [other]


def test_cancel_after_partial_fill_unlocks_only_remainder(ex: CheckedExchange) -> None:
    # Given a bid of 10 lots at 100.00 of which 4 were filled
    ex.fund(1, usdc=100)
    ex.fund(2, sol=10)
    order_id = ex.rest(1, BID, PRICE, 10)
    assert sum(t.quantity for t in trades(ex.limit(2, MKT, ASK, PRICE, 4))) == 4
    assert ex.bal(1, USDC) == (90 * USDC_1, 6 * USDC_1)
    # When cancelled
    result = ex.cancel(1, MKT, order_id=order_id)
    # Then only the 6 remaining lots are unlocked; the order reports 4 executed
    [change] = balance_events(result)
    assert (change.available_delta, change.locked_delta) == (6 * USDC_1, -6 * USDC_1)
    assert ex.bal(1, USDC) == (96 * USDC_1, 0)
    [close] = closed(result)
    assert (close.executed_quantity, close.executed_quote_quantity) == (4, 4 * USDC_1)
    assert result.orders[0].executed_quantity == 4


def test_cancel_partially_filled_ask_unlocks_remaining_base(ex: CheckedExchange) -> None:
    # Given an ask of 10 lots, 3 filled / When cancelled / Then 7 lots of base return
    ex.fund(1, usdc=100)
    ex.fund(2, sol=10)
    order_id = ex.rest(2, ASK, PRICE, 10)
    ex.limit(1, MKT, BID, PRICE, 3)
    ex.cancel(2, MKT, order_id=order_id)
    assert ex.bal(2, SOL) == (10 * SOL_1 - 3 * LOT, 0)


def test_cancel_level_with_others_reports_remaining_total(ex: CheckedExchange) -> None:
    # Given two bids at one price / When one is cancelled / Then the level shows the other's total
    ex.fund(1, usdc=100)
    first = ex.rest(1, BID, PRICE, 2)
    ex.rest(1, BID, PRICE, 5)
    result = ex.cancel(1, MKT, order_id=first)
    [depth] = depth_events(result)
    assert depth.bids == ((PRICE, 5),)
    assert ex.engine.depth(MKT)[1] == [(PRICE, 5)]


def test_cancel_other_accounts_order_resource_not_found(ex: CheckedExchange) -> None:
    # Given account 1's order with clientId 3
    ex.fund(1, usdc=100)
    ex.fund(2, usdc=100)
    order_id = ex.rest(1, BID, PRICE, 2, client_id=3)
    # When account 2 cancels it by id or by clientId / Then not found, nothing changes
    assert_rejected(
        ex, CancelOrder, ErrorCode.RESOURCE_NOT_FOUND, account=2, market=MKT, order_id=order_id
    )
    assert_rejected(
        ex, CancelOrder, ErrorCode.RESOURCE_NOT_FOUND, account=2, market=MKT, client_id=3
    )
    assert [o.order_id for o in ex.engine.open_orders(1)] == [order_id]


def test_cancel_unknown_or_closed_order_resource_not_found(ex: CheckedExchange) -> None:
    # Given one order / When cancelling unknown ids or it twice / Then RESOURCE_NOT_FOUND
    ex.fund(1, usdc=100)
    order_id = ex.rest(1, BID, PRICE, 2)
    for fields in ({"order_id": 999}, {"client_id": 1}):
        assert_rejected(
            ex, CancelOrder, ErrorCode.RESOURCE_NOT_FOUND, account=1, market=MKT, **fields
        )
    assert ex.cancel(1, MKT, order_id=order_id).ok
    assert_rejected(
        ex, CancelOrder, ErrorCode.RESOURCE_NOT_FOUND, account=1, market=MKT, order_id=order_id
    )


def test_cancel_order_in_other_market_resource_not_found(ex: CheckedExchange) -> None:
    # Given a SOL_USDC order / When cancelled on BTC_USDC / Then RESOURCE_NOT_FOUND
    ex.fund(1, usdc=100)
    order_id = ex.rest(1, BID, PRICE, 2)
    assert_rejected(
        ex,
        CancelOrder,
        ErrorCode.RESOURCE_NOT_FOUND,
        account=1,
        market="BTC_USDC",
        order_id=order_id,
    )


def test_cancel_without_order_id_or_client_id_invalid_client_request(ex: CheckedExchange) -> None:
    # Given no ids / When cancelling / Then INVALID_CLIENT_REQUEST
    assert_rejected(ex, CancelOrder, ErrorCode.INVALID_CLIENT_REQUEST, account=1, market=MKT)


def test_cancel_all_cancels_only_that_accounts_orders_in_that_market(ex: CheckedExchange) -> None:
    # Given account 1 with two bids and an ask on SOL_USDC and a bid on ETH_USDC,
    # and account 2 with a bid on SOL_USDC
    ex.fund(1, sol=10, usdc=1_000)
    ex.fund(2, usdc=1_000)
    mine = {ex.rest(1, BID, 9_900, 2), ex.rest(1, BID, 9_800, 3), ex.rest(1, ASK, 10_100, 4)}
    assert ex.limit(1, "ETH_USDC", BID, 300_000, 10).ok
    theirs = ex.rest(2, BID, 9_900, 5)
    # When account 1 cancels all on SOL_USDC
    result = ex.cancel_all(1, MKT)
    # Then its three SOL_USDC orders are cancelled and returned; the rest stay
    assert {v.order_id for v in result.orders} == mine
    assert all(v.status is OrderStatus.CANCELLED for v in result.orders)
    assert {c.order_id for c in closed(result)} == mine
    assert [o.order_id for o in ex.engine.open_orders(2)] == [theirs]
    assert [o.market for o in ex.engine.open_orders(1)] == ["ETH_USDC"]
    assert ex.bal(1, SOL) == (10 * SOL_1, 0)
    assert ex.bal(1, USDC)[1] == 10 * 300_000  # only the ETH_USDC bid stays locked
    # And one depth event carries the changed levels with absolute totals
    [depth] = depth_events(result)
    assert dict(depth.bids) == {9_900: 5, 9_800: 0}
    assert depth.asks == ((10_100, 0),)


def test_cancel_all_with_no_orders_returns_nothing(ex: CheckedExchange) -> None:
    # Given no orders / When cancel-all runs / Then ok with nothing; unknown market refused
    result = ex.cancel_all(1, MKT)
    assert result.ok
    assert (result.events, result.orders) == ([], [])
    assert_rejected(ex, CancelAllOrders, ErrorCode.INVALID_MARKET, account=1, market="NO_PE")


# -- CONSERVATION ----------------------------------------------------------------------------


def test_conservation_random_session_holds_after_every_command() -> None:
    # Given a seeded mix of deposits, limits of every kind, market orders, cancels, withdrawals
    # When each runs / Then CheckedExchange verifies conservation, locks and hashes every time
    rng = random.Random(20251124)
    ex = CheckedExchange()
    accounts = [1, 2, 3, 4]
    for account in accounts:
        ex.fund(account, sol=50, usdc=5_000)
    for _ in range(400):
        account = rng.choice(accounts)
        side = rng.choice((BID, ASK))
        roll = rng.random()
        if roll < 0.45:
            ex.limit(
                account,
                MKT,
                side,
                rng.randint(9_950, 10_050),
                rng.randint(1, 30),
                time_in_force=rng.choice(list(TimeInForce)),
                self_trade_prevention=rng.choice(list(SelfTradePrevention)),
            )
        elif roll < 0.6:
            if rng.random() < 0.5:
                ex.market(account, MKT, side, quantity=rng.randint(1, 20))
            else:
                ex.market(account, MKT, side, quote_quantity=rng.randint(1, 20) * USDC_1)
        elif roll < 0.8:
            mine = ex.engine.open_orders(account, MKT)
            if mine:
                assert ex.cancel(account, MKT, order_id=rng.choice(mine).order_id).ok
        elif roll < 0.85:
            ex.cancel_all(account, MKT)
        elif roll < 0.95:
            ex.withdraw(account, rng.choice((SOL, USDC)), rng.randint(1, 10**8))
        else:
            ex.deposit(account, rng.choice((SOL, USDC)), rng.randint(1, 10**9))
    fees = ex.engine.balances(FEE_ACCOUNT)
    assert fees[SOL][0] > 0 and fees[USDC][0] > 0


def test_balance_changed_events_replay_to_current_balances(ex: CheckedExchange) -> None:
    # Given a session with deposits, trades, a resting remainder, a cancel and a withdrawal
    ex.fund(1, usdc=1_000)
    ex.fund(2, sol=10)
    ex.rest(2, ASK, PRICE, 3)
    ex.rest(2, ASK, PRICE + 7, 3)
    ex.limit(1, MKT, BID, PRICE + 7, 5)
    resting = ex.rest(1, BID, PRICE - 5, 5)
    ex.market(2, MKT, ASK, quantity=2)
    ex.cancel(1, MKT, order_id=resting)
    ex.withdraw(2, USDC, USDC_1)
    # When every BalanceChanged is replayed in sequence order
    seen: dict[tuple[int, str], tuple[int, int]] = {}
    assert [e.seq for e in ex.log] == list(range(1, ex.engine.seq + 1))
    for event in ex.log:
        if isinstance(event, BalanceChanged):
            available, locked = seen.get((event.account, event.asset), (0, 0))
            # Then each event's absolute values are the previous ones plus its deltas
            assert event.available == available + event.available_delta
            assert event.locked == locked + event.locked_delta
            seen[(event.account, event.asset)] = (event.available, event.locked)
    # And the last values are the engine's balances
    assert seen
    for (account, asset), value in seen.items():
        assert ex.bal(account, asset) == value
