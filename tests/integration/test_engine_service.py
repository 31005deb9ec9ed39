"""The engine service end to end: real LocalStack SQS, PostgreSQL, Redis, engine processes."""

from __future__ import annotations

import itertools
import random
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloudex import cache, names
from cloudex.enums import ErrorCode, OrderType, Side
from cloudex.messages import Deposit, PlaceOrder, decode_result
from engine_service.core import Engine
from tests.integration.engine_support import (
    EngineStack,
    ReplyCollector,
    assert_conserved,
    journal_head,
    latest_snapshot,
    replay_journal,
    trading_workload,
)


@pytest.fixture
def stack(sqs: Any, database_url: str, redis_url: str, tmp_path: Path) -> Iterator[EngineStack]:
    stack = EngineStack(sqs, database_url, redis_url, tmp_path)
    stack.start_persister()
    yield stack
    stack.close()


def test_orders_from_many_accounts_flow_through_queues_journal_and_redis(
    stack: EngineStack,
) -> None:
    replies = ReplyCollector(stack.redis_url)
    engine = stack.start_engine()
    engine.wait_state("running")
    commands = trading_workload(random.Random(7), accounts=12, orders=300)
    for command in commands:
        stack.send(command)
    results = stack.wait_results([c.id for c in commands])
    assert [i for i, r in results.items() if r.duplicate] == []

    replay = replay_journal(stack.database_url)
    # Every command in the journal once, each answered with what the journal holds.
    sent = {c.id for c in commands}
    journaled = [i for i in replay.command_ids if i in sent]
    assert sorted(journaled) == sorted(sent)
    assert_conserved(replay.engine, stack.database_url)

    # The service's state is the pure engine's, fed the same commands in journal order.
    assert engine.terminate() == 0
    with_snapshot = replay_journal(stack.database_url)
    snapshot = latest_snapshot(stack.database_url)
    assert snapshot is not None and snapshot[0] == with_snapshot.last_seq
    final = Engine.restore(snapshot[1])
    assert final.state_hash() == with_snapshot.engine.state_hash()

    # Redis: balances, depth with lastUpdateId, open orders, trades, as the engine has them.
    for account in range(1, 13):
        stored = {
            asset.decode(): cache.decode_balance(value)
            for asset, value in stack.redis.hgetall(names.balances_key(account)).items()
        }
        # An asset the account never touched has no field: the API reads it as zero.
        assert set(stored) <= set(final.balances(account))
        for asset, balance in final.balances(account).items():
            assert stored.get(asset, (0, 0)) == balance
        open_orders = {
            int(k): cache.decode_open_order(v)
            for k, v in stack.redis.hgetall(names.open_orders_key(account)).items()
        }
        assert open_orders == {o.order_id: o for o in final.open_orders(account)}
        for member in stack.redis.zrange(names.closed_orders_key(account), 0, -1):
            closed = cache.decode_closed_order(member)
            assert closed.account == account and closed.order_id not in open_orders
    depth = cache.decode_depth(stack.redis.get(names.depth_key("SOL_USDC")))
    assert (depth.update_id, depth.bids, depth.asks) == final.depth("SOL_USDC", 1000)
    update_id = depth.update_id
    trades = [
        cache.decode_trade(t) for t in stack.redis.lrange(names.trades_key("SOL_USDC"), 0, -1)
    ]
    assert trades and trades == sorted(trades, key=lambda t: -t.trade_id)
    ticker = cache.decode_ticker(stack.redis.get(names.ticker_key("SOL_USDC")))
    assert ticker.trades == len(trades) or len(trades) == 1_000
    markets = cache.decode_markets(stack.redis.get(names.markets_key()))
    assert [m.spec for m in markets] == final.markets()

    # Replies were published as well as stored, one per command.
    replies.close()
    published = {r.command_id for r in replies.replies}
    assert sent <= published

    # Market data: depth ranges follow each other with no gap or overlap, up to the book's
    # last update id; every trade went out once; private events reached their accounts.
    updates = [u for u in replies.market_data if u.get("market") == "SOL_USDC"]
    ranges = [(u["first_update_id"], u["last_update_id"]) for u in updates if u["last_update_id"]]
    assert ranges[0][0] == 1 and ranges[-1][1] == update_id
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    trade_ids = [t[4] for u in updates for t in u["trades"]]  # [tag, seq, ts, market, id, ...]
    assert trade_ids == list(range(1, len(trade_ids) + 1))
    private = [u for u in replies.market_data if "accounts" in u]
    assert {int(a) for u in private for a in u["accounts"]} >= set(range(1, 13))


def _ready_code(engine: Any) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{engine.port}/ready", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_resent_command_is_applied_once_and_answered_alike(stack: EngineStack) -> None:
    engine = stack.start_engine()
    engine.wait_state("running")
    # Rejected first (no funds), then funded, then resent: still the same rejection.
    order = PlaceOrder(
        id="order-1",
        ts=0,
        account=5,
        market="SOL_USDC",
        side=Side.BID,
        order_type=OrderType.LIMIT,
        price=10_000,
        quantity=10,
    )
    stack.send(order)
    first = stack.wait_results(["order-1"])["order-1"]
    assert first.error is ErrorCode.INSUFFICIENT_FUNDS
    deposit = Deposit(id="dep-1", ts=0, account=5, asset="USDC", amount=10**12)
    stack.send(deposit)
    stack.wait_results(["dep-1"])
    stack.redis.delete(names.result_key("order-1"))
    # The same dedup id after the first was deleted: SQS drops it (5-minute window).
    stack.send(order)
    # A redelivery SQS cannot catch (another dedup id, as after a lost delete): the engine
    # answers from its result cache.
    stack.send(order, dedup_id="order-1-redelivered")
    again = stack.wait_results(["order-1"])["order-1"]
    assert again.duplicate
    assert again.error is first.error and again.message == first.message

    # An accepted command resent likewise: one order, the same answer.
    accepted = msgspec.structs.replace(order, id="order-2")
    stack.send(accepted)
    placed = stack.wait_results(["order-2"])["order-2"]
    assert placed.error is None
    stack.redis.delete(names.result_key("order-2"))
    stack.send(accepted, dedup_id="order-2-redelivered")
    again = stack.wait_results(["order-2"])["order-2"]
    assert again.duplicate and again.orders == placed.orders

    assert engine.terminate() == 0
    replay = replay_journal(stack.database_url)
    assert replay.command_ids.count("order-1") == 1
    assert replay.command_ids.count("order-2") == 1
    assert len(replay.engine.open_orders(5)) == 1


def test_bad_messages_are_answered_and_dropped_without_stopping_the_engine(
    stack: EngineStack,
) -> None:
    engine = stack.start_engine()
    engine.wait_state("running")
    for n, body in enumerate(["not json", '["NoSuchCommand","x",0]', '["Deposit","x",0,null,"a"]']):
        stack.sqs.send_message(
            QueueUrl=stack.orders_url,
            MessageBody=body,
            MessageGroupId="9",
            MessageDeduplicationId=f"bad-{n}",
        )
    deposit = Deposit(id="after-bad", ts=0, account=9, asset="USDC", amount=5)
    stack.send(deposit)
    results = stack.wait_results(["bad-0", "bad-1", "bad-2", "after-bad"])
    for n in range(3):
        assert results[f"bad-{n}"].error is ErrorCode.INVALID_CLIENT_REQUEST
    assert results["after-bad"].error is None
    assert engine.alive
    attributes = stack.sqs.get_queue_attributes(
        QueueUrl=stack.orders_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"


def test_a_second_engine_waits_then_takes_over_with_no_gap_or_fork(stack: EngineStack) -> None:
    first = stack.start_engine()
    first.wait_state("running")
    assert _ready_code(first) == 200
    second = stack.start_engine()
    second.wait_state("standby")
    assert _ready_code(second) == 503
    rng = random.Random(3)
    commands = trading_workload(rng, accounts=5, orders=100, prefix="a")
    for command in commands[:60]:
        stack.send(command)
    stack.wait_results([c.id for c in commands[:60]])
    assert second.status()["state"] == "standby"  # type: ignore[index]
    epoch_before = journal_head(stack.database_url)[0]
    first.kill()
    status = second.wait_state("running", timeout_s=60)
    assert status["epoch"] == epoch_before + 1
    for command in commands[60:]:
        stack.send(command)
    stack.wait_results([c.id for c in commands])
    assert second.terminate() == 0
    replay = replay_journal(stack.database_url)
    assert sorted(i for i in replay.command_ids if not i.startswith(("tick:", "seed:"))) == sorted(
        c.id for c in commands
    )
    assert_conserved(replay.engine, stack.database_url)


def test_an_accounts_next_command_is_not_held_behind_its_last(stack: EngineStack) -> None:
    # orders.fifo hands out no message of an account's group while an earlier one is in flight
    # (received, not deleted). The engine deletes a batch's messages once its Redis writes are
    # confirmed, by the next batch or, when none comes, at once: never after an idle wait (up
    # to 250 ms, with ticks a second apart), which a trader sending orders one after another
    # would pay on every order.
    stack.start_engine(TICK_INTERVAL_MS="1000").wait_state("running")
    stack.send(Deposit(id="fund", ts=0, account=7, asset="USDC", amount=10**12))
    stack.wait_results(["fund"])
    round_trips = []
    for index in range(12):
        command = PlaceOrder(
            id=f"seq-{index}", ts=0, account=7, market="SOL_USDC", side=Side.BID,
            order_type=OrderType.LIMIT, price=9_000 + index, quantity=10,
        )  # fmt: skip
        pubsub = stack.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(names.reply_channel(command.id))
        started = time.perf_counter()
        stack.send(command)
        reply = None
        while reply is None and time.perf_counter() - started < 10:
            reply = pubsub.get_message(timeout=1.0)
        round_trips.append(time.perf_counter() - started)
        pubsub.close()
        assert reply is not None and decode_result(reply["data"]).ok, reply
    # ~15 ms each here (send, receive, journal, reply); held, they took 100-250 ms.
    assert statistics.median(round_trips) < 0.08, round_trips
