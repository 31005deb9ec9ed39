"""What one WebSocket route container keeps between invocations: clients and short caches."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import redis

from cloudex import names
from cloudex.api_keys import ApiKey, ApiKeyCache
from cloudex.cache import Markets, decode_markets
from cloudex.subscriptions import SubscriptionRegistry
from functions.ws_routes.settings import WsSettings

__all__ = ["WsRuntime"]


class WsRuntime:
    def __init__(self, settings: WsSettings) -> None:
        self.settings = settings
        self.redis: Any = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        self.registry = SubscriptionRegistry(self.redis, settings.max_subscriptions)
        self._keys = ApiKeyCache(settings.key_cache_ttl_s)
        self._markets: tuple[float, Markets] | None = None
        self._local = threading.local()

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def db(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "db", None)
        if conn is not None and (conn.closed or conn.broken):
            conn.close()
            conn = None
        if conn is None:
            conn = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5)
            self._local.db = conn
        return conn

    def markets(self) -> Markets:
        cached = self._markets
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.settings.markets_cache_ttl_s:
            return cached[1]
        data = self.redis.get(names.markets_key())
        markets = Markets.of(decode_markets(data) if data else [])
        self._markets = (now, markets)
        return markets

    def api_key(self, public_key: str) -> ApiKey | None:
        return self._keys.get(public_key, self.db)
