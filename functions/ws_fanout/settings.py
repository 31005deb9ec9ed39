"""The fan-out function's configuration: environment variables, checked at cold start."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from cloudex.env_settings import SettingsError, settings_from_env

__all__ = ["FanoutSettings", "SettingsError"]


class FanoutSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob, with the environment variable that sets it in :meth:`from_env`."""

    redis_url: str  # REDIS_URL
    # The WebSocket API's management endpoint, https://{api-id}.execute-api.{region}.
    # amazonaws.com/{stage} in AWS; the local gateway's URL locally.
    ws_management_endpoint: str  # WS_MANAGEMENT_ENDPOINT
    post_threads: int = 16  # POST_THREADS: post_to_connection calls in flight per invocation
    # Connections one invocation posts to; beyond, the rest goes to parallel invocations of
    # this same function (FanoutShard), each with at most this many.
    shard_size: int = 250  # SHARD_SIZE
    markets_cache_ttl_s: float = 1.0  # MARKETS_CACHE_TTL_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FanoutSettings:
        return settings_from_env(
            cls,
            env,
            required=("REDIS_URL", "WS_MANAGEMENT_ENDPOINT"),
            ranges=(
                ("post_threads", 1, 256),
                ("shard_size", 1, 100_000),
                ("markets_cache_ttl_s", 0, 3_600),
            ),
        )
