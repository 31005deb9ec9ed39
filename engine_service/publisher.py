"""The market-data publisher: conflated, sequenced updates handed to a pluggable sink.

It runs beside the matcher, so a slow subscriber path never slows matching. Per market, what
arrives while a delivery is in flight (or within the conflation interval after the last one
started) is merged into one pending update: depth levels by price (the latest quantity wins)
with the update-id range ``U..u`` extended, never broken; trades appended; stats replaced. Each
market (and the private stream) has at most one delivery in flight; a failed delivery is
retried with the very same update (same ``U..u``), and what arrived meanwhile waits for the
next one.

Private events go out unconflated (a trader waits for their order's fate), all accounts in one
delivery. A fill is sent with the order as it stands after it (:class:`OrderFilled`): the
publisher keeps the open orders' views, seeded from the engine at start-up and advanced by the
events, since a trade alone does not say what the order was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol

import msgspec

from cloudex.market_data import (
    MarketUpdate,
    OrderFilled,
    PrivateEvent,
    PrivateUpdate,
    encode_update,
)
from cloudex.messages import (
    AnyEvent,
    BalanceChanged,
    DepthChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    OrderView,
    TradeExecuted,
)
from cloudex.views import order_view_after_fill, order_view_from_accepted

__all__ = [
    "MarketUpdate",
    "PrivateUpdate",
    "MarketDataSink",
    "MemorySink",
    "RedisPubSubSink",
    "LambdaFanoutSink",
    "FanoutFailed",
    "MarketDataPublisher",
]

log = logging.getLogger(__name__)

# A pending update holds at most this many trades or private events; older ones are dropped
# (and counted) rather than letting a dead sink grow memory without bound. 10,000 trades are
# about 1.5 MB of JSON: well inside Lambda's 6 MB synchronous payload.
MAX_PENDING_ITEMS = 10_000


def merge_market_event(update: MarketUpdate, event: AnyEvent) -> None:
    if not update.since:
        update.since = event.ts
    update.ts = event.ts
    if not update.first_seq:
        update.first_seq = event.seq
    kind = type(event)
    if kind is DepthChanged:
        depth: DepthChanged = event  # type: ignore[assignment]
        if not update.first_update_id:
            update.first_update_id = depth.update_id
        update.last_update_id = depth.update_id
        update.bids.update(depth.bids)
        update.asks.update(depth.asks)
    elif kind is TradeExecuted:
        update.trades.append(event)  # type: ignore[arg-type]
        if len(update.trades) > MAX_PENDING_ITEMS:
            del update.trades[0]
    elif kind is MarketStats:
        update.stats = event  # type: ignore[assignment]


def trim_private(update: PrivateUpdate) -> None:
    for account, events in update.accounts.items():
        excess = len(events) - MAX_PENDING_ITEMS
        if excess > 0:
            del events[:excess]
            update.dropped += excess
            log.warning("account %d: %d private events dropped by a slow sink", account, excess)


Update = MarketUpdate | PrivateUpdate


class _Seed(NamedTuple):
    views: list[OrderView]
    replay_switch: bool = False
    delivered_through: int | None = None


class MarketDataSink(Protocol):
    def deliver(self, update: Update) -> None:
        """Deliver one update; raise to have the same update retried."""


class MemorySink:
    """Keeps every delivered update (tests, the benchmark); can be told to fail."""

    def __init__(self) -> None:
        self.delivered: list[Update] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    def deliver(self, update: Update) -> None:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("sink told to fail")
            self.delivered.append(update)

    def market_updates(self, market: str) -> list[MarketUpdate]:
        with self._lock:
            return [u for u in self.delivered if isinstance(u, MarketUpdate) and u.market == market]

    def account_events(self, account: int) -> list[PrivateEvent]:
        with self._lock:
            return [
                e
                for u in self.delivered
                if isinstance(u, PrivateUpdate)
                for e in u.accounts.get(account, ())
            ]


class RedisPubSubSink:
    """Publishes each update (msgpack) on ``cx:md:<market>`` or ``cx:md:private``: a sink any
    process can read, used when no fan-out function is configured. Encoding a batch's updates
    costs the matcher's GIL, so nothing is encoded while nobody listens (checked every second).
    """

    def __init__(self, client: Any, recheck_s: float = 1.0) -> None:
        self.client = client
        self.recheck_s = recheck_s
        self._listeners: dict[str, tuple[float, bool]] = {}

    def _listened(self, channel: str) -> bool:
        now = time.monotonic()
        checked = self._listeners.get(channel)
        if checked is None or now - checked[0] > self.recheck_s:
            listened = bool(self.client.pubsub_numpat()) or bool(
                self.client.pubsub_numsub(channel)[0][1]
            )
            checked = self._listeners[channel] = (now, listened)
        return checked[1]

    def deliver(self, update: Update) -> None:
        channel = f"cx:md:{update.key}"
        if self._listened(channel):
            self.client.publish(channel, msgspec.msgpack.encode(update))


class FanoutFailed(RuntimeError):
    """The fan-out function failed (or was throttled): the publisher retries the update."""


class LambdaFanoutSink:
    """Invokes the ``ws_fanout`` Lambda synchronously with each update (Lambda Invoke, the
    same call in AWS and against the local gateway). A function error raises, so the very
    same update is retried; a private update too large for one payload is split by account
    (each account's events stay in order, in one part)."""

    def __init__(
        self, client: Any, function_name: str, max_payload_bytes: int = 5 * 1024 * 1024
    ) -> None:
        self.client = client
        self.function_name = function_name
        self.max_payload_bytes = max_payload_bytes
        self.invocations = 0

    def _payloads(self, update: Update) -> Iterable[bytes]:
        payload = encode_update(update)
        if len(payload) <= self.max_payload_bytes or not isinstance(update, PrivateUpdate):
            yield payload
            return
        accounts = list(update.accounts.items())
        if len(accounts) == 1:
            events = accounts[0][1]
            if len(events) == 1:
                raise FanoutFailed(f"one private event is {len(payload)} bytes")
            halves = [events[: len(events) // 2], events[len(events) // 2 :]]
            parts = [PrivateUpdate(accounts={accounts[0][0]: half}) for half in halves]
        else:
            middle = len(accounts) // 2
            parts = [
                PrivateUpdate(accounts=dict(accounts[:middle]), dropped=update.dropped),
                PrivateUpdate(accounts=dict(accounts[middle:])),
            ]
        for part in parts:
            yield from self._payloads(part)

    def deliver(self, update: Update) -> None:
        for payload in self._payloads(update):
            response = self.client.invoke(
                FunctionName=self.function_name,
                InvocationType="RequestResponse",
                Payload=payload,
            )
            self.invocations += 1
            # Read to the end: an unread body keeps its connection out of the pool.
            body = response["Payload"].read()
            if response.get("FunctionError"):
                detail = body[:500].decode("utf-8", "replace")
                raise FanoutFailed(f"{self.function_name}: {response['FunctionError']}: {detail}")


class MarketDataPublisher:
    """``conflation_ms``: the least time between the starts of two deliveries of one
    market's public data. Longer merges more into each delivery: fewer messages per
    subscriber (each one a ``post_to_connection`` against API Gateway's account quota) for a
    lag of at most that much more."""

    def __init__(
        self,
        sink: MarketDataSink,
        workers: int = 4,
        retry_delay_s: float = 0.2,
        conflation_ms: float = 0.0,
    ) -> None:
        self.sink = sink
        self.retry_delay_s = retry_delay_s
        self.conflation_s = conflation_ms / 1_000
        self._pending: dict[str, Update] = {}
        self._inflight: set[str] = set()
        self._started: dict[str, float] = {}  # key -> when its last delivery started
        self._orders: dict[int, OrderView] = {}  # open orders as the events left them
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publisher")
        self._closed = False
        # Batches of events, and seeds of order views, in the order they must be applied.
        self._incoming: list[list[AnyEvent] | _Seed] = []
        # While a restarted engine replays: every event up to this seq was delivered.
        self._replay_through: int | None = None
        self._merged_seq = 0  # the newest event seq merged
        self._inflight_first: dict[str, int] = {}  # key -> first seq of its delivery
        self.delivered = 0
        self.failures = 0
        self.unknown_orders = 0
        self._merger = threading.Thread(target=self._merge_loop, name="md-merge", daemon=True)
        self._merger.start()

    def seed_orders(self, views: Iterable[OrderView]) -> None:
        """The engine's open orders as of the events published next: fills of orders placed
        before this process started need their views. Applied in order with the events."""
        with self._cond:
            self._incoming.append(_Seed(list(views)))
            self._cond.notify_all()

    def replaying(self, delivered_through: int | None) -> None:
        """Between ``replaying(seq)`` and ``replaying(None)``, published events up to ``seq``
        are not delivered again; order views follow every event all the same."""
        with self._cond:
            self._incoming.append(
                _Seed([], replay_switch=True, delivered_through=delivered_through)
            )
            self._cond.notify_all()

    def delivered_through(self) -> int:
        """Every event up to this seq has been delivered (0: none known). What a restarted
        engine must publish again is past it."""
        with self._cond:
            firsts = [u.first_seq for u in self._pending.values() if u.first_seq]
            firsts += [seq for seq in self._inflight_first.values() if seq]
            if self._incoming:
                # Not merged yet: at most everything merged so far is out.
                firsts.append(self._merged_seq + 1)
            return min(firsts) - 1 if firsts else self._merged_seq

    def publish(self, events: list[AnyEvent]) -> None:
        """Take a batch's events (already journaled). Merging happens on the publisher's own
        thread, which runs while the matcher waits on the journal, Redis or SQS."""
        with self._cond:
            self._incoming.append(events)
            self._cond.notify_all()

    def _merge_loop(self) -> None:
        wait_s: float | None = None
        while True:
            with self._cond:
                if not self._incoming and not self._closed:
                    self._cond.wait(wait_s)
                if self._closed:
                    return
                batches, self._incoming = self._incoming, []
                for events in batches:
                    if isinstance(events, _Seed):
                        if events.replay_switch:
                            self._replay_through = events.delivered_through
                        for view in events.views:
                            self._orders[view.order_id] = view
                    else:
                        self._merge(events)
                wait_s = self._dispatch()
                self._cond.notify_all()  # flush() waits for what this changed

    def _merge(self, events: list[AnyEvent]) -> None:
        pending = self._pending
        private = self._private()
        accounts = private.accounts
        orders = self._orders

        through = -1 if self._replay_through is None else self._replay_through
        if events:
            self._merged_seq = max(self._merged_seq, events[-1].seq)

        def add(account: int, event: PrivateEvent, seq: int) -> None:
            if seq <= through:
                return
            if not private.first_seq:
                private.first_seq = seq
            own = accounts.get(account)
            if own is None:
                own = accounts[account] = []
            own.append(event)

        for event in events:
            kind = type(event)
            if kind is BalanceChanged:
                add(event.account, event, event.seq)  # type: ignore[union-attr,arg-type]
            elif kind is OrderAccepted:
                accepted: OrderAccepted = event  # type: ignore[assignment]
                orders[accepted.order_id] = order_view_from_accepted(accepted)
                add(accepted.account, accepted, accepted.seq)
            elif kind is OrderClosed:
                closed: OrderClosed = event  # type: ignore[assignment]
                orders.pop(closed.order_id, None)
                add(closed.account, closed, closed.seq)
            elif kind is DepthChanged or kind is MarketStats or kind is TradeExecuted:
                market: str = event.market  # type: ignore[union-attr,assignment]
                if event.seq > through:
                    update = pending.get(market)
                    if update is None:
                        update = pending[market] = MarketUpdate(market=market)
                    merge_market_event(update, event)  # type: ignore[arg-type]
                if kind is TradeExecuted:
                    trade: TradeExecuted = event  # type: ignore[assignment]
                    for order_id, account in (
                        (trade.buy_order_id, trade.buyer),
                        (trade.sell_order_id, trade.seller),
                    ):
                        view = orders.get(order_id)
                        if view is None:
                            self.unknown_orders += 1
                            continue
                        view = orders[order_id] = order_view_after_fill(view, trade)
                        add(account, OrderFilled(view, trade), trade.seq)
        if not accounts:
            del pending[PrivateUpdate.key]

    def _private(self) -> PrivateUpdate:
        update = self._pending.get(PrivateUpdate.key)
        if update is None:
            update = self._pending[PrivateUpdate.key] = PrivateUpdate()
        return update  # type: ignore[return-value]

    def _dispatch(self) -> float | None:
        """Start the deliveries that are due; return how long until the next one is."""
        if self._closed:
            return None
        now = time.monotonic()
        next_due: float | None = None
        for key in [k for k in self._pending if k not in self._inflight]:
            if key != PrivateUpdate.key and self.conflation_s:
                due = self._started.get(key, 0.0) + self.conflation_s
                if due > now:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
            update = self._pending.pop(key)
            if isinstance(update, PrivateUpdate):
                trim_private(update)
            self._inflight.add(key)
            self._inflight_first[key] = update.first_seq
            self._started[key] = now
            self._pool.submit(self._deliver, update)
        return None if next_due is None else max(0.0, next_due - now)

    def _deliver(self, update: Update) -> None:
        while True:
            try:
                self.sink.deliver(update)
                break
            except Exception as error:
                self.failures += 1
                log.warning("market data delivery for %s failed, retrying: %s", update.key, error)
                with self._cond:
                    if self._closed:
                        self._inflight.discard(update.key)
                        self._cond.notify_all()
                        return
                    self._cond.wait(self.retry_delay_s)
        with self._cond:
            self.delivered += 1
            self._inflight.discard(update.key)
            self._inflight_first.pop(update.key, None)
            # The merge loop dispatches what waited for this delivery.
            self._incoming.append([])
            self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing is pending or in flight (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._incoming and not self._pending and not self._inflight,
                timeout=timeout_s,
            )

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
