"""Order book: price levels kept sorted, each a FIFO of resting orders (price-time priority)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

import msgspec

from cloudex.enums import OrderType, SelfTradePrevention, TimeInForce

__all__ = ["Order", "Level", "BookSide"]


class Order(msgspec.Struct, array_like=True, gc=False):
    """A resting or incoming order. Amounts: ``price`` in ticks, quantities in lots.

    A msgspec Struct rather than a plain class: it is built once per order on the hot path and
    msgspec builds it in C; the collector never tracks it (it holds no containers); and snapshots
    encode and decode resting orders as they are.
    """

    id: int
    account: int
    is_bid: bool
    price: int | None
    quantity: int | None
    remaining: int
    executed_quote: int
    client_id: int | None
    stp: SelfTradePrevention
    tif: TimeInForce
    post_only: bool
    order_type: OrderType
    quote_quantity: int | None
    created_at: int
    market: int = 0  # the index of its market in the engine


class Level:
    """All resting orders at one price, oldest first; ``total`` is their remaining lots."""

    __slots__ = ("price", "total", "orders")

    def __init__(self, price: int) -> None:
        self.price = price
        self.total = 0
        self.orders: dict[int, Order] = {}


class BookSide:
    """One side of a book.

    ``keys`` is sorted ascending with the best level last, so the best level is popped in O(1):
    bids are keyed by price, asks by minus price.
    """

    __slots__ = ("is_bid", "keys", "levels")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.keys: list[int] = []
        self.levels: dict[int, Level] = {}

    def best_price(self) -> int | None:
        if not self.keys:
            return None
        key = self.keys[-1]
        return key if self.is_bid else -key

    def add(self, order: Order) -> Level:
        price = order.price
        assert price is not None
        level = self.levels.get(price)
        if level is None:
            level = self.new_level(price)
        level.orders[order.id] = order
        level.total += order.remaining
        return level

    def new_level(self, price: int) -> Level:
        level = self.levels[price] = Level(price)
        insort(self.keys, price if self.is_bid else -price)
        return level

    def remove(self, order: Order, drop_empty_level: bool = True) -> Level:
        """Take ``order`` off its level, dropping the level if it empties; return the level."""
        price = order.price
        assert price is not None
        level = self.levels[price]
        del level.orders[order.id]
        level.total -= order.remaining
        if drop_empty_level and not level.orders:
            self.drop_level(level)
        return level

    def drop_level(self, level: Level) -> None:
        del self.levels[level.price]
        keys = self.keys
        key = level.price if self.is_bid else -level.price
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def iter_levels(self) -> Iterator[Level]:
        """Yield levels best first."""
        levels = self.levels
        sign = 1 if self.is_bid else -1
        for key in reversed(self.keys):
            yield levels[key * sign]

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Return ``(price, total)`` per level, best first, at most ``limit`` levels."""
        out: list[tuple[int, int]] = []
        for level in self.iter_levels():
            if limit is not None and len(out) >= limit:
                break
            out.append((level.price, level.total))
        return out
