"""API keys (table ``api_keys``, migration 0003): who a signature belongs to.

Shared by the REST API and the WebSocket routes, which both verify Ed25519 signatures and then
need the key's account and scope.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ApiKey", "find_api_key", "ApiKeyCache"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    public_key: str
    account: int
    scope: str  # "read" or "trade"

    @property
    def can_trade(self) -> bool:
        return self.scope == "trade"


def find_api_key(conn: Any, public_key: str) -> ApiKey | None:
    """The live (not revoked) key, from a psycopg connection."""
    row = conn.execute(
        "SELECT account_id, scope FROM api_keys WHERE public_key = %s AND revoked_at IS NULL",
        (public_key,),
    ).fetchone()
    return None if row is None else ApiKey(public_key, int(row[0]), str(row[1]))


class ApiKeyCache:
    """Keys (and misses) remembered for ``ttl_s``, which bounds how late a revocation takes
    effect in a warm container. Thread-safe."""

    MAX_ENTRIES = 100_000  # garbage keys must not grow the cache forever

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def get(self, public_key: str, connection: Callable[[], Any]) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(public_key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        key = find_api_key(connection(), public_key)
        with self._lock:
            if len(self._keys) > self.MAX_ENTRIES:
                self._keys.clear()
            self._keys[public_key] = (now, key)
        return key

    def forget(self, public_key: str) -> None:
        with self._lock:
            self._keys.pop(public_key, None)
