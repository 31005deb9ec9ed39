"""WebSocket stream names (contract §7): what a client may subscribe to, and what it means.

A client's topic string is kept as sent (the ``stream`` of every frame it gets must equal it,
or ccxt never resolves its watcher); :func:`parse_stream` maps it to a :class:`Stream`, whose
``name`` is the canonical Backpack form the registry and the fan-out work with. The original
system's ``depth@S``, ``trades@S`` and ``ticker@S`` are aliases.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from enum import IntEnum

from cloudex.klines import INTERVALS

__all__ = [
    "DEPTH",
    "TRADE",
    "TICKER",
    "BOOK_TICKER",
    "KLINE",
    "ORDER_UPDATE",
    "BALANCE_UPDATE",
    "PUBLIC_KINDS",
    "WsErrorCode",
    "StreamError",
    "Stream",
    "parse_stream",
]

DEPTH = "depth"
TRADE = "trade"
TICKER = "ticker"
BOOK_TICKER = "bookTicker"
KLINE = "kline"
ORDER_UPDATE = "account.orderUpdate"
BALANCE_UPDATE = "account.balanceUpdate"

PUBLIC_KINDS = (DEPTH, TRADE, TICKER, BOOK_TICKER)
# Accepted and never sent: ccxt's watch_orders() subscribes it beside account.orderUpdate, and
# an error frame would reject every watcher on the connection (contract §7.2).
IGNORED = frozenset({"account.rfqUpdate"})
ALIASES = {"depth@": DEPTH, "trades@": TRADE, "ticker@": TICKER}
MAX_TOPIC_LENGTH = 100


class WsErrorCode(IntEnum):
    """``error.code`` of an error frame. 4006 is Backpack's (invalid stream); the others
    follow it in the same 4xxx range."""

    INVALID_FRAME = 4000
    INVALID_METHOD = 4001
    INVALID_SIGNATURE = 4002
    EXPIRED = 4003
    UNAUTHORIZED = 4004
    TOO_MANY_SUBSCRIPTIONS = 4005
    INVALID_STREAM = 4006
    SERVER_ERROR = 4500


class StreamError(ValueError):
    """A topic nobody can subscribe to; the message says why, for the error frame."""


@dataclass(frozen=True, slots=True)
class Stream:
    """``kind`` one of the module's kind constants; ``market`` for market streams and a
    market-filtered ``account.orderUpdate.<S>``; ``interval`` for klines."""

    kind: str
    market: str | None = None
    interval: str | None = None

    @property
    def name(self) -> str:
        if self.kind == KLINE:
            return f"{KLINE}.{self.interval}.{self.market}"
        return self.kind if self.market is None else f"{self.kind}.{self.market}"

    @property
    def private(self) -> bool:
        return self.kind.startswith("account.")


def parse_stream(topic: object, markets: Container[str]) -> Stream | None:
    """The stream ``topic`` names, ``None`` for a topic accepted and ignored; raises
    :class:`StreamError` for anything else. ``markets``: the symbols that exist."""
    if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC_LENGTH:
        raise StreamError("A stream is a non-empty string")
    if topic in IGNORED:
        return None
    for prefix, kind in ALIASES.items():
        if topic.startswith(prefix):
            return _market_stream(kind, topic[len(prefix) :], markets)
    if topic == ORDER_UPDATE:
        return Stream(ORDER_UPDATE)
    if topic == BALANCE_UPDATE:
        return Stream(BALANCE_UPDATE)
    if topic.startswith(ORDER_UPDATE + "."):
        return _market_stream(ORDER_UPDATE, topic[len(ORDER_UPDATE) + 1 :], markets)
    kind, _, rest = topic.partition(".")
    if kind in PUBLIC_KINDS:
        return _market_stream(kind, rest, markets)
    if kind == KLINE:
        interval, _, market = rest.partition(".")
        if interval not in INTERVALS:
            raise StreamError(f"Invalid kline interval in {topic}")
        return Stream(KLINE, _market(market, markets), interval)
    raise StreamError(f"Invalid stream {topic}")


def _market(symbol: str, markets: Container[str]) -> str:
    if symbol not in markets:
        raise StreamError(f"Unknown market {symbol!r}")
    return symbol


def _market_stream(kind: str, symbol: str, markets: Container[str]) -> Stream:
    return Stream(kind, _market(symbol, markets))
