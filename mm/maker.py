"""The market maker's loop: every ``interval`` it walks each market's reference price, builds
the ladder it wants (:mod:`mm.core`) and turns its live orders into it through the REST API.

Its own orders are tracked by ``clientId`` (fresh for every order, so an order is known before
the exchange has answered for it) and reconciled with ``GET /api/v1/orders`` at least every
``reconcile_interval_s``, whenever its balances' totals move (only a fill moves them), and after
any error. An order whose placement got no answer stays "unconfirmed" until its request's window
has passed: the exchange can no longer carry it out then, so if the reconciliation has not found
it by that time it never will. While a market has unconfirmed orders the ladder does not want,
nothing new is placed there, so an answer lost in an engine restart never becomes a duplicate.

Self-trades cannot happen: every order is ``postOnly`` (refused if it would take, so the maker
never takes from anyone, itself included) and carries ``selfTradePrevention: RejectTaker``; the
ladder's best bid is always strictly below its best ask, and stale orders are cancelled before
new ones are placed.

Failures (``MAINTENANCE`` while the engine restarts, ``TIMEOUT``, HTTP 5xx, 429, a dropped
connection) end the pass: the maker logs one line for the incident, backs off (bounded
exponential with jitter), reconciles and carries on. Nothing but :meth:`Maker.stop` ends it.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from mm.client import Api, ApiError
from mm.config import MarketConfig, MmConfig
from mm.core import (
    Backoff,
    LiveOrder,
    MarketRules,
    Quote,
    RandomWalk,
    RulesError,
    Side,
    build_ladder,
    plan_orders,
)
from mm.incidents import Incidents

__all__ = ["Maker", "Tracked", "QUOTING_STATES", "balance_total", "load_markets"]

logger = logging.getLogger("mm.maker")

QUOTING_STATES = frozenset({"Open", "PostOnly"})
MAX_CLIENT_ID = 4_294_967_295  # u32
MAX_BATCH = 50  # POST /api/v1/orders
# After a request's window, a margin for the engine's clock against ours.
WINDOW_GRACE_S = 2.0
_LIVE_STATUSES = frozenset({"New", "PartiallyFilled"})


@dataclass
class Tracked:
    """One of the maker's orders, as far as it knows."""

    client_id: int
    symbol: str
    side: Side
    price: int  # ticks
    lots: int
    executed_lots: int = 0
    order_id: str | None = None
    confirmed: bool = False
    deadline: float = 0.0  # monotonic: an unconfirmed order cannot appear after it

    @property
    def remaining_lots(self) -> int:
        return self.lots - self.executed_lots

    def live(self) -> LiveOrder:
        return LiveOrder(self.client_id, self.side, self.price, self.remaining_lots, self.confirmed)


def balance_total(capital: Mapping[str, Mapping[str, str]], asset: str) -> Decimal:
    """Available plus locked: everything the account holds of ``asset``."""
    entry = capital.get(asset)
    if entry is None:
        return Decimal(0)
    total = Decimal(0)
    for key in ("available", "locked"):
        try:
            total += Decimal(str(entry.get(key, "0")))
        except InvalidOperation:
            continue
    return total


def load_markets(
    api: Api, configured: Mapping[str, MarketConfig], states: Iterable[str], log: logging.Logger
) -> tuple[dict[str, MarketRules], set[str], set[str]]:
    """The markets to trade: listed by the exchange, configured, and in one of ``states``.
    Also returns the configured symbols the exchange does not list and the listed ones the
    configuration does not mention."""
    listed: dict[str, dict[str, Any]] = {}
    for entry in api.markets():
        name = entry.get("symbol")
        if isinstance(name, str):
            listed[name] = entry
    wanted = set(states)
    active: dict[str, MarketRules] = {}
    for symbol, market_config in configured.items():
        market = listed.get(symbol)
        if market is None:
            continue
        try:
            rules = MarketRules.from_api(market, market_config.min_notional)
            market_config.ladder_params(rules)
        except (RulesError, ValueError) as exc:
            log.warning("%s: cannot quote this market: %s", symbol, exc)
            continue
        if rules.state in wanted:
            active[symbol] = rules
    return active, set(configured) - set(listed), set(listed) - set(configured)


class Maker:
    """Quote every market of ``config`` that the exchange lists, through ``api``.

    ``seed`` makes the reference walks reproducible. ``lock`` is held for each quoting pass:
    whoever holds it sees the maker between two passes (tests compare its tracked orders with
    the exchange's that way).
    """

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
        self.settings = config.maker
        self.seed = seed
        self.clock = clock
        self.log = log
        self.lock = threading.RLock()
        self.incidents = Incidents(log, clock)
        self.backoff = Backoff(
            self.settings.backoff_initial_s, self.settings.backoff_max_s, random.Random(seed)
        )
        self.rules: dict[str, MarketRules] = {}
        self.walks: dict[str, RandomWalk] = {}
        self.baselines: dict[str, int] = {}  # lots of base: the position is measured from it
        self.tracked: dict[int, Tracked] = {}
        self.needs_reconcile = True
        self.started = False
        self.passes = 0
        self.counts: Counter[str] = Counter()
        self._last_reconcile = float("-inf")
        self._markets_loaded = float("-inf")
        self._last_totals: dict[str, Decimal] | None = None
        self._retry_after = 0.0
        # Any start will do: ids only need to be unique among the account's open orders.
        self._next_client_id = 1 + secrets.randbelow(MAX_CLIENT_ID)

    # -- THE LOOP -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Quote until ``stop`` is set, then cancel every order (best effort)."""
        self.log.info(
            "market maker starting: %d configured market(s), every %.2f s",
            len(self.config.markets),
            self.settings.interval_s,
        )
        while not stop.is_set():
            started = self.clock()
            with self.lock:
                ok = self._guarded(self.start if not self.started else self.run_once)
            if ok:
                self.backoff.reset()
                delay = self.settings.interval_s - (self.clock() - started)
            else:
                delay = max(self.backoff.next(), self._retry_after)
            stop.wait(max(0.0, delay))
        self.shutdown()

    def _guarded(self, step: Callable[[], None]) -> bool:
        """Run one step; an error of any kind is an incident, never the end of the loop."""
        self._retry_after = 0.0
        try:
            step()
        except ApiError as exc:
            self.needs_reconcile = True
            self.counts["errors"] += 1
            self._retry_after = exc.retry_after_s or 0.0
            what = "exchange unavailable" if exc.transient else "request refused"
            self.incidents.report("api", f"{what}: {exc}; backing off, then reconciling")
            return False
        except Exception as exc:  # a bug or an answer we cannot read: keep quoting anyway
            self.needs_reconcile = True
            self.counts["errors"] += 1
            if self.incidents.report("internal", f"unexpected error: {exc!r}", level=logging.ERROR):
                self.log.exception("unexpected error in the quoting pass")
            return False
        self.incidents.resolve("api")
        self.incidents.resolve("internal")
        return True

    def start(self) -> None:
        """Learn the markets and start from a clean slate: cancel whatever the account has
        resting in them (left by an earlier run)."""
        self.refresh_markets()
        cancelled = 0
        for symbol in sorted(self.rules):
            cancelled += len(self.api.cancel_all(symbol))
        self.tracked.clear()
        self.needs_reconcile = True
        self.started = True
        if cancelled:
            self.log.info("cancelled %d order(s) left from an earlier run", cancelled)

    def run_once(self) -> None:
        """One quoting pass over every market."""
        now = self.clock()
        if now - self._markets_loaded >= self.settings.markets_refresh_s:
            self.refresh_markets()
        capital = self.api.capital()
        totals = self._totals(capital)
        if (
            self.needs_reconcile
            or now - self._last_reconcile >= self.settings.reconcile_interval_s
            or totals != self._last_totals
        ):
            self.reconcile()
            # Read after the orders: a fill in between is then counted in the balance (and no
            # longer as a resting bid), so the position is never underestimated.
            capital = self.api.capital()
            totals = self._totals(capital)
        self._last_totals = totals
        self._set_baselines(capital)
        for symbol in sorted(self.rules):
            try:
                self.quote(symbol, capital)
            except ApiError as exc:
                if exc.transient:
                    raise
                # One market refusing (its state changed, say) does not stop the others.
                self.needs_reconcile = True
                self.incidents.report(f"market {symbol}", f"{symbol}: {exc}")
            else:
                self.incidents.resolve(f"market {symbol}")
        self.passes += 1

    # -- MARKETS ------------------------------------------------------------------------------

    def refresh_markets(self) -> None:
        active, unlisted, unconfigured = load_markets(
            self.api, self.config.markets, QUOTING_STATES, self.log
        )
        self._markets_loaded = self.clock()
        added = sorted(set(active) - set(self.rules))
        removed = sorted(set(self.rules) - set(active))
        if added:
            self.log.info(
                "quoting %s%s%s",
                ", ".join(added),
                f"; configured but not listed: {', '.join(sorted(unlisted))}" if unlisted else "",
                f"; not configured: {', '.join(sorted(unconfigured))}" if unconfigured else "",
            )
        for symbol in removed:
            self.log.warning("%s: no longer quoted (closed, paused or delisted)", symbol)
            for client_id in [c for c, t in self.tracked.items() if t.symbol == symbol]:
                del self.tracked[client_id]
            try:
                self.api.cancel_all(symbol)
            except ApiError as exc:
                self.log.info("%s: could not cancel its orders: %s", symbol, exc)
        for symbol, rules in active.items():
            if symbol not in self.walks:
                market = self.config.markets[symbol]
                rng = random.Random(f"{self.seed}:{symbol}") if self.seed is not None else None
                self.walks[symbol] = RandomWalk.around(
                    rules.ticks_near(market.reference_price),
                    market.walk_step_bps,
                    market.walk_bound_pct,
                    rng or random.Random(),
                )
        self.rules = active

    def _totals(self, capital: Mapping[str, Mapping[str, str]]) -> dict[str, Decimal]:
        assets = {r.base for r in self.rules.values()} | {r.quote for r in self.rules.values()}
        return {asset: balance_total(capital, asset) for asset in sorted(assets)}

    def _set_baselines(self, capital: Mapping[str, Mapping[str, str]]) -> None:
        for symbol, rules in self.rules.items():
            if symbol in self.baselines:
                continue
            target = self.config.markets[symbol].target_inventory
            held = balance_total(capital, rules.base) if target is None else target
            self.baselines[symbol] = rules.lots_floor(held)
            self.log.info(
                "%s: inventory baseline %s %s (position limit ±%s)",
                symbol,
                rules.quantity_text(self.baselines[symbol]),
                rules.base,
                self.config.markets[symbol].max_inventory,
            )

    def position_lots(self, symbol: str, capital: Mapping[str, Mapping[str, str]]) -> int:
        rules = self.rules[symbol]
        return rules.lots_ceil(balance_total(capital, rules.base)) - self.baselines[symbol]

    # -- QUOTING ------------------------------------------------------------------------------

    def _shares(self) -> Counter[str]:
        """How many quoted markets use each asset: a balance is split evenly between them."""
        used: Counter[str] = Counter()
        for rules in self.rules.values():
            used[rules.base] += 1
            used[rules.quote] += 1
        return used

    def quote(self, symbol: str, capital: Mapping[str, Mapping[str, str]]) -> None:
        rules = self.rules[symbol]
        market = self.config.markets[symbol]
        shares = self._shares()
        reference = self.walks[symbol].step()
        ladder = build_ladder(
            rules,
            market.ladder_params(rules),
            reference,
            position_lots=self.position_lots(symbol, capital),
            base_lots=rules.lots_floor(balance_total(capital, rules.base) / shares[rules.base]),
            quote_budget=rules.tick_lots_floor(
                balance_total(capital, rules.quote) / shares[rules.quote]
            ),
        )
        live = [t.live() for t in self.tracked.values() if t.symbol == symbol]
        plan = plan_orders(ladder, live)
        filled = False
        for client_id in plan.cancel:
            filled |= self._cancel(symbol, client_id)
        if filled or plan.unconfirmed:
            # A fill raced the cancel (the position moved), or orders we cannot see yet may
            # still land: look again before adding anything.
            self.needs_reconcile = True
            return
        if plan.place:
            self._place(symbol, plan.place)

    def _cancel(self, symbol: str, client_id: int) -> bool:
        """Cancel one tracked order; True if it traded before it went."""
        order = self.tracked[client_id]
        try:
            if order.order_id is not None:
                answer = self.api.cancel_order(symbol, order_id=order.order_id)
            else:
                answer = self.api.cancel_order(symbol, client_id=client_id)
        except ApiError as exc:
            if exc.code == "RESOURCE_NOT_FOUND":  # gone already: filled, most likely
                del self.tracked[client_id]
                return True
            raise
        del self.tracked[client_id]
        self.counts["cancelled"] += 1
        try:
            executed = self.rules[symbol].lots(answer.get("executedQuantity", "0"))
        except RulesError:
            return True
        return executed > order.executed_lots

    def _new_client_id(self) -> int:
        while True:
            client_id = self._next_client_id
            self._next_client_id = client_id % MAX_CLIENT_ID + 1
            if client_id not in self.tracked:
                return client_id

    def _place(self, symbol: str, quotes: Iterable[Quote]) -> None:
        rules = self.rules[symbol]
        rejected: Counter[str] = Counter()
        batch = list(quotes)
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            deadline = self.clock() + self.settings.window_ms / 1000 + WINDOW_GRACE_S
            orders: list[dict[str, object]] = []
            for quote in chunk:
                client_id = self._new_client_id()
                self.tracked[client_id] = Tracked(
                    client_id, symbol, quote.side, quote.price, quote.lots, deadline=deadline
                )
                orders.append(
                    {
                        "symbol": symbol,
                        "side": quote.side.value,
                        "orderType": "Limit",
                        "price": rules.price_text(quote.price),
                        "quantity": rules.quantity_text(quote.lots),
                        "postOnly": True,
                        "selfTradePrevention": "RejectTaker",
                        "clientId": client_id,
                    }
                )
            client_ids = [int(str(order["clientId"])) for order in orders]
            try:
                answers = self.api.place_orders(orders)
                if len(answers) != len(orders):
                    raise ApiError(200, "BAD_RESPONSE", "a batch answer of the wrong length")
            except ApiError as exc:
                if not exc.outcome_unknown:  # refused: nothing was queued
                    for client_id in client_ids:
                        self.tracked.pop(client_id, None)
                raise
            for client_id, answer in zip(client_ids, answers, strict=True):
                self._placed(rules, client_id, answer, rejected)
        if rejected:
            codes = ", ".join(f"{code} x{count}" for code, count in sorted(rejected.items()))
            self.incidents.report(f"refusals {symbol}", f"{symbol}: quotes refused: {codes}")
        else:
            self.incidents.resolve(f"refusals {symbol}")

    def _placed(
        self, rules: MarketRules, client_id: int, answer: Mapping[str, Any], rejected: Counter[str]
    ) -> None:
        order = self.tracked[client_id]
        code = answer.get("code")
        if isinstance(code, str):
            del self.tracked[client_id]
            rejected[code] += 1
            self.counts["rejected"] += 1
            return
        self.counts["placed"] += 1
        try:
            order.executed_lots = rules.lots(answer.get("executedQuantity", "0"))
        except RulesError:
            self.needs_reconcile = True
        if answer.get("status") in _LIVE_STATUSES and answer.get("id") is not None:
            order.order_id = str(answer["id"])
            order.confirmed = True
        else:  # closed at once (a post-only order never should be)
            del self.tracked[client_id]
            self.needs_reconcile = True

    # -- RECONCILIATION -----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the tracked orders the exchange's open orders in the quoted markets: adopt the
        unconfirmed ones that appeared, forget the ones that are gone, cancel the ones the
        maker does not know (orphans: from a lost answer, or from someone else with the key)."""
        orders = self.api.open_orders()
        now = self.clock()
        seen: set[int] = set()
        orphans: list[tuple[str, str]] = []
        for order in orders:
            symbol = order.get("symbol")
            if not isinstance(symbol, str) or symbol not in self.rules:
                continue  # not a market this maker quotes: not its to touch
            order_id = str(order.get("id"))
            client_id = order.get("clientId")
            tracked = self.tracked.get(client_id) if isinstance(client_id, int) else None
            if (
                tracked is None
                or client_id in seen
                or tracked.symbol != symbol
                or tracked.order_id not in (None, order_id)
            ):
                orphans.append((symbol, order_id))
                continue
            rules = self.rules[symbol]
            try:
                lots = rules.lots(order.get("quantity"))
                executed = rules.lots(order.get("executedQuantity", "0"))
            except RulesError:
                orphans.append((symbol, order_id))
                continue
            seen.add(tracked.client_id)
            tracked.order_id = order_id
            tracked.confirmed = True
            tracked.lots = lots
            tracked.executed_lots = executed
        for client_id, tracked in list(self.tracked.items()):
            if client_id in seen or (not tracked.confirmed and now < tracked.deadline):
                continue
            del self.tracked[client_id]  # filled or cancelled; or never placed
        for symbol, order_id in orphans:
            try:
                self.api.cancel_order(symbol, order_id=order_id)
            except ApiError as exc:
                if exc.code != "RESOURCE_NOT_FOUND":
                    raise
        if orphans:
            self.counts["orphans"] += len(orphans)
            self.log.info("cancelled %d order(s) the maker did not know of", len(orphans))
        self.needs_reconcile = False
        self._last_reconcile = now

    # -- STOPPING -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Cancel every order in the quoted markets, retrying until ``shutdown_timeout_s``."""
        with self.lock:
            symbols = set(self.rules) | {t.symbol for t in self.tracked.values()}
            deadline = self.clock() + self.settings.shutdown_timeout_s
            cancelled = 0
            last_error: ApiError | None = None
            backoff = Backoff(self.settings.backoff_initial_s, 2.0, random.Random(self.seed))
            while symbols and self.clock() < deadline:
                for symbol in sorted(symbols):
                    try:
                        cancelled += len(self.api.cancel_all(symbol))
                    except ApiError as exc:
                        last_error = exc
                    else:
                        symbols.discard(symbol)
                        for client_id in [c for c, t in self.tracked.items() if t.symbol == symbol]:
                            del self.tracked[client_id]
                if symbols:
                    time.sleep(min(backoff.next(), max(0.0, deadline - self.clock())))
            if symbols:
                self.log.warning(
                    "stopped; could not cancel the orders in %s: %s",
                    ", ".join(sorted(symbols)),
                    last_error,
                )
            else:
                self.log.info("stopped; cancelled %d order(s)", cancelled)

    # -- INSPECTION ---------------------------------------------------------------------------

    def tracked_orders(self) -> dict[int, Tracked]:
        """A copy of the tracked orders, by client id."""
        with self.lock:
            return {client_id: replace(order) for client_id, order in self.tracked.items()}
