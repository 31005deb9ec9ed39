"""The fan-out's rendering: real engine events, through the publisher, into the messages each
connection gets. Checks what a subscriber sees, frame by frame."""

from __future__ import annotations

import json
from typing import Any

from cloudex.cache import DepthSnapshot, MarketEntry, Markets
from cloudex.enums import Side
from cloudex.market_data import MarketUpdate, PrivateUpdate
from cloudex.subscriptions import Subscriber
from engine_service.publisher import MarketDataPublisher, MemorySink
from functions.ws_fanout.render import Outbox, render_market, render_private
from tests.stubs import Exchange

SOL = 10**9
USDC = 10**6


def markets_of(exchange: Exchange) -> Markets:
    engine = exchange.engine
    assets = {asset.symbol: asset for asset in engine.assets()}
    return Markets.of(
        [MarketEntry(spec, assets[spec.base], assets[spec.quote]) for spec in engine.markets()]
    )


def received(outbox: Outbox, connection_id: str) -> list[dict[str, Any]]:
    return [json.loads(outbox.messages[i]) for i in outbox.deliveries.get(connection_id, [])]


def trade_session() -> tuple[Exchange, MemorySink]:
    """Maker account 1 rests two asks; taker account 2 buys through one and a half."""
    exchange = Exchange()
    sink = MemorySink()
    publisher = MarketDataPublisher(sink)
    publisher.seed_orders(exchange.engine.open_order_views())
    results = [exchange.deposit(1, "SOL", 10 * SOL), exchange.deposit(2, "USDC", 10_000 * USDC)]
    for command in (
        exchange.limit_order(1, "SOL_USDC", Side.ASK, 10_000, 100),
        exchange.limit_order(1, "SOL_USDC", Side.ASK, 10_100, 100),
        exchange.limit_order(2, "SOL_USDC", Side.BID, 10_100, 150),
    ):
        results.append(exchange.execute(command))
    for result in results:
        assert result.error is None, result
        publisher.publish(result.events)
        assert publisher.flush()
    publisher.close()
    return exchange, sink


def merged_market_update(sink: MemorySink) -> MarketUpdate:
    updates = sink.market_updates("SOL_USDC")
    merged = MarketUpdate(market="SOL_USDC")
    for update in updates:
        merged.first_update_id = merged.first_update_id or update.first_update_id
        merged.last_update_id = update.last_update_id or merged.last_update_id
        merged.bids.update(update.bids)
        merged.asks.update(update.asks)
        merged.trades.extend(update.trades)
        merged.ts = update.ts
    return merged


def test_each_subscriber_gets_its_streams_under_the_topic_it_used() -> None:
    exchange, sink = trade_session()
    update = merged_market_update(sink)
    subscribers = [
        Subscriber("c1", "depth.SOL_USDC", "depth.SOL_USDC"),
        Subscriber("c1", "trade.SOL_USDC", "trade.SOL_USDC"),
        Subscriber("c2", "depth@SOL_USDC", "depth.SOL_USDC"),
        Subscriber("c3", "trades@SOL_USDC", "trade.SOL_USDC"),
        Subscriber("c4", "bookTicker.SOL_USDC", "bookTicker.SOL_USDC"),
    ]
    book = DepthSnapshot(update.last_update_id, update.ts, [(10_100, 10)], [(10_100, 50)])
    outbox = render_market(markets_of(exchange), update, subscribers, lambda: book)
    c1 = received(outbox, "c1")
    depth = c1[0]
    assert depth["stream"] == "depth.SOL_USDC"
    assert depth["data"]["e"] == "depth"
    assert (depth["data"]["U"], depth["data"]["u"]) == (
        update.first_update_id,
        update.last_update_id,
    )
    # The emptied 100.00 ask is sent as "0"; what remains of the 101.00 ask as its quantity.
    assert depth["data"]["a"] == [["100.00", "0"], ["101.00", "0.50"]]
    trades = [frame for frame in c1 if frame["data"]["e"] == "trade"]
    assert [(t["data"]["p"], t["data"]["q"]) for t in trades] == [
        ("100.00", "1.00"),
        ("101.00", "0.50"),
    ]
    assert all(t["stream"] == "trade.SOL_USDC" and t["data"]["m"] is False for t in trades)
    # Aliases: the same data, under the topic the client sent.
    assert [f["stream"] for f in received(outbox, "c2")] == ["depth@SOL_USDC"]
    assert received(outbox, "c2")[0]["data"] == depth["data"]
    assert [f["stream"] for f in received(outbox, "c3")] == ["trades@SOL_USDC"] * 2
    book_ticker = received(outbox, "c4")
    assert [f["data"]["a"] for f in book_ticker] == ["101.00"]
    # The depth data was encoded once although two connections get it.
    assert len(outbox.messages) == 1 + 2 + 1 + 2 + 1


def test_nothing_is_rendered_for_a_stream_the_update_does_not_touch() -> None:
    exchange, _ = trade_session()
    update = MarketUpdate(market="SOL_USDC", first_update_id=5, last_update_id=5, ts=1)
    subscribers = [
        Subscriber("c1", "trade.SOL_USDC", "trade.SOL_USDC"),
        Subscriber("c2", "ticker.SOL_USDC", "ticker.SOL_USDC"),
        Subscriber("c3", "depth.SOL_USDC", "depth.SOL_USDC"),
    ]
    outbox = render_market(markets_of(exchange), update, subscribers, lambda: None)
    assert set(outbox.deliveries) == {"c3"}
    # A heartbeat delta: no levels, still one id of the sequence.
    heartbeat = received(outbox, "c3")[0]["data"]
    assert (heartbeat["U"], heartbeat["u"], heartbeat["b"], heartbeat["a"]) == (5, 5, [], [])


def test_private_events_reach_only_their_own_accounts_connections_in_order() -> None:
    exchange, sink = trade_session()
    update = PrivateUpdate()
    for delivered in sink.delivered:
        if isinstance(delivered, PrivateUpdate):
            for account, events in delivered.accounts.items():
                update.accounts.setdefault(account, []).extend(events)
    audiences = {
        1: [
            Subscriber("maker", "account.orderUpdate", "account.orderUpdate"),
            Subscriber("maker", "account.balanceUpdate", "account.balanceUpdate"),
        ],
        2: [
            Subscriber("taker", "account.orderUpdate.SOL_USDC", "account.orderUpdate.SOL_USDC"),
            Subscriber("taker-btc", "account.orderUpdate.BTC_USDC", "account.orderUpdate.BTC_USDC"),
        ],
    }
    outbox = render_private(markets_of(exchange), update, audiences)
    maker = received(outbox, "maker")
    orders = [f["data"] for f in maker if f["stream"] == "account.orderUpdate"]
    assert [(o["e"], o["X"]) for o in orders] == [
        ("orderAccepted", "New"),
        ("orderAccepted", "New"),
        ("orderFill", "Filled"),
        ("orderFill", "PartiallyFilled"),
    ]
    assert all(o["s"] == "SOL_USDC" for o in orders)
    assert orders[3]["l"] == "0.50" and orders[3]["z"] == "0.50" and orders[3]["m"] is True
    balances = [f["data"] for f in maker if f["stream"] == "account.balanceUpdate"]
    assert balances[0] == {"e": "balanceUpdate", "E": balances[0]["E"], "a": "SOL",
                           "A": "10.000000000", "L": "0.000000000", "S": "0"}  # fmt: skip
    taker = received(outbox, "taker")
    assert [f["data"]["e"] for f in taker] == ["orderAccepted", "orderFill", "orderFill"]
    assert taker[-1]["data"]["X"] == "Filled" and taker[-1]["data"]["z"] == "1.50"
    assert all(f["stream"] == "account.orderUpdate.SOL_USDC" for f in taker)
    assert "taker-btc" not in outbox.deliveries  # subscribed to another market's orders
    # No frame of one account carries another's order.
    maker_ids = {o["i"] for o in orders}
    assert maker_ids.isdisjoint({f["data"]["i"] for f in taker})
