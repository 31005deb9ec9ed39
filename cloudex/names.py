"""Names every component agrees on: queues, Redis keys and channels, the fee account.

Redis names are namespaced ``cx:`` so they never collide with WebSocket stream names.
"""

from __future__ import annotations

__all__ = [
    "ORDERS_QUEUE",
    "EVENTS_QUEUE",
    "FEE_ACCOUNT",
    "REDIS_PREFIX",
    "reply_channel",
    "depth_key",
    "ticker_key",
    "trades_key",
    "balances_key",
    "open_orders_key",
    "markets_key",
    "heartbeat_key",
]

ORDERS_QUEUE = "orders.fifo"
EVENTS_QUEUE = "events.fifo"

# Fees are credited to this account; no key is ever issued for it.
FEE_ACCOUNT = 0

REDIS_PREFIX = "cx:"


def reply_channel(command_id: str) -> str:
    return f"cx:reply:{command_id}"


def depth_key(market: str) -> str:
    return f"cx:depth:{market}"


def ticker_key(market: str) -> str:
    return f"cx:ticker:{market}"


def trades_key(market: str) -> str:
    return f"cx:trades:{market}"


def balances_key(account: int) -> str:
    return f"cx:balances:{account}"


def open_orders_key(account: int) -> str:
    return f"cx:orders:open:{account}"


def markets_key() -> str:
    return "cx:markets"


def heartbeat_key() -> str:
    return "cx:engine:heartbeat"
