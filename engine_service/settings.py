"""The engine service's configuration: environment variables, checked once at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import msgspec

from cloudex.aws_connect import resolve_env
from cloudex.env_settings import SettingsError

__all__ = ["Settings", "SettingsError"]

_DEFAULT_MARKETS = Path(__file__).resolve().parents[1] / "config" / "markets.toml"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob, with the environment variable that sets it in ``from_env``.

    The boto3 clients take their endpoints from boto3's own variables (``AWS_ENDPOINT_URL``,
    ``AWS_ENDPOINT_URL_SQS``), so the same code runs against AWS and LocalStack.
    ``DATABASE_URL`` and ``REDIS_URL`` may come from AWS-style variables instead (a Secrets
    Manager secret, a Redis AUTH token): see :mod:`cloudex.aws_connect`.
    """

    orders_queue_url: str  # ORDERS_QUEUE_URL
    events_queue_url: str  # EVENTS_QUEUE_URL
    database_url: str  # DATABASE_URL
    redis_url: str  # REDIS_URL
    markets_config: Path = _DEFAULT_MARKETS  # MARKETS_CONFIG
    engine_id: str = ""  # ENGINE_ID (default: host name and pid)
    health_port: int = 8081  # HEALTH_PORT (0: pick a free port)
    receivers: int = 4  # RECEIVERS: receive calls in flight on orders.fifo
    receive_wait_s: int = 1  # RECEIVE_WAIT_S: long-poll duration
    max_batch: int = 2_000  # MAX_BATCH: commands matched between two journal sends
    tick_interval_ms: int = 1_000  # TICK_INTERVAL_MS: heartbeat commands for quiet markets
    heartbeat_interval_ms: int = 1_000  # HEARTBEAT_INTERVAL_MS: the Redis liveness key
    snapshot_interval_s: float = 300.0  # SNAPSHOT_INTERVAL_S
    snapshot_every_records: int = 200_000  # SNAPSHOT_EVERY_RECORDS: journal records
    # Snapshots kept: a restart replays from one older than the market-data watermark, so
    # this many snapshot intervals bound how long a fan-out outage may last without a gap.
    snapshot_keep: int = 6  # SNAPSHOT_KEEP
    journal_wait_s: float = 120.0  # JOURNAL_WAIT_S: how long to wait for the epoch marker
    recent_limit: int = 1_000  # RECENT_LIMIT: closed orders / fills / trades kept in Redis
    recent_window_s: int = 86_400  # RECENT_WINDOW_S: and for how long
    max_inflight_messages: int = 20_000  # MAX_INFLIGHT: received but not yet matched
    # The WebSocket fan-out Lambda the market data goes to (Lambda Invoke; endpoint from
    # AWS_ENDPOINT_URL_LAMBDA locally); empty: Redis pub/sub (cx:md:*) instead.
    fanout_function: str = ""  # FANOUT_FUNCTION
    conflation_ms: int = 100  # CONFLATION_MS: least time between two deliveries of one market
    # Chaos testing: SIGKILL itself at a point of the batch protocol ("after_journal": journaled,
    # nothing else; "after_redis": replies out, messages not deleted) in batch N.
    fault_kill_at: str = ""  # FAULT_KILL_AT
    fault_kill_batch: int = 0  # FAULT_KILL_BATCH

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = resolve_env(os.environ if env is None else env)
        missing = [
            name
            for name in ("ORDERS_QUEUE_URL", "EVENTS_QUEUE_URL", "DATABASE_URL", "REDIS_URL")
            if not env.get(name)
        ]
        if missing:
            raise SettingsError(f"missing environment variables: {', '.join(missing)}")

        def number(name: str, default: float, kind: type = int) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None
            if value < 0:
                raise SettingsError(f"{name} must not be negative, got {raw!r}")
            return value  # type: ignore[no-any-return]

        defaults = cls(orders_queue_url="", events_queue_url="", database_url="", redis_url="")
        return cls(
            orders_queue_url=env["ORDERS_QUEUE_URL"],
            events_queue_url=env["EVENTS_QUEUE_URL"],
            database_url=env["DATABASE_URL"],
            redis_url=env["REDIS_URL"],
            markets_config=Path(env.get("MARKETS_CONFIG") or defaults.markets_config),
            engine_id=env.get("ENGINE_ID") or f"{socket.gethostname()}:{os.getpid()}",
            health_port=int(number("HEALTH_PORT", defaults.health_port)),
            receivers=max(1, int(number("RECEIVERS", defaults.receivers))),
            receive_wait_s=min(20, int(number("RECEIVE_WAIT_S", defaults.receive_wait_s))),
            max_batch=max(1, int(number("MAX_BATCH", defaults.max_batch))),
            tick_interval_ms=max(10, int(number("TICK_INTERVAL_MS", defaults.tick_interval_ms))),
            heartbeat_interval_ms=max(
                10, int(number("HEARTBEAT_INTERVAL_MS", defaults.heartbeat_interval_ms))
            ),
            snapshot_interval_s=number("SNAPSHOT_INTERVAL_S", defaults.snapshot_interval_s, float),
            snapshot_every_records=max(
                1, int(number("SNAPSHOT_EVERY_RECORDS", defaults.snapshot_every_records))
            ),
            snapshot_keep=max(1, int(number("SNAPSHOT_KEEP", defaults.snapshot_keep))),
            journal_wait_s=number("JOURNAL_WAIT_S", defaults.journal_wait_s, float),
            recent_limit=max(1, int(number("RECENT_LIMIT", defaults.recent_limit))),
            recent_window_s=max(1, int(number("RECENT_WINDOW_S", defaults.recent_window_s))),
            max_inflight_messages=max(
                10, int(number("MAX_INFLIGHT", defaults.max_inflight_messages))
            ),
            fanout_function=env.get("FANOUT_FUNCTION", ""),
            conflation_ms=min(10_000, int(number("CONFLATION_MS", defaults.conflation_ms))),
            fault_kill_at=_fault_point(env.get("FAULT_KILL_AT", "")),
            fault_kill_batch=int(number("FAULT_KILL_BATCH", 0)),
        )


FAULT_POINTS = ("", "after_journal", "after_redis")


def _fault_point(value: str) -> str:
    if value not in FAULT_POINTS:
        raise SettingsError(f"FAULT_KILL_AT must be one of {FAULT_POINTS[1:]}, got {value!r}")
    return value
