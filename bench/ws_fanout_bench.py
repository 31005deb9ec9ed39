"""WebSocket fan-out lag: engine event time to the subscriber's receipt, end to end.

Everything real and in its own process, as deployed: LocalStack SQS (``orders.fifo``,
``events.fifo``), the engine service (``python -m engine_service``, its market data going to
``ws_fanout`` by Lambda Invoke), the local Lambda API (``python -m localgw.lambda_api``: the
``ws_fanout`` function in worker processes, as Lambda execution environments), the local
WebSocket gateway (``python -m localgw.websocket``: the route functions, and the management API
``ws_fanout`` posts to), the persister (``python -m localgw.sqs_event_source``), Redis (its own
database, flushed) and PostgreSQL (its own database, migrations applied).

Subscribers: ``--subscribers`` WebSocket clients (aiohttp, as ccxt.pro uses), spread over
``--client-processes`` processes, each subscribed to ``depth.<M>`` and ``trade.<M>`` of one of
the USDC markets (round robin: a real audience is spread over markets). Orders: an open-loop
flow of ``--rate`` limit orders per second straight into ``orders.fifo`` (the REST path has its
own bench), random accounts and markets, prices around each market's mid, about a third of
them crossing, so both depth and trades move.

Lag, per frame received while measuring: the client's receipt time minus the event's engine
time, ``T`` (µs) of the frame. A trade frame's ``T`` is its own trade's time, so its lag
includes the wait for the conflation window; a depth frame's ``T`` is the newest event merged
into it (Backpack's meaning). Both share the machine's clock. Reported: percentiles over all
frames, and separately per stream, for ``--subscribers`` and then for 1,000 (``--also``).

The engine runs with ``CONFLATION_MS`` = ``--conflation-ms``: the least time between two
deliveries of one market. Required: at 200 subscribers, p99 lag <= conflation + 100 ms.

Needs PostgreSQL, Redis and LocalStack (``./dev services``). Progress to stderr; the LAST stdout
line is one JSON object:
{"bench":"ws_fanout","subscribers":200,"conflation_ms":X,"p99_lag_ms":X,"p99_lag_ms_1000":X,...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import boto3
import redis

from bench.api_roundtrip import Child, CpuMeter, median, percentile, release
from bench.engine_service_bench import fresh_database
from cloudex.enums import OrderType, Side
from cloudex.messages import Deposit, PlaceOrder
from localgw.stack import EngineProcess, create_fifo_queue, free_port, send_command

REDIS_URL = os.environ.get("BENCH_WS_REDIS_URL", "redis://127.0.0.1:6379/13")
DATABASE = "cloudex_bench_ws"
ACCOUNTS = 40

# market -> (mid price in ticks, smallest and largest order in lots)
MARKETS: dict[str, tuple[int, int, int]] = {
    "SOL_USDC": (10_000, 1, 50),  # 100.00, 0.01-0.50 SOL
    "BTC_USDC": (600_000, 2, 50),  # 60000.0, 0.00002-0.0005 BTC
    "ETH_USDC": (300_000, 10, 50),  # 3000.00, 0.001-0.005 ETH
}
DEPOSITS = {"USDC": 10**7 * 10**6, "SOL": 10**4 * 10**9, "BTC": 100 * 10**8, "ETH": 10**3 * 10**8}


def log(message: str) -> None:
    print(f"[ws_fanout] {message}", file=sys.stderr, flush=True)


# -- THE STACK --------------------------------------------------------------------------------


@dataclass
class Stack:
    conflation_ms: int
    fanout_concurrency: int
    shard_size: int
    post_threads: int
    log_dir: Path
    sqs: Any = None
    queues: list[str] = field(default_factory=list)
    database_url: str = ""
    engine: EngineProcess | None = None
    children: list[Child] = field(default_factory=list)
    ws_url: str = ""
    orders_url: str = ""

    def start(self) -> Stack:
        started = time.perf_counter()
        self.database_url = fresh_database(DATABASE)
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.sqs = boto3.client("sqs")
        prefix = f"wsbench{uuid.uuid4().hex[:6]}"
        self.orders_url = create_fifo_queue(self.sqs, f"{prefix}-orders.fifo")
        events = create_fifo_queue(self.sqs, f"{prefix}-events.fifo")
        self.queues += [self.orders_url, events]
        ws_port, lambda_port = free_port(), free_port()
        lambda_url = f"http://127.0.0.1:{lambda_port}"
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        python = sys.executable
        self.children.append(
            Child(
                "persister",
                [
                    python,
                    "-m",
                    "localgw.sqs_event_source",
                    "--queue-url",
                    events,
                    "--handler",
                    "functions.persister.handler.handler",
                ],
                env,
                self.log_dir / "persister.log",
            )
        )
        self.children.append(
            Child(
                "websocket",
                [
                    python,
                    "-m",
                    "localgw.websocket",
                    "--connect",
                    "functions.ws_routes.handler:connect",
                    "--disconnect",
                    "functions.ws_routes.handler:disconnect",
                    "--default",
                    "functions.ws_routes.handler:default",
                    "--port",
                    str(ws_port),
                    "--workers",
                    "4",
                ],
                env,
                self.log_dir / "websocket.log",
            )
        )
        self.children.append(
            Child(
                "lambda",
                [
                    python,
                    "-m",
                    "localgw.lambda_api",
                    "--function",
                    "ws_fanout=functions.ws_fanout.handler:handler",
                    "--concurrency",
                    str(self.fanout_concurrency),
                    "--port",
                    str(lambda_port),
                ],
                {
                    **env,
                    "WS_MANAGEMENT_ENDPOINT": f"http://127.0.0.1:{ws_port}",
                    "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
                    "SHARD_SIZE": str(self.shard_size),
                    "POST_THREADS": str(self.post_threads),
                },
                self.log_dir / "lambda.log",
            )
        )
        self.ws_url = f"ws://127.0.0.1:{ws_port}/"
        self.engine = EngineProcess(
            {
                "ORDERS_QUEUE_URL": self.orders_url,
                "EVENTS_QUEUE_URL": events,
                "DATABASE_URL": self.database_url,
                "REDIS_URL": REDIS_URL,
                "ENGINE_ID": "bench-engine",
                "PYTHONPATH": env["PYTHONPATH"],
                "FANOUT_FUNCTION": "ws_fanout",
                "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
                "CONFLATION_MS": str(self.conflation_ms),
            },
            log_path=self.log_dir / "engine.log",
        ).start()
        self.engine.wait_state("running", timeout_s=120)
        self._wait_port(ws_port)
        self._wait_port(lambda_port)
        log(f"stack up in {time.perf_counter() - started:.1f} s, logs {self.log_dir}")
        return self

    def _wait_port(self, port: int, timeout_s: float = 30.0) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        while True:
            for child in self.children:
                child.check()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {port}") from None
                time.sleep(0.1)

    def send(self, command: Any) -> None:
        send_command(self.sqs, self.orders_url, command, str(getattr(command, "account", 0)))

    def close(self) -> None:
        if self.engine is not None:
            try:
                self.engine.terminate()
            except Exception:
                self.engine.kill()
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as error:
                log(f"stopping {child.name}: {error}")
        release(self.sqs, self.queues, DATABASE if self.database_url else None, REDIS_URL)


ROOT = Path(__file__).resolve().parents[1]


# -- SUBSCRIBERS (client processes) -----------------------------------------------------------


def client_process(
    url: str,
    markets: list[str],
    ready: Any,
    measuring: Any,
    done: Any,
    results: Any,
) -> None:
    """Connect one client per market in ``markets``; record lags while ``measuring``."""

    async def run() -> None:
        lags: dict[str, list[float]] = {"depth": [], "trade": []}
        frames = 0
        # No connection limit: aiohttp's default (100) counts every open WebSocket.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sockets = []
        for n, market in enumerate(markets):
            ws = await session.ws_connect(url, autoping=True)
            await ws.send_str(
                json.dumps(
                    {
                        "method": "SUBSCRIBE",
                        "params": [f"depth.{market}", f"trade.{market}"],
                        "id": n,
                    }
                )
            )
            sockets.append(ws)

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal frames
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                received = time.time()
                if not measuring.is_set():
                    continue
                frame = json.loads(message.data)
                data = frame.get("data")
                if data is None:
                    continue
                frames += 1
                lags[data["e"]].append(received * 1_000 - data["T"] / 1_000)

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        ready.release()
        while not done.is_set():
            await asyncio.sleep(0.1)
        for ws in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
        await session.close()
        results.put({"lags": lags, "frames": frames})

    asyncio.run(run())


def children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry))
    return found


# -- LOAD -------------------------------------------------------------------------------------


def order_flow(stack: Stack, rate: float, stop: threading.Event, sent: list[int], run: str) -> None:
    """Open loop: order *i* is sent at ``start + i / rate``. Ids are unique per ``run``: the
    engine answers a known id with its first result and does nothing else."""
    rng = random.Random(run)
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        market = rng.choice(list(MARKETS))
        mid, smallest, largest = MARKETS[market]
        side = rng.choice([Side.BID, Side.ASK])
        # A third cross the mid (and trade); the rest rest within 10 ticks of it.
        crossing = rng.random() < 0.33
        offset = rng.randint(1, 10)
        toward = offset if crossing else -offset
        price = mid + toward if side is Side.BID else mid - toward
        stack.send(
            PlaceOrder(
                id=f"wsb-{run}-{n}",
                ts=0,
                account=rng.randint(1, ACCOUNTS),
                market=market,
                side=side,
                order_type=OrderType.LIMIT,
                price=price,
                quantity=rng.randint(smallest, largest),
            )
        )
        n += 1
        sent[0] = n


def measure(stack: Stack, subscribers: int, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ready = context.Semaphore(0)
    measuring, done = context.Event(), context.Event()
    results = context.Queue()
    markets = [list(MARKETS)[i % len(MARKETS)] for i in range(subscribers)]
    groups = [markets[i :: args.client_processes] for i in range(args.client_processes)]
    processes = [
        context.Process(
            target=client_process, args=(stack.ws_url, group, ready, measuring, done, results)
        )
        for group in groups
    ]
    for process in processes:
        process.start()
    for _ in processes:
        if not ready.acquire(timeout=120):
            raise TimeoutError("clients did not connect")
    log(f"{subscribers} subscribers connected; orders at {args.rate}/s")
    stop = threading.Event()
    sent = [0]
    flow = threading.Thread(
        target=order_flow, args=(stack, args.rate, stop, sent, f"s{subscribers}"), daemon=True
    )
    flow.start()
    time.sleep(args.warmup)
    meter = CpuMeter(stack)  # type: ignore[arg-type]
    # The fan-out's execution environments (the Lambda API's worker processes) and the
    # subscribers' processes, so that "other" is what is left of the machine.
    lambda_api = next(child for child in stack.children if child.name == "lambda")
    meter.pids["fanout_workers"] = children_of(lambda_api.process.pid)
    meter.pids["clients"] = [process.pid for process in processes if process.pid]
    meter.start = meter._sample()
    first_sent = sent[0]
    measuring.set()
    time.sleep(args.seconds)
    measuring.clear()
    cores = meter.cores()
    orders = sent[0] - first_sent
    stop.set()
    flow.join()
    done.set()
    lags: dict[str, list[float]] = {"depth": [], "trade": []}
    frames = 0
    for _ in processes:
        part = results.get(timeout=60)
        frames += part["frames"]
        for stream, values in part["lags"].items():
            lags[stream] += values
    for process in processes:
        process.join(30)
    every = lags["depth"] + lags["trade"]
    if not every:
        raise RuntimeError("no frame arrived while measuring")
    figures = {
        "subscribers": subscribers,
        "frames": frames,
        "frames_per_s": round(frames / args.seconds),
        "orders_per_s": round(orders / args.seconds, 1),
        "p50_lag_ms": round(median(every), 1),
        "p99_lag_ms": round(percentile(every, 0.99), 1),
        "max_lag_ms": round(max(every), 1),
        "depth_p99_lag_ms": round(percentile(lags["depth"], 0.99), 1) if lags["depth"] else None,
        "trade_p99_lag_ms": round(percentile(lags["trade"], 0.99), 1) if lags["trade"] else None,
        "cpu_cores": cores,
    }
    log(json.dumps(figures))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--also", type=int, default=1_000, help="a second run (0: none)")
    parser.add_argument("--rate", type=float, default=6.0, help="orders per second")
    parser.add_argument("--conflation-ms", type=int, default=100)
    parser.add_argument("--fanout-concurrency", type=int, default=16)
    # Locally a post is ~0.3 ms of round trip and ~0.65 ms of boto3 CPU: shards (processes)
    # give parallelism, threads mostly GIL contention. In AWS the round trip dominates, hence
    # the functions' defaults (SHARD_SIZE 250, POST_THREADS 16).
    parser.add_argument("--shard-size", type=int, default=40, help="ws_fanout's SHARD_SIZE")
    parser.add_argument("--post-threads", type=int, default=4, help="ws_fanout's POST_THREADS")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="ws-fanout-bench-"))
    stack = Stack(
        args.conflation_ms, args.fanout_concurrency, args.shard_size, args.post_threads, log_dir
    )
    try:
        stack.start()
        for account in range(1, ACCOUNTS + 1):
            for asset, amount in DEPOSITS.items():
                stack.send(
                    Deposit(
                        id=f"wsb-dep-{asset}-{account}",
                        ts=0,
                        account=account,
                        asset=asset,
                        amount=amount,
                    )
                )
        runs = [measure(stack, args.subscribers, args)]
        if args.also:
            runs.append(measure(stack, args.also, args))
    finally:
        stack.close()
    result: dict[str, Any] = {
        "bench": "ws_fanout",
        "subscribers": args.subscribers,
        "conflation_ms": args.conflation_ms,
        "p99_lag_ms": runs[0]["p99_lag_ms"],
        "p99_lag_ms_1000": runs[1]["p99_lag_ms"] if len(runs) > 1 else None,
        "required_p99_ms": args.conflation_ms + 100,
        "ok": runs[0]["p99_lag_ms"] <= args.conflation_ms + 100,
        "rate_orders_per_s": args.rate,
        "shard_size": args.shard_size,
        "post_threads": args.post_threads,
        "runs": runs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
