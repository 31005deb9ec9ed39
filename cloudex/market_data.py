"""The market-data messages the engine service hands the WebSocket fan-out (``ws_fanout``).

One definition for both sides: the engine's publisher builds them, :func:`encode_update` turns
them into the Lambda Invoke payload (JSON, as a Lambda payload must be), and the fan-out
decodes them with :func:`decode_update`. Values are the engine's integers (ticks, lots, atoms,
µs); the fan-out formats them with :mod:`cloudex.views`.
"""

from __future__ import annotations

from typing import Union

import msgspec

from cloudex.messages import (
    BalanceChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    OrderView,
    TradeExecuted,
)

__all__ = [
    "OrderFilled",
    "PrivateEvent",
    "MarketUpdate",
    "PrivateUpdate",
    "FanoutShard",
    "Update",
    "encode_update",
    "decode_update",
]


class OrderFilled(msgspec.Struct, tag=True, array_like=True, gc=False):
    """One order's part in a trade, with the order as it stands after it: an ``orderFill``
    needs the order's terms and cumulative amounts, which the trade does not carry."""

    order: OrderView
    trade: TradeExecuted


PrivateEvent = Union[OrderAccepted, OrderFilled, OrderClosed, BalanceChanged]  # noqa: UP007


class MarketUpdate(msgspec.Struct, tag=True, kw_only=True):
    """Public market data of one market since its last delivery.

    ``first_update_id..last_update_id`` is the depth range (``0..0``: depth did not change);
    ``bids``/``asks`` map price ticks to absolute lots (``0`` removes the level); ``trades`` in
    order; ``stats`` the latest. ``ts`` is the engine time of the newest event merged,
    ``since`` that of the oldest (the lag a subscriber sees starts there).
    """

    market: str
    first_update_id: int = 0
    last_update_id: int = 0
    bids: dict[int, int] = msgspec.field(default_factory=dict)
    asks: dict[int, int] = msgspec.field(default_factory=dict)
    trades: list[TradeExecuted] = msgspec.field(default_factory=list)
    stats: MarketStats | None = None
    ts: int = 0
    since: int = 0
    first_seq: int = 0  # of the oldest event merged (the publisher's delivery watermark)

    @property
    def key(self) -> str:
        return self.market


class PrivateUpdate(msgspec.Struct, tag=True, kw_only=True):
    """Every account's private events since the last delivery, in order per account. All
    accounts share one delivery (the fan-out looks each one's connections up), so a batch
    touching a thousand accounts makes one invocation, not a thousand."""

    accounts: dict[int, list[PrivateEvent]] = msgspec.field(default_factory=dict)
    dropped: int = 0  # events a slow fan-out made the publisher drop (counted, logged)
    first_seq: int = 0

    key = "private"


class FanoutShard(msgspec.Struct, tag=True, kw_only=True):
    """Part of one delivery, handed by a fan-out invocation to another so that large
    audiences are posted to in parallel: ``messages`` once, and per connection the indexes of
    the messages it gets, in order."""

    messages: list[str]
    deliveries: list[tuple[str, list[int]]]


Update = Union[MarketUpdate, PrivateUpdate, FanoutShard]  # noqa: UP007

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Update)


def encode_update(update: Update) -> bytes:
    return _encoder.encode(update)


def decode_update(payload: bytes | str) -> Update:
    return _decoder.decode(payload)
