"""``python -m engine_service``: run the engine service, configured by the environment.

See :class:`engine_service.settings.Settings` for the variables. Exit codes: 0 after SIGTERM or
SIGINT (batch finished, journaled, snapshot stored), 1 on a fatal error (lost lease, unconfirmed
journal send, replay divergence), 2 on bad configuration.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import boto3
from botocore.config import Config

from engine_service.health import HealthServer
from engine_service.postgres import EngineDatabase
from engine_service.publisher import (
    LambdaFanoutSink,
    MarketDataPublisher,
    MarketDataSink,
    RedisPubSubSink,
)
from engine_service.redis_out import RedisOutput
from engine_service.service import EngineService
from engine_service.settings import Settings, SettingsError
from engine_service.sqs import SqsInbox, SqsJournalTransport


def fanout_sink(settings: Settings, redis_client: Any) -> MarketDataSink:
    """The WebSocket fan-out Lambda when one is configured, else Redis pub/sub (``cx:md:*``),
    where any process can watch the updates."""
    if not settings.fanout_function:
        return RedisPubSubSink(redis_client)
    client = boto3.client(
        "lambda",
        config=Config(
            # The publisher retries a failed delivery itself, with the same update.
            retries={"total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=60,
            max_pool_connections=8,
        ),
    )
    return LambdaFanoutSink(client, settings.fanout_function)


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # boto3 logs every client it creates at INFO.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    log = logging.getLogger("engine_service")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        log.critical("%s", error)
        return 2
    database = EngineDatabase(settings.database_url, settings.engine_id)
    output = RedisOutput(
        settings.redis_url,
        recent_limit=settings.recent_limit,
        recent_window_s=settings.recent_window_s,
    )
    publisher = MarketDataPublisher(
        fanout_sink(settings, output.client), conflation_ms=settings.conflation_ms
    )
    service: EngineService
    health = HealthServer(settings.health_port, lambda: service.status())
    service = EngineService(
        settings,
        inbox=SqsInbox(
            settings.orders_queue_url,
            receivers=settings.receivers,
            wait_s=settings.receive_wait_s,
            max_inflight=settings.max_inflight_messages,
        ),
        journal=SqsJournalTransport(settings.events_queue_url),
        database=database,
        output=output,
        publisher=publisher,
        on_progress=health.beat,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the batch in hand", signum)
        service.stop()

    output.on_wait = health.beat
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health.start()
    log.info("health on port %d", health.port)
    code = service.run()
    health.close()
    output.close()
    database.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
