"""Names every component agrees on: queues, Redis keys and channels, the fee account.

Redis names are namespaced ``cx:`` so they never collide with WebSocket stream names.
"""

from __future__ import annotations

__all__ = [
    "ORDERS_QUEUE",
    "EVENTS_QUEUE",
    "FEE_ACCOUNT",
    "ENGINE_LEASE_LOCK",
    "REDIS_PREFIX",
    "reply_channel",
    "result_key",
    "depth_key",
    "ticker_key",
    "trades_key",
    "balances_key",
    "open_orders_key",
    "closed_orders_key",
    "fills_key",
    "assets_key",
    "markets_key",
    "heartbeat_key",
    "ORDERS_DLQ",
    "WS_CONNECTIONS_KEY",
    "ws_connection_key",
    "ws_market_key",
    "ws_account_key",
    "WS_DELIVERED_KEY",
]

ORDERS_QUEUE = "orders.fifo"
EVENTS_QUEUE = "events.fifo"
# Dead-letter queue of orders.fifo: commands that failed maxReceiveCount times.
ORDERS_DLQ = "orders-dlq.fifo"

# Fees are credited to this account; no key is ever issued for it.
FEE_ACCOUNT = 0

# The PostgreSQL advisory lock whose holder is the one engine allowed to write ("cldx").
ENGINE_LEASE_LOCK = 0x636C6478

REDIS_PREFIX = "cx:"


def reply_channel(command_id: str) -> str:
    return f"cx:reply:{command_id}"


def result_key(command_id: str) -> str:
    """A command's result (msgpack), kept for 10 minutes: SQS deduplicates resends for 5."""
    return f"cx:result:{command_id}"


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


def closed_orders_key(account: int) -> str:
    """Recently closed orders of an account: a sorted set of order JSON scored by close time."""
    return f"cx:orders:closed:{account}"


def fills_key(account: int) -> str:
    """Recent fills of an account: a sorted set of fill JSON scored by trade time."""
    return f"cx:fills:{account}"


def assets_key() -> str:
    return "cx:assets"


def markets_key() -> str:
    return "cx:markets"


def heartbeat_key() -> str:
    return "cx:engine:heartbeat"


# WebSocket subscriptions (cloudex/subscriptions.py): every live connection (sorted set by
# connection time), each connection's topics, and the audience of each market and account.
WS_CONNECTIONS_KEY = "cx:ws:connections"


def ws_connection_key(connection_id: str) -> str:
    return f"cx:ws:conn:{connection_id}"


def ws_market_key(market: str) -> str:
    return f"cx:ws:md:{market}"


def ws_account_key(account: int) -> str:
    return f"cx:ws:pv:{account}"


# The engine's market-data watermark: every event up to this seq was delivered to the fan-out
# (written with the heartbeat). A restarted engine re-publishes what it replays past it: what
# its predecessor had journaled but not yet delivered when it died.
WS_DELIVERED_KEY = "cx:ws:delivered"
