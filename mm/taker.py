"""The taker: every few seconds (uniformly random in ``[min_interval_s, max_interval_s]``) one
small immediate-or-cancel order on a random quoted market and side, priced at the best opposite
level and sized within its own balance, so trades happen and tickers, klines and trade streams
move. It runs on an account of its own: the maker's quotes are hit, never self-traded (and
``selfTradePrevention: RejectTaker`` would stop the order if they were the same account)."""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from mm.client import Api, ApiError
from mm.config import MmConfig
from mm.core import Backoff, MarketRules, RulesError, Side
from mm.incidents import Incidents
from mm.maker import MAX_CLIENT_ID, load_markets

__all__ = ["Taker", "best_price"]

logger = logging.getLogger("mm.taker")


def best_price(rules: MarketRules, levels: object, book_side: Side) -> int | None:
    """The best price (ticks) of one side of a depth answer: the highest of the bids, the
    lowest of the asks (a client must not rely on the order of the levels)."""
    if not isinstance(levels, Sequence):
        return None
    prices: list[int] = []
    for level in levels:
        if isinstance(level, Sequence) and len(level) >= 2:
            try:
                prices.append(rules.ticks(level[0]))
            except RulesError:
                continue
    if not prices:
        return None
    return max(prices) if book_side is Side.BID else min(prices)


def _available(capital: Mapping[str, Mapping[str, str]], asset: str) -> Decimal:
    try:
        return Decimal(str(capital.get(asset, {}).get("available", "0")))
    except ArithmeticError:
        return Decimal(0)


class Taker:
    def __init__(
        self,
        api: Api,
        config: MmConfig,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.api = api
        self.config = config
        self.settings = config.taker
        self.rng = random.Random(seed)
        self.clock = clock
        self.log = log
        self.incidents = Incidents(log, clock)
        self.backoff = Backoff(
            self.settings.backoff_initial_s, self.settings.backoff_max_s, random.Random(seed)
        )
        self.rules: dict[str, MarketRules] = {}
        self.orders = 0
        self.filled = 0
        self._markets_loaded = float("-inf")
        self._next_client_id = 1 + secrets.randbelow(MAX_CLIENT_ID)

    def run(self, stop: threading.Event) -> None:
        self.log.info(
            "taker starting: an order every %.1f-%.1f s",
            self.settings.min_interval_s,
            self.settings.max_interval_s,
        )
        delay = self.next_delay()
        while not stop.wait(delay):
            try:
                self.trade_once()
            except ApiError as exc:
                self.incidents.report("api", f"taker: {exc}; backing off")
                delay = max(self.backoff.next(), exc.retry_after_s or 0.0)
                continue
            except Exception as exc:  # never die of one bad answer
                if self.incidents.report("internal", f"taker: unexpected {exc!r}", level=40):
                    self.log.exception("unexpected error in the taker")
                delay = self.backoff.next()
                continue
            self.incidents.resolve("api")
            self.incidents.resolve("internal")
            self.backoff.reset()
            delay = self.next_delay()
        self.log.info("taker stopped: %d order(s), %d with a fill", self.orders, self.filled)

    def next_delay(self) -> float:
        return self.rng.uniform(self.settings.min_interval_s, self.settings.max_interval_s)

    def _client_id(self) -> int:
        client_id = self._next_client_id
        self._next_client_id = client_id % MAX_CLIENT_ID + 1
        return client_id

    def trade_once(self) -> dict[str, Any] | None:
        """Send one marketable IOC order; its answer, or ``None`` when there was nothing to
        trade (an empty book, or no balance for either side)."""
        if self.clock() - self._markets_loaded >= self.settings.markets_refresh_s:
            self.rules, _, _ = load_markets(self.api, self.config.markets, {"Open"}, self.log)
            self._markets_loaded = self.clock()
        if not self.rules:
            return None
        symbol = self.rng.choice(sorted(self.rules))
        rules = self.rules[symbol]
        market = self.config.markets[symbol]
        depth = self.api.depth(symbol, 5)
        capital = self.api.capital()
        sides = [Side.BID, Side.ASK]
        self.rng.shuffle(sides)
        largest = max(1, rules.lots_floor(market.taker_size or market.size))
        wanted = self.rng.randint(1, largest)
        for side in sides:
            # A buy takes the lowest ask, a sell the highest bid.
            opposite = Side.ASK if side is Side.BID else Side.BID
            price = best_price(rules, depth.get("asks" if side is Side.BID else "bids"), opposite)
            if price is None:
                continue
            lots = max(wanted, rules.min_lots_at(price))
            if side is Side.BID:
                lots = min(lots, rules.tick_lots_floor(_available(capital, rules.quote)) // price)
            else:
                lots = min(lots, rules.lots_floor(_available(capital, rules.base)))
            if lots < rules.min_lots_at(price):
                continue
            order: dict[str, object] = {
                "symbol": symbol,
                "side": side.value,
                "orderType": "Limit",
                "price": rules.price_text(price),
                "quantity": rules.quantity_text(lots),
                "timeInForce": "IOC",
                "selfTradePrevention": "RejectTaker",
                "clientId": self._client_id(),
            }
            answer = self.api.place_order(order)
            self.orders += 1
            executed = answer.get("executedQuantity", "0")
            if executed not in ("0", None) and Decimal(str(executed)) > 0:
                self.filled += 1
            self.log.info(
                "%s %s %s @ %s: %s, executed %s",
                symbol,
                side.value,
                order["quantity"],
                order["price"],
                answer.get("status"),
                executed,
            )
            return answer
        self.log.debug("%s: nothing to take (empty book or no balance)", symbol)
        return None
