"""Shared machinery of the property tests: operation strategies, the command builder, and a
runner that feeds each command to the engine and to the reference matcher and checks every
property after every command.

Operations are abstract (``CancelOp`` names "a live order", not an id; ``SweepOp`` sizes an
order against the book as it stands) and become concrete commands only when they run, resolved
against the reference's state; the concrete commands are recorded so that other engines
(replays, restored snapshots) get exactly the same ones.

``HYPOTHESIS_PROFILE`` sets the example counts: ``short`` (default, well under two minutes for
tests/property on two cores), ``dev`` (about 5x) or ``ci`` (about 12x).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from cloudex.enums import (
    ErrorCode,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.messages import (
    AnyCommand,
    BalanceChanged,
    CancelAllOrders,
    CancelOrder,
    CommandResult,
    Deposit,
    DepthChanged,
    PlaceOrder,
    SetMarketFees,
    Tick,
    TradeExecuted,
    Withdraw,
    encode,
)
from engine_service.core import Engine, EngineConfig
from engine_service.core.snapshot import EngineState
from tests.reference_matcher import FEE_ACCOUNT, ReferenceExchange, RefResult
from tests.stubs import START_TS, Exchange, markets_config

# -- SETTINGS ---------------------------------------------------------------------------------

_PROFILES = {
    "short": {"max_examples": 800},
    "dev": {"max_examples": 4_000},
    "ci": {"max_examples": 10_000},
}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "short")
if PROFILE not in _PROFILES:
    raise RuntimeError(f"HYPOTHESIS_PROFILE must be one of {sorted(_PROFILES)}, was {PROFILE!r}")


def property_settings(scale: float = 1.0) -> settings:
    """Settings for one property test: ``scale`` times the profile's example count."""
    return settings(
        max_examples=max(1, int(_PROFILES[PROFILE]["max_examples"] * scale)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False,  # shrink one failure well rather than several slowly
    )


# -- THE WORLD --------------------------------------------------------------------------------

ORDER_LIMIT = 10  # small, so that ORDER_LIMIT rejections happen
CONFIG = EngineConfig(order_limit=ORDER_LIMIT)
RULES = {rules.symbol: rules for rules in markets_config().compiled()}
MARKETS = ("SOL_USDC", "BTC_USDC")
MIDS = {"SOL_USDC": 15_000, "BTC_USDC": 1_000_000}  # 150.00 USDC, 100000.0 USDC (ticks)
ACCOUNTS = (1, 2, 3, 4)
ASSETS = ("SOL", "BTC", "USDC")
FEE_CHOICES = (0, 1, 2, 5, 30, 1_000)


# -- OPERATIONS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositOp:
    account: int
    asset: str
    amount: int


@dataclass(frozen=True)
class WithdrawOp:
    account: int
    asset: str
    amount: int


@dataclass(frozen=True)
class LimitOp:
    account: int
    market: str
    is_bid: bool
    offset: int  # ticks from the market's mid
    quantity: int
    tif: TimeInForce
    post_only: bool
    stp: SelfTradePrevention
    client_id: int | None = None
    raw_price: int | None = None  # overrides mid + offset (out-of-range prices)


@dataclass(frozen=True)
class MarketOp:
    account: int
    market: str
    is_bid: bool
    quantity: int | None
    quote_quantity: int | None
    tif: TimeInForce
    stp: SelfTradePrevention


@dataclass(frozen=True)
class CancelOp:
    account: int
    market: str
    # "live": a resting order, cancelled by its owner in its market (account/market unused);
    # "any": a resting order, cancelled as account in market (usually someone else's);
    # "issued": any id given so far (most are closed); "unknown": an id never given.
    target: str
    index: int


@dataclass(frozen=True)
class CancelAllOp:
    account: int
    market: str


@dataclass(frozen=True)
class FeesOp:
    market: str
    maker_bps: int
    taker_bps: int


@dataclass(frozen=True)
class SweepOp:
    """An order sized against the book as it stands: it takes the best ``levels`` opposite
    levels, for the lots (or the quote value) of all their orders or only of other accounts'
    orders, give or take ``delta`` lots (quote atoms), exactly at the edges where fill-or-kill,
    self-trade prevention and money limits change the outcome."""

    account: int
    market: str
    is_bid: bool
    kind: str  # "limit" (at the last level's price), "quantity" or "quote" (market orders)
    levels: int
    basis: str  # "all" orders' lots, or only "others'"
    delta: int
    tif: TimeInForce
    stp: SelfTradePrevention
    # First make the available balance exactly enough: for the "order", for "one_lot" at the
    # best price, or one atom "..._short" of it; None leaves the balance alone.
    funds: str | None = None


@dataclass(frozen=True)
class TickOp:
    advance_us: int  # engine time passing first: heartbeats, candles rolling over


Op = (
    DepositOp | WithdrawOp | LimitOp | MarketOp | CancelOp | CancelAllOp | FeesOp | SweepOp | TickOp
)

# -- STRATEGIES -------------------------------------------------------------------------------

# Strategies are built once and cached: building them inside composites on every draw (and
# hypothesis validating each new one) used to cost more than running the engine.


@functools.cache
def pick(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """One of ``options``, close to uniformly (``st.integers`` favours small values)."""
    return st.sampled_from(options)


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``one_in`` draws."""
    return pick((False,) * (one_in - 1) + (True,))


def mostly(common: tuple[Any, ...], rare: tuple[Any, ...], one_in: int) -> st.SearchStrategy[Any]:
    """One of ``common``, or about once in ``one_in`` draws one of ``rare``."""
    return pick(common * ((one_in - 1) * len(rare)) + rare * len(common))


traders = pick((1, 1, 1, 2, 2, 3, 4))  # skewed: more same-account crossings (STP)
# Account 0 (the fee account) may not trade; an unknown market is rejected first.
order_accounts = mostly((1, 1, 1, 2, 2, 3, 4), (FEE_ACCOUNT,), 40)
markets = pick(MARKETS + MARKETS[:1])  # SOL_USDC twice as often: deeper books there
order_markets = mostly(MARKETS + MARKETS[:1], ("DOGE_USDC",), 40)
stps = st.sampled_from(list(SelfTradePrevention))
SMALL_LOTS = pick(tuple(range(1, 7)) * 2 + tuple(range(7, 16)))


@functools.cache
def _asset_amount(asset: str, positive: bool = False) -> st.SearchStrategy[int]:
    # Not st.integers, and largest first: hypothesis favours the simplest choice (the first
    # option, the smallest integer), and tiny amounts fund nothing.
    if asset == "USDC":
        return pick(tuple(range(300_000_000, 0, -1_234_567)))  # up to 300 USDC
    lot = RULES[f"{asset}_USDC"].base_atoms_per_lot
    lots = range(80, 0 if positive else -1, -1)  # up to 80 lots, some with a few atoms more
    return pick(tuple(n * lot + atoms for n in lots for atoms in (0, 0, 0, 1, 3)))


@st.composite
def deposits(draw: st.DrawFn) -> DepositOp:
    asset = draw(pick(ASSETS))
    amount = draw(_asset_amount(asset))
    if draw(rarely(15)):
        amount = draw(pick((-2, -1, 0)))
    account = draw(mostly(ACCOUNTS, (FEE_ACCOUNT,), 20))
    if draw(rarely(25)):
        asset = "DOGE"
    return DepositOp(account, asset, amount)


@st.composite
def withdrawals(draw: st.DrawFn) -> WithdrawOp:
    asset = draw(pick(ASSETS))
    amount = 0 if draw(rarely(15)) else draw(_asset_amount(asset))
    return WithdrawOp(draw(traders), asset, amount)


@st.composite
def limits(draw: st.DrawFn) -> LimitOp:
    market = draw(order_markets)
    rules = RULES.get(market, RULES["SOL_USDC"])
    quantity = draw(SMALL_LOTS)
    if draw(rarely(40)):
        quantity = draw(pick((0, rules.max_lots + 1)))
    tif = draw(pick((TimeInForce.GTC,) * 3 + (TimeInForce.IOC, TimeInForce.FOK)))
    post_only = draw(rarely(6))
    if post_only and not draw(rarely(5)):
        tif = TimeInForce.GTC  # mostly valid post-only orders
    raw_price = None
    if draw(rarely(40)):
        raw_price = draw(pick((0, -1, rules.max_ticks + 1)))
    client_id = draw(mostly((None,), (1, 2, 3), 5))
    return LimitOp(
        account=draw(order_accounts),
        market=market,
        is_bid=draw(st.booleans()),
        offset=draw(pick((0, -1, 1, -2, 2))),  # the mid first: orders cross often
        quantity=quantity,
        tif=tif,
        post_only=post_only,
        stp=draw(stps),
        client_id=client_id,
        raw_price=raw_price,
    )


@st.composite
def market_orders(draw: st.DrawFn) -> MarketOp:
    if draw(st.booleans()):
        quantity = 0 if draw(rarely(30)) else draw(SMALL_LOTS)
        quote_quantity = None
    else:
        # Up to 40 USDC; below 1 USDC is under the minimum notional.
        quote_quantity = draw(pick(tuple(range(500_000, 40_000_001, 250_001))))
        quantity = None
    return MarketOp(
        account=draw(order_accounts),
        market=draw(order_markets),
        is_bid=draw(st.booleans()),
        quantity=quantity,
        quote_quantity=quote_quantity,
        tif=draw(pick((TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK))),
        stp=draw(stps),
    )


cancels = st.builds(
    CancelOp,
    account=traders,
    market=order_markets,
    target=st.sampled_from(["live", "live", "live", "any", "issued", "unknown"]),
    index=st.sampled_from(range(20)),
)
cancel_alls = st.builds(CancelAllOp, account=traders, market=order_markets)
fee_changes = st.builds(
    FeesOp,
    market=order_markets,
    maker_bps=mostly(FEE_CHOICES, (1_001,), 15),
    taker_bps=st.sampled_from(FEE_CHOICES),
)

sweeps = st.builds(
    SweepOp,
    account=traders,
    market=markets,
    is_bid=st.booleans(),
    kind=st.sampled_from(["limit", "limit", "quantity", "quote"]),
    levels=st.sampled_from([1, 2, 3]),
    basis=st.sampled_from(["all", "others"]),
    delta=st.sampled_from([0, -1, 1]),
    tif=st.sampled_from([TimeInForce.FOK, TimeInForce.FOK, TimeInForce.IOC, TimeInForce.GTC]),
    stp=stps,
    funds=st.sampled_from([None, None, "order", "order_short", "one_lot", "one_lot_short"]),
)

ticks = st.builds(
    TickOp, advance_us=pick((0, 1_000_000, 61_000_000, 3_600_000_000, 86_400_000_000))
)

_KINDS = {  # strategy: weight
    "limit": (limits(), 12),
    "market": (market_orders(), 4),
    "sweep": (sweeps, 3),
    "cancel": (cancels, 2),
    "cancel_all": (cancel_alls, 1),
    "deposit": (deposits(), 2),
    "withdraw": (withdrawals(), 1),
    "fees": (fee_changes, 1),
    "tick": (ticks, 1),
}
_KIND_CHOICES = tuple(kind for kind, (_, weight) in _KINDS.items() for _ in range(weight))


@st.composite
def operations(draw: st.DrawFn) -> Op:
    return draw(_KINDS[draw(pick(_KIND_CHOICES))][0])


@st.composite
def funding(draw: st.DrawFn) -> list[DepositOp]:
    """Every account starts with some of every asset (so every account exists in the engine)."""
    return [
        DepositOp(account, asset, draw(_asset_amount(asset, positive=True)))
        for account in ACCOUNTS
        for asset in ASSETS
    ]


@st.composite
def scenarios(draw: st.DrawFn, max_ops: int = 60) -> list[Op]:
    """Funding deposits, then up to ``max_ops`` random operations (about half that on average).

    The operations are drawn as several short lists: one ``st.lists`` would average about six
    elements, and a list of a drawn exact size shrinks badly (no element can be deleted alone).
    """
    ops = draw(funding())
    for _ in range(max_ops // _CHUNK):
        ops += draw(_chunks)
    return ops


_CHUNK = 10
_chunks = st.lists(operations(), max_size=_CHUNK)  # about five on average


# -- COMMANDS ---------------------------------------------------------------------------------


class CommandFactory:
    """Fresh ids and increasing times, after the ones the Exchange stub used for its markets."""

    def __init__(self) -> None:
        self.count = 0
        self.ts = START_TS + 10**9

    def __call__(self, cls: type[AnyCommand], **fields: Any) -> AnyCommand:
        self.count += 1
        self.ts += 1_000
        return cls(id=f"prop-{self.count}", ts=self.ts, **fields)

    def advance(self, us: int) -> None:
        self.ts += us


def to_commands(op: Op, ref: ReferenceExchange, make: CommandFactory) -> list[AnyCommand]:
    if isinstance(op, SweepOp):
        return sweep_commands(op, ref, make)
    return [to_command(op, ref, make)]


def to_command(op: Op, ref: ReferenceExchange, make: CommandFactory) -> AnyCommand:
    if isinstance(op, DepositOp):
        return make(Deposit, account=op.account, asset=op.asset, amount=op.amount)
    if isinstance(op, WithdrawOp):
        return make(Withdraw, account=op.account, asset=op.asset, amount=op.amount)
    if isinstance(op, LimitOp):
        price = op.raw_price if op.raw_price is not None else MIDS.get(op.market, 100) + op.offset
        return make(
            PlaceOrder,
            account=op.account,
            market=op.market,
            side=Side.BID if op.is_bid else Side.ASK,
            order_type=OrderType.LIMIT,
            price=price,
            quantity=op.quantity,
            time_in_force=op.tif,
            post_only=op.post_only,
            client_id=op.client_id,
            self_trade_prevention=op.stp,
        )
    if isinstance(op, MarketOp):
        return make(
            PlaceOrder,
            account=op.account,
            market=op.market,
            side=Side.BID if op.is_bid else Side.ASK,
            order_type=OrderType.MARKET,
            quantity=op.quantity,
            quote_quantity=op.quote_quantity,
            time_in_force=op.tif,
            self_trade_prevention=op.stp,
        )
    if isinstance(op, CancelOp):
        account, market, order_id = op.account, op.market, 1_000_000 + op.index
        resting = ref.orders()
        if op.target == "live" and resting:
            order = resting[op.index % len(resting)]
            account, market, order_id = order.account, order.market, order.order_id
        elif op.target == "any" and resting:
            order_id = resting[op.index % len(resting)].order_id
        elif op.target == "issued" and ref.next_order_id > 1:
            order_id = 1 + op.index % (ref.next_order_id - 1)
        return make(CancelOrder, account=account, market=market, order_id=order_id)
    if isinstance(op, CancelAllOp):
        return make(CancelAllOrders, account=op.account, market=op.market)
    if isinstance(op, TickOp):
        make.advance(op.advance_us)
        return make(Tick)
    if isinstance(op, FeesOp):
        return make(
            SetMarketFees,
            market=op.market,
            maker_fee_bps=op.maker_bps,
            taker_fee_bps=op.taker_bps,
        )
    raise TypeError(op)


def sweep_commands(op: SweepOp, ref: ReferenceExchange, make: CommandFactory) -> list[AnyCommand]:
    rules = RULES[op.market]
    tick_lot, lot = rules.quote_atoms_per_tick_lot, rules.base_atoms_per_lot
    order: dict[str, Any] = {
        "account": op.account,
        "market": op.market,
        "side": Side.BID if op.is_bid else Side.ASK,
        "self_trade_prevention": op.stp,
    }
    book = [o for o in ref.book(op.market) if o.is_bid != op.is_bid]  # the opposite side
    prices = sorted({o.price for o in book}, reverse=not op.is_bid)[: op.levels]
    if not prices:  # nothing to sweep: add liquidity instead, just off the mid
        price = MIDS[op.market] + (-1 if op.is_bid else 1)
        quantity = op.levels + op.delta + 1
        return [
            make(PlaceOrder, order_type=OrderType.LIMIT, price=price, quantity=quantity, **order)
        ]
    taken = [
        o for o in book if o.price in prices and (op.basis == "all" or o.account != op.account)
    ]
    lots = max(1, sum(o.remaining for o in taken) + op.delta)
    value = sum(o.remaining * o.price * tick_lot for o in taken)
    if op.kind == "limit":
        order.update(order_type=OrderType.LIMIT, price=prices[-1], quantity=lots)
        cost = lots * prices[-1] * tick_lot if op.is_bid else lots * lot
        order["time_in_force"] = op.tif
    elif op.kind == "quantity":
        order.update(order_type=OrderType.MARKET, quantity=lots, time_in_force=op.tif)
        cost = value if op.is_bid else lots * lot
    else:
        tif = TimeInForce.IOC if op.tif is TimeInForce.FOK else op.tif  # FOK needs a quantity
        quote_quantity = max(rules.min_notional_atoms, value + op.delta)
        order.update(order_type=OrderType.MARKET, quote_quantity=quote_quantity, time_in_force=tif)
        cost = quote_quantity if op.is_bid else lots * lot
    commands = []
    if op.funds is not None:
        # First set the account's available balance of what it pays with to exactly the cost of
        # the whole order or of one lot at the best price, or one atom less.
        asset = rules.quote.symbol if op.is_bid else rules.base.symbol
        if op.funds.startswith("one_lot"):
            cost = prices[0] * tick_lot if op.is_bid else lot
        target = cost - (1 if op.funds.endswith("short") else 0)
        available = ref.balance(op.account, asset)[0]
        if target > available:
            commands.append(
                make(Deposit, account=op.account, asset=asset, amount=target - available)
            )
        elif 0 <= target < available:
            commands.append(
                make(Withdraw, account=op.account, asset=asset, amount=available - target)
            )
    commands.append(make(PlaceOrder, **order))
    return commands


# -- THE RUNNER -------------------------------------------------------------------------------


def trade_rows(result: CommandResult) -> list[tuple[int, ...]]:
    return [
        (
            e.trade_id,
            e.market,
            e.price,
            e.quantity,
            e.quote_quantity,
            e.buy_order_id,
            e.sell_order_id,
            e.buyer,
            e.seller,
            e.buyer_fee,
            e.seller_fee,
        )
        for e in result.events
        if isinstance(e, TradeExecuted)
    ]


def ref_trade_rows(result: RefResult) -> list[tuple[int, ...]]:
    return [
        (
            t.trade_id,
            t.market,
            t.price,
            t.quantity,
            t.quote_quantity,
            t.buy_order_id,
            t.sell_order_id,
            t.buyer,
            t.seller,
            t.buyer_fee,
            t.seller_fee,
        )
        for t in result.trades
    ]


def _is_int(value: object) -> bool:
    return type(value) is int


class _Context:
    """What a failed assertion shows: the command and both answers (formatted only then)."""

    def __init__(self, command: AnyCommand, result: CommandResult, ref: RefResult) -> None:
        self.parts = (command, result, ref)

    def __repr__(self) -> str:
        command, result, ref = self.parts
        return f"\ncommand {command!r}\nengine {result!r}\nreference {ref!r}"

    __str__ = __repr__


class Runner:
    """One engine and the reference, fed the same commands; ``check`` verifies every property
    after every command (without it the runner only records commands and results)."""

    def __init__(self, check: bool = True) -> None:
        self.engine: Engine = Exchange(CONFIG).engine
        self.ref = ReferenceExchange(RULES.values(), order_limit=ORDER_LIMIT)
        self.make = CommandFactory()
        self.check = check
        self.commands: list[AnyCommand] = []
        self.encoded: list[bytes] = []  # msgpack of each result
        self.hashes: list[str] = []  # state hash after each command
        self.net: Counter[str] = Counter()  # deposits minus withdrawals per asset
        self.seq = self.engine.seq
        self.balance_mirror: dict[tuple[int, str], tuple[int, int]] = {}
        self.depth_mirror = {m: ({}, {}) for m in RULES}  # market -> (bids, asks) price->lots
        self.update_ids = {m: self.engine.depth(m)[0] for m in RULES}

    def run(self, ops: list[Op]) -> None:
        for op in ops:
            self.step(op)

    def step(self, op: Op) -> list[CommandResult]:
        return [self.execute(command) for command in to_commands(op, self.ref, self.make)]

    def execute(self, command: AnyCommand) -> CommandResult:
        before = self.engine.snapshot() if self.check else b""
        result = self.engine.execute(command)
        ref_result = self.ref.execute(command)
        self.commands.append(command)
        self.encoded.append(encode(result))
        self.hashes.append(self.engine.state_hash())
        if isinstance(command, Deposit | Withdraw) and result.ok:
            sign = 1 if isinstance(command, Deposit) else -1
            self.net[command.asset] += sign * command.amount
        if self.check:
            context = _Context(command, result, ref_result)
            self.check_result(command, result, ref_result, before, context)
            self.check_engine(context)
            self.check_against_reference(context)
        return result

    # -- properties ---------------------------------------------------------------------------

    def check_result(
        self,
        command: AnyCommand,
        result: CommandResult,
        ref_result: RefResult,
        before: bytes,
        context: _Context,
    ) -> None:
        engine = self.engine
        assert result.command_id == command.id and not result.duplicate, context
        # Same verdict as the reference, same order id, same trades.
        assert result.error == ref_result.error, context
        if isinstance(command, PlaceOrder) and result.ok:
            assert len(result.orders) == 1, context
            view = result.orders[0]
            assert view.order_id == ref_result.order_id, context
            assert view.status == ref_result.status, context
            rows = trade_rows(result)
            assert view.executed_quantity == sum(r[3] for r in rows), context
            assert view.executed_quote_quantity == sum(r[4] for r in rows), context
        assert trade_rows(result) == ref_trade_rows(ref_result), context
        for row in trade_rows(result):
            assert all(_is_int(v) for i, v in enumerate(row) if i != 1), context
            market, price, lots, quote = row[1], row[2], row[3], row[4]
            assert lots > 0 and quote == price * lots * RULES[market].quote_atoms_per_tick_lot
        # Event sequence numbers are global and gap-free.
        seqs = [event.seq for event in result.events]
        assert seqs == list(range(self.seq + 1, self.seq + 1 + len(seqs))), context
        self.seq += len(seqs)
        assert engine.seq == self.seq, context
        if not result.ok:
            # A rejection changes nothing: no events, no orders, and the snapshot differs only
            # by the engine clock and the remembered (rejected) result. (state_hash() does
            # change: it covers the clock and the size of the exactly-once result cache.)
            assert result.error in ErrorCode and not result.events and not result.orders, context
            old = msgspec.msgpack.decode(before, type=EngineState)
            new = msgspec.msgpack.decode(engine.snapshot(), type=EngineState)
            assert new.results[:-1] == old.results and new.results[-1] == result, context
            assert new.clock == max(old.clock, command.ts), context
            neutral = {"clock": 0, "results": [], "state_hash": ""}
            assert msgspec.structs.replace(new, **neutral) == msgspec.structs.replace(
                old, **neutral
            ), context
        # Events replayed onto mirrors give the engine's balances and depth.
        for event in result.events:
            if isinstance(event, BalanceChanged):
                key = (event.account, event.asset)
                available, locked = self.balance_mirror.get(key, (0, 0))
                assert available + event.available_delta == event.available, context
                assert locked + event.locked_delta == event.locked, context
                self.balance_mirror[key] = (event.available, event.locked)
            elif isinstance(event, DepthChanged):
                assert event.update_id == self.update_ids[event.market] + 1, context
                self.update_ids[event.market] = event.update_id
                bids, asks = self.depth_mirror[event.market]
                for mirror, levels in ((bids, event.bids), (asks, event.asks)):
                    for price, lots in levels:
                        assert lots >= 0, context
                        if lots:
                            mirror[price] = lots
                        else:
                            mirror.pop(price, None)

    def check_engine(self, context: _Context) -> None:
        """Properties of the engine's state alone."""
        engine = self.engine
        assert engine.hash_sums() == engine.recompute_hash_sums(), context
        totals: Counter[str] = Counter()
        locked: Counter[tuple[int, str]] = Counter()
        for account in engine.accounts():
            for asset, (available, held) in engine.balances(account).items():
                assert _is_int(available) and _is_int(held), context
                assert available >= 0 and held >= 0, (account, asset, available, held, context)
                totals[asset] += available + held
                locked[account, asset] = held
                assert self.balance_mirror.get((account, asset), (0, 0)) == (available, held), (
                    account,
                    asset,
                    context,
                )
        for asset in set(totals) | set(self.net):
            assert totals[asset] == self.net[asset], (asset, totals[asset], self.net, context)
        reserved: Counter[tuple[int, str]] = Counter()
        open_counts: Counter[int] = Counter()
        for market, rules in RULES.items():
            update_id, bids, asks = engine.depth(market)
            assert update_id == self.update_ids[market], context
            levels: tuple[Counter[int], Counter[int]] = (Counter(), Counter())
            for order in engine.resting_orders(market):
                assert all(_is_int(v) for v in (order.price, order.quantity, order.remaining))
                assert 0 < order.remaining <= order.quantity, (order, context)
                assert 0 < order.price <= rules.max_ticks, (order, context)
                levels[0 if order.is_bid else 1][order.price] += order.remaining
                open_counts[order.account] += 1
                if order.is_bid:
                    amount = order.remaining * order.price * rules.quote_atoms_per_tick_lot
                    reserved[order.account, rules.quote.symbol] += amount
                else:
                    amount = order.remaining * rules.base_atoms_per_lot
                    reserved[order.account, rules.base.symbol] += amount
            # Depth is sorted best first, aggregates the resting orders and is never crossed.
            assert [p for p, _ in bids] == sorted({p for p, _ in bids}, reverse=True), context
            assert [p for p, _ in asks] == sorted({p for p, _ in asks}), context
            assert dict(bids) == dict(levels[0]) and dict(asks) == dict(levels[1]), context
            assert all(lots > 0 for _, lots in bids + asks), context
            if bids and asks:
                assert bids[0][0] < asks[0][0], (market, bids[0], asks[0], context)
            mirror_bids, mirror_asks = self.depth_mirror[market]
            assert dict(bids) == mirror_bids and dict(asks) == mirror_asks, context
        # Locked funds are exactly what the resting orders reserve.
        for key in set(locked) | set(reserved):
            assert locked[key] == reserved[key], (key, locked[key], reserved[key], context)
        assert all(count <= ORDER_LIMIT for count in open_counts.values()), context

    def check_against_reference(self, context: _Context) -> None:
        engine, ref = self.engine, self.ref
        assets = [asset.symbol for asset in engine.assets()]
        for account in {FEE_ACCOUNT, *ACCOUNTS, *engine.accounts()}:
            balances = engine.balances(account)
            for asset in assets:
                assert balances.get(asset, (0, 0)) == ref.balance(account, asset), (
                    account,
                    asset,
                    context,
                )
        for market in RULES:
            got = [
                (o.id, o.account, o.is_bid, o.price, o.quantity, o.remaining, o.client_id)
                for o in engine.resting_orders(market)
            ]
            want = [
                (o.order_id, o.account, o.is_bid, o.price, o.quantity, o.remaining, o.client_id)
                for o in ref.book(market)
            ]
            assert got == want, (market, context)
