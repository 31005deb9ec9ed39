"""Redis goes away and comes back empty: the engine rewrites every key from its state, and the
commands of the failed batch still get their answers."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cloudex import cache, names
from cloudex.enums import OrderType, Side
from cloudex.messages import Deposit, PlaceOrder
from localgw.stack import free_port
from tests.integration.engine_support import EngineStack


class RedisServer:
    """A redis-server of the test's own, which it can stop and start again (empty)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (./dev services installs nothing: apt)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(
    sqs: Any, database_url: str, own_redis: RedisServer, tmp_path: Path
) -> Iterator[EngineStack]:
    stack = EngineStack(sqs, database_url, own_redis.url, tmp_path)
    stack.start_persister()
    yield stack
    stack.close()


def order(n: int, account: int, side: Side, price: int) -> PlaceOrder:
    return PlaceOrder(
        id=f"o{n}",
        ts=0,
        account=account,
        market="SOL_USDC",
        side=side,
        order_type=OrderType.LIMIT,
        price=price,
        quantity=10,
    )


def wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise TimeoutError


def test_keys_are_rewritten_after_redis_restarts_empty(
    stack: EngineStack, own_redis: RedisServer
) -> None:
    engine = stack.start_engine()
    engine.wait_state("running")
    commands = [
        Deposit(id="d1", ts=0, account=1, asset="USDC", amount=10**12),
        Deposit(id="d2", ts=0, account=2, asset="SOL", amount=10**12),
        order(1, 1, Side.BID, 9_990),
        order(2, 2, Side.ASK, 10_010),
    ]
    for command in commands:
        stack.send(command)
    stack.wait_results([c.id for c in commands])

    # Restarted empty (a new run_id): the heartbeat notices and everything comes back.
    own_redis.stop()
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url)
    wait_for(lambda: client.exists(names.depth_key("SOL_USDC")))
    depth = cache.decode_depth(client.get(names.depth_key("SOL_USDC")))
    assert depth.bids == [(9_990, 10)] and depth.asks == [(10_010, 10)]
    assert cache.decode_balance(client.hget(names.balances_key(1), "USDC")) == (
        10**12 - 9_990 * 10 * 100,
        9_990 * 10 * 100,
    )
    assert len(client.hgetall(names.open_orders_key(2))) == 1
    assert client.get(names.markets_key()) is not None

    # Down while a batch is written: the engine waits, rewrites, and still answers.
    own_redis.stop()
    stack.send(order(3, 1, Side.BID, 9_991))
    time.sleep(1.5)
    assert engine.alive
    own_redis.start()
    result = stack.wait_results(["o3"], timeout_s=30)["o3"]
    assert result.error is None
    depth = cache.decode_depth(client.get(names.depth_key("SOL_USDC")))
    assert depth.bids == [(9_991, 10), (9_990, 10)]
    assert engine.terminate() == 0
