"""Helpers for the engine unit tests.

:class:`CheckedExchange` is the ``Exchange`` test stub with invariant checks after every command:
gap-free sequence numbers, no events on rejections and duplicates, per-asset conservation
(``sum(available + locked)`` over all accounts, the fee account included, equals deposits minus
withdrawals), locked balances equal to what the resting orders reserve, incremental hash sums
equal to recomputed ones, and a book that is never crossed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from cloudex.enums import ErrorCode, Side
from cloudex.messages import (
    AnyCommand,
    AnyEvent,
    BalanceChanged,
    CommandResult,
    Deposit,
    DepthChanged,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
    Withdraw,
)
from engine_service.core import Engine, EngineConfig
from engine_service.core.snapshot import EngineState
from tests.stubs import Exchange

SOL = "SOL"
USDC = "USDC"
MKT = "SOL_USDC"
LOT = 10**7  # SOL atoms per lot on SOL_USDC
TICK_LOT = 100  # USDC atoms per tick x lot on SOL_USDC
USDC_1 = 10**6  # one USDC in atoms
SOL_1 = 10**9  # one SOL in atoms
PRICE = 10_000  # 100.00 USDC in ticks
BID = Side.BID
ASK = Side.ASK


def ceil_fee(amount: int, bps: int) -> int:
    return -(-amount * bps // 10_000)


class CheckedExchange(Exchange):
    """``Exchange`` that checks the engine's invariants after every command it executes."""

    def __init__(self, config: EngineConfig | None = None, *, markets: bool = True) -> None:
        self.net: Counter[str] = Counter()  # deposits - withdrawals per asset
        self.log: list[AnyEvent] = []  # every event, in sequence order
        self.accepted: dict[int, OrderAccepted] = {}  # every order, as accepted
        super().__init__(config, markets=markets)

    def execute(self, command: AnyCommand) -> CommandResult:
        engine = self.engine
        seq_before = engine.seq
        result = engine.execute(command)
        assert result.command_id == command.id
        seqs = [event.seq for event in result.events]
        assert seqs == list(range(seq_before + 1, seq_before + 1 + len(seqs))), seqs
        assert engine.seq == seq_before + len(seqs)
        if result.error is not None or result.duplicate:
            assert result.events == [], result
        self.log.extend(result.events)
        for event in result.events:
            assert event.ts == engine.clock
            if isinstance(event, TradeExecuted):
                assert event.buyer != event.seller, f"self-trade {event}"
                assert event.quantity > 0
            elif isinstance(event, OrderAccepted):
                self.accepted[event.order_id] = event
            elif isinstance(event, OrderClosed) and event.order_id in self.accepted:
                # A closed order carries its terms: the same as when it was accepted (orders
                # accepted before a restore are not known here).
                accepted = self.accepted[event.order_id]
                terms = (
                    "account", "market", "side", "order_type", "time_in_force", "price",
                    "quantity", "quote_quantity", "client_id", "post_only",
                    "self_trade_prevention",
                )  # fmt: skip
                for name in terms:
                    assert getattr(event, name) == getattr(accepted, name), (name, event)
                assert event.created_at == accepted.ts
        if result.ok and not result.duplicate:
            if isinstance(command, Deposit):
                self.net[command.asset] += command.amount
            elif isinstance(command, Withdraw):
                self.net[command.asset] -= command.amount
        check_invariants(engine, self.net)
        return result

    # -- conveniences ------------------------------------------------------------------------

    def fund(self, account: int, *, sol: int = 0, usdc: int = 0) -> None:
        """Deposit whole SOL and USDC amounts (in units, not atoms)."""
        if sol:
            assert self.deposit(account, SOL, sol * SOL_1).ok
        if usdc:
            assert self.deposit(account, USDC, usdc * USDC_1).ok

    def bal(self, account: int, asset: str) -> tuple[int, int]:
        return self.engine.balances(account).get(asset, (0, 0))

    def rest(self, account: int, side: Side, price: int, quantity: int, **fields: Any) -> int:
        """Place a GTC limit that must rest untouched; return its order id."""
        result = self.limit(account, MKT, side, price, quantity, **fields)
        assert result.ok, result
        assert not of_type(result, TradeExecuted)
        return result.orders[0].order_id


def check_invariants(engine: Engine, net: Counter[str]) -> None:
    assets = [asset.symbol for asset in engine.assets()]
    totals: Counter[str] = Counter()
    locked_by_orders: Counter[tuple[int, str]] = Counter()
    for spec in engine.markets():
        rules = engine.market_rules(spec.symbol)
        assert rules is not None
        _, bids, asks = engine.depth(spec.symbol)
        if bids and asks:
            assert bids[0][0] < asks[0][0], f"crossed book {spec.symbol}: {bids[0]} {asks[0]}"
        levels: Counter[tuple[bool, int]] = Counter()
        for order in engine.resting_orders(spec.symbol):
            assert 0 < order.remaining <= order.quantity
            levels[(order.is_bid, order.price)] += order.remaining
            if order.is_bid:
                locked_by_orders[(order.account, rules.quote.symbol)] += (
                    order.remaining * order.price * rules.quote_atoms_per_tick_lot
                )
            else:
                locked_by_orders[(order.account, rules.base.symbol)] += (
                    order.remaining * rules.base_atoms_per_lot
                )
        depth = {(True, p): q for p, q in bids} | {(False, p): q for p, q in asks}
        assert depth == dict(levels), f"depth of {spec.symbol} disagrees with its orders"
    for account in engine.accounts():
        for asset, (available, locked) in engine.balances(account).items():
            assert available >= 0 and locked >= 0, (account, asset, available, locked)
            assert locked == locked_by_orders[(account, asset)], (account, asset, locked)
            totals[asset] += available + locked
    for asset in assets:
        assert totals[asset] == net[asset], f"{asset}: held {totals[asset]} != net {net[asset]}"
    assert engine.hash_sums() == engine.recompute_hash_sums()


def observable(engine: Engine) -> dict[str, Any]:
    """Everything a command could change, except the engine clock and its result cache."""
    state = msgspec.msgpack.decode(engine.snapshot(), type=EngineState)
    accounts = engine.accounts()
    return {
        "seq": engine.seq,
        "accounts": sorted(accounts),
        "balances": {a: engine.balances(a) for a in accounts},
        "depth": {m.symbol: engine.depth(m.symbol) for m in engine.markets()},
        "open": {
            a: sorted(engine.open_orders(a), key=lambda view: view.order_id) for a in accounts
        },
        "hash_sums": engine.hash_sums(),
        "core": msgspec.structs.replace(state, clock=0, results=[], state_hash=""),
    }


def assert_rejected(
    ex: CheckedExchange, cls: type[AnyCommand], code: ErrorCode, **fields: Any
) -> CommandResult:
    """Execute a command that must be rejected with ``code`` and change nothing."""
    return assert_command_rejected(ex, ex.command(cls, **fields), code)


def assert_command_rejected(
    ex: CheckedExchange, command: AnyCommand, code: ErrorCode
) -> CommandResult:
    before = observable(ex.engine)
    result = ex.execute(command)
    assert result.error == code, result
    assert result.message
    assert result.events == []
    assert result.orders == []
    assert observable(ex.engine) == before
    return result


def of_type(result: CommandResult, kind: type[AnyEvent]) -> list[Any]:
    return [event for event in result.events if isinstance(event, kind)]


def trades(result: CommandResult) -> list[TradeExecuted]:
    return of_type(result, TradeExecuted)


def closed(result: CommandResult) -> list[OrderClosed]:
    return of_type(result, OrderClosed)


def depth_events(result: CommandResult) -> list[DepthChanged]:
    return of_type(result, DepthChanged)


def balance_events(
    result: CommandResult, account: int | None = None, asset: str | None = None
) -> list[BalanceChanged]:
    return [
        event
        for event in of_type(result, BalanceChanged)
        if (account is None or event.account == account) and (asset is None or event.asset == asset)
    ]
