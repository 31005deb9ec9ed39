"""Engine service throughput: the batch loop in process, and draining LocalStack's orders.fifo.

1. In process: the real service loop (decode, stamp, execute, journal blocks encoded, lease
   checked on PostgreSQL before and after each journal send, every Redis key and reply written
   in one pipeline per batch, inbound messages acknowledged) fed from an in-memory queue, with
   the journal kept in memory. Deposits for 1,000 accounts, then limit orders around the mid
   (a third of them crossing), cancels by clientId and market orders.
2. Through SQS: ``orders.fifo`` on LocalStack pre-filled, then ``python -m engine_service`` and
   the persister started, timed until every command has its result in Redis. LocalStack's SQS
   emulation bounds this figure, not the engine.

Needs PostgreSQL, Redis and LocalStack (``./dev services``). Prints as its LAST line:
{"bench":"engine_service","commands_per_s_inproc":N,"commands_per_s_sqs":N,"p99_batch_ms":X}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")

import boto3
import psycopg
import redis

from cloudex import names
from cloudex.enums import OrderType, Side
from cloudex.markets import load_markets_config
from cloudex.messages import (
    AnyCommand,
    CancelOrder,
    Deposit,
    PlaceOrder,
    encode_command_body,
)
from cloudex.seed import market_seed_commands
from engine_service.postgres import EngineDatabase
from engine_service.publisher import MarketDataPublisher, RedisPubSubSink
from engine_service.redis_out import RedisOutput
from engine_service.service import EngineService
from engine_service.settings import Settings
from engine_service.sqs import MemoryInbox, MemoryJournalTransport
from functions.migrate.runner import apply_migrations
from localgw.stack import ROOT, EngineProcess, PersisterRunner, create_fifo_queue

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
ACCOUNTS = 1_000
MID = 10_000


def workload(count: int, seed: int = 1) -> list[AnyCommand]:
    rng = random.Random(seed)
    commands: list[AnyCommand] = []
    for account in range(1, ACCOUNTS + 1):
        commands.append(
            Deposit(id=f"d-u-{account}", ts=0, account=account, asset="USDC", amount=10**15)
        )
        commands.append(
            Deposit(id=f"d-s-{account}", ts=0, account=account, asset="SOL", amount=10**16)
        )
    placed: list[tuple[int, int]] = []  # (account, client id)
    n = 0
    while len(commands) < count:
        n += 1
        account = rng.randint(1, ACCOUNTS)
        roll = rng.random()
        if roll < 0.25 and placed:
            owner, client_id = placed.pop(rng.randrange(len(placed)))
            commands.append(
                CancelOrder(
                    id=f"c-{n}", ts=0, account=owner, market="SOL_USDC", client_id=client_id
                )
            )
        elif roll < 0.35:
            commands.append(
                PlaceOrder(
                    id=f"m-{n}",
                    ts=0,
                    account=account,
                    market="SOL_USDC",
                    side=rng.choice([Side.BID, Side.ASK]),
                    order_type=OrderType.MARKET,
                    quantity=rng.randint(1, 20),
                )
            )
        else:
            side = rng.choice([Side.BID, Side.ASK])
            offset = rng.randint(-3, 30)  # a few cross, most rest
            price = MID - offset if side is Side.BID else MID + offset
            client_id = n
            placed.append((account, client_id))
            commands.append(
                PlaceOrder(
                    id=f"o-{n}",
                    ts=0,
                    account=account,
                    market="SOL_USDC",
                    side=side,
                    order_type=OrderType.LIMIT,
                    price=price,
                    quantity=rng.randint(1, 50),
                    client_id=client_id,
                )
            )
    return commands


def engine_alone(count: int) -> float:
    """The pure engine on the same commands: the ceiling the service loop is measured against
    (this VM's speed varies by 2x from day to day; the ratio does not)."""
    import gc

    from engine_service.core import Engine

    engine = Engine()
    config = load_markets_config(ROOT / "config" / "markets.toml")
    for command in market_seed_commands(config, 1):
        engine.execute(command)
    commands = workload(count)
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    for command in commands:
        command.ts = 2
        engine.execute(command)
    elapsed = time.perf_counter() - started
    gc.enable()
    return len(commands) / elapsed


def fresh_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rpartition("/")[0] + f"/{name}"
    apply_migrations(url)
    return url


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_inproc(count: int) -> tuple[float, float, int]:
    database_url = fresh_database("cloudex_bench_inproc")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(
        orders_queue_url="-",
        events_queue_url="-",
        database_url=database_url,
        redis_url=REDIS_URL,
        engine_id="bench",
    )
    database = EngineDatabase(database_url, "bench")
    assert database.acquire_lease(threading.Event())
    inbox = MemoryInbox()
    journal = MemoryJournalTransport()
    service = EngineService(
        settings,
        inbox=inbox,
        journal=journal,
        database=database,
        output=RedisOutput(REDIS_URL),
        # The sink the service runs with until the WebSocket fan-out arrives.
        publisher=MarketDataPublisher(RedisPubSubSink(redis.Redis.from_url(REDIS_URL))),
    )
    service.epoch = database.start_epoch()
    config = load_markets_config(ROOT / "config" / "markets.toml")
    service._process([], market_seed_commands(config, service.clock()))
    commands = workload(count)
    for command in commands:
        inbox.put(encode_command_body(command), command.id)
    import gc

    gc.collect()
    gc.freeze()
    gc.disable()
    batch_ms: list[float] = []
    started = time.perf_counter()
    while True:
        messages = inbox.take(settings.max_batch, 0)
        if not messages:
            break
        service._process(messages, [])
        batch_ms.append(service.last_batch_ms)
    service._finish_pending()
    elapsed = time.perf_counter() - started
    gc.enable()
    assert len(inbox.acked) == len(commands)
    batch_ms.sort()
    p99 = batch_ms[min(len(batch_ms) - 1, int(len(batch_ms) * 0.99))]
    blocks = len(journal.messages)
    service.publisher.close()
    database.close()
    return len(commands) / elapsed, p99, blocks


def bench_sqs(count: int) -> float:
    database_url = fresh_database("cloudex_bench_sqs")
    redis_client = redis.Redis.from_url(REDIS_URL)
    redis_client.flushdb()
    sqs = boto3.client("sqs")
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    orders = create_fifo_queue(sqs, f"{prefix}-orders.fifo")
    events = create_fifo_queue(sqs, f"{prefix}-events.fifo")
    commands = workload(count, seed=2)
    for start in range(0, len(commands), 10):
        sqs.send_message_batch(
            QueueUrl=orders,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": encode_command_body(c),
                    "MessageGroupId": str(getattr(c, "account", 0)),
                    "MessageDeduplicationId": c.id,
                }
                for i, c in enumerate(commands[start : start + 10])
            ],
        )
    persister = PersisterRunner(events, database_url, sqs).start()
    log = Path(tempfile.gettempdir()) / f"{prefix}-engine.log"
    engine = EngineProcess(
        {
            "ORDERS_QUEUE_URL": orders,
            "EVENTS_QUEUE_URL": events,
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "RECEIVERS": "6",
        },
        log_path=log,
    ).start()
    try:
        engine.wait_state("running", timeout_s=120)
        started = time.perf_counter()
        keys = [names.result_key(c.id) for c in commands]
        while True:
            answered = sum(1 for v in redis_client.mget(keys[-500:]) if v is not None)
            if answered == min(500, len(keys)) and all(
                v is not None for v in redis_client.mget(keys)
            ):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        engine.terminate()
        persister.stop()
        for url in (orders, events):
            sqs.delete_queue(QueueUrl=url)
    return len(commands) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inproc", type=int, default=200_000, help="commands in process")
    parser.add_argument("--sqs", type=int, default=5_000, help="commands through LocalStack")
    args = parser.parse_args()
    inproc, p99, blocks = bench_inproc(args.inproc)
    alone = engine_alone(args.inproc)
    print(
        f"in process: {inproc:,.0f} commands/s, p99 batch {p99:.1f} ms, {blocks} blocks; "
        f"the engine alone on the same commands: {alone:,.0f} commands/s "
        f"(the service runs at {inproc / alone:.0%} of it)",
        file=sys.stderr,
    )
    sqs = bench_sqs(args.sqs)
    print(f"through LocalStack SQS: {sqs:,.0f} commands/s", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "engine_service",
                "commands_per_s_inproc": round(inproc),
                "commands_per_s_sqs": round(sqs),
                "p99_batch_ms": round(p99, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
