"""What one API container keeps between invocations: settings, clients, short-lived caches.

In Lambda a container runs one invocation at a time; the local gateway runs several containers
as threads of one process, so what cannot be shared between concurrent requests (a PostgreSQL
connection, a Redis subscription) is per thread, and the rest (the Redis pool, the boto3 client,
the caches) is thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import boto3
import psycopg
import redis
from aws_lambda_powertools import Logger, Tracer

from cloudex.api_keys import ApiKey, ApiKeyCache
from cloudex.cache import Markets, MarketsCache
from cloudex.pg import ThreadConnections
from functions.api.settings import ApiSettings

__all__ = ["SERVICE", "METRICS_NAMESPACE", "logger", "tracer", "Runtime"]

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "api")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Cloudex")
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)


class Runtime:
    def __init__(self, settings: ApiSettings, *, sqs: Any = None) -> None:
        self.settings = settings
        # Any: redis-py's types make every reply ``bytes | str``; ours are always bytes.
        self.redis: Any = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        # Endpoint from AWS_ENDPOINT_URL(_SQS) when set: LocalStack locally, SQS in AWS.
        self.sqs = sqs if sqs is not None else boto3.client("sqs")
        self._local = threading.local()
        self._connections = ThreadConnections(settings.database_url)
        self._markets = MarketsCache(self.redis, settings.markets_cache_ttl_s)
        self._keys = ApiKeyCache(settings.key_cache_ttl_s)

    # -- CLOCK --------------------------------------------------------------------------------

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    # -- POSTGRESQL ---------------------------------------------------------------------------

    def db(self) -> psycopg.Connection:
        """This thread's connection (see :class:`~cloudex.pg.ThreadConnections`)."""
        return self._connections.get()

    # -- REDIS SUBSCRIPTION -------------------------------------------------------------------

    def pubsub(self) -> Any:
        """This thread's reply subscription connection (one SUBSCRIBE at a time)."""
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
            self._local.pubsub = pubsub
        return pubsub

    def drop_pubsub(self) -> None:
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is not None:
            self._local.pubsub = None
            with contextlib.suppress(redis.RedisError):
                pubsub.close()

    # -- MARKETS ------------------------------------------------------------------------------

    def markets(self) -> Markets:
        return self._markets.get()

    # -- API KEYS -----------------------------------------------------------------------------

    def api_key(self, public_key: str) -> ApiKey | None:
        """The live key, or ``None`` (unknown or revoked); cached per container for
        ``key_cache_ttl_s``, misses too, which bounds how late a revocation takes effect."""
        return self._keys.get(public_key, self.db)

    def forget_key(self, public_key: str) -> None:
        self._keys.forget(public_key)

    def close(self) -> None:
        self.drop_pubsub()
        self._connections.close()
        self.redis.close()
