"""The subscription registry against real Redis: the Lua scripts keep a connection's keys
consistent, whatever the order of subscribe, unsubscribe and disconnect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cloudex import names
from cloudex.streams import parse_stream
from cloudex.subscriptions import MAX_AGE_MS, SubscriptionRegistry, TooManySubscriptions
from tests.integration.conftest import API_REDIS_URL

MARKETS = {"SOL_USDC", "BTC_USDC"}


@pytest.fixture
def registry() -> Iterator[SubscriptionRegistry]:
    client = redis.Redis.from_url(API_REDIS_URL)
    client.flushdb()
    yield SubscriptionRegistry(client, max_subscriptions=3)
    client.flushdb()
    client.close()


def stream(topic: str):  # type: ignore[no-untyped-def]
    parsed = parse_stream(topic, MARKETS)
    assert parsed is not None
    return parsed


def test_a_subscribe_racing_its_disconnect_adds_nothing(registry: SubscriptionRegistry) -> None:
    registry.connect("c1", 1)
    registry.remove("c1")
    assert registry.subscribe("c1", "depth.SOL_USDC", stream("depth.SOL_USDC")) is False
    assert registry.client.keys("cx:ws:*") == []


def test_subscribers_by_market_and_account_and_clean_removal(
    registry: SubscriptionRegistry,
) -> None:
    registry.connect("c1", 1)
    registry.connect("c2", 2)
    assert registry.subscribe("c1", "depth@SOL_USDC", stream("depth@SOL_USDC"))
    assert registry.subscribe("c2", "trade.SOL_USDC", stream("trade.SOL_USDC"))
    assert registry.subscribe("c2", "account.orderUpdate", stream("account.orderUpdate"), 7)
    assert sorted(registry.market_subscribers("SOL_USDC")) == [
        ("c1", "depth@SOL_USDC", "depth.SOL_USDC"),
        ("c2", "trade.SOL_USDC", "trade.SOL_USDC"),
    ]
    assert registry.account_subscribers([7, 8]) == {
        7: [("c2", "account.orderUpdate", "account.orderUpdate")]
    }
    with pytest.raises(ValueError, match="account"):
        registry.subscribe("c2", "account.balanceUpdate", stream("account.balanceUpdate"))
    # Re-signing a private topic with another account's key moves it: never in both.
    assert registry.subscribe("c2", "account.orderUpdate", stream("account.orderUpdate"), 8)
    assert set(registry.account_subscribers([7, 8])) == {8}
    assert registry.unsubscribe("c1", "depth@SOL_USDC")
    assert registry.unsubscribe("c1", "depth@SOL_USDC") is False
    assert registry.remove("c2")
    assert registry.market_subscribers("SOL_USDC") == []
    assert registry.account_subscribers([8]) == {}
    assert registry.client.keys("cx:ws:*") == [names.WS_CONNECTIONS_KEY.encode()]
    assert registry.connection_count() == 1


def test_a_connection_holds_at_most_max_subscriptions_topics(
    registry: SubscriptionRegistry,
) -> None:
    registry.connect("c1", 1)
    for topic in ("depth.SOL_USDC", "trade.SOL_USDC", "depth.BTC_USDC"):
        assert registry.subscribe("c1", topic, stream(topic))
    with pytest.raises(TooManySubscriptions):
        registry.subscribe("c1", "trade.BTC_USDC", stream("trade.BTC_USDC"))
    # The same topic again is not a new one.
    assert registry.subscribe("c1", "depth.SOL_USDC", stream("depth.SOL_USDC"))
    assert registry.topics("c1") == ["depth.BTC_USDC", "depth.SOL_USDC", "trade.SOL_USDC"]


def test_the_sweep_removes_only_connections_older_than_api_gateway_allows(
    registry: SubscriptionRegistry,
) -> None:
    now = 10 * MAX_AGE_MS
    registry.connect("old", now - MAX_AGE_MS - 1)
    registry.connect("young", now - 1_000)
    registry.subscribe("old", "depth.SOL_USDC", stream("depth.SOL_USDC"))
    assert registry.sweep(now) == 1
    assert not registry.is_connected("old") and registry.is_connected("young")
    assert registry.market_subscribers("SOL_USDC") == []
