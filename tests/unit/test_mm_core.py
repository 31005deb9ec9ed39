"""mm.core: the market maker's pure quoting core (ladder, skew, walk, order plan, back-off)."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm.core import (
    Backoff,
    LadderParams,
    LiveOrder,
    MarketRules,
    Quote,
    RandomWalk,
    RulesError,
    Side,
    build_ladder,
    crosses,
    plan_orders,
    skew_shift,
)

SOL = MarketRules(
    "SOL_USDC", "SOL", "USDC", Decimal("0.01"), Decimal("0.01"), 1, None, None, Decimal(1)
)
PARAMS = LadderParams(levels=12, spacing_ticks=5, half_spread_ticks=5, size_lots=50,
                      size_increment_lots=25, max_position_lots=10_000, skew_ticks=25)  # fmt: skip

MARKET_JSON = {
    "symbol": "BTC_USDC",
    "baseSymbol": "BTC",
    "quoteSymbol": "USDC",
    "marketType": "SPOT",
    "orderBookState": "Open",
    "createdAt": None,
    "filters": {
        "price": {"minPrice": "0.1", "maxPrice": "10000000.0", "tickSize": "0.1"},
        "quantity": {"minQuantity": "0.00001", "maxQuantity": "1000.00000", "stepSize": "0.00001"},
    },
}


@st.composite
def market_rules(draw: st.DrawFn) -> MarketRules:
    tick = draw(st.sampled_from(["0.01", "0.1", "0.05", "1", "0.0001"]))
    step = draw(st.sampled_from(["0.01", "0.00001", "1", "0.0001", "0.5"]))
    min_lots = draw(st.integers(1, 5))
    max_lots = draw(st.none() | st.integers(min_lots, 10_000))
    max_price = draw(st.none() | st.integers(1, 10**9))
    notional = draw(st.sampled_from(["0", "1", "10", "0.5"]))
    return MarketRules(
        "X_Y", "X", "Y", Decimal(tick), Decimal(step), min_lots, max_lots, max_price,
        Decimal(notional),
    )  # fmt: skip


ladder_params = st.builds(
    LadderParams,
    levels=st.integers(1, 20),
    spacing_ticks=st.integers(1, 50),
    half_spread_ticks=st.integers(1, 50),
    size_lots=st.integers(1, 200),
    size_increment_lots=st.integers(0, 20),
    max_position_lots=st.integers(0, 5_000),
    skew_ticks=st.integers(0, 300),
)
references = st.integers(1, 10**7)
positions = st.integers(-6_000, 6_000)
base_lots = st.none() | st.integers(0, 100_000)
budgets = st.none() | st.integers(0, 10**12)


# -- THE LADDER ---------------------------------------------------------------------------------


@given(market_rules(), ladder_params, references, positions, base_lots, budgets)
@settings(max_examples=400)
def test_ladder_never_crosses_and_respects_the_market(
    rules: MarketRules,
    params: LadderParams,
    reference: int,
    position: int,
    base: int | None,
    budget: int | None,
) -> None:
    ladder = build_ladder(
        rules, params, reference, position_lots=position, base_lots=base, quote_budget=budget
    )
    assert not crosses(ladder.quotes)
    if ladder.bids and ladder.asks:
        assert ladder.bids[0].price < ladder.asks[0].price
        assert ladder.bids[0].price <= ladder.center - params.half_spread_ticks
        assert ladder.asks[0].price >= ladder.center + params.half_spread_ticks
    # Best first, one spacing apart, every price on the spacing grid.
    for side in (ladder.bids, ladder.asks):
        prices = [q.price for q in side]
        assert all(abs(b - a) == params.spacing_ticks for a, b in itertools.pairwise(prices))
        assert all(p % params.spacing_ticks == 0 for p in prices)
    assert [q.price for q in ladder.bids] == sorted((q.price for q in ladder.bids), reverse=True)
    assert [q.price for q in ladder.asks] == sorted(q.price for q in ladder.asks)
    assert all(q.side is Side.BID for q in ladder.bids)
    assert all(q.side is Side.ASK for q in ladder.asks)
    for quote in ladder.quotes:
        assert quote.price >= 1
        assert rules.max_price_ticks is None or quote.price <= rules.max_price_ticks
        assert quote.lots >= rules.min_lots
        assert rules.max_lots is None or quote.lots <= rules.max_lots
        # The minimum notional, exactly.
        notional = rules.tick * quote.price * rules.step * quote.lots
        assert notional >= rules.min_notional
        # On the tick and on the step, as the wire carries them.
        assert Decimal(rules.price_text(quote.price)) % rules.tick == 0
        assert Decimal(rules.quantity_text(quote.lots)) % rules.step == 0
        assert rules.ticks(rules.price_text(quote.price)) == quote.price
        assert rules.lots(rules.quantity_text(quote.lots)) == quote.lots


@given(market_rules(), ladder_params, references, positions, base_lots, budgets)
@settings(max_examples=300)
def test_ladder_respects_inventory_and_funds(
    rules: MarketRules,
    params: LadderParams,
    reference: int,
    position: int,
    base: int | None,
    budget: int | None,
) -> None:
    ladder = build_ladder(
        rules, params, reference, position_lots=position, base_lots=base, quote_budget=budget
    )
    bought = sum(q.lots for q in ladder.bids)
    sold = sum(q.lots for q in ladder.asks)
    # Every bid filling never takes the position past the limit; every ask never below minus it.
    assert position + bought <= max(position, params.max_position_lots)
    if ladder.bids:
        assert position + bought <= params.max_position_lots
    assert position - sold >= min(position, -params.max_position_lots)
    if base is not None:
        assert sold <= base
    if budget is not None:
        assert sum(q.lots * q.price for q in ladder.bids) <= budget
    # A side at its limit has no bids at all: it stops.
    if position >= params.max_position_lots:
        assert not ladder.bids
    if position <= -params.max_position_lots:
        assert not ladder.asks


def full_size(rules: MarketRules, params: LadderParams, index: int, price: int) -> int:
    return max(params.size_lots + index * params.size_increment_lots, rules.min_lots_at(price))


@given(ladder_params, st.integers(10**5, 10**7), st.integers(-100, 100))
@settings(max_examples=300)
def test_ladder_has_every_level_when_inventory_allows(
    params: LadderParams, reference: int, position: int
) -> None:
    rules = SOL
    # Room for every level on both sides: the position limit is far away.
    wanted = sum(params.size_lots + i * params.size_increment_lots for i in range(params.levels))
    params = LadderParams(
        **{**params.__dict__, "max_position_lots": wanted + abs(position) + 10_000}
    )
    ladder = build_ladder(rules, params, reference, position_lots=position)
    assert len(ladder.bids) == params.levels
    assert len(ladder.asks) == params.levels
    for index, quote in enumerate(ladder.bids):
        assert quote.lots == full_size(rules, params, index, quote.price)


def test_the_default_ladder_has_twelve_levels_a_side() -> None:
    ladder = build_ladder(
        SOL, PARAMS, 15_000, position_lots=0, base_lots=10_000, quote_budget=10**9
    )
    assert len(ladder.bids) == len(ladder.asks) == 12
    assert ladder.bids[0].price == 14_995 and ladder.asks[0].price == 15_005
    assert [q.lots for q in ladder.bids[:3]] == [50, 75, 100]


@given(ladder_params, references, positions, positions)
@settings(max_examples=300)
def test_skew_moves_the_ladder_against_the_position(
    params: LadderParams, reference: int, first: int, second: int
) -> None:
    low, high = sorted((first, second))
    assert skew_shift(params, high) <= skew_shift(params, low)
    assert abs(skew_shift(params, high)) <= params.skew_ticks
    if high > 0:
        assert skew_shift(params, high) <= 0  # long: lower prices, to sell more and buy less
    if low < 0:
        assert skew_shift(params, low) >= 0  # short: higher prices
    a = build_ladder(SOL, params, reference + 10**6, position_lots=low)
    b = build_ladder(SOL, params, reference + 10**6, position_lots=high)
    assert b.center <= a.center
    if a.asks and b.asks:
        assert b.asks[0].price <= a.asks[0].price
    if a.bids and b.bids:
        assert b.bids[0].price <= a.bids[0].price


def test_a_long_position_skews_the_asks_down_and_shrinks_then_stops_the_bids() -> None:
    flat = build_ladder(SOL, PARAMS, 15_000, position_lots=0)
    long = build_ladder(SOL, PARAMS, 15_000, position_lots=9_900)
    assert long.asks[0].price < flat.asks[0].price
    assert long.center == 15_000 - round(25 * 9_900 / 10_000)
    # 100 lots of room: the best bid shrinks to... 50, the next to what is left.
    assert [q.lots for q in long.bids] == [50, 50]
    assert build_ladder(SOL, PARAMS, 15_000, position_lots=10_000).bids == ()
    assert build_ladder(SOL, PARAMS, 15_000, position_lots=-10_000).asks == ()


def test_minimum_notional_raises_small_sizes() -> None:
    rules = MarketRules("T_I", "T", "I", Decimal("0.05"), Decimal(1), 1, None, None, Decimal(10))
    params = LadderParams(
        levels=3, spacing_ticks=1, half_spread_ticks=1, size_lots=1, max_position_lots=1_000
    )
    ladder = build_ladder(rules, params, 40)  # 2.00 INR: 5 lots make the 10 INR minimum
    assert [q.lots for q in ladder.asks] == [5, 5, 5]
    assert [q.lots for q in ladder.bids] == [6, 6, 6]  # 1.95, 1.90, 1.85 need 6


# -- THE WALK -----------------------------------------------------------------------------------


@given(
    st.integers(1, 10**7),
    st.integers(0, 10_000),
    st.integers(0, 10**6),
    st.integers(0, 2**32),
    st.integers(1, 500),
)
@settings(max_examples=300)
def test_walk_stays_within_its_band(
    start: int, step: int, bound: int, seed: int, steps: int
) -> None:
    walk = RandomWalk(start, step, bound, random.Random(seed))
    for _ in range(steps):
        value = walk.step()
        assert max(1, start - bound) <= value <= start + bound


def test_walk_is_reproducible_and_moves() -> None:
    def path(seed: int) -> list[int]:
        walk = RandomWalk.around(15_000, Decimal(2), Decimal(10), random.Random(seed))
        return [walk.step() for _ in range(200)]

    assert path(7) == path(7)
    assert path(7) != path(8)
    assert len(set(path(7))) > 10
    assert all(13_500 <= v <= 16_500 for v in path(7))
    walk = RandomWalk.around(15_000, Decimal(2), Decimal(10), random.Random(1))
    assert (walk.step_ticks, walk.low, walk.high) == (3, 13_500, 16_500)


# -- THE ORDER PLAN -----------------------------------------------------------------------------


live_orders = st.lists(
    st.builds(
        LiveOrder,
        client_id=st.integers(1, 10**6),
        side=st.sampled_from(Side),
        price=st.integers(14_900, 15_100),
        remaining_lots=st.integers(1, 400),
        confirmed=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda o: o.client_id,
)


@given(
    live_orders,
    st.integers(14_950, 15_050),
    st.integers(-2_000, 2_000),
    st.integers(0, 3_000),
    st.integers(0, 3_000),
)
@settings(max_examples=500)
def test_plan_turns_the_live_orders_into_the_ladder(
    live: list[LiveOrder], reference: int, position: int, max_position: int, base: int
) -> None:
    params = LadderParams(**{**PARAMS.__dict__, "max_position_lots": max_position})
    ladder = build_ladder(SOL, params, reference, position_lots=position, base_lots=base)
    plan = plan_orders(ladder, live)
    ids = {o.client_id for o in live}
    kept = set(plan.keep)
    assert kept <= ids and len(kept) == len(plan.keep)
    assert not kept & set(plan.cancel) and not kept & set(plan.unconfirmed)
    assert kept | set(plan.cancel) | set(plan.unconfirmed) == ids
    by_id = {o.client_id: o for o in live}
    assert all(by_id[c].confirmed for c in plan.cancel)
    assert not any(by_id[c].confirmed for c in plan.unconfirmed)
    # After the plan: exactly one order per quote, none larger than the quote wants.
    after = [(o.side, o.price) for o in live if o.client_id in kept]
    after += [(q.side, q.price) for q in plan.place]
    assert sorted(after) == sorted((q.side, q.price) for q in ladder.quotes)
    wanted = {(q.side, q.price): q.lots for q in ladder.quotes}
    for client_id in kept:
        order = by_id[client_id]
        assert wanted[(order.side, order.price)] <= 2 * order.remaining_lots
        assert order.remaining_lots <= 2 * wanted[(order.side, order.price)]
    assert not crosses([by_id[c] for c in kept] + list(plan.place))
    # However the orders are kept, each side stays within the ladder's limits.
    resting = [(by_id[c].side, by_id[c].remaining_lots) for c in kept]
    resting += [(q.side, q.lots) for q in plan.place]
    assert ladder.bid_room is not None and ladder.ask_room is not None
    assert sum(lots for side, lots in resting if side is Side.BID) <= max(0, ladder.bid_room)
    assert sum(lots for side, lots in resting if side is Side.ASK) <= max(0, ladder.ask_room)


def test_plan_keeps_matching_orders_and_replaces_small_or_large_ones() -> None:
    ladder = build_ladder(SOL, PARAMS, 15_000)
    best_bid, best_ask, second_bid = ladder.bids[0], ladder.asks[0], ladder.bids[1]
    live = [
        LiveOrder(1, Side.BID, best_bid.price, best_bid.lots),  # as wanted: kept
        LiveOrder(2, Side.BID, best_bid.price, best_bid.lots),  # a duplicate: cancelled
        LiveOrder(3, Side.ASK, best_ask.price, best_ask.lots // 2 - 1),  # mostly filled
        LiveOrder(4, Side.BID, second_bid.price, second_bid.lots * 2 + 1),  # far too large
        LiveOrder(5, Side.BID, 1, 50, confirmed=False),  # unknown, unwanted
        LiveOrder(6, Side.ASK, 99_999, 50),  # far away
    ]
    plan = plan_orders(ladder, live)
    assert plan.keep == (1,)
    assert plan.cancel == (2, 3, 4, 6)
    assert plan.unconfirmed == (5,)
    assert len(plan.place) == 23
    assert Quote(Side.ASK, best_ask.price, best_ask.lots) in plan.place


def test_plan_keeps_a_level_whose_size_moved_with_the_grid_unless_a_limit_binds() -> None:
    # The reference moves up one spacing: each ask is one level nearer the best, so smaller.
    before = build_ladder(SOL, PARAMS, 15_000)
    live = [LiveOrder(i, q.side, q.price, q.lots) for i, q in enumerate(before.quotes)]
    after = build_ladder(SOL, PARAMS, 15_005)
    plan = plan_orders(after, live)
    assert len(plan.cancel) == 2 and len(plan.place) == 2  # only the two ends move
    # Long near the limit: the room left is what the bids may add up to, so kept bids larger
    # than their (shrunk) quotes are replaced, the farthest first.
    tight = build_ladder(SOL, PARAMS, 15_000, position_lots=PARAMS.max_position_lots - 300)
    assert sum(q.lots for q in tight.bids) == 300
    assert [q.lots for q in tight.bids] == [50, 75, 100, 75]
    live = [LiveOrder(i, Side.BID, q.price, q.lots) for i, q in enumerate(tight.bids)]
    live[-1] = LiveOrder(3, Side.BID, tight.bids[-1].price, 150)  # placed before it shrank
    plan = plan_orders(tight, live)
    by_id = {o.client_id: o for o in live}
    resting = sum(by_id[c].remaining_lots for c in plan.keep)
    resting += sum(q.lots for q in plan.place if q.side is Side.BID)
    assert resting <= 300
    assert plan.cancel == (3,) and plan.keep == (0, 1, 2)


# -- RULES, BACK-OFF ----------------------------------------------------------------------------


def test_rules_from_the_markets_endpoint() -> None:
    rules = MarketRules.from_api(MARKET_JSON, Decimal(1))
    assert (rules.tick, rules.step, rules.min_lots) == (Decimal("0.1"), Decimal("0.00001"), 1)
    assert rules.max_lots == 100_000_000 and rules.max_price_ticks == 100_000_000
    assert rules.price_text(950_000) == "95000.0"
    assert rules.quantity_text(123) == "0.00123"
    assert rules.ticks("95000.0") == 950_000 and rules.lots("0.00123") == 123
    assert rules.min_lots_at(950_000) == 2  # 1 USDC at 95,000 is 1.05 lots of 0.00001
    with pytest.raises(RulesError):
        rules.ticks("95000.05")
    with pytest.raises(RulesError):
        MarketRules.from_api({**MARKET_JSON, "filters": {}})
    with pytest.raises(RulesError):
        MarketRules.from_api({k: v for k, v in MARKET_JSON.items() if k != "symbol"})


@given(st.floats(0.01, 5), st.floats(0, 100), st.integers(0, 2**32), st.integers(1, 60))
def test_backoff_is_bounded_and_grows(
    initial: float, extra: float, seed: int, failures: int
) -> None:
    maximum = initial + extra
    backoff = Backoff(initial, maximum, random.Random(seed))
    delays = [backoff.next() for _ in range(failures)]
    assert all(initial / 2 <= d <= maximum for d in delays)
    ceilings = [min(maximum, initial * 2**n) for n in range(failures)]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    backoff.reset()
    assert backoff.next() <= initial


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        LadderParams(levels=0, spacing_ticks=1, half_spread_ticks=1, size_lots=1)
    with pytest.raises(ValueError):
        LadderParams(levels=1, spacing_ticks=1, half_spread_ticks=0, size_lots=1)
    with pytest.raises(ValueError):
        RandomWalk(0, 1, 1, random.Random())
    with pytest.raises(ValueError):
        Backoff(2, 1, random.Random())
