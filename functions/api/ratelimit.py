"""Token buckets in Redis, per API key and per source IP (``TOO_MANY_REQUESTS``).

One script checks and takes from every bucket of a request atomically, so a request refused by
one bucket takes nothing from the others, and concurrent containers share the budget exactly.
The clock is the caller's (Redis scripts must be deterministic to replicate); containers' clocks
differ by far less than a token's worth of time.
"""

from __future__ import annotations

from typing import Any

import redis

from cloudex.enums import ErrorCode
from functions.api.errors import ApiError

__all__ = ["RateLimiter"]

# KEYS: the buckets; ARGV: now (ms), then rate (tokens per second) and burst for each bucket.
# Returns 0 when every bucket had a token (one is taken from each), else the ms to wait.
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
local left = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', key, 't', 'v')
  local tokens = burst
  if state[1] then
    tokens = math.min(burst, tonumber(state[2]) + (now - tonumber(state[1])) * rate / 1000)
  end
  if tokens < 1 then
    wait = math.max(wait, math.ceil((1 - tokens) * 1000 / rate))
  end
  left[i] = tokens
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', key, 't', now, 'v', left[i] - 1)
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return 0
"""


class RateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        rate_per_key: float,
        burst_per_key: int,
        rate_per_ip: float,
        burst_per_ip: int,
    ) -> None:
        self._script: Any = client.register_script(_TAKE)
        self._per_key = (rate_per_key, burst_per_key)
        self._per_ip = (rate_per_ip, burst_per_ip)

    def take(self, now_ms: int, *, ip: str, api_key: str | None = None) -> None:
        """Take one token from the IP's bucket and the key's; raise 429 if either is empty."""
        keys = [f"cx:rl:ip:{ip}"]
        args: list[float | int] = [now_ms, *self._per_ip]
        if api_key is not None:
            keys.append(f"cx:rl:key:{api_key}")
            args.extend(self._per_key)
        wait_ms = int(self._script(keys=keys, args=args))
        if wait_ms:
            raise ApiError(
                ErrorCode.TOO_MANY_REQUESTS,
                f"Rate limit exceeded: retry in {wait_ms} ms",
                headers={"Retry-After": str(max(1, -(-wait_ms // 1000)))},
            )
