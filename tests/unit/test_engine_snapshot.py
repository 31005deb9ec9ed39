"""Engine snapshots: restore gives an identical engine that behaves identically afterwards."""

from __future__ import annotations

import itertools
import random

import msgspec
import pytest

from cloudex.enums import MarketState, SelfTradePrevention, TimeInForce
from cloudex.messages import (
    AnyCommand,
    CancelAllOrders,
    CancelOrder,
    Deposit,
    SetMarketState,
    Tick,
    encode,
)
from engine_service.core import Engine, EngineConfig
from engine_service.core.snapshot import SNAPSHOT_VERSION, EngineState
from tests.unit.support import (
    ASK,
    BID,
    MKT,
    PRICE,
    SOL,
    USDC,
    USDC_1,
    CheckedExchange,
    observable,
    trades,
)

FIRST = "first-deposit"


def restored(ex: CheckedExchange, config: EngineConfig | None = None) -> CheckedExchange:
    """A second exchange whose engine is restored from ``ex``'s snapshot."""
    config = config or ex.engine.config
    twin = CheckedExchange(config, markets=False)
    twin.engine = Engine.restore(ex.engine.snapshot(), config)
    twin.net = ex.net.copy()
    twin.ts = ex.ts
    twin._ids = itertools.count(1_000_000)  # fresh command ids, unlike those ``ex`` used
    return twin


@pytest.fixture
def busy(ex: CheckedExchange) -> CheckedExchange:
    """An engine with resting orders (one partially filled), trades, fees, a state and a fee
    change, and a remembered deposit command with id ``FIRST``."""
    ex.fund(1, sol=100, usdc=10_000)
    ex.fund(2, sol=100, usdc=10_000)
    ex.fund(3, sol=100, usdc=10_000)
    ex.rest(2, ASK, PRICE, 5, client_id=21)
    ex.rest(3, ASK, PRICE, 4)  # same level, later
    ex.rest(2, ASK, PRICE + 20, 3, self_trade_prevention=SelfTradePrevention.REJECT_BOTH)
    ex.rest(1, BID, 9_900, 6, client_id=11)
    ex.rest(3, BID, 9_850, 2)
    assert trades(ex.limit(1, MKT, BID, PRICE, 2))  # partially fills account 2's ask
    assert ex.limit(1, "ETH_USDC", BID, 300_000, 10).ok
    ex.set_fees("ETH_USDC", 1, 3)
    ex.set_state("BTC_USDC", MarketState.POST_ONLY)
    ex.tick()
    assert ex.run(Deposit, id=FIRST, account=9, asset=USDC, amount=5 * USDC_1).ok
    return ex


def follow_up(ex: CheckedExchange) -> list[AnyCommand]:
    """The same commands for an engine and its restored twin."""
    return [
        ex.limit_order(1, MKT, BID, PRICE + 20, 9),
        ex.market_order(3, MKT, ASK, quantity=3),
        ex.limit_order(2, MKT, BID, PRICE + 30, 2, time_in_force=TimeInForce.IOC),
        ex.limit_order(1, "BTC_USDC", BID, 100, 1000, post_only=True),
        ex.market_order(3, MKT, BID, quote_quantity=3 * USDC_1),
        ex.limit_order(1, MKT, BID, 9_000, 5, client_id=11),  # clientId still in use: rejected
    ]


def test_snapshot_restore_gives_identical_state(busy: CheckedExchange) -> None:
    # Given a busy engine / When snapshotted and restored
    twin = restored(busy)
    # Then the state hash and everything observable are identical
    assert twin.engine.state_hash() == busy.engine.state_hash()
    assert observable(twin.engine) == observable(busy.engine)
    assert twin.engine.hash_sums() == busy.engine.hash_sums()
    assert twin.engine.hash_sums() == twin.engine.recompute_hash_sums()
    assert (twin.engine.seq, twin.engine.clock) == (busy.engine.seq, busy.engine.clock)
    assert twin.engine.markets() == busy.engine.markets()
    assert twin.engine.assets() == busy.engine.assets()
    for symbol in (MKT, "ETH_USDC"):
        assert twin.engine.market_stats(symbol) == busy.engine.market_stats(symbol)
    assert twin.engine.snapshot() == busy.engine.snapshot()


def test_snapshot_restore_behaves_identically_afterwards(busy: CheckedExchange) -> None:
    # Given an engine and its restored twin
    twin = restored(busy)
    # When both execute the same commands
    for command in follow_up(busy):
        mine = busy.execute(command)
        theirs = twin.execute(command)
        # Then every result, event and state hash is the same
        assert encode(mine) == encode(theirs)
        assert busy.engine.state_hash() == twin.engine.state_hash()
    # Including the market statistics of the next tick
    tick = busy.command(Tick)
    assert encode(busy.execute(tick)) == encode(twin.execute(tick))
    assert observable(busy.engine) == observable(twin.engine)


@pytest.mark.parametrize("kind", ["cancel_all", "close"])
def test_snapshot_restore_cancel_all_and_close_emit_identical_events(
    busy: CheckedExchange, kind: str
) -> None:
    # Given account 3 with an ask (older) and a bid (younger), and a restored twin
    twin = restored(busy)
    # When both cancel all of account 3's orders, or close the market
    if kind == "cancel_all":
        command = busy.command(CancelAllOrders, account=3, market=MKT)
    else:
        command = busy.command(SetMarketState, market=MKT, state=MarketState.CLOSED)
    mine, theirs = busy.execute(command), twin.execute(command)
    # Then both produce the same result: same events in the same order, same views
    assert encode(mine) == encode(theirs)


def test_snapshot_restore_keeps_time_priority(busy: CheckedExchange) -> None:
    # Given two asks at 100.00: account 2's (older, 3 lots left) then account 3's
    twin = restored(busy)
    # When a bid takes 4 lots on the restored engine
    result = twin.limit(1, MKT, BID, PRICE, 4)
    # Then the older ask fills first
    assert [(t.seller, t.quantity) for t in trades(result)] == [(2, 3), (3, 1)]


def test_snapshot_restore_remembers_command_ids(busy: CheckedExchange) -> None:
    # Given a deposit executed before the snapshot / When resent to the twin / Then duplicate
    twin = restored(busy)
    again = twin.run(Deposit, id=FIRST, account=9, asset=USDC, amount=5 * USDC_1)
    assert again.duplicate and again.events == []
    assert twin.bal(9, USDC) == (5 * USDC_1, 0)


def test_snapshot_restore_keeps_client_ids_and_open_counts(busy: CheckedExchange) -> None:
    # Given a twin with order_limit 2 / When account 1 (2 open) places / Then ORDER_LIMIT
    twin = restored(busy, EngineConfig(order_limit=2))
    # Account 1 has 2 open orders: at the limit on the restored engine
    assert len(twin.engine.open_orders(1)) == 2
    result = twin.limit(1, MKT, BID, 9_000, 5, client_id=99)
    assert result.error is not None and result.error.value == "ORDER_LIMIT"
    # Cancel by a clientId taken from the snapshot works
    assert twin.cancel(1, MKT, client_id=11).ok
    assert twin.limit(1, MKT, BID, 9_000, 5, client_id=11).ok


def test_snapshot_empty_engine_restores_identical() -> None:
    # Given a new engine / When snapshotted and restored / Then identical and empty
    engine = Engine()
    clone = Engine.restore(engine.snapshot())
    assert clone.state_hash() == engine.state_hash()
    assert clone.markets() == [] and clone.accounts() == []


def test_restore_corrupt_bytes_raises_value_error(busy: CheckedExchange) -> None:
    # Given empty, garbage or truncated bytes / When restored / Then ValueError
    data = busy.engine.snapshot()
    for corrupt in (b"", b"\x00garbage", data[: len(data) // 2]):
        with pytest.raises(ValueError):
            Engine.restore(corrupt)


def test_restore_tampered_balances_raises_value_error(busy: CheckedExchange) -> None:
    # Given a snapshot whose balances were edited (state hash left as it was)
    state = msgspec.msgpack.decode(busy.engine.snapshot(), type=EngineState)
    account, balance = state.balances[0]
    balance = list(balance)
    balance[0] += 1
    state.balances[0] = (account, balance)
    # When restored / Then the hash check refuses it
    with pytest.raises(ValueError, match="hash"):
        Engine.restore(msgspec.msgpack.encode(state))


def test_restore_other_version_raises_value_error(busy: CheckedExchange) -> None:
    # Given a snapshot of another version / When restored / Then ValueError
    state = msgspec.msgpack.decode(busy.engine.snapshot(), type=EngineState)
    state.version = SNAPSHOT_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        Engine.restore(msgspec.msgpack.encode(state))


def test_hash_sums_after_market_close_match_recomputation(
    busy: CheckedExchange,
) -> None:
    # Given a busy engine / When its market is closed / Then hash sums still match
    # CheckedExchange checks this after each command; here also across a market close
    busy.set_state(MKT, MarketState.CLOSED)
    assert busy.engine.hash_sums() == busy.engine.recompute_hash_sums()
    assert busy.engine.balances(2)[SOL][1] == 0


def test_snapshot_restore_mid_random_session_state_hashes_agree() -> None:
    # Given a seeded random session, snapshotted and restored halfway through
    rng = random.Random(7)
    ex = CheckedExchange(EngineConfig(heartbeat_quiet_us=50_000))
    for account in (1, 2, 3):
        ex.fund(account, sol=50, usdc=5_000)
    twin: CheckedExchange | None = None
    for step in range(300):
        if step == 150:
            twin = restored(ex)
            assert twin.engine.state_hash() == ex.engine.state_hash()
        account = rng.choice((1, 2, 3))
        side = rng.choice((BID, ASK))
        roll = rng.random()
        if roll < 0.5:
            command = ex.limit_order(
                account,
                MKT,
                side,
                rng.randint(9_980, 10_020),
                rng.randint(1, 20),
                time_in_force=rng.choice(list(TimeInForce)),
                post_only=rng.random() < 0.1,
                self_trade_prevention=rng.choice(list(SelfTradePrevention)),
            )
        elif roll < 0.65:
            size = (
                {"quantity": rng.randint(1, 10)}
                if rng.random() < 0.5
                else {"quote_quantity": rng.randint(1, 10) * USDC_1}
            )
            command = ex.market_order(account, MKT, side, **size)
        elif roll < 0.85:
            mine = ex.engine.open_orders(account, MKT)
            if not mine:
                continue
            command = ex.command(
                CancelOrder, account=account, market=MKT, order_id=rng.choice(mine).order_id
            )
        elif roll < 0.9:
            command = ex.command(CancelAllOrders, account=account, market=MKT)
        elif roll < 0.95:
            command = ex.command(Tick)
        else:
            command = ex.command(
                SetMarketState,
                market=MKT,
                state=rng.choice(
                    (MarketState.OPEN, MarketState.OPEN, MarketState.POST_ONLY, MarketState.CLOSED)
                ),
            )
        # When both engines execute the same commands
        result = ex.execute(command)
        if twin is not None:
            theirs = twin.execute(command)
            # Then they agree on the outcome and on the state hash after every command
            assert (theirs.error, len(theirs.events)) == (result.error, len(result.events))
            assert twin.engine.state_hash() == ex.engine.state_hash()
    assert twin is not None
    assert observable(twin.engine) == observable(ex.engine)
