"""The Redis read cache: what the engine service writes and the REST API reads.

Values are msgpack of the engine's own types (:mod:`cloudex.messages`), not Backpack JSON: the
engine is one process and every microsecond of it counts, while the API scales out, so the API
formats (with :mod:`cloudex.views`) when it answers. Keys are in :mod:`cloudex.names`:

| key | type | value |
| --- | --- | --- |
| ``markets_key()`` | string | ``list[MarketEntry]`` |
| ``depth_key(S)`` | string | :class:`DepthSnapshot` (best first, at most 1,000 levels a side) |
| ``ticker_key(S)`` | string | :class:`~cloudex.messages.Ticker` |
| ``trades_key(S)`` | list, newest first | :class:`~cloudex.messages.TradeExecuted` |
| ``balances_key(A)`` | hash asset -> | ``(available, locked)`` atoms |
| ``open_orders_key(A)`` | hash order id -> | :class:`~cloudex.messages.OrderView` |
| ``closed_orders_key(A)`` | sorted set by close time | :class:`~cloudex.messages.OrderClosed` |
| ``fills_key(A)`` | sorted set by trade time | :class:`~cloudex.messages.TradeExecuted` |
| ``result_key(id)`` | string, 10 min | :class:`~cloudex.messages.CommandResult` |
| ``heartbeat_key()`` | string (JSON), 30 s | ``{"ts", "epoch", "eventSeq", "engineId"}`` |
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from cloudex import names
from cloudex.enums import MarketState
from cloudex.markets import AssetSpec, MarketRules, MarketSpec, compile_market
from cloudex.messages import OrderClosed, OrderView, Ticker, TradeExecuted

__all__ = [
    "Markets",
    "MarketsCache",
    "DepthSnapshot",
    "MarketEntry",
    "encode_value",
    "decode_depth",
    "decode_markets",
    "decode_ticker",
    "decode_trade",
    "decode_balance",
    "decode_open_order",
    "decode_closed_order",
]


class DepthSnapshot(msgspec.Struct, array_like=True, gc=False):
    """A market's book as of ``update_id`` (the REST ``lastUpdateId``); levels best first."""

    update_id: int
    ts: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class MarketEntry(msgspec.Struct, array_like=True, gc=False):
    """A market as it stands now (current state and fees in ``spec``), with its assets."""

    spec: MarketSpec
    base: AssetSpec
    quote: AssetSpec

    def rules(self) -> MarketRules:
        return compile_market(self.spec, self.base, self.quote)


_encoder = msgspec.msgpack.Encoder()
encode_value = _encoder.encode

_depth = msgspec.msgpack.Decoder(DepthSnapshot)
_markets = msgspec.msgpack.Decoder(list[MarketEntry])
_ticker = msgspec.msgpack.Decoder(Ticker)
_trade = msgspec.msgpack.Decoder(TradeExecuted)
_balance = msgspec.msgpack.Decoder(tuple[int, int])
_open_order = msgspec.msgpack.Decoder(OrderView)
_closed_order = msgspec.msgpack.Decoder(OrderClosed)


def decode_depth(data: bytes) -> DepthSnapshot:
    return _depth.decode(data)


def decode_markets(data: bytes) -> list[MarketEntry]:
    return _markets.decode(data)


def decode_ticker(data: bytes) -> Ticker:
    return _ticker.decode(data)


def decode_trade(data: bytes) -> TradeExecuted:
    return _trade.decode(data)


def decode_balance(data: bytes) -> tuple[int, int]:
    return _balance.decode(data)


def decode_open_order(data: bytes) -> OrderView:
    return _open_order.decode(data)


def decode_closed_order(data: bytes) -> OrderClosed:
    return _closed_order.decode(data)


@dataclass(frozen=True, slots=True)
class Markets:
    """The markets as the engine last wrote them (``cx:markets``): specs with current state
    and fees, compiled rules, and the assets they trade."""

    entries: list[MarketEntry]
    rules: dict[str, MarketRules]
    assets: dict[str, AssetSpec]

    @classmethod
    def of(cls, entries: list[MarketEntry]) -> Markets:
        rules = {entry.spec.symbol: entry.rules() for entry in entries}
        assets: dict[str, AssetSpec] = {}
        for entry in entries:
            assets.setdefault(entry.base.symbol, entry.base)
            assets.setdefault(entry.quote.symbol, entry.quote)
        return cls(entries, rules, assets)

    def state(self, symbol: str) -> MarketState:
        return self.rules[symbol].spec.state


class MarketsCache:
    """:class:`Markets` read from Redis at most once per ``ttl_s``: a market state or fee
    change shows that much late. Used by every function that formats or validates."""

    def __init__(self, client: Any, ttl_s: float) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cached: tuple[float, Markets] | None = None

    def get(self) -> Markets:
        cached = self._cached
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        data = self.client.get(names.markets_key())
        markets = Markets.of(decode_markets(data) if data else [])
        self._cached = (now, markets)
        return markets
