"""The API function's configuration: environment variables, checked once at cold start.

A missing or malformed variable fails the cold start with a message naming it, instead of the
first request that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

__all__ = ["ApiSettings", "SettingsError"]


class SettingsError(ValueError):
    pass


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob, with the environment variable that sets it in :meth:`from_env`."""

    orders_queue_url: str  # ORDERS_QUEUE_URL
    redis_url: str  # REDIS_URL
    database_url: str  # DATABASE_URL
    # How long a request waits for the engine's reply before answering TIMEOUT (with the
    # command id). API Gateway cuts an integration at 29 s; the engine answers in milliseconds.
    reply_timeout_s: float = 10.0  # REPLY_TIMEOUT_S
    # The engine refreshes its heartbeat every second; older than this, it is not consuming and
    # a command would only wait: MAINTENANCE, nothing queued.
    heartbeat_max_age_ms: int = 5_000  # HEARTBEAT_MAX_AGE_MS
    # How long a key lookup (or a miss) is cached per container: the bound on revocation.
    key_cache_ttl_s: float = 5.0  # KEY_CACHE_TTL_S
    # How long market specs read from Redis are reused; a state or fee change shows this late.
    markets_cache_ttl_s: float = 1.0  # MARKETS_CACHE_TTL_S
    max_window_ms: int = 60_000  # MAX_WINDOW_MS (Backpack's maximum X-Window)
    max_clock_skew_ms: int = 5_000  # MAX_CLOCK_SKEW_MS: how far ahead a timestamp may be
    max_batch_orders: int = 50  # MAX_BATCH_ORDERS: orders in one POST /api/v1/orders
    # Token buckets: sustained requests per second and burst, per API key and per source IP.
    rate_per_key: float = 50.0  # RATE_PER_KEY
    burst_per_key: int = 100  # BURST_PER_KEY
    rate_per_ip: float = 500.0  # RATE_PER_IP
    burst_per_ip: int = 1_000  # BURST_PER_IP

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        missing = [
            name for name in ("ORDERS_QUEUE_URL", "REDIS_URL", "DATABASE_URL") if not env.get(name)
        ]
        if missing:
            raise SettingsError(f"missing environment variables: {', '.join(missing)}")
        raw: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            value = env.get(field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"invalid setting: {exc}") from exc
        # A zero rate or burst would refuse every request, a negative or NaN timeout answer
        # TIMEOUT at once: misconfigurations, refused here with the variable's name.
        wrong = [
            f"{name.upper()} must be {low}..{high}, got {getattr(settings, name)!r}"
            for name, low, high in _RANGES
            if not low <= getattr(settings, name) <= high  # NaN fails too
        ]
        if wrong:
            raise SettingsError("; ".join(wrong))
        return settings


_RANGES: tuple[tuple[str, float, float], ...] = (
    ("reply_timeout_s", 0.001, 28),  # API Gateway cuts an integration at 29 s
    ("heartbeat_max_age_ms", 1, 3_600_000),
    ("key_cache_ttl_s", 0, 3_600),
    ("markets_cache_ttl_s", 0, 3_600),
    ("max_window_ms", 1, 600_000),
    ("max_clock_skew_ms", 0, 600_000),
    ("max_batch_orders", 1, 10_000),
    ("rate_per_key", 0.001, 1e9),
    ("burst_per_key", 1, 10**9),
    ("rate_per_ip", 0.001, 1e9),
    ("burst_per_ip", 1, 10**9),
)
