"""A small, deliberately naive reference matcher for differential tests of the engine core.

It shares no code with ``engine_service``: only the message, enum and market-rule types of the
``cloudex`` package. Everything is done the slow, obvious way:

* resting orders are one plain list in arrival order; the best maker is found by scanning it
  for the best price and, among equal prices, the earliest arrival;
* every fill moves funds at once, with the arithmetic written out per fill;
* fill-or-kill is decided by matching on a copy of the state and keeping the copy only if the
  order filled completely.

Units (as in the engine): prices in ticks, quantities in lots, balances in asset atoms. A resting
bid reserves ``remaining * price * quote_atoms_per_tick_lot`` quote atoms, a resting ask
``remaining * base_atoms_per_lot`` base atoms. A taker pays from its available balance at the
makers' prices and only what rests is locked, at the order's limit price. Fees are charged per
fill, rounded up, in the asset the payer receives, and credited to account 0.

Supported commands: Deposit, Withdraw, PlaceOrder (limit GTC/IOC/FOK with postOnly, market by
quantity or quote quantity; all three self-trade-prevention modes), CancelOrder by order id,
CancelAllOrders, SetMarketFees and Tick (a no-op here), on markets in the ``Open`` state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloudex.enums import (
    ErrorCode,
    MarketState,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.markets import MAX_FEE_BPS, MarketRules
from cloudex.messages import (
    CancelAllOrders,
    CancelOrder,
    Deposit,
    PlaceOrder,
    SetMarketFees,
    Tick,
    Withdraw,
)

__all__ = ["FEE_ACCOUNT", "RefOrder", "RefTrade", "RefResult", "ReferenceExchange"]

FEE_ACCOUNT = 0
MAX_BALANCE = 2**63 - 1
MAX_CLIENT_ID = 2**32 - 1


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _priority(order: RefOrder) -> tuple[int, int]:
    """Smaller is better: the highest bid or lowest ask, then the earliest arrival."""
    return (-order.price if order.is_bid else order.price, order.arrival)


@dataclass
class RefOrder:
    order_id: int
    account: int
    market: str
    is_bid: bool
    price: int
    quantity: int
    remaining: int
    client_id: int | None
    arrival: int  # position in time priority: smaller came first


@dataclass(frozen=True)
class RefTrade:
    trade_id: int
    market: str
    price: int
    quantity: int
    quote_quantity: int
    buy_order_id: int
    sell_order_id: int
    buyer: int
    seller: int
    buyer_fee: int
    seller_fee: int


@dataclass
class RefResult:
    error: ErrorCode | None = None
    order_id: int | None = None  # the id given to an accepted order
    status: OrderStatus | None = None  # an accepted order's status after the command
    trades: list[RefTrade] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Rejected(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _State:
    """Everything a command can change (copied whole for fill-or-kill trials)."""

    balances: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # [avail, locked]
    orders: list[RefOrder] = field(default_factory=list)  # resting, in arrival order
    next_order_id: int = 1
    next_trade_id: int = 1
    next_arrival: int = 1


class ReferenceExchange:
    def __init__(self, markets: Iterable[MarketRules], order_limit: int = 500) -> None:
        self.rules: dict[str, MarketRules] = {rules.symbol: rules for rules in markets}
        self.fees: dict[str, tuple[int, int]] = {
            symbol: (rules.spec.maker_fee_bps, rules.spec.taker_fee_bps)
            for symbol, rules in self.rules.items()
        }
        self.assets: set[str] = set()
        for rules in self.rules.values():
            self.assets.add(rules.base.symbol)
            self.assets.add(rules.quote.symbol)
        self.order_limit = order_limit
        self.state = _State()

    # -- queries ----------------------------------------------------------------------------

    def balance(self, account: int, asset: str) -> tuple[int, int]:
        """Return ``(available, locked)``."""
        available, locked = self.state.balances.get((account, asset), [0, 0])
        return available, locked

    def orders(self) -> list[RefOrder]:
        return list(self.state.orders)

    def book(self, market: str) -> list[RefOrder]:
        """Resting orders of ``market``: bids best first, then asks best first (then by time)."""
        bids = [o for o in self.state.orders if o.market == market and o.is_bid]
        asks = [o for o in self.state.orders if o.market == market and not o.is_bid]
        bids.sort(key=lambda o: (-o.price, o.arrival))
        asks.sort(key=lambda o: (o.price, o.arrival))
        return bids + asks

    @property
    def next_order_id(self) -> int:
        return self.state.next_order_id

    # -- commands ---------------------------------------------------------------------------

    def execute(self, command: object) -> RefResult:
        handlers = {
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            CancelAllOrders: self._cancel_all,
            SetMarketFees: self._set_fees,
            Tick: self._tick,
        }
        handler = handlers.get(type(command))
        if handler is None:
            raise NotImplementedError(f"reference matcher does not model {type(command).__name__}")
        try:
            return handler(command)
        except _Rejected as rejection:
            return RefResult(error=rejection.code)

    def _deposit(self, c: Deposit) -> RefResult:
        if c.asset not in self.assets:
            raise _Rejected(ErrorCode.INVALID_ASSET)
        if c.account <= FEE_ACCOUNT:
            raise _Rejected(ErrorCode.FORBIDDEN)
        if c.amount <= 0:
            raise _Rejected(ErrorCode.INVALID_QUANTITY)
        available, locked = self.balance(c.account, c.asset)
        if available + locked + c.amount > MAX_BALANCE:
            raise _Rejected(ErrorCode.INVALID_QUANTITY)
        self._move(c.account, c.asset, available=c.amount)
        return RefResult()

    def _withdraw(self, c: Withdraw) -> RefResult:
        if c.asset not in self.assets:
            raise _Rejected(ErrorCode.INVALID_ASSET)
        if c.amount <= 0:
            raise _Rejected(ErrorCode.INVALID_QUANTITY)
        available, _ = self.balance(c.account, c.asset)
        if available < c.amount:
            raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
        self._move(c.account, c.asset, available=-c.amount)
        return RefResult()

    def _tick(self, c: Tick) -> RefResult:
        return RefResult()  # heartbeats and market statistics: no book or balance changes

    def _set_fees(self, c: SetMarketFees) -> RefResult:
        if c.market not in self.rules:
            raise _Rejected(ErrorCode.INVALID_MARKET)
        for bps in (c.maker_fee_bps, c.taker_fee_bps):
            if not 0 <= bps <= MAX_FEE_BPS:
                raise _Rejected(ErrorCode.INVALID_CLIENT_REQUEST)
        self.fees[c.market] = (c.maker_fee_bps, c.taker_fee_bps)
        return RefResult()

    def _cancel(self, c: CancelOrder) -> RefResult:
        if c.market not in self.rules:
            raise _Rejected(ErrorCode.INVALID_MARKET)
        if c.order_id is None or c.client_id is not None:
            raise NotImplementedError("reference matcher cancels by order id only")
        for order in self.state.orders:
            mine = order.account == c.account and order.market == c.market
            if order.order_id == c.order_id and mine:
                self._take_off_book(order)
                return RefResult()
        raise _Rejected(ErrorCode.RESOURCE_NOT_FOUND)

    def _cancel_all(self, c: CancelAllOrders) -> RefResult:
        if c.market not in self.rules:
            raise _Rejected(ErrorCode.INVALID_MARKET)
        mine = [o for o in self.state.orders if o.account == c.account and o.market == c.market]
        for order in mine:
            self._take_off_book(order)
        return RefResult()

    def _place(self, c: PlaceOrder) -> RefResult:
        # Validation, in the engine's order. Nothing changes until every check has passed.
        rules = self.rules.get(c.market)
        if rules is None:
            raise _Rejected(ErrorCode.INVALID_MARKET)
        if c.account == FEE_ACCOUNT:
            raise _Rejected(ErrorCode.FORBIDDEN)
        if rules.spec.state != MarketState.OPEN:
            raise NotImplementedError("reference matcher models open markets only")
        is_limit = c.order_type == OrderType.LIMIT
        is_bid = c.side == Side.BID
        tif = c.time_in_force
        price, quantity, quote_quantity = c.price, c.quantity, c.quote_quantity
        lot = rules.base_atoms_per_lot
        tick_lot = rules.quote_atoms_per_tick_lot
        if is_limit:
            if price is None or quantity is None or quote_quantity is not None:
                raise _Rejected(ErrorCode.INVALID_ORDER)
            if price <= 0 or price > rules.max_ticks:
                raise _Rejected(ErrorCode.INVALID_PRICE)
            if c.post_only and tif != TimeInForce.GTC:
                raise _Rejected(ErrorCode.INVALID_ORDER)
        else:
            if price is not None or c.post_only:
                raise _Rejected(ErrorCode.INVALID_ORDER)
            if (quantity is None) == (quote_quantity is None):
                raise _Rejected(ErrorCode.INVALID_ORDER)
            if quote_quantity is not None:
                if tif == TimeInForce.FOK:
                    raise _Rejected(ErrorCode.INVALID_ORDER)
                if quote_quantity <= 0 or quote_quantity > MAX_BALANCE:
                    raise _Rejected(ErrorCode.INVALID_QUANTITY)
                if quote_quantity < rules.min_notional_atoms:
                    raise _Rejected(ErrorCode.INVALID_ORDER)
        if quantity is not None:
            if quantity < rules.min_lots or quantity > rules.max_lots:
                raise _Rejected(ErrorCode.INVALID_QUANTITY)
            if is_limit and price * quantity * tick_lot < rules.min_notional_atoms:
                raise _Rejected(ErrorCode.INVALID_ORDER)
        if c.client_id is not None:
            if not 0 <= c.client_id <= MAX_CLIENT_ID:
                raise _Rejected(ErrorCode.INVALID_CLIENT_REQUEST)
            for order in self.state.orders:
                if order.account == c.account and order.client_id == c.client_id:
                    raise _Rejected(ErrorCode.INVALID_ORDER)
        may_rest = is_limit and tif == TimeInForce.GTC
        if may_rest:
            open_orders = [o for o in self.state.orders if o.account == c.account]
            if len(open_orders) >= self.order_limit:
                raise _Rejected(ErrorCode.ORDER_LIMIT)
        base_available, _ = self.balance(c.account, rules.base.symbol)
        quote_available, _ = self.balance(c.account, rules.quote.symbol)
        best = self._best_maker(c.market, makers_are_bids=not is_bid)
        if is_bid:
            if is_limit:
                if quote_available < price * quantity * tick_lot:
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
            elif quantity is not None:
                # Needs some quote, and at least one lot's worth at the best ask.
                if quote_available == 0:
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
                if best is not None and quote_available < best.price * tick_lot:
                    raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
            elif quote_available < quote_quantity:
                raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
        elif quantity is not None:
            if base_available < quantity * lot:
                raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
        elif base_available < lot:
            raise _Rejected(ErrorCode.INSUFFICIENT_FUNDS)
        crosses = best is not None and (
            price is None or (best.price <= price if is_bid else best.price >= price)
        )
        if c.post_only and crosses:
            raise _Rejected(ErrorCode.INVALID_ORDER)

        # Accepted: the order gets an id whatever happens next.
        order_id = self.state.next_order_id
        self.state.next_order_id += 1
        before = copy.deepcopy(self.state) if tif == TimeInForce.FOK else None
        trades, filled, stop = self._match(c, rules, order_id)
        if before is not None and filled != quantity:
            # Fill or kill: not completely fillable, so nothing happened (but the id is used).
            self.state = before
            return RefResult(order_id=order_id, status=OrderStatus.EXPIRED)
        remaining = quantity - filled if quantity is not None else 0
        if quantity is not None:
            status = OrderStatus.FILLED if remaining == 0 else OrderStatus.EXPIRED
        else:
            # Sized in quote: filled when (having bought or sold something) the quote amount is
            # what ran out; expired when the book, the base to sell or the STP rule stopped it.
            done = stop == "quote" and filled > 0
            status = OrderStatus.FILLED if done else OrderStatus.EXPIRED
        if may_rest and stop is None and remaining > 0:
            status = OrderStatus.PARTIALLY_FILLED if filled else OrderStatus.NEW
            if is_bid:
                self._move(
                    c.account,
                    rules.quote.symbol,
                    available=-remaining * price * tick_lot,
                    locked=remaining * price * tick_lot,
                )
            else:
                self._move(
                    c.account, rules.base.symbol, available=-remaining * lot, locked=remaining * lot
                )
            self.state.orders.append(
                RefOrder(
                    order_id=order_id,
                    account=c.account,
                    market=c.market,
                    is_bid=is_bid,
                    price=price,
                    quantity=quantity,
                    remaining=remaining,
                    client_id=c.client_id,
                    arrival=self.state.next_arrival,
                )
            )
            self.state.next_arrival += 1
        return RefResult(order_id=order_id, status=status, trades=trades)

    # -- matching ---------------------------------------------------------------------------

    def _best_maker(self, market: str, makers_are_bids: bool) -> RefOrder | None:
        """Scan every resting order for the best one on one side: best price, then earliest."""
        best: RefOrder | None = None
        for order in self.state.orders:
            if order.market != market or order.is_bid != makers_are_bids:
                continue
            if best is None or _priority(order) < _priority(best):
                best = order
        return best

    def _match(
        self, c: PlaceOrder, rules: MarketRules, order_id: int
    ) -> tuple[list[RefTrade], int, str | None]:
        """Match the incoming order; return (trades, lots filled, what stopped it early).

        The stop is ``"stp"`` (self-trade prevention stopped the taker), ``"quote"`` (a
        quote-sized order's quote amount buys or sells no further lot), ``"funds"`` (the
        taker's balance pays for or delivers no further lot) or None (filled, limit price
        reached, or book exhausted).
        """
        is_bid = c.side == Side.BID
        lot = rules.base_atoms_per_lot
        tick_lot = rules.quote_atoms_per_tick_lot
        trades: list[RefTrade] = []
        filled = 0
        quote_traded = 0
        while c.quantity is None or filled < c.quantity:
            maker = self._best_maker(c.market, makers_are_bids=not is_bid)
            if maker is None:
                break
            if c.price is not None and (maker.price > c.price if is_bid else maker.price < c.price):
                break
            if maker.account == c.account:
                stp = c.self_trade_prevention
                if stp in (SelfTradePrevention.REJECT_MAKER, SelfTradePrevention.REJECT_BOTH):
                    self._take_off_book(maker)
                if stp in (SelfTradePrevention.REJECT_TAKER, SelfTradePrevention.REJECT_BOTH):
                    return trades, filled, "stp"
                continue
            unit = maker.price * tick_lot  # quote atoms per lot at the maker's price
            lots = maker.remaining
            if c.quantity is not None:
                lots = min(lots, c.quantity - filled)
            # Market orders are also bounded by money (limit orders had all of it up front).
            if c.order_type == OrderType.MARKET:
                if c.quote_quantity is not None:
                    by_quote = (c.quote_quantity - quote_traded) // unit
                    if by_quote == 0:
                        return trades, filled, "quote"  # later makers are no cheaper
                    lots = min(lots, by_quote)
                if is_bid:
                    affordable = self.balance(c.account, rules.quote.symbol)[0] // unit
                else:
                    affordable = self.balance(c.account, rules.base.symbol)[0] // lot
                if affordable == 0:
                    return trades, filled, "funds"
                lots = min(lots, affordable)
            trade = self._fill(rules, maker, c.account, order_id, is_bid, lots)
            trades.append(trade)
            filled += lots
            quote_traded += trade.quote_quantity
        return trades, filled, None

    def _fill(
        self,
        rules: MarketRules,
        maker: RefOrder,
        taker_account: int,
        taker_id: int,
        taker_is_bid: bool,
        lots: int,
    ) -> RefTrade:
        """One fill at the maker's price, settled at once for both sides and the fee account."""
        assert 0 < lots <= maker.remaining
        base_asset, quote_asset = rules.base.symbol, rules.quote.symbol
        base = lots * rules.base_atoms_per_lot
        quote = lots * maker.price * rules.quote_atoms_per_tick_lot
        maker_bps, taker_bps = self.fees[maker.market]
        if taker_is_bid:
            buyer, seller = taker_account, maker.account
            buy_id, sell_id = taker_id, maker.order_id
            buyer_fee = ceil_div(base * taker_bps, 10_000)
            seller_fee = ceil_div(quote * maker_bps, 10_000)
            self._move(buyer, quote_asset, available=-quote)  # the taker pays from available
            self._move(seller, base_asset, locked=-base)  # the maker delivers what it reserved
        else:
            buyer, seller = maker.account, taker_account
            buy_id, sell_id = maker.order_id, taker_id
            buyer_fee = ceil_div(base * maker_bps, 10_000)
            seller_fee = ceil_div(quote * taker_bps, 10_000)
            self._move(buyer, quote_asset, locked=-quote)  # the maker pays what it reserved
            self._move(seller, base_asset, available=-base)  # the taker delivers from available
        self._move(buyer, base_asset, available=base - buyer_fee)
        self._move(seller, quote_asset, available=quote - seller_fee)
        self._move(FEE_ACCOUNT, base_asset, available=buyer_fee)
        self._move(FEE_ACCOUNT, quote_asset, available=seller_fee)
        maker.remaining -= lots
        if maker.remaining == 0:
            self.state.orders.remove(maker)
        trade = RefTrade(
            trade_id=self.state.next_trade_id,
            market=maker.market,
            price=maker.price,
            quantity=lots,
            quote_quantity=quote,
            buy_order_id=buy_id,
            sell_order_id=sell_id,
            buyer=buyer,
            seller=seller,
            buyer_fee=buyer_fee,
            seller_fee=seller_fee,
        )
        self.state.next_trade_id += 1
        return trade

    # -- ledger -----------------------------------------------------------------------------

    def reserved(self, order: RefOrder) -> tuple[str, int]:
        """The asset and amount a resting order keeps locked."""
        rules = self.rules[order.market]
        if order.is_bid:
            quote = order.remaining * order.price * rules.quote_atoms_per_tick_lot
            return rules.quote.symbol, quote
        return rules.base.symbol, order.remaining * rules.base_atoms_per_lot

    def _take_off_book(self, order: RefOrder) -> None:
        asset, amount = self.reserved(order)
        self._move(order.account, asset, available=amount, locked=-amount)
        self.state.orders.remove(order)

    def _move(self, account: int, asset: str, available: int = 0, locked: int = 0) -> None:
        balance = self.state.balances.setdefault((account, asset), [0, 0])
        balance[0] += available
        balance[1] += locked
        if balance[0] < 0 or balance[1] < 0:
            raise AssertionError(f"reference matcher: negative balance {account} {asset} {balance}")
