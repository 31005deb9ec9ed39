"""The market maker's quoting core: pure functions and small state machines, no I/O, no clock.

Everything here counts in integers of the market: prices in ticks, quantities in lots (steps),
money in "tick-lots" (one tick times one lot, the quote value of the smallest order change), so
a ladder is exact and its properties can be checked exhaustively (``tests/unit/test_mm_core.py``).

- :class:`MarketRules`: a market's tick, step and limits as ``GET /api/v1/markets`` gives them
  (plus the minimum notional, which Backpack's market object has no field for), and the
  conversions between wire decimals and integers.
- :class:`RandomWalk`: the reference price, a seeded random walk kept within a band around its
  start.
- :func:`build_ladder`: the quotes wanted around a reference price, given the inventory.
- :func:`plan_orders`: what to cancel and what to place to turn the live orders into a ladder.
- :class:`Backoff`: bounded exponential back-off with jitter.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

__all__ = [
    "Side",
    "RulesError",
    "MarketRules",
    "RandomWalk",
    "LadderParams",
    "Quote",
    "Ladder",
    "skew_shift",
    "build_ladder",
    "LiveOrder",
    "Plan",
    "plan_orders",
    "crosses",
    "Backoff",
]


class Side(enum.StrEnum):
    BID = "Bid"
    ASK = "Ask"


class RulesError(ValueError):
    """A market description, or an amount, the market maker cannot work with."""


def _decimal(text: object, what: str) -> Decimal:
    if not isinstance(text, str | int):
        raise RulesError(f"{what}: expected a decimal string, got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RulesError(f"{what}: {text!r} is not a decimal") from None
    if not value.is_finite():
        raise RulesError(f"{what}: {text!r} is not a finite decimal")
    return value


def _count(amount: Decimal, increment: Decimal, rounding: str) -> int:
    """``amount / increment`` as an int, rounded as asked."""
    return int((amount / increment).to_integral_value(rounding=rounding))


@dataclass(frozen=True)
class MarketRules:
    """One market's increments and limits. Prices are ticks, quantities lots (steps)."""

    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_lots: int = 1
    max_lots: int | None = None
    max_price_ticks: int | None = None
    min_notional: Decimal = Decimal(0)  # quote units
    state: str = "Open"

    def __post_init__(self) -> None:
        if self.tick <= 0 or self.step <= 0:
            raise RulesError(f"{self.symbol}: tick and step must be positive")
        if self.min_lots < 1:
            raise RulesError(f"{self.symbol}: the minimum quantity must be at least one step")
        if self.max_lots is not None and self.max_lots < self.min_lots:
            raise RulesError(f"{self.symbol}: maximum quantity below the minimum")

    @classmethod
    def from_api(cls, market: Mapping[str, Any], min_notional: Decimal = Decimal(0)) -> MarketRules:
        """From one element of ``GET /api/v1/markets`` (contract §4.3)."""
        symbol = market.get("symbol")
        if not isinstance(symbol, str):
            raise RulesError(f"market without a symbol: {market!r}")
        filters = market.get("filters")
        if not isinstance(filters, Mapping):
            raise RulesError(f"{symbol}: no filters")
        price = filters.get("price")
        quantity = filters.get("quantity")
        if not isinstance(price, Mapping) or not isinstance(quantity, Mapping):
            raise RulesError(f"{symbol}: no price or quantity filter")
        tick = _decimal(price.get("tickSize"), f"{symbol} tickSize")
        step = _decimal(quantity.get("stepSize"), f"{symbol} stepSize")
        if tick <= 0 or step <= 0:
            raise RulesError(f"{symbol}: tick and step must be positive")
        min_quantity = quantity.get("minQuantity")
        max_quantity = quantity.get("maxQuantity")
        max_price = price.get("maxPrice")
        min_lots = 1
        if min_quantity is not None:
            min_lots = max(1, _count(_decimal(min_quantity, "minQuantity"), step, ROUND_CEILING))
        max_lots = None
        if max_quantity is not None:
            max_lots = _count(_decimal(max_quantity, "maxQuantity"), step, ROUND_FLOOR)
        max_price_ticks = None
        if max_price is not None:
            max_price_ticks = _count(_decimal(max_price, "maxPrice"), tick, ROUND_FLOOR)
        base, quote = market.get("baseSymbol"), market.get("quoteSymbol")
        if not isinstance(base, str) or not isinstance(quote, str):
            raise RulesError(f"{symbol}: no base or quote symbol")
        state = market.get("orderBookState")
        return cls(
            symbol=symbol,
            base=base,
            quote=quote,
            tick=tick,
            step=step,
            min_lots=min_lots,
            max_lots=max_lots,
            max_price_ticks=max_price_ticks,
            min_notional=min_notional,
            state=state if isinstance(state, str) else "Open",
        )

    # -- conversions ------------------------------------------------------------------------

    @property
    def tick_lot(self) -> Decimal:
        """The quote value of one tick times one lot."""
        return self.tick * self.step

    def price_text(self, ticks: int) -> str:
        return format((self.tick * ticks).quantize(self.tick), "f")

    def quantity_text(self, lots: int) -> str:
        return format((self.step * lots).quantize(self.step), "f")

    def ticks(self, text: object) -> int:
        """A wire price as ticks; it must be a whole number of them."""
        return self._exact(_decimal(text, f"{self.symbol} price"), self.tick, "price")

    def lots(self, text: object) -> int:
        """A wire quantity as lots; it must be a whole number of them."""
        return self._exact(_decimal(text, f"{self.symbol} quantity"), self.step, "quantity")

    def _exact(self, value: Decimal, increment: Decimal, what: str) -> int:
        count = value / increment
        whole = count.to_integral_value()
        if whole != count:
            raise RulesError(f"{self.symbol}: {what} {value} is not a multiple of {increment}")
        return int(whole)

    def lots_floor(self, amount: Decimal) -> int:
        return _count(amount, self.step, ROUND_FLOOR)

    def lots_ceil(self, amount: Decimal) -> int:
        return _count(amount, self.step, ROUND_CEILING)

    def ticks_near(self, price: Decimal) -> int:
        return max(1, _count(price, self.tick, ROUND_HALF_EVEN))

    def tick_lots_floor(self, amount: Decimal) -> int:
        """A quote amount in tick-lots, rounded down (a budget)."""
        return max(0, _count(amount, self.tick_lot, ROUND_FLOOR))

    @property
    def min_notional_tick_lots(self) -> int:
        return max(0, _count(self.min_notional, self.tick_lot, ROUND_CEILING))

    def min_lots_at(self, price_ticks: int) -> int:
        """The smallest order at ``price_ticks``: the minimum quantity and notional."""
        notional = self.min_notional_tick_lots
        by_notional = -(-notional // price_ticks) if notional else 0
        return max(self.min_lots, by_notional)


# -- THE REFERENCE PRICE ------------------------------------------------------------------------


class RandomWalk:
    """A reference price in ticks: each :meth:`step` moves it by a uniform random amount in
    ``[-step_ticks, step_ticks]``, reflected at the edges of ``[start - bound, start + bound]``
    (and never below one tick), so it wanders but never leaves the band."""

    def __init__(self, start: int, step_ticks: int, bound_ticks: int, rng: random.Random) -> None:
        if start < 1 or step_ticks < 0 or bound_ticks < 0:
            raise ValueError("the walk needs a positive start and non-negative step and bound")
        self.start = start
        self.step_ticks = step_ticks
        self.low = max(1, start - bound_ticks)
        self.high = start + bound_ticks
        self.value = start
        self._rng = rng

    @classmethod
    def around(
        cls, start: int, step_bps: Decimal, bound_pct: Decimal, rng: random.Random
    ) -> RandomWalk:
        step = int((start * step_bps / 10_000).to_integral_value())
        bound = int((start * bound_pct / 100).to_integral_value(rounding=ROUND_FLOOR))
        return cls(start, step, bound, rng)

    def step(self) -> int:
        value = self.value + self._rng.randint(-self.step_ticks, self.step_ticks)
        if value > self.high:
            value = 2 * self.high - value
        if value < self.low:
            value = 2 * self.low - value
        self.value = min(self.high, max(self.low, value))
        return self.value


# -- THE LADDER ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LadderParams:
    """A market's quoting knobs, in ticks and lots.

    ``max_position`` bounds the inventory both ways from its baseline: the bids resting at any
    moment can never take the position above it (the side shrinks, then stops), and the asks
    never below minus it. ``skew_ticks`` is how far the whole ladder moves against a position
    at that bound (down when long, up when short).
    """

    levels: int
    spacing_ticks: int
    half_spread_ticks: int
    size_lots: int
    size_increment_lots: int = 0
    max_position_lots: int = 0
    skew_ticks: int = 0

    def __post_init__(self) -> None:
        if self.levels < 1 or self.spacing_ticks < 1 or self.half_spread_ticks < 1:
            raise ValueError("levels, spacing and half spread must be at least 1")
        if self.size_lots < 1 or self.size_increment_lots < 0:
            raise ValueError("sizes must be at least one step")
        if self.max_position_lots < 0 or self.skew_ticks < 0:
            raise ValueError("max position and skew must not be negative")


@dataclass(frozen=True, order=True)
class Quote:
    side: Side
    price: int  # ticks
    lots: int


@dataclass(frozen=True)
class Ladder:
    bids: tuple[Quote, ...]  # best (highest) first
    asks: tuple[Quote, ...]  # best (lowest) first
    center: int  # the reference after the skew, in ticks
    # The limits the ladder was built within (None: none): resting bids may add up to at most
    # ``bid_room`` lots costing at most ``quote_budget`` tick-lots, asks to ``ask_room`` lots.
    bid_room: int | None = None
    ask_room: int | None = None
    quote_budget: int | None = None

    @property
    def quotes(self) -> tuple[Quote, ...]:
        return self.bids + self.asks


def skew_shift(params: LadderParams, position_lots: int) -> int:
    """How many ticks the ladder moves for a position: against it, in proportion, capped."""
    if not params.skew_ticks or not position_lots:
        return 0
    if not params.max_position_lots:
        ratio = Fraction(1 if position_lots > 0 else -1)
    else:
        ratio = Fraction(position_lots, params.max_position_lots)
        ratio = max(Fraction(-1), min(Fraction(1), ratio))
    return -round(ratio * params.skew_ticks)


def build_ladder(
    rules: MarketRules,
    params: LadderParams,
    reference: int,
    *,
    position_lots: int = 0,
    base_lots: int | None = None,
    quote_budget: int | None = None,
) -> Ladder:
    """The quotes wanted around ``reference`` (ticks).

    Prices sit on a grid of ``spacing_ticks`` (so a small move of the reference changes only
    the ends of the ladder, not every order): the best bid is the highest grid price at least
    ``half_spread_ticks`` below the (skewed) centre, the best ask the lowest at least that far
    above it, so the best bid is always strictly below the best ask. Level ``i`` (from 0, the
    best) is ``size_lots + i * size_increment_lots``, raised to the market's minimum quantity and
    notional at its price.

    Bids stop where they could take the position past ``max_position_lots`` (their total is at
    most ``max_position_lots - position_lots``) or cost more than ``quote_budget`` (tick-lots);
    asks where they would sell more than ``base_lots`` (what the maker holds) or take the
    position below ``-max_position_lots``. ``None`` is no limit. The level where a limit is
    reached is shrunk to what is left, if that is still a valid order.
    """
    shift = skew_shift(params, position_lots)
    center = reference + shift
    spacing = params.spacing_ticks
    best_bid = (center - params.half_spread_ticks) // spacing * spacing
    best_ask = -(-(center + params.half_spread_ticks) // spacing) * spacing

    def level_lots(index: int, price: int) -> int | None:
        lots = max(params.size_lots + index * params.size_increment_lots, rules.min_lots_at(price))
        if rules.max_lots is not None and lots > rules.max_lots:
            return None if rules.max_lots < rules.min_lots_at(price) else rules.max_lots
        return lots

    bids: list[Quote] = []
    bid_room = room = params.max_position_lots - position_lots
    budget = quote_budget
    for index in range(params.levels):
        price = best_bid - index * spacing
        if price < 1:
            break
        if rules.max_price_ticks is not None and price > rules.max_price_ticks:
            continue  # a reference far above the market's limit: only the lower bids fit
        lots = level_lots(index, price)
        if lots is None:
            break
        lots = min(lots, room)
        if budget is not None:
            lots = min(lots, budget // price)
        if lots < rules.min_lots_at(price):
            break
        bids.append(Quote(Side.BID, price, lots))
        room -= lots
        if budget is not None:
            budget -= lots * price

    asks: list[Quote] = []
    room = params.max_position_lots + position_lots
    if base_lots is not None:
        room = min(room, base_lots)
    ask_room = room
    for index in range(params.levels):
        price = best_ask + index * spacing
        if price < 1:
            continue  # skewed below zero: only the higher asks exist
        if rules.max_price_ticks is not None and price > rules.max_price_ticks:
            break
        lots = level_lots(index, price)
        if lots is None:
            break
        lots = min(lots, room)
        if lots < rules.min_lots_at(price):
            break
        asks.append(Quote(Side.ASK, price, lots))
        room -= lots
    return Ladder(tuple(bids), tuple(asks), center, bid_room, ask_room, quote_budget)


# -- FROM LIVE ORDERS TO THE LADDER -------------------------------------------------------------


@dataclass(frozen=True)
class LiveOrder:
    """One of the maker's orders as it knows it. ``confirmed`` is false while the outcome of
    its placement is unknown (no answer yet): it may rest on the book, or never will."""

    client_id: int
    side: Side
    price: int
    remaining_lots: int
    confirmed: bool = True


@dataclass(frozen=True)
class Plan:
    cancel: tuple[int, ...]  # client ids, confirmed orders only
    place: tuple[Quote, ...]
    keep: tuple[int, ...]  # client ids
    unconfirmed: tuple[int, ...] = field(default=())  # unknown orders the ladder does not want


def _within(
    quotes: Sequence[Quote],
    matches: Mapping[Quote, LiveOrder],
    room: int | None,
    budget: int | None,
) -> bool:
    """Whether one side, with its kept orders' sizes, keeps to its room and budget."""
    sizes = [(q.price, matches[q].remaining_lots if q in matches else q.lots) for q in quotes]
    if room is not None and sum(lots for _, lots in sizes) > max(0, room):
        return False
    return budget is None or sum(price * lots for price, lots in sizes) <= budget


def plan_orders(ladder: Ladder, live: Iterable[LiveOrder]) -> Plan:
    """Cancel and place so that the orders become ``ladder``.

    An order is kept for a quote of the same side and price if its remaining quantity is
    within a factor of two of the quote's: a partly filled order stays until it is small, and a
    level whose size changed because the ladder moved along its grid (sizes grow with the
    distance from the best level) is not replaced for that. Kept orders larger than their
    quotes are then replaced, farthest first, while a side would exceed the limits the ladder
    was built within (so a position limit holds however the orders are kept). Each quote keeps
    at most one order: duplicates are cancelled. Unconfirmed orders are never cancelled (they
    cannot be, yet) but are kept when they match, so nothing is placed twice.
    """
    by_level: dict[tuple[Side, int], list[LiveOrder]] = {}
    for order in sorted(live, key=lambda o: (not o.confirmed, o.client_id)):
        by_level.setdefault((order.side, order.price), []).append(order)
    matches: dict[Quote, LiveOrder] = {}
    for quote in ladder.quotes:
        candidates = [
            o
            for o in by_level.get((quote.side, quote.price), [])
            if 2 * o.remaining_lots >= quote.lots and o.remaining_lots <= 2 * quote.lots
        ]
        if candidates:
            # Confirmed first, then the closest in size.
            matches[quote] = min(
                candidates, key=lambda o: (not o.confirmed, abs(o.remaining_lots - quote.lots))
            )
    for quotes, room, budget in (
        (ladder.bids, ladder.bid_room, ladder.quote_budget),
        (ladder.asks, ladder.ask_room, None),
    ):
        for quote in reversed(quotes):
            if _within(quotes, matches, room, budget):
                break
            match = matches.get(quote)
            if match is not None and match.remaining_lots > quote.lots:
                del matches[quote]
    keep = [matches[q].client_id for q in ladder.quotes if q in matches]
    place = [q for q in ladder.quotes if q not in matches]
    kept = set(keep)
    stale = [o for group in by_level.values() for o in group if o.client_id not in kept]
    return Plan(
        cancel=tuple(sorted(o.client_id for o in stale if o.confirmed)),
        place=tuple(place),
        keep=tuple(keep),
        unconfirmed=tuple(sorted(o.client_id for o in stale if not o.confirmed)),
    )


def crosses(orders: Sequence[Quote | LiveOrder]) -> bool:
    """Whether any bid is at or above any ask (the book a set of orders would make)."""
    bids = [o.price for o in orders if o.side is Side.BID]
    asks = [o.price for o in orders if o.side is Side.ASK]
    return bool(bids and asks and max(bids) >= min(asks))


# -- BACK-OFF -----------------------------------------------------------------------------------


class Backoff:
    """Bounded exponential back-off with jitter: the n-th delay in a row is uniform in
    ``[d/2, d]`` with ``d = min(maximum, initial * 2**n)``; :meth:`reset` after a success."""

    def __init__(self, initial_s: float, maximum_s: float, rng: random.Random) -> None:
        if initial_s <= 0 or maximum_s < initial_s:
            raise ValueError("back-off needs 0 < initial <= maximum")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.failures = 0
        self._rng = rng

    def next(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
