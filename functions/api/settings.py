"""The API function's configuration: environment variables, checked once at cold start.

A missing or malformed variable fails the cold start with a message naming it, instead of the
first request that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from cloudex.env_settings import SettingsError, settings_from_env

__all__ = ["ApiSettings", "SettingsError"]


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
        # A zero rate or burst would refuse every request, a negative or NaN timeout answer
        # TIMEOUT at once: misconfigurations, refused here with the variable's name.
        return settings_from_env(
            cls, env, required=("ORDERS_QUEUE_URL", "REDIS_URL", "DATABASE_URL"), ranges=_RANGES
        )


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
