"""mm.maker and mm.taker against an in-memory exchange: quoting, reconciliation, errors and
lost answers, inventory limits, shutdown. (tests/integration/test_market_maker.py runs them
against the real stack.)"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest

from mm.client import ApiError
from mm.config import MakerSettings, MarketConfig, MmConfig, TakerSettings
from mm.core import Side
from mm.maker import Maker
from mm.taker import Taker


def market_json(symbol: str, tick: str, step: str, state: str = "Open") -> dict[str, Any]:
    base, quote = symbol.split("_")
    return {
        "symbol": symbol,
        "baseSymbol": base,
        "quoteSymbol": quote,
        "marketType": "SPOT",
        "orderBookState": state,
        "createdAt": None,
        "filters": {
            "price": {"minPrice": tick, "maxPrice": "1000000", "tickSize": tick},
            "quantity": {"minQuantity": step, "maxQuantity": "100000", "stepSize": step},
        },
    }


@dataclass
class FakeOrder:
    id: str
    client_id: int | None
    account: int
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    executed: Decimal = Decimal(0)
    post_only: bool = False
    stp: str | None = None

    def json(self, status: str = "New") -> dict[str, Any]:
        return {
            "id": self.id,
            "clientId": self.client_id,
            "symbol": self.symbol,
            "side": self.side,
            "orderType": "Limit",
            "timeInForce": "GTC",
            "price": str(self.price),
            "quantity": str(self.quantity),
            "executedQuantity": str(self.executed),
            "status": status,
            "postOnly": self.post_only,
            "selfTradePrevention": self.stp,
        }


@dataclass
class FakeExchange:
    """One account's view of an exchange: markets, balances, resting orders (no matching;
    :meth:`fill` stands for someone trading against an order)."""

    markets_json: list[dict[str, Any]]
    balances: dict[str, list[Decimal]]  # asset -> [available, locked]
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    failures: list[ApiError] = field(default_factory=list)  # raised by the next calls
    lose_next_place: bool = False  # carry out the next batch, then answer TIMEOUT
    drop_next_place: bool = False  # answer TIMEOUT and do nothing
    calls: Counter[str] = field(default_factory=Counter)
    placed: list[dict[str, object]] = field(default_factory=list)
    next_id: int = 1

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.failures:
            raise self.failures.pop(0)

    def _rules(self, symbol: str) -> tuple[str, str]:
        base, quote = symbol.split("_")
        return base, quote

    def _lock(self, order: FakeOrder, sign: int) -> bool:
        base, quote = self._rules(order.symbol)
        remaining = order.quantity - order.executed
        if order.side == "Bid":
            asset, amount = quote, remaining * order.price
        else:
            asset, amount = base, remaining
        balance = self.balances.setdefault(asset, [Decimal(0), Decimal(0)])
        if sign > 0 and balance[0] < amount:
            return False
        balance[0] -= sign * amount
        balance[1] += sign * amount
        return True

    # -- the Api protocol ------------------------------------------------------------------

    def markets(self) -> list[dict[str, Any]]:
        self._call("markets")
        return self.markets_json

    def depth(self, symbol: str, limit: int = 20) -> dict[str, Any]:
        self._call("depth")
        mine = [o for o in self.orders.values() if o.symbol == symbol]
        bids = sorted((o for o in mine if o.side == "Bid"), key=lambda o: -o.price)
        asks = sorted((o for o in mine if o.side == "Ask"), key=lambda o: o.price)
        return {
            "bids": [[str(o.price), str(o.quantity - o.executed)] for o in bids[:limit]],
            "asks": [[str(o.price), str(o.quantity - o.executed)] for o in asks[:limit]],
        }

    def capital(self) -> dict[str, dict[str, str]]:
        self._call("capital")
        return {a: {"available": str(v[0]), "locked": str(v[1])} for a, v in self.balances.items()}

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        self._call("open_orders")
        return [o.json() for o in self.orders.values() if symbol in (None, o.symbol)]

    def _place_one(self, body: Mapping[str, object]) -> dict[str, Any]:
        self.placed.append(dict(body))
        client_id = body.get("clientId")
        if client_id is not None and any(o.client_id == client_id for o in self.orders.values()):
            return {"code": "INVALID_CLIENT_REQUEST", "message": "duplicate clientId"}
        order = FakeOrder(
            str(self.next_id),
            client_id if isinstance(client_id, int) else None,
            1,
            str(body["symbol"]),
            str(body["side"]),
            Decimal(str(body["price"])),
            Decimal(str(body["quantity"])),
            post_only=bool(body.get("postOnly")),
            stp=str(body.get("selfTradePrevention")),
        )
        self.next_id += 1
        opposite = [
            o for o in self.orders.values() if o.symbol == order.symbol and o.side != order.side
        ]
        crossing = [
            o
            for o in opposite
            if (o.price <= order.price if order.side == "Bid" else o.price >= order.price)
        ]
        if crossing:
            # An account never trades with itself: RejectTaker expires the order; postOnly
            # refuses it first.
            if order.post_only:
                return {"code": "INVALID_ORDER", "message": "Post-only order would take"}
            return order.json("Expired")
        if body.get("timeInForce") == "IOC":
            return order.json("Expired")
        if not self._lock(order, +1):
            return {"code": "INSUFFICIENT_FUNDS", "message": "Insufficient funds"}
        self.orders[order.id] = order
        return order.json()

    def place_order(self, order: Mapping[str, object]) -> dict[str, Any]:
        self._call("place_order")
        answer = self._place_one(order)
        if "code" in answer:
            raise ApiError(400, str(answer["code"]), str(answer["message"]))
        return answer

    def place_orders(self, orders: Sequence[Mapping[str, object]]) -> list[dict[str, Any]]:
        self._call("place_orders")
        if self.drop_next_place:
            self.drop_next_place = False
            raise ApiError(504, "TIMEOUT", "no answer")
        answers = [self._place_one(order) for order in orders]
        if self.lose_next_place:
            self.lose_next_place = False
            raise ApiError(504, "TIMEOUT", "no answer")
        return answers

    def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_id: int | None = None
    ) -> dict[str, Any]:
        self._call("cancel_order")
        for order in list(self.orders.values()):
            if order.symbol == symbol and (
                order.id == order_id or (order_id is None and order.client_id == client_id)
            ):
                return self._cancel(order)
        raise ApiError(404, "RESOURCE_NOT_FOUND", "Order not found")

    def _cancel(self, order: FakeOrder) -> dict[str, Any]:
        self._lock(order, -1)
        del self.orders[order.id]
        return order.json("Cancelled")

    def cancel_all(self, symbol: str) -> list[dict[str, Any]]:
        self._call("cancel_all")
        return [self._cancel(o) for o in list(self.orders.values()) if o.symbol == symbol]

    # -- the rest of the market ---------------------------------------------------------------

    def fill(self, order_id: str, quantity: Decimal | None = None) -> None:
        """Someone takes ``quantity`` (all) of a resting order (no fees)."""
        order = self.orders[order_id]
        quantity = order.quantity - order.executed if quantity is None else quantity
        base, quote = self._rules(order.symbol)
        if order.side == "Bid":
            self.balances[quote][1] -= quantity * order.price
            self.balances.setdefault(base, [Decimal(0), Decimal(0)])[0] += quantity
        else:
            self.balances[base][1] -= quantity
            self.balances.setdefault(quote, [Decimal(0), Decimal(0)])[0] += quantity * order.price
        order.executed += quantity
        if order.executed == order.quantity:
            del self.orders[order_id]

    def book(self, symbol: str) -> tuple[list[FakeOrder], list[FakeOrder]]:
        mine = [o for o in self.orders.values() if o.symbol == symbol]
        bids = sorted((o for o in mine if o.side == "Bid"), key=lambda o: -o.price)
        asks = sorted((o for o in mine if o.side == "Ask"), key=lambda o: o.price)
        return bids, asks

    def holding(self, asset: str) -> Decimal:
        return sum(self.balances.get(asset, [Decimal(0)]), Decimal(0))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


SOL_CONFIG = MarketConfig(
    symbol="SOL_USDC",
    reference_price=Decimal(150),
    walk_step_bps=Decimal(0),
    levels=12,
    spacing_ticks=5,
    half_spread_ticks=5,
    size=Decimal(1),
    max_inventory=Decimal(20),
    skew_ticks=50,
)
BTC_CONFIG = MarketConfig(
    symbol="BTC_USDC",
    reference_price=Decimal(95_000),
    spacing_ticks=300,
    half_spread_ticks=300,
    size=Decimal("0.01"),
    max_inventory=Decimal(1),
)


def make_exchange(**balances: str) -> FakeExchange:
    funds = {"USDC": "1000000", "SOL": "50", "BTC": "1", **balances}
    return FakeExchange(
        [
            market_json("SOL_USDC", "0.01", "0.01"),
            market_json("BTC_USDC", "0.1", "0.00001"),
            market_json("ETH_USDC", "0.01", "0.0001"),  # listed, not configured
        ],
        {asset: [Decimal(amount), Decimal(0)] for asset, amount in funds.items()},
    )


def make_maker(exchange: FakeExchange, *markets: MarketConfig, **settings: Any) -> Maker:
    chosen = markets or (SOL_CONFIG, BTC_CONFIG)
    config = MmConfig(
        markets={m.symbol: m for m in chosen},
        maker=MakerSettings(
            **{"interval_s": 0.01, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **settings}
        ),
    )
    return Maker(exchange, config, seed=1, clock=FakeClock())


def step(maker: Maker) -> bool:
    return maker._guarded(maker.start if not maker.started else maker.run_once)


def assert_consistent(maker: Maker, exchange: FakeExchange) -> None:
    """Tracked orders are exactly the exchange's, and no book crosses or repeats a price."""
    tracked = {(t.order_id, t.client_id) for t in maker.tracked.values()}
    assert tracked == {(o.id, o.client_id) for o in exchange.orders.values()}
    for symbol in ("SOL_USDC", "BTC_USDC"):
        bids, asks = exchange.book(symbol)
        assert len({o.price for o in bids}) == len(bids)
        assert len({o.price for o in asks}) == len(asks)
        if bids and asks:
            assert bids[0].price < asks[0].price


# -- THE MAKER ----------------------------------------------------------------------------------


def test_maker_cancels_leftovers_and_quotes_every_configured_listed_market() -> None:
    exchange = make_exchange()
    exchange._place_one({"symbol": "SOL_USDC", "side": "Bid", "price": "1", "quantity": "1"})
    maker = make_maker(exchange)
    assert step(maker)  # start
    assert exchange.calls["cancel_all"] == 2 and not exchange.orders
    assert step(maker)
    for symbol in ("SOL_USDC", "BTC_USDC"):
        bids, asks = exchange.book(symbol)
        assert len(bids) == len(asks) == 12
    assert not exchange.book("ETH_USDC")[0]
    assert all(
        body["postOnly"] is True
        and body["selfTradePrevention"] == "RejectTaker"
        and isinstance(body["clientId"], int)
        and body["orderType"] == "Limit"
        for body in exchange.placed[1:]
    )
    assert_consistent(maker, exchange)
    # A quiet pass changes nothing: the walk is still and nothing filled.
    before = dict(exchange.calls)
    assert step(maker)
    assert exchange.calls["place_orders"] == before["place_orders"]
    assert exchange.calls["cancel_order"] == before.get("cancel_order", 0)


def test_maker_replaces_filled_quotes_after_seeing_the_balances_move() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange)
    step(maker), step(maker)
    best_ask = exchange.book("SOL_USDC")[1][0]
    exchange.fill(best_ask.id)
    reconciles = exchange.calls["open_orders"]
    assert step(maker)
    assert exchange.calls["open_orders"] == reconciles + 1  # the totals moved: reconcile
    bids, asks = exchange.book("SOL_USDC")
    assert len(asks) == 12 and len(bids) == 12
    assert_consistent(maker, exchange)


def test_a_long_position_stops_the_bids_and_skews_the_asks_down() -> None:
    exchange = make_exchange(SOL="10")
    maker = make_maker(exchange, SOL_CONFIG)
    step(maker), step(maker)
    first_ask = exchange.book("SOL_USDC")[1][0].price
    limit = Decimal(10) + SOL_CONFIG.max_inventory
    for _ in range(40):
        bids, _asks = exchange.book("SOL_USDC")
        if bids:
            exchange.fill(bids[0].id)
        assert step(maker)
        # Everything resting on the bid side fills: the position still stays within the limit.
        resting = sum(o.quantity - o.executed for o in exchange.book("SOL_USDC")[0])
        assert exchange.holding("SOL") + resting <= limit
        assert_consistent(maker, exchange)
    bids, asks = exchange.book("SOL_USDC")
    assert exchange.holding("SOL") >= limit - 1
    assert not bids or sum(o.quantity for o in bids) <= limit - exchange.holding("SOL")
    assert asks[0].price < first_ask


def test_maintenance_backs_off_logs_once_and_reconciles(caplog: pytest.LogCaptureFixture) -> None:
    exchange = make_exchange()
    maker = make_maker(exchange)
    step(maker), step(maker)
    reconciles = exchange.calls["open_orders"]
    exchange.failures = [ApiError(503, "MAINTENANCE", "engine down")] * 5
    with caplog.at_level(logging.INFO, logger="mm.maker"):
        results = [step(maker) for _ in range(6)]
    assert results == [False] * 5 + [True]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "MAINTENANCE" in warnings[0].getMessage()
    assert any("resolved after 5 failure(s)" in r.getMessage() for r in caplog.records)
    assert exchange.calls["open_orders"] == reconciles + 1
    assert_consistent(maker, exchange)


def test_an_unexpected_error_never_ends_the_maker(caplog: pytest.LogCaptureFixture) -> None:
    exchange = make_exchange()
    maker = make_maker(exchange)
    step(maker)
    exchange.failures = [RuntimeError("boom")]  # type: ignore[list-item]
    with caplog.at_level(logging.INFO, logger="mm.maker"):
        assert not step(maker)
    assert step(maker)
    assert len(exchange.book("SOL_USDC")[0]) == 12


def test_a_lost_answer_is_adopted_not_duplicated() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange)
    step(maker)
    exchange.lose_next_place = True  # the first market's batch lands, its answer is lost
    assert not step(maker)
    assert any(not t.confirmed for t in maker.tracked.values())
    for _ in range(3):
        assert step(maker)
    assert all(t.confirmed for t in maker.tracked.values())
    assert len(exchange.orders) == 48
    assert_consistent(maker, exchange)


def test_a_dropped_order_is_placed_again_once_its_window_has_passed() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange, SOL_CONFIG)
    step(maker)
    exchange.drop_next_place = True
    assert not step(maker)
    assert step(maker)  # the unknown orders are wanted quotes: nothing is placed over them
    assert not exchange.orders
    assert isinstance(maker.clock, FakeClock)
    maker.clock.now += 8  # the requests' window (5 s) and the grace (2 s) have passed
    assert step(maker)
    assert len(exchange.orders) == 24
    assert_consistent(maker, exchange)


def test_orphans_are_cancelled() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange)
    step(maker), step(maker)
    stray = exchange._place_one(
        {"symbol": "SOL_USDC", "side": "Bid", "price": "100", "quantity": "1", "clientId": 7}
    )
    maker.needs_reconcile = True
    assert step(maker)
    assert stray["id"] not in exchange.orders
    assert maker.counts["orphans"] == 1
    assert_consistent(maker, exchange)


def test_a_market_that_closes_is_no_longer_quoted() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange, markets_refresh_s=0.0)
    step(maker), step(maker)
    exchange.markets_json[0] = market_json("SOL_USDC", "0.01", "0.01", state="CancelOnly")
    assert step(maker)
    assert not exchange.book("SOL_USDC")[0]
    assert len(exchange.book("BTC_USDC")[0]) == 12
    assert_consistent(maker, exchange)


def test_run_stops_on_the_event_and_cancels_everything() -> None:
    exchange = make_exchange()
    config = MmConfig(
        markets={"SOL_USDC": SOL_CONFIG},
        maker=MakerSettings(interval_s=0.01, backoff_initial_s=0.01, backoff_max_s=0.05),
    )
    maker = Maker(exchange, config, seed=3)
    stop = threading.Event()
    thread = threading.Thread(target=maker.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if len(exchange.orders) == 24:
                break
            threading.Event().wait(0.01)
        assert len(exchange.orders) == 24
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert not exchange.orders and not maker.tracked


def test_shutdown_gives_up_after_its_timeout() -> None:
    exchange = make_exchange()
    maker = make_maker(exchange, SOL_CONFIG, shutdown_timeout_s=0.2)
    maker.clock = __import__("time").monotonic
    step(maker), step(maker)
    exchange.failures = [ApiError(503, "MAINTENANCE", "down")] * 1_000
    maker.shutdown()  # returns; logs what it could not cancel
    assert exchange.orders


def test_walk_is_seeded() -> None:
    def references(seed: int) -> list[int]:
        exchange = make_exchange()
        config = MmConfig(markets={"SOL_USDC": replace(SOL_CONFIG, walk_step_bps=Decimal(5))})
        maker = Maker(exchange, config, seed=seed, clock=FakeClock())
        step(maker), step(maker)
        return [maker.walks["SOL_USDC"].step() for _ in range(20)]

    assert references(5) == references(5) != references(6)


# -- THE TAKER ----------------------------------------------------------------------------------


def make_taker(exchange: FakeExchange, seed: int = 0) -> Taker:
    config = MmConfig(
        markets={"SOL_USDC": replace(SOL_CONFIG, taker_size=Decimal("0.5"))},
        taker=TakerSettings(
            min_interval_s=0.01, max_interval_s=0.02, backoff_initial_s=0.01, backoff_max_s=0.02
        ),
    )
    return Taker(exchange, config, seed=seed, clock=FakeClock())


def test_taker_sends_a_small_marketable_ioc_order_within_its_balance() -> None:
    exchange = make_exchange()
    exchange._place_one({"symbol": "SOL_USDC", "side": "Ask", "price": "150.05", "quantity": "5"})
    exchange._place_one({"symbol": "SOL_USDC", "side": "Bid", "price": "149.95", "quantity": "5"})
    exchange.placed.clear()
    seen = set()
    for seed in range(10):
        answer = make_taker(exchange, seed).trade_once()
        assert answer is not None
        body = exchange.placed[-1]
        assert body["timeInForce"] == "IOC" and body["selfTradePrevention"] == "RejectTaker"
        assert body["price"] == ("150.05" if body["side"] == "Bid" else "149.95")
        assert Decimal("0.01") <= Decimal(str(body["quantity"])) <= Decimal("0.5")
        seen.add(body["side"])
    assert seen == {"Bid", "Ask"}


def test_taker_skips_an_empty_book_and_a_side_it_cannot_pay_for() -> None:
    exchange = make_exchange()
    assert make_taker(exchange).trade_once() is None
    exchange._place_one({"symbol": "SOL_USDC", "side": "Ask", "price": "150.05", "quantity": "5"})
    exchange._place_one({"symbol": "SOL_USDC", "side": "Bid", "price": "149.95", "quantity": "5"})
    exchange.balances["USDC"][0] = Decimal(0)
    for seed in range(5):
        make_taker(exchange, seed).trade_once()
        assert exchange.placed[-1]["side"] == Side.ASK.value  # no USDC: it can only sell


def test_taker_run_survives_errors_and_stops() -> None:
    exchange = make_exchange()
    exchange.failures = [ApiError(503, "MAINTENANCE", "down")] * 3
    taker = make_taker(exchange)
    taker.clock = __import__("time").monotonic
    stop = threading.Event()
    thread = threading.Thread(target=taker.run, args=(stop,))
    thread.start()
    threading.Event().wait(0.3)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert exchange.calls["markets"] >= 1 and not exchange.failures
