"""The engine's full state as one msgpack document (see ``Engine.snapshot``/``Engine.restore``)."""

from __future__ import annotations

import msgspec

from cloudex.enums import OrderType, SelfTradePrevention, TimeInForce
from cloudex.markets import AssetSpec, MarketSpec
from cloudex.messages import CommandResult

__all__ = ["SNAPSHOT_VERSION", "EngineState", "MarketState", "OrderRow"]

SNAPSHOT_VERSION = 1

# (id, account, is_bid, price, quantity, remaining, executed_quote, client_id, stp, tif,
#  post_only, order_type, created_at) -- a tuple, since a million of them must encode fast.
OrderRow = tuple[
    int,
    int,
    bool,
    int | None,
    int | None,
    int,
    int,
    int | None,
    SelfTradePrevention,
    TimeInForce,
    bool,
    OrderType,
    int,
]
Bar = list[int]


class MarketState(msgspec.Struct, array_like=True):
    spec: MarketSpec  # with the current state and fees
    update_id: int
    last_depth_ts: int
    market_data: tuple[Bar | None, list[Bar], dict[str, Bar], bool]
    orders: list[OrderRow]  # bids best first, then asks best first; time priority within a level


class EngineState(msgspec.Struct, array_like=True):
    version: int
    seq: int
    clock: int
    next_order_id: int
    next_trade_id: int
    assets: list[AssetSpec]
    markets: list[MarketState]
    balances: list[tuple[int, list[int]]]
    results: list[CommandResult]  # oldest first: the eviction order
    state_hash: str
