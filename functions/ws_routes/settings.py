"""The WebSocket route functions' configuration: environment variables, checked at cold start."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from cloudex.env_settings import SettingsError, settings_from_env

__all__ = ["WsSettings", "SettingsError"]


class WsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob, with the environment variable that sets it in :meth:`from_env`."""

    redis_url: str  # REDIS_URL
    database_url: str  # DATABASE_URL: API keys, for signed (private) subscriptions
    max_subscriptions: int = 100  # MAX_SUBSCRIPTIONS: topics per connection
    max_window_ms: int = 60_000  # MAX_WINDOW_MS: as the REST API
    max_clock_skew_ms: int = 5_000  # MAX_CLOCK_SKEW_MS
    key_cache_ttl_s: float = 5.0  # KEY_CACHE_TTL_S: the bound on revocation
    markets_cache_ttl_s: float = 1.0  # MARKETS_CACHE_TTL_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WsSettings:
        return settings_from_env(
            cls,
            env,
            required=("REDIS_URL", "DATABASE_URL"),
            ranges=(
                ("max_subscriptions", 1, 10_000),
                ("max_window_ms", 1, 600_000),
                ("max_clock_skew_ms", 0, 600_000),
                ("key_cache_ttl_s", 0, 3_600),
                ("markets_cache_ttl_s", 0, 3_600),
            ),
        )
