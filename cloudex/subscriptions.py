"""The WebSocket subscription registry, in Redis: who listens to what.

Written by the route handlers (``$connect``, ``SUBSCRIBE``/``UNSUBSCRIBE``, ``$disconnect``),
read by the fan-out on every delivery, and cleaned by whoever learns a connection is gone (the
fan-out, on ``GoneException``). Layout (keys in :mod:`cloudex.names`):

| key | type | content |
| --- | --- | --- |
| ``WS_CONNECTIONS_KEY`` | sorted set | connection id, scored by connection time (ms) |
| ``ws_connection_key(C)`` | hash | topic as the client sent it -> the audience key it is in |
| ``ws_market_key(S)`` | hash | ``"<C> <topic>"`` -> canonical stream, for market ``S`` |
| ``ws_account_key(A)`` | hash | ``"<C> <topic>"`` -> canonical stream, for account ``A`` |

So a delivery for a market reads one hash (every subscriber of every stream of that market),
and a private delivery one hash per account it touches. A private topic is filed under the
account whose key signed the SUBSCRIBE: nothing else ever puts a connection in an account's
audience, which is why an account only ever receives its own events.

Each change is one Lua script, so a connection is never half-registered, and a SUBSCRIBE that
races the connection's ``$disconnect`` adds nothing (the script checks the connection is still
live). The scripts touch keys named in the connection's hash, which is fine on a non-cluster
Redis (ElastiCache replication group, cluster mode disabled), and only there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from cloudex import names
from cloudex.streams import Stream

__all__ = ["Subscriber", "SubscriptionRegistry", "TooManySubscriptions", "MAX_AGE_MS"]

# API Gateway closes every WebSocket connection after two hours: older entries are leftovers.
MAX_AGE_MS = 2 * 3600 * 1000 + 60_000

_SUBSCRIBE = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
local member = ARGV[1] .. ' ' .. ARGV[2]
local old = redis.call('HGET', KEYS[2], ARGV[2])
if old and old ~= KEYS[3] then redis.call('HDEL', old, member) end
if not old and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[2], ARGV[2], KEYS[3])
redis.call('HSET', KEYS[3], member, ARGV[3])
return 1
"""

_UNSUBSCRIBE = """
local audience = redis.call('HGET', KEYS[1], ARGV[2])
if not audience then return 0 end
redis.call('HDEL', audience, ARGV[1] .. ' ' .. ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
return 1
"""

_REMOVE = """
local topics = redis.call('HGETALL', KEYS[2])
for i = 1, #topics, 2 do
  redis.call('HDEL', topics[i + 1], ARGV[1] .. ' ' .. topics[i])
end
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


class TooManySubscriptions(Exception):
    pass


class Subscriber(NamedTuple):
    connection_id: str
    topic: str  # as the client sent it: the ``stream`` of the frames it gets
    stream: str  # canonical name


def _subscribers(audience: dict[bytes, bytes]) -> list[Subscriber]:
    found = []
    for member, stream in audience.items():
        connection_id, _, topic = member.decode().partition(" ")
        found.append(Subscriber(connection_id, topic, stream.decode()))
    return found


class SubscriptionRegistry:
    def __init__(self, client: Any, max_subscriptions: int = 100) -> None:
        self.client = client  # redis.Redis, bytes replies
        self.max_subscriptions = max_subscriptions
        self._subscribe = client.register_script(_SUBSCRIBE)
        self._unsubscribe = client.register_script(_UNSUBSCRIBE)
        self._remove = client.register_script(_REMOVE)

    # -- WRITES (route handlers, fan-out) -----------------------------------------------------

    def connect(self, connection_id: str, connected_at_ms: int) -> None:
        self.client.zadd(names.WS_CONNECTIONS_KEY, {connection_id: connected_at_ms})

    def subscribe(
        self, connection_id: str, topic: str, stream: Stream, account: int | None = None
    ) -> bool:
        """Add ``topic`` (parsed as ``stream``; private streams need the signer's
        ``account``). ``False`` if the connection is gone; raises
        :class:`TooManySubscriptions` past ``max_subscriptions`` topics."""
        if stream.private:
            if account is None:
                raise ValueError(f"{stream.name} needs the subscriber's account")
            audience = names.ws_account_key(account)
        else:
            assert stream.market is not None
            audience = names.ws_market_key(stream.market)
        added = self._subscribe(
            keys=[names.WS_CONNECTIONS_KEY, names.ws_connection_key(connection_id), audience],
            args=[connection_id, topic, stream.name, self.max_subscriptions],
        )
        if added == -2:
            raise TooManySubscriptions(f"At most {self.max_subscriptions} subscriptions")
        return bool(added == 1)

    def unsubscribe(self, connection_id: str, topic: str) -> bool:
        return bool(
            self._unsubscribe(
                keys=[names.ws_connection_key(connection_id)], args=[connection_id, topic]
            )
        )

    def remove(self, connection_id: str) -> bool:
        """Forget the connection and all its subscriptions (``$disconnect``, ``GoneException``)."""
        return bool(
            self._remove(
                keys=[names.WS_CONNECTIONS_KEY, names.ws_connection_key(connection_id)],
                args=[connection_id],
            )
        )

    def sweep(self, now_ms: int, limit: int = 100) -> int:
        """Remove connections older than API Gateway lets any live (leftovers of a lost
        ``$disconnect``); at most ``limit`` per call, so it is cheap to call often."""
        stale = self.client.zrangebyscore(
            names.WS_CONNECTIONS_KEY, "-inf", now_ms - MAX_AGE_MS, start=0, num=limit
        )
        return sum(self.remove(connection_id.decode()) for connection_id in stale)

    # -- READS (fan-out) ------------------------------------------------------------------------

    def market_subscribers(self, market: str) -> list[Subscriber]:
        return _subscribers(self.client.hgetall(names.ws_market_key(market)))

    def account_subscribers(self, accounts: Iterable[int]) -> dict[int, list[Subscriber]]:
        """Every listed account that has subscribers, with them."""
        accounts = list(accounts)
        pipe = self.client.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(names.ws_account_key(account))
        return {
            account: _subscribers(audience)
            for account, audience in zip(accounts, pipe.execute(), strict=True)
            if audience
        }

    def topics(self, connection_id: str) -> list[str]:
        return sorted(t.decode() for t in self.client.hkeys(names.ws_connection_key(connection_id)))

    def is_connected(self, connection_id: str) -> bool:
        return self.client.zscore(names.WS_CONNECTIONS_KEY, connection_id) is not None

    def connection_count(self) -> int:
        return int(self.client.zcard(names.WS_CONNECTIONS_KEY))
