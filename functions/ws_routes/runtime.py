"""What one WebSocket route container keeps between invocations: clients and short caches."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import redis

from cloudex.api_keys import ApiKey, ApiKeyCache
from cloudex.cache import Markets, MarketsCache
from cloudex.pg import ThreadConnections
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
        self._markets = MarketsCache(self.redis, settings.markets_cache_ttl_s)
        self._connections = ThreadConnections(settings.database_url)

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    def db(self) -> psycopg.Connection:
        return self._connections.get()

    def markets(self) -> Markets:
        return self._markets.get()

    def api_key(self, public_key: str) -> ApiKey | None:
        return self._keys.get(public_key, self.db)
