"""The market-data publisher: conflation that never breaks a depth range, one delivery in flight
per market, retries of the very same update, private events to their accounts."""

from __future__ import annotations

import io
import itertools
import threading
import time
from typing import Any

import msgspec
import pytest

from cloudex.enums import (
    BalanceReason,
    OrderStatus,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from cloudex.market_data import OrderFilled, decode_update
from cloudex.messages import BalanceChanged, DepthChanged, OrderView, TradeExecuted
from engine_service.publisher import (
    FanoutFailed,
    LambdaFanoutSink,
    MarketDataPublisher,
    MarketUpdate,
    MemorySink,
    PrivateUpdate,
)


def depth(update_id: int, bids: tuple[tuple[int, int], ...] = (), market: str = "SOL_USDC") -> Any:
    return DepthChanged(update_id, update_id, market, update_id, bids, ())


def trade(trade_id: int, buyer: int, seller: int) -> TradeExecuted:
    return TradeExecuted(
        100 + trade_id, 1, "SOL_USDC", trade_id, 10_000, 1, 100, 1, 2, buyer, seller, True, 0, 0
    )


class GatedSink(MemorySink):
    """Blocks every delivery of one key until released; can fail a number of times."""

    def __init__(self, gated: str) -> None:
        super().__init__()
        self.gated = gated
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.attempts: list[Any] = []

    def deliver(self, update: Any) -> None:
        self.attempts.append(update)
        if update.key == self.gated:
            self.entered.set()
            self.gate.wait(5)
        super().deliver(update)


def test_updates_arriving_during_a_delivery_merge_into_one_unbroken_range() -> None:
    sink = GatedSink("SOL_USDC")
    publisher = MarketDataPublisher(sink, retry_delay_s=0.01)
    publisher.publish([depth(1, ((100, 5),))])
    assert sink.entered.wait(5)
    publisher.publish([depth(2, ((100, 3), (99, 1)))])
    publisher.publish([depth(3, ((100, 0),)), depth(4, ((98, 7),))])
    sink.gate.set()
    assert publisher.flush()
    updates = sink.market_updates("SOL_USDC")
    assert [(u.first_update_id, u.last_update_id) for u in updates] == [(1, 1), (2, 4)]
    # The latest quantity of each level wins; an emptied level is still sent, as 0.
    assert updates[1].bids == {100: 0, 99: 1, 98: 7}
    publisher.close()


def test_a_slow_market_does_not_hold_up_another() -> None:
    sink = GatedSink("SOL_USDC")
    publisher = MarketDataPublisher(sink)
    publisher.publish([depth(1)])
    assert sink.entered.wait(5)
    publisher.publish([depth(1, market="BTC_USDC"), depth(2)])
    # Delivered while SOL_USDC's first delivery is still blocked.
    deadline = threading.Event()
    for _ in range(100):
        if sink.market_updates("BTC_USDC"):
            break
        deadline.wait(0.02)
    assert [u.last_update_id for u in sink.market_updates("BTC_USDC")] == [1]
    assert sink.market_updates("SOL_USDC") == []
    sink.gate.set()
    assert publisher.flush()
    assert [u.last_update_id for u in sink.market_updates("SOL_USDC")] == [1, 2]
    publisher.close()


def test_a_failed_delivery_is_retried_with_the_same_update() -> None:
    sink = MemorySink()
    sink.fail_next = 3
    publisher = MarketDataPublisher(sink, retry_delay_s=0.01)
    publisher.publish([depth(7, ((100, 1),))])
    assert publisher.flush()
    assert publisher.failures == 3
    (update,) = sink.market_updates("SOL_USDC")
    assert isinstance(update, MarketUpdate)
    assert (update.first_update_id, update.last_update_id, update.bids) == (7, 7, {100: 1})
    publisher.close()


def test_a_retry_never_absorbs_newer_data() -> None:
    sink = GatedSink("SOL_USDC")
    publisher = MarketDataPublisher(sink, retry_delay_s=0.01)
    publisher.publish([depth(1)])
    assert sink.entered.wait(5)
    publisher.publish([depth(2), depth(3)])
    sink.gate.set()
    assert publisher.flush()
    ranges = [(u.first_update_id, u.last_update_id) for u in sink.market_updates("SOL_USDC")]
    assert ranges == [(1, 1), (2, 3)]
    # Every id in exactly one delivered range, in order: a client can check U == last u + 1.
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    publisher.close()


def view(order_id: int, account: int, side: Side, quantity: int = 3) -> OrderView:
    return OrderView(
        order_id, account, "SOL_USDC", None, side, OrderType.LIMIT, TimeInForce.GTC,
        10_000, quantity, None, 0, 0, OrderStatus.NEW, False,
        SelfTradePrevention.REJECT_TAKER, 1,
    )  # fmt: skip


def test_private_events_go_to_their_accounts_and_a_fill_to_both_sides() -> None:
    sink = MemorySink()
    publisher = MarketDataPublisher(sink)
    buy, sell = view(1, 7, Side.BID), view(2, 8, Side.ASK, quantity=1)
    publisher.seed_orders([buy, sell])
    change = BalanceChanged(1, 1, 7, "USDC", 5, 0, 5, 0, BalanceReason.DEPOSIT, "ref")
    publisher.publish([change, trade(1, buyer=7, seller=8)])
    assert publisher.flush()
    bought = msgspec.structs.replace(
        buy, executed_quantity=1, executed_quote_quantity=100, status=OrderStatus.PARTIALLY_FILLED
    )
    sold = msgspec.structs.replace(
        sell, executed_quantity=1, executed_quote_quantity=100, status=OrderStatus.FILLED
    )
    assert sink.account_events(7) == [change, OrderFilled(bought, trade(1, 7, 8))]
    assert sink.account_events(8) == [OrderFilled(sold, trade(1, 7, 8))]
    assert sink.account_events(9) == []
    private = [u for u in sink.delivered if isinstance(u, PrivateUpdate)]
    assert len(private) == 1  # one delivery for every account of the batch
    # The next fill of the same order starts from the view the first one left.
    publisher.publish([trade(2, buyer=7, seller=8)])
    assert publisher.flush()
    assert sink.account_events(7)[-1].order.executed_quantity == 2  # type: ignore[union-attr]
    publisher.close()


def test_a_fill_of_an_order_the_publisher_never_saw_is_counted_not_invented() -> None:
    sink = MemorySink()
    publisher = MarketDataPublisher(sink)
    publisher.seed_orders([view(1, 7, Side.BID)])
    publisher.publish([trade(1, buyer=7, seller=8)])
    assert publisher.flush()
    assert len(sink.account_events(7)) == 1
    assert sink.account_events(8) == []
    assert publisher.unknown_orders == 1
    publisher.close()


def test_conflation_spaces_deliveries_of_a_market_and_merges_what_arrives_between() -> None:
    sink = MemorySink()
    publisher = MarketDataPublisher(sink, conflation_ms=300)
    started = time.monotonic()
    publisher.publish([depth(1)])
    for update_id in range(2, 6):
        time.sleep(0.02)
        publisher.publish([depth(update_id)])
    assert publisher.flush()
    elapsed = time.monotonic() - started
    updates = sink.market_updates("SOL_USDC")
    assert [(u.first_update_id, u.last_update_id) for u in updates] == [(1, 1), (2, 5)]
    assert 0.3 <= elapsed < 1.0
    # The oldest merged event's time is kept: the subscriber's lag is measured from it.
    assert updates[1].since == 2 and updates[1].ts == 5
    publisher.close()


class RecordingLambda:
    def __init__(self, error: str | None = None) -> None:
        self.payloads: list[bytes] = []
        self.error = error

    def invoke(self, **call: Any) -> dict[str, Any]:
        assert call["InvocationType"] == "RequestResponse"
        self.payloads.append(call["Payload"])
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(b'{"ok":1}')}
        if self.error:
            response["FunctionError"] = self.error
        return response


def test_the_fanout_sink_invokes_with_the_update_and_splits_a_large_private_one() -> None:
    client = RecordingLambda()
    sink = LambdaFanoutSink(client, "ws_fanout", max_payload_bytes=2_000)
    update = MarketUpdate(market="SOL_USDC", first_update_id=4, last_update_id=9, bids={100: 0})
    sink.deliver(update)
    assert decode_update(client.payloads[-1]) == update
    change = BalanceChanged(1, 1, 7, "USDC", 5, 0, 5, 0, BalanceReason.DEPOSIT, "ref")
    private = PrivateUpdate(accounts={account: [change] * 10 for account in range(20)})
    sink.deliver(private)
    parts = [decode_update(p) for p in client.payloads[1:]]
    assert len(parts) > 1 and all(len(p) <= 2_000 for p in client.payloads[1:])
    merged: dict[int, list[Any]] = {}
    for part in parts:
        assert isinstance(part, PrivateUpdate)
        for account, events in part.accounts.items():
            merged.setdefault(account, []).extend(events)
    assert merged == private.accounts


def test_a_function_error_fails_the_delivery_so_the_same_update_is_retried() -> None:
    sink = LambdaFanoutSink(RecordingLambda(error="Unhandled"), "ws_fanout")
    with pytest.raises(FanoutFailed, match="Unhandled"):
        sink.deliver(MarketUpdate(market="SOL_USDC"))


def test_while_replaying_only_events_past_each_keys_mark_are_delivered() -> None:
    sink = MemorySink()
    publisher = MarketDataPublisher(sink)
    publisher.seed_orders([view(1, 7, Side.BID), view(2, 8, Side.ASK, quantity=1)])
    publisher.replaying(101)  # the previous engine delivered everything up to seq 101
    first = trade(1, buyer=7, seller=8)  # seq 101
    publisher.publish([depth(2), depth(3), first])
    publisher.publish([depth(102), depth(103)])
    publisher.replaying(None)
    publisher.publish([trade(3, buyer=7, seller=8)])  # seq 103
    assert publisher.flush()
    ranges = [(u.first_update_id, u.last_update_id) for u in sink.market_updates("SOL_USDC")]
    assert ranges[0][0] == 102 and ranges[-1][1] == 103
    assert [t.trade_id for u in sink.market_updates("SOL_USDC") for t in u.trades] == [3]
    # The first fill is not sent again, but the second fill's view counts it.
    fills = [e for e in sink.account_events(7) if isinstance(e, OrderFilled)]
    assert [f.order.executed_quantity for f in fills] == [2]
    assert publisher.delivered_through() == 103
    publisher.close()


def test_the_watermark_stays_below_what_is_pending_or_in_flight() -> None:
    sink = GatedSink("SOL_USDC")
    publisher = MarketDataPublisher(sink)
    publisher.publish([depth(1)])
    assert sink.entered.wait(5)
    publisher.publish([depth(2, market="BTC_USDC"), depth(3)])
    time.sleep(0.2)
    assert publisher.delivered_through() == 0  # depth(1) is still in flight
    sink.gate.set()
    assert publisher.flush()
    assert publisher.delivered_through() == 3
    publisher.close()
