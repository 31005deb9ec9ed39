"""Wire messages: the one definition of every command, event and result.

Commands go to the engine (``orders.fifo``), events come out of it (``events.fifo``, the journal),
results answer each command (its reply channel). All amounts are integers: prices in ticks,
quantities in lots, balances and notionals in asset atoms (see :mod:`cloudex.markets`). Times are
integer microseconds since the epoch, stamped by the engine service, never read by the engine.

Messages are msgspec Structs, tagged with their class name and encoded as arrays, so a journal
block of many events stays small. :func:`encode` / the ``decode_*`` helpers are the codecs.
"""

from __future__ import annotations

from typing import Annotated, Union

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
from cloudex.markets import AssetSpec, MarketSpec

__all__ = [
    "Command",
    "Deposit",
    "Withdraw",
    "PlaceOrder",
    "CancelOrder",
    "CancelAllOrders",
    "AddMarket",
    "SetMarketFees",
    "SetMarketState",
    "Tick",
    "AnyCommand",
    "Event",
    "OrderAccepted",
    "OrderClosed",
    "TradeExecuted",
    "BalanceChanged",
    "DepthChanged",
    "MarketAdded",
    "MarketFeesChanged",
    "MarketStateChanged",
    "MarketStats",
    "Candle",
    "Ticker",
    "AnyEvent",
    "OrderView",
    "CommandResult",
    "encode",
    "decode_command",
    "decode_event",
    "decode_result",
    "encode_command_body",
    "decode_command_body",
]


# -- COMMANDS ---------------------------------------------------------------------------------

# Every integer a command carries must fit the signed 64 bits of the journal and the caches:
# checked when a command is decoded, so an out-of-range one is a malformed command, answered
# and dropped, never one the engine accepts and then cannot journal.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Command(msgspec.Struct, tag=True, array_like=True, kw_only=True, gc=False):
    """Base of every command.

    ``id`` is unique per command (the API derives it from the signed request, so a resend has
    the same id); ``ts`` is the engine service's time when it took the command off the queue;
    ``deadline`` (optional) is the last ``ts`` at which the command may still take effect.
    """

    id: str
    ts: Int64
    deadline: Int64 | None = None


class Deposit(Command, kw_only=True):
    account: Int64
    asset: str
    amount: Int64
    reference: str = ""


class Withdraw(Command, kw_only=True):
    account: Int64
    asset: str
    amount: Int64
    reference: str = ""


class PlaceOrder(Command, kw_only=True):
    """Place a Limit (price, quantity) or Market (quantity or quote_quantity) order."""

    account: Int64
    market: str
    side: Side
    order_type: OrderType
    quantity: Int64 | None = None
    price: Int64 | None = None
    quote_quantity: Int64 | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    client_id: Int64 | None = None
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.REJECT_TAKER


class CancelOrder(Command, kw_only=True):
    """Cancel one open order, by ``order_id`` or ``client_id`` (if both, they must agree)."""

    account: Int64
    market: str
    order_id: Int64 | None = None
    client_id: Int64 | None = None


class CancelAllOrders(Command, kw_only=True):
    account: Int64
    market: str


class AddMarket(Command, kw_only=True):
    market: MarketSpec
    base: AssetSpec
    quote: AssetSpec


class SetMarketFees(Command, kw_only=True):
    market: str
    maker_fee_bps: Int64
    taker_fee_bps: Int64


class SetMarketState(Command, kw_only=True):
    market: str
    state: MarketState


class Tick(Command, kw_only=True):
    """The service's heartbeat: quiet books emit sequenced heartbeats, market stats go out."""


AnyCommand = Union[  # noqa: UP007 (a runtime value, used by msgspec)
    Deposit,
    Withdraw,
    PlaceOrder,
    CancelOrder,
    CancelAllOrders,
    AddMarket,
    SetMarketFees,
    SetMarketState,
    Tick,
]


# -- EVENTS -----------------------------------------------------------------------------------


class Event(msgspec.Struct, tag=True, array_like=True, gc=False):
    """Base of every event: ``seq`` is global and gap-free, ``ts`` the command's time."""

    seq: int
    ts: int


class OrderAccepted(Event):
    """An order passed validation. Status is ``New`` until a trade or :class:`OrderClosed`."""

    order_id: int
    account: int
    market: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    quantity: int | None
    quote_quantity: int | None
    client_id: int | None
    post_only: bool
    self_trade_prevention: SelfTradePrevention


class TradeExecuted(Event):
    """A fill between a resting (maker) and an incoming (taker) order, at the maker's price.

    The buyer's fee is in base atoms, the seller's in quote atoms (each pays in what it receives).
    """

    market: str
    trade_id: int
    price: int
    quantity: int
    quote_quantity: int
    buy_order_id: int
    sell_order_id: int
    buyer: int
    seller: int
    is_buyer_maker: bool
    buyer_fee: int
    seller_fee: int


class OrderClosed(Event):
    """An order is done: filled, cancelled or expired. Its remaining funds are unlocked.

    It carries the order's terms too, so a closed order is complete without its
    :class:`OrderAccepted` (which may be long gone from every cache): the recently-closed lists,
    the order read models and the WebSocket order updates are built from this event alone.
    """

    order_id: int
    account: int
    market: str
    status: OrderStatus
    reason: CloseReason
    executed_quantity: int
    executed_quote_quantity: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    quantity: int | None
    quote_quantity: int | None
    client_id: int | None
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    created_at: int


class BalanceChanged(Event):
    """One account's balance of one asset after a change, with the change itself."""

    account: int
    asset: str
    available: int
    locked: int
    available_delta: int
    locked_delta: int
    reason: BalanceReason
    reference: int | str  # the order id for trading changes, the caller's reference otherwise


class DepthChanged(Event):
    """Absolute quantities of the levels a command changed (``0`` removes the level).

    ``update_id`` is the market's depth sequence, shared with the REST ``lastUpdateId``; a
    heartbeat has no levels and still takes an id.
    """

    market: str
    update_id: int
    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]


class MarketAdded(Event):
    market: MarketSpec
    base: AssetSpec
    quote: AssetSpec


class MarketFeesChanged(Event):
    market: str
    maker_fee_bps: int
    taker_fee_bps: int


class MarketStateChanged(Event):
    market: str
    state: MarketState


class Candle(msgspec.Struct, array_like=True, gc=False):
    interval: str
    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int  # lots
    quote_volume: int  # quote atoms
    trades: int


class Ticker(msgspec.Struct, array_like=True, gc=False):
    """Rolling 24 h statistics (minute resolution). Prices are ticks; ``None`` if no trade."""

    first_price: int | None
    last_price: int | None
    high: int | None
    low: int | None
    volume: int
    quote_volume: int
    trades: int


class MarketStats(Event):
    """Market-data state the engine owns, sent on a tick for markets that traded since the last."""

    market: str
    ticker: Ticker
    candles: list[Candle]
    best_bid: tuple[int, int] | None
    best_ask: tuple[int, int] | None


AnyEvent = Union[  # noqa: UP007 (a runtime value, used by msgspec)
    OrderAccepted,
    TradeExecuted,
    OrderClosed,
    BalanceChanged,
    DepthChanged,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    MarketStats,
]


# -- RESULTS ----------------------------------------------------------------------------------


class OrderView(msgspec.Struct, array_like=True, gc=False):
    """An order as it stands after a command: what the API returns to its owner."""

    order_id: int
    account: int
    market: str
    client_id: int | None
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    quantity: int | None
    quote_quantity: int | None
    executed_quantity: int
    executed_quote_quantity: int
    status: OrderStatus
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    created_at: int


class CommandResult(msgspec.Struct, array_like=True, gc=False):
    """The answer to one command: accepted with its events, or rejected with a Backpack code.

    ``duplicate`` marks the stored result of a command id seen before; it carries no events,
    since they were journaled the first time.
    """

    command_id: str
    error: ErrorCode | None
    message: str
    events: list[AnyEvent]
    orders: list[OrderView]
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


# -- CODECS -----------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_command_decoder: msgspec.msgpack.Decoder[AnyCommand] = msgspec.msgpack.Decoder(AnyCommand)
_event_decoder: msgspec.msgpack.Decoder[AnyEvent] = msgspec.msgpack.Decoder(AnyEvent)
_result_decoder = msgspec.msgpack.Decoder(CommandResult)


def encode(message: msgspec.Struct | list[AnyEvent]) -> bytes:
    """Return the msgpack bytes of a command, an event, a list of events or a result."""
    return _encoder.encode(message)


def decode_command(data: bytes) -> AnyCommand:
    return _command_decoder.decode(data)


def decode_event(data: bytes) -> AnyEvent:
    return _event_decoder.decode(data)


def decode_result(data: bytes) -> CommandResult:
    return _result_decoder.decode(data)


# Commands travel on ``orders.fifo`` as JSON text (SQS bodies are text): the same array form.
_json_encoder = msgspec.json.Encoder()
_command_json_decoder: msgspec.json.Decoder[AnyCommand] = msgspec.json.Decoder(AnyCommand)


def encode_command_body(command: Command) -> str:
    """The ``orders.fifo`` message body of a command."""
    return _json_encoder.encode(command).decode()


def decode_command_body(body: str | bytes) -> AnyCommand:
    """Decode an ``orders.fifo`` body; raise ``msgspec.DecodeError`` / ``ValidationError``."""
    return _command_json_decoder.decode(body)
