"""The engine's full state as one msgpack document (see ``Engine.snapshot``/``Engine.restore``)."""

from __future__ import annotations

import msgspec

from cloudex.markets import AssetSpec, MarketSpec
from cloudex.messages import CommandResult
from engine_service.core.book import Order

__all__ = ["SNAPSHOT_VERSION", "EngineState", "MarketState"]

SNAPSHOT_VERSION = 2

Bar = list[int]


class MarketState(msgspec.Struct, array_like=True):
    spec: MarketSpec  # with the current state and fees
    update_id: int
    last_depth_ts: int
    market_data: tuple[Bar | None, list[Bar], dict[str, Bar], bool]


class EngineState(msgspec.Struct, array_like=True):
    version: int
    seq: int
    clock: int
    next_order_id: int
    next_trade_id: int
    assets: list[AssetSpec]
    markets: list[MarketState]
    balances: list[tuple[int, list[int]]]
    orders: list[Order]  # every resting order, in id order
    results: list[CommandResult]  # oldest first: the eviction order
    state_hash: str
