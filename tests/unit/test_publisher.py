"""The market-data publisher: conflation that never breaks a depth range, one delivery in flight
per market, retries of the very same update, private events to their accounts."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from cloudex.enums import BalanceReason
from cloudex.messages import BalanceChanged, DepthChanged, TradeExecuted
from engine_service.publisher import (
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


def test_private_events_go_to_their_accounts_and_a_trade_to_both_sides() -> None:
    sink = MemorySink()
    publisher = MarketDataPublisher(sink)
    change = BalanceChanged(1, 1, 7, "USDC", 5, 0, 5, 0, BalanceReason.DEPOSIT, "ref")
    publisher.publish([change, trade(1, buyer=7, seller=8)])
    assert publisher.flush()
    assert sink.account_events(7) == [change, trade(1, 7, 8)]
    assert sink.account_events(8) == [trade(1, 7, 8)]
    assert sink.account_events(9) == []
    private = [u for u in sink.delivered if isinstance(u, PrivateUpdate)]
    assert len(private) == 1  # one delivery for every account of the batch
    publisher.close()
