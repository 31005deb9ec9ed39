"""``ws_fanout``: the engine's market-data updates to WebSocket subscribers.

The engine service invokes it synchronously (Lambda Invoke) with one update at a time per
market, plus one for all private events (:mod:`cloudex.market_data`); a function error makes
the engine retry the very same update. It reads the update's audience from the subscription
registry, renders each stream's messages once (:mod:`functions.ws_fanout.render`), and posts
them through the management API (:mod:`functions.ws_fanout.poster`). An audience larger than
``SHARD_SIZE`` connections is split: this invocation posts to the first shard while parallel
invocations of the same function (``FanoutShard`` payloads) post to the others, so a delivery
takes about as long for ten thousand subscribers as for a few hundred.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
import msgspec
import redis
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from cloudex import names
from cloudex.cache import DepthSnapshot, Markets, MarketsCache, decode_depth
from cloudex.market_data import (
    FanoutShard,
    PrivateUpdate,
    Update,
    encode_update,
)
from cloudex.subscriptions import SubscriptionRegistry
from functions.ws_fanout.poster import Poster, PostResult
from functions.ws_fanout.render import Outbox, render_market, render_private
from functions.ws_fanout.settings import FanoutSettings

__all__ = ["Fanout", "handler"]

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ws-fanout"))

Deliveries = list[tuple[str, list[int]]]


class Fanout:
    def __init__(
        self,
        settings: FanoutSettings,
        *,
        management: Any = None,
        lambda_client: Any = None,
        redis_client: Any = None,
    ) -> None:
        self.settings = settings
        self.redis: Any = redis_client or redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        self.registry = SubscriptionRegistry(self.redis)
        self.management = management or boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=settings.ws_management_endpoint,
            config=Config(
                parameter_validation=False,  # our own well-formed calls; saves CPU per post
                max_pool_connections=settings.post_threads,
                retries={"total_max_attempts": 1},  # the poster retries throttling itself
                connect_timeout=2,
                read_timeout=5,
            ),
        )
        self._lambda = lambda_client
        self.poster = Poster(self.management, self.registry.remove, settings.post_threads)
        self._shards = ThreadPoolExecutor(max_workers=8, thread_name_prefix="shard")
        self._markets = MarketsCache(self.redis, settings.markets_cache_ttl_s)

    def lambda_client(self) -> Any:
        if self._lambda is None:
            self._lambda = boto3.client(
                "lambda",
                config=Config(retries={"total_max_attempts": 2}, read_timeout=60),
            )
        return self._lambda

    def markets(self) -> Markets:
        return self._markets.get()

    def _book(self, market: str) -> DepthSnapshot | None:
        data = self.redis.get(names.depth_key(market))
        return decode_depth(data) if data else None

    def handle(self, update: Update, function_name: str | None = None) -> dict[str, Any]:
        started = time.monotonic()
        if isinstance(update, FanoutShard):
            messages = [message.encode() for message in update.messages]
            result = self.poster.post(messages, update.deliveries)
            return _summary(result, len(update.deliveries), 1, started)
        if isinstance(update, PrivateUpdate):
            audiences = self.registry.account_subscribers(update.accounts)
            outbox = render_private(self.markets(), update, audiences)
            return self.deliver(outbox, function_name, started)
        # How old the update's oldest event is as posting begins: the engine's share
        # (conflation window included) of what a subscriber waits.
        age_ms = round(time.time() * 1_000 - update.since / 1_000, 1)
        subscribers = self.registry.market_subscribers(update.market)
        outbox = render_market(
            self.markets(), update, subscribers, lambda: self._book(update.market)
        )
        return {**self.deliver(outbox, function_name, started), "age_ms": age_ms}

    def deliver(
        self, outbox: Outbox, function_name: str | None, started: float | None = None
    ) -> dict[str, Any]:
        started = time.monotonic() if started is None else started
        deliveries = list(outbox.deliveries.items())
        size = self.settings.shard_size
        shards = [deliveries[i : i + size] for i in range(0, len(deliveries), size)] or [[]]
        remote: list[tuple[Deliveries, Future[PostResult]]] = []
        if function_name:
            for shard in shards[1:]:
                future = self._shards.submit(self._invoke_shard, function_name, outbox, shard)
                remote.append((shard, future))
        else:
            shards = [deliveries]
        result = self.poster.post(outbox.messages, shards[0])
        for shard, future in remote:
            try:
                result.add(future.result())
            except Exception as error:
                # The shard's connections would miss this update: post to them from here.
                logger.warning("shard invocation failed, posting in-process", error=str(error))
                result.add(self.poster.post(outbox.messages, shard))
        return _summary(result, len(deliveries), len(shards), started)

    def _invoke_shard(self, function_name: str, outbox: Outbox, shard: Deliveries) -> PostResult:
        used = sorted({index for _, indexes in shard for index in indexes})
        renumber = {old: new for new, old in enumerate(used)}
        payload = FanoutShard(
            messages=[outbox.messages[index].decode() for index in used],
            deliveries=[(conn, [renumber[i] for i in indexes]) for conn, indexes in shard],
        )
        response = self.lambda_client().invoke(
            FunctionName=function_name,
            InvocationType="RequestResponse",
            Payload=encode_update(payload),
        )
        body = msgspec.json.decode(response["Payload"].read())
        if response.get("FunctionError"):
            raise RuntimeError(f"{response['FunctionError']}: {body}")
        return PostResult(
            posted=body["posted"],
            gone=body["gone"],
            failed=body["failed"],
            throttled=body["throttled"],
        )


def _summary(result: PostResult, connections: int, shards: int, started: float) -> dict[str, Any]:
    return {
        "connections": connections,
        "shards": shards,
        "posted": result.posted,
        "gone": result.gone,
        "failed": result.failed,
        "throttled": result.throttled,
        "ms": round((time.monotonic() - started) * 1000, 1),
    }


_fanout: Fanout | None = None


def fanout() -> Fanout:
    """Built at the first invocation, so importing this module needs no environment."""
    global _fanout
    if _fanout is None:
        _fanout = Fanout(FanoutSettings.from_env())
    return _fanout


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    update: Update = msgspec.convert(event, Update, strict=False)  # type: ignore[arg-type]
    summary = fanout().handle(update, context.function_name)
    if isinstance(update, PrivateUpdate) and update.dropped:
        logger.warning("the engine dropped private events", dropped=update.dropped)
    logger.debug("delivered", **summary)
    return summary
