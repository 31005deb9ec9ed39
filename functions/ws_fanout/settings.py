"""The fan-out function's configuration: environment variables, checked at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

__all__ = ["FanoutSettings", "SettingsError"]


class SettingsError(ValueError):
    pass


class FanoutSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob, with the environment variable that sets it in :meth:`from_env`."""

    redis_url: str  # REDIS_URL
    # The WebSocket API's management endpoint, https://{api-id}.execute-api.{region}.
    # amazonaws.com/{stage} in AWS; the local gateway's URL locally.
    management_endpoint: str  # WS_MANAGEMENT_ENDPOINT
    post_threads: int = 16  # POST_THREADS: post_to_connection calls in flight per invocation
    # Connections one invocation posts to; beyond, the rest goes to parallel invocations of
    # this same function (FanoutShard), each with at most this many.
    shard_size: int = 250  # SHARD_SIZE
    markets_cache_ttl_s: float = 1.0  # MARKETS_CACHE_TTL_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FanoutSettings:
        env = os.environ if env is None else env
        missing = [n for n in ("REDIS_URL", "WS_MANAGEMENT_ENDPOINT") if not env.get(n)]
        if missing:
            raise SettingsError(f"missing environment variables: {', '.join(missing)}")
        raw: dict[str, object] = {"management_endpoint": env["WS_MANAGEMENT_ENDPOINT"]}
        for field in msgspec.structs.fields(cls):
            value = env.get(field.name.upper())
            if value is not None and value != "":
                raw[field.name] = value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as error:
            raise SettingsError(str(error)) from None
        if settings.post_threads < 1 or settings.shard_size < 1:
            raise SettingsError("POST_THREADS and SHARD_SIZE must be positive")
        return settings
