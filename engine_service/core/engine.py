"""The matching engine and balance ledger: one command at a time, deterministic, no I/O.

``Engine.execute(command)`` validates the command, applies it to books and balances and returns a
:class:`~cloudex.messages.CommandResult` with the events it caused, each with the next global
sequence number. A rejected command changes nothing. A command id seen before gets its stored
result back and causes nothing.

Accounting (all integers): a resting bid locks ``remaining * price * quote_atoms_per_tick_lot``
quote atoms, a resting ask ``remaining * base_atoms_per_lot`` base atoms. An incoming order pays
from its available balance at the makers' prices (so price improvement never gets locked), and
only what rests is locked, at its limit price. Fees are charged in the asset the payer receives,
rounded up to its atom, and credited to the fee account.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from cloudex.enums import (
    BalanceReason,
    CloseReason,
    ErrorCode,
    MarketState,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.markets import (
    MAX_FEE_BPS,
    OPEN_ORDER_LIMIT,
    AssetSpec,
    MarketRules,
    MarketSpec,
    MarketSpecError,
    compile_market,
)
from cloudex.messages import (
    AddMarket,
    AnyCommand,
    AnyEvent,
    BalanceChanged,
    CancelAllOrders,
    CancelOrder,
    CommandResult,
    Deposit,
    DepthChanged,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    OrderView,
    PlaceOrder,
    SetMarketFees,
    SetMarketState,
    Tick,
    TradeExecuted,
    Withdraw,
)
from cloudex.names import FEE_ACCOUNT
from engine_service.core.book import BookSide, Order
from engine_service.core.market_data import MarketData
from engine_service.core.snapshot import SNAPSHOT_VERSION, EngineState
from engine_service.core.snapshot import MarketState as _MarketState

__all__ = ["Engine", "EngineConfig", "MarketBook", "MAX_BALANCE", "MAX_CLIENT_ID"]

MAX_BALANCE = 2**63 - 1  # balances stay within a signed 64-bit integer on every wire
MAX_CLIENT_ID = 2**32 - 1  # Backpack's clientId is a u32
_UNBOUNDED = 2**63

_BID = Side.BID
_SIDES = (Side.ASK, Side.BID)  # by is_bid
_LIMIT = OrderType.LIMIT
_GTC = TimeInForce.GTC
_FOK = TimeInForce.FOK
_REJECT_TAKER = SelfTradePrevention.REJECT_TAKER
_REJECT_MAKER = SelfTradePrevention.REJECT_MAKER
_NEW = OrderStatus.NEW
_PARTIAL = OrderStatus.PARTIALLY_FILLED
_FILLED = OrderStatus.FILLED
_CANCELLED = OrderStatus.CANCELLED
_EXPIRED = OrderStatus.EXPIRED
_OPEN = MarketState.OPEN
_POST_ONLY = MarketState.POST_ONLY
_CLOSED = MarketState.CLOSED
_FILL = BalanceReason.FILL
_ORDER = BalanceReason.ORDER
_FEE = BalanceReason.FEE
_UNLOCK = BalanceReason.UNLOCK


class EngineConfig(msgspec.Struct, frozen=True):
    order_limit: int = OPEN_ORDER_LIMIT  # open orders per account, all markets together
    result_cache_size: int = 100_000  # command results remembered for exactly-once replies
    heartbeat_quiet_us: int = 1_000_000  # a book with no depth event for this long gets one


class MarketBook:
    """One market's rules, mutable settings, book and market data."""

    __slots__ = (
        "rules",
        "index",
        "state",
        "maker_bps",
        "taker_bps",
        "bids",
        "asks",
        "update_id",
        "last_depth_ts",
        "data",
        "base_slot",
        "quote_slot",
    )

    def __init__(self, rules: MarketRules, index: int, base_slot: int, quote_slot: int) -> None:
        self.rules = rules
        self.index = index
        self.state = rules.spec.state
        self.maker_bps = rules.spec.maker_fee_bps
        self.taker_bps = rules.spec.taker_fee_bps
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self.update_id = 0
        self.last_depth_ts = 0
        self.data = MarketData()
        # Positions of the available balance in an account's balance list; locked is the next.
        self.base_slot = base_slot
        self.quote_slot = quote_slot

    @property
    def spec(self) -> MarketSpec:
        return msgspec.structs.replace(
            self.rules.spec,
            state=self.state,
            maker_fee_bps=self.maker_bps,
            taker_fee_bps=self.taker_bps,
        )


_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(EngineState)


class _Rejected(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message


class Engine:
    """The single writer of books and balances. Not thread-safe by design: one command at a time."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._markets: dict[str, MarketBook] = {}
        self._market_list: list[MarketBook] = []  # by index, as orders name their market
        self._assets: dict[str, AssetSpec] = {}
        self._asset_slots: dict[str, int] = {}
        self._asset_symbols: list[str] = []
        # account -> [available(asset 0), locked(asset 0), available(asset 1), ...]
        self._balances: dict[int, list[int]] = {}
        self._orders: dict[int, Order] = {}  # resting orders by id
        self._client_ids: dict[tuple[int, int], Order] = {}
        self._open_counts: dict[int, int] = {}
        self._results: dict[str, CommandResult] = {}
        self._result_cache_size = self.config.result_cache_size
        self._order_limit = self.config.order_limit
        self._result_ids: deque[str] = deque()
        self._seq = 0
        self._clock = 0
        self._next_order_id = 1
        self._next_trade_id = 1
        # Order-independent sums of item hashes, kept as state changes (see state_hash()).
        self._orders_hash = 0
        self._balances_hash = 0

    # -- COMMANDS ---------------------------------------------------------------------------

    def execute(self, command: AnyCommand) -> CommandResult:
        """Apply one command and return its result (the stored one for a repeated id)."""
        stored = self._results.get(command.id)
        if stored is not None:
            return msgspec.structs.replace(stored, events=[], duplicate=True)
        # Engine time never goes backwards, whatever the stamps say.
        ts = command.ts if command.ts > self._clock else self._clock
        self._clock = ts
        if command.deadline is not None and ts > command.deadline:
            result = CommandResult(
                command.id, ErrorCode.INVALID_CLIENT_REQUEST, "Request has expired", [], []
            )
        else:
            try:
                result = _HANDLERS[type(command)](self, command, ts)
            except _Rejected as rejection:
                result = CommandResult(command.id, rejection.code, rejection.message, [], [])
        seq = self._seq
        for event in result.events:
            seq += 1
            event.seq = seq
        self._seq = seq
        # A repeated command gets the verdict and orders back, never the events (they were
        # journaled the first time), so only that much is kept: holding every event of the last
        # result_cache_size commands would cost memory and, through it, speed.
        self._remember(
            command.id,
            CommandResult(command.id, result.error, result.message, [], result.orders)
            if result.events
            else result,
        )
        return result

    def _remember(self, command_id: str, result: CommandResult) -> None:
        self._results[command_id] = result
        ids = self._result_ids
        ids.append(command_id)
        if len(ids) > self._result_cache_size:
            del self._results[ids.popleft()]

    def _place_order(self, c: PlaceOrder, ts: int) -> CommandResult:
        mb = self._markets.get(c.market)
        if mb is None:
            raise _Rejected(ErrorCode.INVALID_MARKET, f"Unknown market {c.market}")
        account = c.account
        if account == FEE_ACCOUNT:
            raise _Rejected(ErrorCode.FORBIDDEN, "The fee account cannot trade")
        rules = mb.rules
        is_limit = c.order_type is _LIMIT
        state = mb.state
        if state is not _OPEN:
            if state is _POST_ONLY:
                if not (is_limit and c.post_only):
                    raise _Rejected(ErrorCode.INVALID_ORDER, "Market accepts post-only orders only")
            else:
                raise _Rejected(ErrorCode.TRADING_PAUSED, f"Market is {state.value}")
        price = c.price
        quantity = c.quantity
        quote_quantity = c.quote_quantity
        tif = c.time_in_force
        tick_lot = rules.quote_atoms_per_tick_lot
        lot = rules.base_atoms_per_lot
        if is_limit:
            if price is None or quantity is None or quote_quantity is not None:
                raise _Rejected(ErrorCode.INVALID_ORDER, "A limit order needs price and quantity")
            if price <= 0 or price > rules.max_ticks:
                raise _Rejected(ErrorCode.INVALID_PRICE, "Price out of range")
            if c.post_only and tif is not _GTC:
                raise _Rejected(ErrorCode.INVALID_ORDER, "Post-only orders must be GTC")
        else:
            if price is not None or c.post_only:
                raise _Rejected(
                    ErrorCode.INVALID_ORDER, "A market order takes no price or postOnly"
                )
            if (quantity is None) == (quote_quantity is None):
                raise _Rejected(
                    ErrorCode.INVALID_ORDER, "A market order needs quantity or quoteQuantity"
                )
            if quote_quantity is not None:
                if tif is _FOK:
                    raise _Rejected(ErrorCode.INVALID_ORDER, "FOK needs a quantity")
                if quote_quantity <= 0 or quote_quantity > MAX_BALANCE:
                    raise _Rejected(ErrorCode.INVALID_QUANTITY, "Quote quantity out of range")
                if quote_quantity < rules.min_notional_atoms:
                    raise _Rejected(ErrorCode.INVALID_ORDER, "Order value below minimum")
        if quantity is not None:
            if quantity < rules.min_lots or quantity > rules.max_lots:
                raise _Rejected(ErrorCode.INVALID_QUANTITY, "Quantity out of range")
            if is_limit and price * quantity * tick_lot < rules.min_notional_atoms:  # type: ignore[operator]
                raise _Rejected(ErrorCode.INVALID_ORDER, "Order value below minimum")
        client_id = c.client_id
        if client_id is not None:
            if not 0 <= client_id <= MAX_CLIENT_ID:
                raise _Rejected(ErrorCode.INVALID_CLIENT_REQUEST, "clientId must be a u32")
            if (account, client_id) in self._client_ids:
                raise _Rejected(ErrorCode.INVALID_ORDER, "clientId already used by an open order")
        may_rest = is_limit and tif is _GTC
        if may_rest and self._open_counts.get(account, 0) >= self._order_limit:
            raise _Rejected(ErrorCode.ORDER_LIMIT, "Too many open orders")
        balance = self._balances.get(account)
        if balance is None:
            raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
        is_bid = c.side is _BID
        base_slot = mb.base_slot
        quote_slot = mb.quote_slot
        opposite = mb.asks if is_bid else mb.bids
        best = opposite.best_price()
        # What the order may spend: quote atoms (bids) or, for asks sized in quote, the
        # proceeds wanted plus the base it may sell.
        budget: int | None = None
        base_budget = 0
        if is_bid:
            if is_limit:
                if balance[quote_slot] < price * quantity * tick_lot:  # type: ignore[operator]
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
            else:
                budget = balance[quote_slot] if quote_quantity is None else quote_quantity
                if quote_quantity is not None and balance[quote_slot] < quote_quantity:
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
                if quote_quantity is None and (
                    budget == 0 or (best is not None and budget < best * tick_lot)
                ):
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
        elif quantity is not None:
            if balance[base_slot] < quantity * lot:
                raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
        else:
            budget = quote_quantity
            base_budget = balance[base_slot]
            if base_budget < lot:
                raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
        crosses = best is not None and (
            price is None or (best <= price if is_bid else best >= price)
        )
        if c.post_only and crosses:
            raise _Rejected(ErrorCode.INVALID_ORDER, "Order would immediately match and take")
        fill_or_kill = tif is _FOK and not self._fillable(
            opposite,
            is_bid,
            account,
            c.self_trade_prevention,
            price,
            quantity,  # type: ignore[arg-type]
            budget,
            tick_lot,
        )

        # -- accepted: from here on the command only succeeds --
        order_id = self._next_order_id
        self._next_order_id = order_id + 1
        symbol = c.market
        events: list[AnyEvent] = [
            OrderAccepted(
                0,
                ts,
                order_id,
                account,
                symbol,
                c.side,
                c.order_type,
                tif,
                price,
                quantity,
                quote_quantity,
                client_id,
                c.post_only,
                c.self_trade_prevention,
            )
        ]
        order = Order(
            order_id,
            account,
            is_bid,
            price,
            quantity,
            quantity if quantity is not None else _UNBOUNDED,
            0,
            client_id,
            c.self_trade_prevention,
            tif,
            c.post_only,
            c.order_type,
            quote_quantity,
            ts,
            mb.index,
        )
        stop: CloseReason | None = CloseReason.FILL_OR_KILL if fill_or_kill else None
        filled = 0
        traded_quote = 0
        taker_fees = 0
        touched: dict[int, int] = {}
        if crosses and stop is None:
            filled, traded_quote, taker_fees, stop = self._match(
                mb, order, budget, base_budget, events, touched, ts
            )

        # Settle the taker in one balance change per asset, locking what rests.
        remaining = order.remaining
        rests = may_rest and stop is None and remaining > 0
        if filled:
            if is_bid:
                lock = remaining * price * tick_lot if rests else 0  # type: ignore[operator]
                self._change(
                    events, ts, account, quote_slot, -traded_quote - lock, lock, _ORDER, order_id
                )
                self._change(
                    events, ts, account, base_slot, filled * lot - taker_fees, 0, _ORDER, order_id
                )
            else:
                lock = remaining * lot if rests else 0
                self._change(
                    events, ts, account, base_slot, -filled * lot - lock, lock, _ORDER, order_id
                )
                self._change(
                    events, ts, account, quote_slot, traded_quote - taker_fees, 0, _ORDER, order_id
                )
        elif rests:
            # The common case, a passive order: only a lock (inlined: this is the hot path).
            slot = quote_slot if is_bid else base_slot
            lock = remaining * price * tick_lot if is_bid else remaining * lot  # type: ignore[operator]
            available = balance[slot]
            locked = balance[slot + 1]
            balance[slot] = available - lock
            balance[slot + 1] = locked + lock
            self._balances_hash += hash((account, slot, available - lock, locked + lock)) - hash(
                (account, slot, available, locked)
            )
            events.append(
                BalanceChanged(
                    0,
                    ts,
                    account,
                    self._asset_symbols[slot >> 1],
                    available - lock,
                    locked + lock,
                    -lock,
                    lock,
                    _ORDER,
                    order_id,
                )
            )

        own_level: tuple[tuple[int, int], ...] = ()
        if rests:
            side = mb.bids if is_bid else mb.asks
            level = side.levels.get(price)  # type: ignore[arg-type]
            if level is None:
                level = side.new_level(price)  # type: ignore[arg-type]
            level.orders[order_id] = order
            level.total += remaining
            own_level = ((price, level.total),)  # type: ignore[assignment]
            self._orders[order_id] = order
            self._open_counts[account] = self._open_counts.get(account, 0) + 1
            if client_id is not None:
                self._client_ids[(account, client_id)] = order
            self._orders_hash += hash(
                (order_id, account, mb.index, is_bid, price, remaining, traded_quote, ts)
            )
            status = _PARTIAL if filled else _NEW
        else:
            if remaining == 0 and filled:  # quote-sized: its budget buys no further lot
                status, reason = _FILLED, CloseReason.FILLED
            else:
                status = _EXPIRED
                reason = stop or (
                    CloseReason.IMMEDIATE_OR_CANCEL if is_limit else CloseReason.NO_LIQUIDITY
                )
            events.append(
                OrderClosed(
                    0,
                    ts,
                    order_id,
                    account,
                    symbol,
                    status,
                    reason,
                    filled,
                    traded_quote,
                    c.side,
                    c.order_type,
                    tif,
                    price,
                    quantity,
                    quote_quantity,
                    client_id,
                    c.post_only,
                    c.self_trade_prevention,
                    ts,
                )
            )
        if touched or own_level:
            mb.update_id += 1
            mb.last_depth_ts = ts
            opposite_levels = tuple(touched.items())
            events.append(
                DepthChanged(
                    0,
                    ts,
                    symbol,
                    mb.update_id,
                    own_level if is_bid else opposite_levels,
                    opposite_levels if is_bid else own_level,
                )
            )
        view = OrderView(
            order_id,
            account,
            symbol,
            client_id,
            c.side,
            c.order_type,
            tif,
            price,
            quantity,
            quote_quantity,
            filled,
            traded_quote,
            status,
            c.post_only,
            c.self_trade_prevention,
            ts,
        )
        return CommandResult(c.id, None, "", events, [view])

    def _fillable(
        self,
        opposite: BookSide,
        is_bid: bool,
        account: int,
        stp: SelfTradePrevention,
        price: int | None,
        quantity: int,
        budget: int | None,
        tick_lot: int,
    ) -> bool:
        """Return whether a fill-or-kill order would fill completely (read-only walk)."""
        wanted = quantity
        for level in opposite.iter_levels():
            if price is not None and (level.price > price if is_bid else level.price < price):
                return False
            for maker in level.orders.values():
                if maker.account == account:
                    if stp is _REJECT_MAKER:
                        continue
                    return False
                lots = min(wanted, maker.remaining)
                if budget is not None:
                    budget -= lots * level.price * tick_lot
                    if budget < 0:
                        return False
                wanted -= lots
                if not wanted:
                    return True
        return False

    def _match(
        self,
        mb: MarketBook,
        taker: Order,
        budget: int | None,
        base_budget: int,
        events: list[AnyEvent],
        touched: dict[int, int],
        ts: int,
    ) -> tuple[int, int, int, CloseReason | None]:
        """Fill ``taker`` against the opposite side; return (lots, quote, taker fees, stop)."""
        is_bid = taker.is_bid
        side = mb.asks if is_bid else mb.bids
        keys = side.keys
        levels = side.levels
        rules = mb.rules
        tick_lot = rules.quote_atoms_per_tick_lot
        lot = rules.base_atoms_per_lot
        maker_bps = mb.maker_bps
        taker_bps = mb.taker_bps
        base_slot = mb.base_slot
        quote_slot = mb.quote_slot
        limit = taker.price
        account = taker.account
        stp = taker.stp
        symbol = rules.spec.symbol
        orders = self._orders
        change = self._change
        remaining = taker.remaining
        filled = 0
        traded_quote = 0
        taker_fees = 0
        fee_base = 0
        fee_quote = 0
        first_price = high = low = last_price = 0
        trades = 0
        stop: CloseReason | None = None
        trade_id = self._next_trade_id
        while remaining and keys and stop is None:
            key = keys[-1]
            price = -key if is_bid else key
            if limit is not None and (price > limit if is_bid else price < limit):
                break
            level = levels[price]
            makers = level.orders
            unit = price * tick_lot
            total_before = level.total
            while remaining and makers:
                maker = next(iter(makers.values()))
                if maker.account == account:
                    if stp is not _REJECT_TAKER:
                        self._close_resting(
                            maker,
                            mb,
                            events,
                            ts,
                            _EXPIRED,
                            CloseReason.SELF_TRADE_PREVENTION,
                            drop_empty_level=False,
                        )
                    if stp is not _REJECT_MAKER:
                        stop = CloseReason.SELF_TRADE_PREVENTION
                        break
                    continue
                lots = maker.remaining if maker.remaining < remaining else remaining
                if budget is not None:
                    cap = (budget - traded_quote) // unit
                    out_of_funds = taker.quantity is not None
                    if not is_bid:
                        base_cap = (base_budget - filled * lot) // lot
                        if base_cap < cap:
                            cap = base_cap
                            out_of_funds = True
                    if cap < lots:
                        lots = cap
                        if not lots:
                            # The funds buy no more: the rest expires. A quote-sized order whose
                            # quote budget is what ran out is done (filled).
                            if out_of_funds:
                                stop = CloseReason.INSUFFICIENT_FUNDS
                            else:
                                remaining = 0
                            break
                quote = lots * unit
                base = lots * lot
                if is_bid:  # the maker sells
                    buyer_fee = -(-base * taker_bps // 10_000)
                    seller_fee = -(-quote * maker_bps // 10_000)
                    taker_fees += buyer_fee
                    paid_slot, paid, got_slot, got = base_slot, base, quote_slot, quote - seller_fee
                    buy_id, sell_id, buyer, seller = taker.id, maker.id, account, maker.account
                else:  # the maker buys
                    seller_fee = -(-quote * taker_bps // 10_000)
                    buyer_fee = -(-base * maker_bps // 10_000)
                    taker_fees += seller_fee
                    paid_slot, paid, got_slot, got = quote_slot, quote, base_slot, base - buyer_fee
                    buy_id, sell_id, buyer, seller = maker.id, taker.id, maker.account, account
                # The maker's locked funds go; what it bought comes in, less its fee.
                change(events, ts, maker.account, paid_slot, 0, -paid, _FILL, maker.id)
                change(events, ts, maker.account, got_slot, got, 0, _FILL, maker.id)
                fee_base += buyer_fee
                fee_quote += seller_fee
                events.append(
                    TradeExecuted(
                        0,
                        ts,
                        symbol,
                        trade_id,
                        price,
                        lots,
                        quote,
                        buy_id,
                        sell_id,
                        buyer,
                        seller,
                        not is_bid,
                        buyer_fee,
                        seller_fee,
                    )
                )
                trade_id += 1
                self._orders_hash -= self._order_hash(maker)
                maker.remaining -= lots
                maker.executed_quote += quote
                level.total -= lots
                if maker.remaining:
                    self._orders_hash += self._order_hash(maker)
                else:
                    del makers[maker.id]
                    del orders[maker.id]
                    self._forget_open(maker)
                    events.append(
                        _resting_order_closed(
                            maker,
                            symbol,
                            ts,
                            _FILLED,
                            CloseReason.FILLED,
                            maker.quantity,  # type: ignore[arg-type]
                        )
                    )
                remaining -= lots
                filled += lots
                traded_quote += quote
                if not trades:
                    first_price = high = low = price
                elif is_bid:
                    high = price
                else:
                    low = price
                last_price = price
                trades += 1
            if level.total != total_before:  # a level the order only looked at is unchanged
                touched[price] = level.total
            if not makers:
                side.drop_level(level)
        self._next_trade_id = trade_id
        taker.remaining = remaining
        taker.executed_quote = traded_quote
        if fee_base:
            change(events, ts, FEE_ACCOUNT, base_slot, fee_base, 0, _FEE, taker.id)
        if fee_quote:
            change(events, ts, FEE_ACCOUNT, quote_slot, fee_quote, 0, _FEE, taker.id)
        if trades:
            mb.data.on_trades(ts, first_price, high, low, last_price, filled, traded_quote, trades)
        return filled, traded_quote, taker_fees, stop

    def _cancel_order(self, c: CancelOrder, ts: int) -> CommandResult:
        mb = self._markets.get(c.market)
        if mb is None:
            raise _Rejected(ErrorCode.INVALID_MARKET, f"Unknown market {c.market}")
        if mb.state is _CLOSED:
            raise _Rejected(ErrorCode.TRADING_PAUSED, "Market is Closed")
        if c.order_id is None and c.client_id is None:
            raise _Rejected(ErrorCode.INVALID_CLIENT_REQUEST, "orderId or clientId is required")
        order = self._orders.get(c.order_id) if c.order_id is not None else None
        if c.client_id is not None:
            by_client = self._client_ids.get((c.account, c.client_id))
            if order is None and c.order_id is None:
                order = by_client
            elif by_client is not order:
                order = None
        if order is None or order.account != c.account or order.market != mb.index:
            raise _Rejected(ErrorCode.RESOURCE_NOT_FOUND, "Order not found")
        events: list[AnyEvent] = []
        level = (self._close_resting(order, mb, events, ts, _CANCELLED, CloseReason.USER_CANCEL),)
        if order.is_bid:
            self._depth_event(mb, events, ts, level, ())
        else:
            self._depth_event(mb, events, ts, (), level)
        return CommandResult(c.id, None, "", events, [self._view(order, mb, _CANCELLED)])

    def _cancel_all_orders(self, c: CancelAllOrders, ts: int) -> CommandResult:
        mb = self._markets.get(c.market)
        if mb is None:
            raise _Rejected(ErrorCode.INVALID_MARKET, f"Unknown market {c.market}")
        if mb.state is _CLOSED:
            raise _Rejected(ErrorCode.TRADING_PAUSED, "Market is Closed")
        mine = [
            order
            for order in self._orders.values()
            if order.account == c.account and order.market == mb.index
        ]
        events: list[AnyEvent] = []
        views = self._close_all(mine, mb, events, ts, _CANCELLED, CloseReason.USER_CANCEL)
        return CommandResult(c.id, None, "", events, views)

    def _close_all(
        self,
        orders: list[Order],
        mb: MarketBook,
        events: list[AnyEvent],
        ts: int,
        status: OrderStatus,
        reason: CloseReason,
    ) -> list[OrderView]:
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for order in orders:
            price, total = self._close_resting(order, mb, events, ts, status, reason)
            (bids if order.is_bid else asks)[price] = total
        if orders:
            self._depth_event(mb, events, ts, tuple(bids.items()), tuple(asks.items()))
        return [self._view(order, mb, status) for order in orders]

    def _close_resting(
        self,
        order: Order,
        mb: MarketBook,
        events: list[AnyEvent],
        ts: int,
        status: OrderStatus,
        reason: CloseReason,
        drop_empty_level: bool = True,
    ) -> tuple[int, int]:
        """Take a resting order off the book and unlock what it reserved.

        Return the order's level as ``(price, total)`` after the removal.
        """
        is_bid = order.is_bid
        price: int = order.price  # type: ignore[assignment]
        remaining = order.remaining
        level = (mb.bids if is_bid else mb.asks).remove(order, drop_empty_level)
        self._orders_hash -= hash(
            (
                order.id,
                order.account,
                mb.index,
                is_bid,
                price,
                remaining,
                order.executed_quote,
                order.created_at,
            )
        )
        del self._orders[order.id]
        self._forget_open(order)
        rules = mb.rules
        if is_bid:
            amount = remaining * price * rules.quote_atoms_per_tick_lot
            self._change(
                events, ts, order.account, mb.quote_slot, amount, -amount, _UNLOCK, order.id
            )
        else:
            amount = remaining * rules.base_atoms_per_lot
            self._change(
                events, ts, order.account, mb.base_slot, amount, -amount, _UNLOCK, order.id
            )
        events.append(
            _resting_order_closed(
                order,
                rules.spec.symbol,
                ts,
                status,
                reason,
                order.quantity - remaining,  # type: ignore[operator]
            )
        )
        return price, level.total

    def _forget_open(self, order: Order) -> None:
        count = self._open_counts[order.account] - 1
        if count:
            self._open_counts[order.account] = count
        else:
            del self._open_counts[order.account]
        if order.client_id is not None:
            del self._client_ids[(order.account, order.client_id)]

    def _deposit(self, c: Deposit, ts: int) -> CommandResult:
        slot = self._asset_slot(c.asset)
        if c.account <= FEE_ACCOUNT:
            raise _Rejected(ErrorCode.FORBIDDEN, "Deposits go to user accounts only")
        if c.amount <= 0:
            raise _Rejected(ErrorCode.INVALID_QUANTITY, "Amount must be positive")
        balance = self._balances.get(c.account)
        held = 0 if balance is None else balance[slot] + balance[slot + 1]
        if held + c.amount > MAX_BALANCE:
            raise _Rejected(ErrorCode.INVALID_QUANTITY, "Balance would exceed its maximum")
        events: list[AnyEvent] = []
        self._change(events, ts, c.account, slot, c.amount, 0, BalanceReason.DEPOSIT, c.reference)
        return CommandResult(c.id, None, "", events, [])

    def _withdraw(self, c: Withdraw, ts: int) -> CommandResult:
        slot = self._asset_slot(c.asset)
        if c.amount <= 0:
            raise _Rejected(ErrorCode.INVALID_QUANTITY, "Amount must be positive")
        balance = self._balances.get(c.account)
        if balance is None or balance[slot] < c.amount:
            raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS, "Insufficient funds")
        events: list[AnyEvent] = []
        self._change(
            events, ts, c.account, slot, -c.amount, 0, BalanceReason.WITHDRAWAL, c.reference
        )
        return CommandResult(c.id, None, "", events, [])

    def _add_market(self, c: AddMarket, ts: int) -> CommandResult:
        if c.market.symbol in self._markets:
            raise _Rejected(ErrorCode.INVALID_MARKET, f"Market {c.market.symbol} exists")
        for asset in (c.base, c.quote):
            known = self._assets.get(asset.symbol)
            if known is not None and known.decimals != asset.decimals:
                raise _Rejected(
                    ErrorCode.INVALID_ASSET, f"{asset.symbol} has {known.decimals} decimals"
                )
        try:
            rules = compile_market(c.market, c.base, c.quote)
        except MarketSpecError as exc:
            raise _Rejected(ErrorCode.INVALID_MARKET, str(exc)) from None
        for asset in (c.base, c.quote):
            if asset.symbol not in self._assets:
                slot = 2 * len(self._assets)
                self._assets[asset.symbol] = asset
                self._asset_slots[asset.symbol] = slot
                self._asset_symbols.append(asset.symbol)
                for account, balance in self._balances.items():
                    balance.extend((0, 0))
                    self._balances_hash += hash((account, slot, 0, 0))
        mb = MarketBook(
            rules,
            len(self._market_list),
            self._asset_slots[c.base.symbol],
            self._asset_slots[c.quote.symbol],
        )
        self._markets[rules.spec.symbol] = mb
        self._market_list.append(mb)
        return CommandResult(c.id, None, "", [MarketAdded(0, ts, c.market, c.base, c.quote)], [])

    def _set_market_fees(self, c: SetMarketFees, ts: int) -> CommandResult:
        mb = self._market(c.market)
        for bps in (c.maker_fee_bps, c.taker_fee_bps):
            if not 0 <= bps <= MAX_FEE_BPS:
                raise _Rejected(
                    ErrorCode.INVALID_CLIENT_REQUEST, f"Fees must be 0..{MAX_FEE_BPS} bps"
                )
        mb.maker_bps = c.maker_fee_bps
        mb.taker_bps = c.taker_fee_bps
        event = MarketFeesChanged(0, ts, c.market, c.maker_fee_bps, c.taker_fee_bps)
        return CommandResult(c.id, None, "", [event], [])

    def _set_market_state(self, c: SetMarketState, ts: int) -> CommandResult:
        mb = self._market(c.market)
        mb.state = c.state
        events: list[AnyEvent] = [MarketStateChanged(0, ts, c.market, c.state)]
        if c.state is _CLOSED:
            # A closed market holds nobody's funds: every resting order is expired.
            resting = [o for o in self._orders.values() if o.market == mb.index]
            self._close_all(resting, mb, events, ts, _EXPIRED, CloseReason.MARKET_CLOSED)
        return CommandResult(c.id, None, "", events, [])

    def _tick(self, c: Tick, ts: int) -> CommandResult:
        events: list[AnyEvent] = []
        quiet = self.config.heartbeat_quiet_us
        for mb in self._markets.values():
            mb.data.advance(ts)
            if ts - mb.last_depth_ts >= quiet:
                self._depth_event(mb, events, ts, (), ())
            if mb.data.traded:
                mb.data.traded = False
                events.append(self._market_stats(mb, ts))
        return CommandResult(c.id, None, "", events, [])

    # -- LEDGER -----------------------------------------------------------------------------

    def _change(
        self,
        events: list[AnyEvent],
        ts: int,
        account: int,
        slot: int,
        available_delta: int,
        locked_delta: int,
        reason: BalanceReason,
        reference: int | str,
    ) -> None:
        balance = self._balances.get(account)
        if balance is None:
            balance = self._account(account)
        available = balance[slot]
        locked = balance[slot + 1]
        new_available = available + available_delta
        new_locked = locked + locked_delta
        balance[slot] = new_available
        balance[slot + 1] = new_locked
        self._balances_hash += hash((account, slot, new_available, new_locked)) - hash(
            (account, slot, available, locked)
        )
        events.append(
            BalanceChanged(
                0,
                ts,
                account,
                self._asset_symbol(slot),
                new_available,
                new_locked,
                available_delta,
                locked_delta,
                reason,
                reference,
            )
        )

    def _account(self, account: int) -> list[int]:
        balance = self._balances.get(account)
        if balance is None:
            balance = self._balances[account] = [0] * (2 * len(self._assets))
            self._balances_hash += sum(
                hash((account, slot, 0, 0)) for slot in range(0, len(balance), 2)
            )
        return balance

    def _asset_slot(self, asset: str) -> int:
        slot = self._asset_slots.get(asset)
        if slot is None:
            raise _Rejected(ErrorCode.INVALID_ASSET, f"Unknown asset {asset}")
        return slot

    def _asset_symbol(self, slot: int) -> str:
        return self._asset_symbols[slot >> 1]

    def _market(self, symbol: str) -> MarketBook:
        mb = self._markets.get(symbol)
        if mb is None:
            raise _Rejected(ErrorCode.INVALID_MARKET, f"Unknown market {symbol}")
        return mb

    # -- MARKET DATA ------------------------------------------------------------------------

    def _depth_event(
        self,
        mb: MarketBook,
        events: list[AnyEvent],
        ts: int,
        bids: tuple[tuple[int, int], ...],
        asks: tuple[tuple[int, int], ...],
    ) -> None:
        mb.update_id += 1
        mb.last_depth_ts = ts
        events.append(DepthChanged(0, ts, mb.rules.spec.symbol, mb.update_id, bids, asks))

    def _market_stats(self, mb: MarketBook, ts: int) -> MarketStats:
        return MarketStats(
            0,
            ts,
            mb.rules.spec.symbol,
            mb.data.ticker(ts),
            mb.data.candles(ts),
            self._best(mb.bids),
            self._best(mb.asks),
        )

    @staticmethod
    def _best(side: BookSide) -> tuple[int, int] | None:
        price = side.best_price()
        return None if price is None else (price, side.levels[price].total)

    # -- QUERIES ----------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the last event."""
        return self._seq

    @property
    def clock(self) -> int:
        return self._clock

    def markets(self) -> list[MarketSpec]:
        return [mb.spec for mb in self._markets.values()]

    def market_rules(self, symbol: str) -> MarketRules | None:
        mb = self._markets.get(symbol)
        return None if mb is None else mb.rules

    def assets(self) -> list[AssetSpec]:
        return list(self._assets.values())

    def accounts(self) -> list[int]:
        return list(self._balances)

    def balances(self, account: int) -> dict[str, tuple[int, int]]:
        """Return ``{asset: (available, locked)}`` in atoms for one account."""
        balance = self._balances.get(account)
        if balance is None:
            return {}
        return {sym: (balance[2 * i], balance[2 * i + 1]) for i, sym in enumerate(self._assets)}

    def depth(
        self, market: str, limit: int | None = None
    ) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """Return ``(update_id, bids, asks)``: levels as ``(price, lots)``, best first."""
        mb = self._market_or_key_error(market)
        return mb.update_id, mb.bids.depth(limit), mb.asks.depth(limit)

    def book_ticker(self, market: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        mb = self._market_or_key_error(market)
        return self._best(mb.bids), self._best(mb.asks)

    def market_stats(self, market: str) -> MarketStats:
        """Ticker, candles and best prices as of the engine's clock (seq 0: not an event)."""
        return self._market_stats(self._market_or_key_error(market), self._clock)

    def open_orders(self, account: int, market: str | None = None) -> list[OrderView]:
        views = []
        for order in self._orders.values():
            mb = self._market_list[order.market]
            if order.account == account and (market is None or mb.rules.spec.symbol == market):
                views.append(self._view(order, mb, _PARTIAL if order.executed_quote else _NEW))
        return views

    def open_order_views(self) -> list[OrderView]:
        """Every resting order, as :meth:`open_order` shows it."""
        market_list = self._market_list
        return [
            self._view(order, market_list[order.market], _PARTIAL if order.executed_quote else _NEW)
            for order in self._orders.values()
        ]

    def open_order(self, order_id: int) -> OrderView | None:
        order = self._orders.get(order_id)
        if order is None:
            return None
        return self._view(
            order, self._market_list[order.market], _PARTIAL if order.executed_quote else _NEW
        )

    def resting_orders(self, market: str) -> Iterable[Order]:
        """Every resting order of ``market``: bids best first, then asks best first."""
        mb = self._market_or_key_error(market)
        for side in (mb.bids, mb.asks):
            for level in side.iter_levels():
                yield from level.orders.values()

    def _market_or_key_error(self, market: str) -> MarketBook:
        mb = self._markets.get(market)
        if mb is None:
            raise KeyError(market)
        return mb

    def _view(self, order: Order, mb: MarketBook, status: OrderStatus) -> OrderView:
        return OrderView(
            order.id,
            order.account,
            mb.rules.spec.symbol,
            order.client_id,
            Side.BID if order.is_bid else Side.ASK,
            order.order_type,
            order.tif,
            order.price,
            order.quantity,
            order.quote_quantity,
            order.quantity - order.remaining,  # type: ignore[operator]
            order.executed_quote,
            status,
            order.post_only,
            order.stp,
            order.created_at,
        )

    # -- STATE HASH -------------------------------------------------------------------------

    @staticmethod
    def _order_hash(order: Order) -> int:
        return hash(
            (
                order.id,
                order.account,
                order.market,
                order.is_bid,
                order.price,
                order.remaining,
                order.executed_quote,
                order.created_at,
            )
        )

    def state_hash(self) -> str:
        """Return a canonical hash of the whole state, cheap enough for every journal block.

        Orders and balances enter as order-independent sums of per-item hashes, kept up to date
        as they change (Python's hash of a tuple of ints is deterministic across processes); the
        counters and per-market settings are hashed here. Hex, 16 bytes.
        """
        mask = (1 << 64) - 1
        header = (
            self._seq,
            self._clock,
            self._next_order_id,
            self._next_trade_id,
            self._orders_hash & mask,
            self._balances_hash & mask,
            len(self._results),
            [
                (
                    mb.index,
                    sym,
                    mb.state.value,
                    mb.maker_bps,
                    mb.taker_bps,
                    mb.update_id,
                    mb.last_depth_ts,
                    mb.data.state_key(),
                )
                for sym, mb in self._markets.items()
            ],
        )
        return hashlib.blake2b(msgspec.msgpack.encode(header), digest_size=16).hexdigest()

    def recompute_hash_sums(self) -> tuple[int, int]:
        """Recompute the order and balance hash sums from scratch (for verification)."""
        orders = sum(self._order_hash(o) for o in self._orders.values())
        balances = sum(
            hash((account, slot, balance[slot], balance[slot + 1]))
            for account, balance in self._balances.items()
            for slot in range(0, len(balance), 2)
        )
        return orders, balances

    def hash_sums(self) -> tuple[int, int]:
        return self._orders_hash, self._balances_hash

    # -- SNAPSHOT ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Return the whole state as bytes; ``Engine.restore`` gives back an identical engine."""
        markets = []
        for mb in self._markets.values():
            markets.append(_MarketState(mb.spec, mb.update_id, mb.last_depth_ts, mb.data.dump()))
        state = EngineState(
            SNAPSHOT_VERSION,
            self._seq,
            self._clock,
            self._next_order_id,
            self._next_trade_id,
            list(self._assets.values()),
            markets,
            list(self._balances.items()),
            # In id order, which is also time priority within every level: an order enters the
            # book only when it is placed, with the next id.
            list(self._orders.values()),
            [self._results[command_id] for command_id in self._result_ids],
            self.state_hash(),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, data: bytes, config: EngineConfig | None = None) -> Engine:
        """Return the engine a snapshot was taken of; raise ``ValueError`` if it is corrupt."""
        state = _SNAPSHOT_DECODER.decode(data)
        if state.version != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {state.version}, expected {SNAPSHOT_VERSION}")
        engine = cls(config)
        assets = {asset.symbol: asset for asset in state.assets}
        for asset in state.assets:
            engine._asset_slots[asset.symbol] = 2 * len(engine._assets)
            engine._assets[asset.symbol] = asset
            engine._asset_symbols.append(asset.symbol)
        for index, market in enumerate(state.markets):
            spec = market.spec
            rules = compile_market(spec, assets[spec.base], assets[spec.quote])
            mb = MarketBook(
                rules, index, engine._asset_slots[spec.base], engine._asset_slots[spec.quote]
            )
            mb.update_id = market.update_id
            mb.last_depth_ts = market.last_depth_ts
            mb.data = MarketData.load(market.market_data)
            engine._markets[spec.symbol] = mb
            engine._market_list.append(mb)
        markets = engine._market_list
        orders = engine._orders
        open_counts = engine._open_counts
        for order in state.orders:
            mb = markets[order.market]
            (mb.bids if order.is_bid else mb.asks).add(order)
            orders[order.id] = order
            open_counts[order.account] = open_counts.get(order.account, 0) + 1
            if order.client_id is not None:
                engine._client_ids[(order.account, order.client_id)] = order
        engine._balances = {account: list(balance) for account, balance in state.balances}
        for result in state.results:
            engine._remember(result.command_id, result)
        engine._seq = state.seq
        engine._clock = state.clock
        engine._next_order_id = state.next_order_id
        engine._next_trade_id = state.next_trade_id
        engine._orders_hash, engine._balances_hash = engine.recompute_hash_sums()
        if engine.state_hash() != state.state_hash:
            raise ValueError("snapshot state hash does not match its contents")
        return engine


def _resting_order_closed(
    order: Order,
    symbol: str,
    ts: int,
    status: OrderStatus,
    reason: CloseReason,
    executed_quantity: int,
) -> OrderClosed:
    """The event of a book order that is done, with its terms (filled, cancelled, expired)."""
    return OrderClosed(
        0,
        ts,
        order.id,
        order.account,
        symbol,
        status,
        reason,
        executed_quantity,
        order.executed_quote,
        _SIDES[order.is_bid],
        order.order_type,
        order.tif,
        order.price,
        order.quantity,
        order.quote_quantity,
        order.client_id,
        order.post_only,
        order.stp,
        order.created_at,
    )


# Command type -> handler, kept outside the instance so an engine holds no reference to itself.
_HANDLERS: dict[type, Callable[[Engine, Any, int], CommandResult]] = {
    PlaceOrder: Engine._place_order,
    CancelOrder: Engine._cancel_order,
    CancelAllOrders: Engine._cancel_all_orders,
    Deposit: Engine._deposit,
    Withdraw: Engine._withdraw,
    AddMarket: Engine._add_market,
    SetMarketFees: Engine._set_market_fees,
    SetMarketState: Engine._set_market_state,
    Tick: Engine._tick,
}
