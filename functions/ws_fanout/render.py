"""From a market-data update to the messages each connection gets (contract §7.3-7.6).

Pure: the subscribers and the market specs come in, messages go out. Each stream's ``data`` is
encoded once, whatever the number of subscribers; only the envelope differs per topic (its
``stream`` is the topic exactly as the client subscribed it, aliases included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from cloudex.cache import DepthSnapshot, Markets
from cloudex.market_data import MarketUpdate, OrderFilled, PrivateEvent, PrivateUpdate
from cloudex.messages import BalanceChanged, OrderAccepted, OrderClosed
from cloudex.streams import (
    BALANCE_UPDATE,
    BOOK_TICKER,
    DEPTH,
    KLINE,
    ORDER_UPDATE,
    TICKER,
    TRADE,
)
from cloudex.subscriptions import Subscriber
from cloudex.views import (
    Json,
    ws_balance_update_json,
    ws_book_ticker_json,
    ws_depth_json,
    ws_kline_json,
    ws_order_accepted_json,
    ws_order_closed_json,
    ws_order_fill_json,
    ws_ticker_json,
    ws_trade_json,
)

__all__ = ["Outbox", "render_market", "render_private"]

_encode = msgspec.json.Encoder().encode


@dataclass
class Outbox:
    """Messages, each once, and per connection the indexes of those it gets, in order."""

    messages: list[bytes] = field(default_factory=list)
    deliveries: dict[str, list[int]] = field(default_factory=dict)

    def add(self, connection_id: str, indexes: Iterable[int]) -> None:
        own = self.deliveries.get(connection_id)
        if own is None:
            own = self.deliveries[connection_id] = []
        own.extend(indexes)

    @property
    def message_count(self) -> int:
        return sum(len(indexes) for indexes in self.deliveries.values())


class _Frames:
    """Per topic, the indexes of its messages in the outbox; data encoded once per stream."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._by_topic: dict[str, list[int]] = {}

    def add(self, topic: str, data: bytes) -> None:
        self.outbox.messages.append(b'{"stream":' + _encode(topic) + b',"data":' + data + b"}")
        self._by_topic.setdefault(topic, []).append(len(self.outbox.messages) - 1)

    def of(self, topic: str) -> list[int]:
        return self._by_topic.get(topic, [])


def render_market(
    markets: Markets,
    update: MarketUpdate,
    subscribers: list[Subscriber],
    book: Callable[[], DepthSnapshot | None],
) -> Outbox:
    """``book`` reads the market's current depth snapshot (for ``bookTicker``), only if
    somebody listens to it."""
    outbox = Outbox()
    rules = markets.rules.get(update.market)
    if rules is None or not subscribers:
        return outbox
    data: dict[str, list[bytes]] = {}  # canonical stream -> encoded data objects

    def stream_data(stream: str) -> list[bytes]:
        cached = data.get(stream)
        if cached is not None:
            return cached
        kind, _, rest = stream.partition(".")
        items: list[Json] = []
        if kind == DEPTH and update.last_update_id:
            items.append(
                ws_depth_json(
                    rules,
                    update.first_update_id,
                    update.last_update_id,
                    sorted(update.bids.items(), reverse=True),
                    sorted(update.asks.items()),
                    update.ts,
                )
            )
        elif kind == TRADE:
            items.extend(ws_trade_json(rules, trade) for trade in update.trades)
        elif kind == TICKER and update.stats is not None:
            items.append(ws_ticker_json(rules, update.stats.ticker, update.stats.ts))
        elif kind == BOOK_TICKER and (update.bids or update.asks):
            snapshot = book()
            if snapshot is not None:
                items.append(
                    ws_book_ticker_json(
                        rules,
                        snapshot.bids[0] if snapshot.bids else None,
                        snapshot.asks[0] if snapshot.asks else None,
                        update.ts,
                        snapshot.update_id,
                    )
                )
        elif kind == KLINE and update.stats is not None:
            interval = rest.partition(".")[0]
            items.extend(
                ws_kline_json(rules, candle, update.stats.ts)
                for candle in update.stats.candles
                if candle.interval == interval
            )
        encoded = data[stream] = [_encode(item) for item in items]
        return encoded

    frames = _Frames(outbox)
    rendered: set[str] = set()
    for subscriber in subscribers:
        if subscriber.topic not in rendered:
            rendered.add(subscriber.topic)
            for item in stream_data(subscriber.stream):
                frames.add(subscriber.topic, item)
        indexes = frames.of(subscriber.topic)
        if indexes:
            outbox.add(subscriber.connection_id, indexes)
    return outbox


def _private_data(markets: Markets, event: PrivateEvent) -> tuple[str, str | None, Json | None]:
    """(stream kind, market, data) of one private event; data ``None``: nothing to send."""
    kind = type(event)
    if kind is BalanceChanged:
        change: BalanceChanged = event  # type: ignore[assignment]
        asset = markets.assets.get(change.asset)
        return (
            BALANCE_UPDATE,
            None,
            None if asset is None else ws_balance_update_json(asset, change),
        )
    if kind is OrderFilled:
        filled: OrderFilled = event  # type: ignore[assignment]
        rules = markets.rules.get(filled.order.market)
        data = None if rules is None else ws_order_fill_json(rules, filled.order, filled.trade)
        return ORDER_UPDATE, filled.order.market, data
    order: OrderAccepted | OrderClosed = event  # type: ignore[assignment]
    rules = markets.rules.get(order.market)
    if rules is None:
        return ORDER_UPDATE, order.market, None
    if kind is OrderAccepted:
        return ORDER_UPDATE, order.market, ws_order_accepted_json(rules, order)  # type: ignore[arg-type]
    return ORDER_UPDATE, order.market, ws_order_closed_json(rules, order)  # type: ignore[arg-type]


def render_private(
    markets: Markets, update: PrivateUpdate, audiences: dict[int, list[Subscriber]]
) -> Outbox:
    """Each account's events to that account's own connections only, in event order."""
    outbox = Outbox()
    for account, subscribers in audiences.items():
        events = update.accounts.get(account)
        if not events:
            continue
        per_connection: dict[str, list[int]] = {}
        for event in events:
            kind, market, data = _private_data(markets, event)
            if data is None:
                continue
            encoded = _encode(data)
            framed: dict[str, int] = {}  # topic -> index of this event's message for it
            for subscriber in subscribers:
                stream = subscriber.stream
                if stream != kind and (market is None or stream != f"{kind}.{market}"):
                    continue
                index = framed.get(subscriber.topic)
                if index is None:
                    outbox.messages.append(
                        b'{"stream":' + _encode(subscriber.topic) + b',"data":' + encoded + b"}"
                    )
                    index = framed[subscriber.topic] = len(outbox.messages) - 1
                per_connection.setdefault(subscriber.connection_id, []).append(index)
        for connection_id, indexes in per_connection.items():
            outbox.add(connection_id, indexes)
    return outbox
