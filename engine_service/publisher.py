"""The market-data publisher: conflated, sequenced updates handed to a pluggable sink.

It runs beside the matcher, so a slow subscriber path never slows matching. Per market, what
arrives while a delivery is in flight is merged into one pending update: depth levels by price
(the latest quantity wins) with the update-id range ``U..u`` extended, never broken; trades
appended; stats replaced. Each market (and each account's private stream) has at most one
delivery in flight; a failed delivery is retried with the very same update (same ``U..u``), and
what arrived meanwhile waits for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from cloudex.messages import (
    AnyEvent,
    BalanceChanged,
    DepthChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
)

__all__ = [
    "MarketUpdate",
    "PrivateUpdate",
    "MarketDataSink",
    "MemorySink",
    "RedisPubSubSink",
    "MarketDataPublisher",
]

log = logging.getLogger(__name__)

# A pending update holds at most this many trades or private events; older ones are dropped
# (and counted) rather than letting a dead sink grow memory without bound.
MAX_PENDING_ITEMS = 10_000


@dataclass
class MarketUpdate:
    """Public market data since the last delivery. ``first_update_id..last_update_id`` is the
    depth range (0..0 if depth did not change); ``bids``/``asks`` map price -> absolute lots
    (0 removes the level)."""

    market: str
    first_update_id: int = 0
    last_update_id: int = 0
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    trades: list[TradeExecuted] = field(default_factory=list)
    stats: MarketStats | None = None
    ts: int = 0

    @property
    def key(self) -> str:
        return self.market

    def merge(self, event: AnyEvent) -> None:
        self.ts = event.ts
        if isinstance(event, DepthChanged):
            if not self.first_update_id:
                self.first_update_id = event.update_id
            self.last_update_id = event.update_id
            self.bids.update(event.bids)
            self.asks.update(event.asks)
        elif isinstance(event, TradeExecuted):
            self.trades.append(event)
            if len(self.trades) > MAX_PENDING_ITEMS:
                del self.trades[0]
        elif isinstance(event, MarketStats):
            self.stats = event


@dataclass
class PrivateUpdate:
    """Every account's private events since the last delivery, in order per account. All
    accounts share one delivery (the fan-out looks each one's connections up), so a batch
    touching a thousand accounts makes one delivery, not a thousand."""

    accounts: dict[int, list[AnyEvent]] = field(default_factory=dict)
    dropped: int = 0

    key = "private"

    def add(self, account: int, event: AnyEvent) -> None:
        events = self.accounts.get(account)
        if events is None:
            events = self.accounts[account] = []
        events.append(event)

    def trim(self) -> None:
        for account, events in self.accounts.items():
            excess = len(events) - MAX_PENDING_ITEMS
            if excess > 0:
                del events[:excess]
                self.dropped += excess
                log.warning("account %d: %d private events dropped by a slow sink", account, excess)


Update = MarketUpdate | PrivateUpdate


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

    def account_events(self, account: int) -> list[AnyEvent]:
        with self._lock:
            return [
                e
                for u in self.delivered
                if isinstance(u, PrivateUpdate)
                for e in u.accounts.get(account, ())
            ]


class RedisPubSubSink:
    """Publishes each update (msgpack) on ``cx:md:<market>`` or ``cx:md:private``: a sink any
    process can read, until the WebSocket fan-out sink replaces it. Encoding a batch's updates
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


class MarketDataPublisher:
    def __init__(self, sink: MarketDataSink, workers: int = 4, retry_delay_s: float = 0.2) -> None:
        self.sink = sink
        self.retry_delay_s = retry_delay_s
        self._pending: dict[str, Update] = {}
        self._inflight: set[str] = set()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="publisher")
        self._closed = False
        self._incoming: list[list[AnyEvent]] = []
        self.delivered = 0
        self.failures = 0
        self._merger = threading.Thread(target=self._merge_loop, name="md-merge", daemon=True)
        self._merger.start()

    def publish(self, events: list[AnyEvent]) -> None:
        """Take a batch's events (already journaled). Merging happens on the publisher's own
        thread, which runs while the matcher waits on the journal, Redis or SQS."""
        with self._cond:
            self._incoming.append(events)
            self._cond.notify_all()

    def _merge_loop(self) -> None:
        while True:
            with self._cond:
                while not self._incoming and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batches, self._incoming = self._incoming, []
                for events in batches:
                    self._merge(events)
                self._dispatch()

    def _merge(self, events: list[AnyEvent]) -> None:
        pending = self._pending
        accounts = self._private().accounts
        for event in events:
            kind = type(event)
            if kind is BalanceChanged or kind is OrderAccepted or kind is OrderClosed:
                account: int = event.account  # type: ignore[union-attr]
                own = accounts.get(account)
                if own is None:
                    own = accounts[account] = []
                own.append(event)
            elif kind is DepthChanged or kind is MarketStats or kind is TradeExecuted:
                market: str = event.market  # type: ignore[union-attr,assignment]
                update = pending.get(market)
                if update is None:
                    update = pending[market] = MarketUpdate(market)
                update.merge(event)  # type: ignore[union-attr]
                if kind is TradeExecuted:
                    trade: TradeExecuted = event  # type: ignore[assignment]
                    for account in (trade.buyer, trade.seller):
                        own = accounts.get(account)
                        if own is None:
                            own = accounts[account] = []
                        own.append(trade)
        if not accounts:
            del pending[PrivateUpdate.key]

    def _private(self) -> PrivateUpdate:
        update = self._pending.get(PrivateUpdate.key)
        if update is None:
            update = self._pending[PrivateUpdate.key] = PrivateUpdate()
        return update  # type: ignore[return-value]

    def _dispatch(self) -> None:
        if self._closed:
            return
        for key in [k for k in self._pending if k not in self._inflight]:
            update = self._pending.pop(key)
            if isinstance(update, PrivateUpdate):
                update.trim()
            self._inflight.add(key)
            self._pool.submit(self._deliver, update)

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
            self._dispatch()
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
