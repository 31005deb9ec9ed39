"""The WebSocket route functions' configuration: environment variables, checked at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

__all__ = ["WsSettings", "SettingsError"]


class SettingsError(ValueError):
    pass


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
        env = os.environ if env is None else env
        missing = [name for name in ("REDIS_URL", "DATABASE_URL") if not env.get(name)]
        if missing:
            raise SettingsError(f"missing environment variables: {', '.join(missing)}")
        raw: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            value = env.get(field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as error:
            raise SettingsError(str(error)) from None
        for name in ("max_subscriptions", "max_window_ms"):
            if getattr(settings, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        return settings
