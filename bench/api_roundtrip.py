"""REST round trip under an open-loop load: signed places and cancels over HTTP, end to end.

Everything real and in its own process, as deployed: the local API Gateway
(``python -m localgw.rest``) serving the API Lambda handler, LocalStack SQS (``orders.fifo``,
``events.fifo``), the engine service (``python -m engine_service``), the persister on the SQS
event source (``python -m localgw.sqs_event_source``), Redis (its own database, flushed) and
PostgreSQL (its own database, migrations applied). The load generator (this process: asyncio
and aiohttp) shares no interpreter with any of them.

Set-up: ``--accounts`` accounts (default 50) with a trade key each, funded with USDC and SOL,
through the admin API. Then ``--warmup`` seconds of load whose results are discarded (warm
Lambda containers: each gateway worker opens its Redis subscription and database connection on
its first request), then ``--seconds`` of load at ``--rate`` requests/s. The load is open
loop: request *i* is due at ``start + i / rate`` whatever happened to the earlier ones, and its
latency runs from that due time to the last byte of its response, so a stalled system (or a
generator that falls behind) shows in the figures instead of slowing the load down.

The mix (SOL_USDC, mid 100.00; the counts are in ``mix``), each request from a random account:

- 40 %: ``DELETE /api/v1/order`` of one of the account's resting far orders (one an earlier
  response confirmed; an account without any places a far order instead);
- 45 %: a limit order far from the mid (bids 90-95, asks 105-110), which rests: nothing crosses;
- 15 %: near the mid, where trades happen: even accounts rest maker orders (bids 99.50-99.99,
  asks 100.01-100.50), odd accounts send IOC orders that cross them (so self-trade prevention
  never refuses one, and no cancel ever targets an order a taker may have filled).

Every request must answer 2xx: anything else, or a connection error, is an *error*; a request
with no answer within ``--timeout`` (the gateway's own limit is 29 s) is *unanswered*. The
latency percentiles are over the answered 2xx requests (a run with errors fails anyway).

The breakdown (``breakdown_ms``), medians in ms. The handler reports its phases in a
``Server-Timing`` header (``functions/api/timing.py``): ``app`` (the FastAPI app, whole),
``redis`` (stored-result and heartbeat lookup), ``subscribe`` (reply channel subscribed and
confirmed), ``sqs`` (``SendMessage`` to ``orders.fifo``), ``engine`` (from the send until the
engine's reply arrives on the channel). Per request:

- ``gateway_handler`` = latency - ``sqs`` - ``engine``: all of the round trip that is neither a
  queue send nor waiting for the engine: the client's HTTP, the gateway (HTTP server, proxy
  event, worker hand-off), the Lambda wrapper (Powertools, Mangum), and the app's own work
  (signature, key, rate limit, validation, the Redis lookup and subscription, the answer). It
  splits into ``outside_app`` (latency - ``app``: client, gateway, Mangum and Powertools),
  ``app_redis`` + ``app_subscribe``, and ``app_other`` (the rest of ``app``);
- ``sqs_send`` and ``engine_wait``: the two header phases.

The engine's side of ``engine_wait`` comes from its health endpoint, which keeps per-phase
timings of its last 2,048 batches with inbound messages (``phaseMedianMs`` in ``/live``, read
at the end of the run): ``engine_match`` (decode and execute the batch, journal blocks sealed),
``engine_journal`` (the journal's ``SendMessageBatch`` to ``events.fifo``, confirmed, with a
lease check before and after), ``engine_reply`` (the previous batch's Redis confirmation and
acknowledgements, and this batch's keys and replies encoded and handed to the Redis writer,
whose round trip overlaps what follows) and ``engine_batch`` (the whole batch). They are per
batch, not per request, so ``engine_wait`` - ``engine_batch`` (``engine_queue_hop_est``) is an
estimate, not a measured median: the rest of the wait, that is the message's way out of SQS to a
long-polling receiver, the wait for the matcher to finish the batch it is in, the Redis publish,
and the API thread waking up with the reply. Medians of parts do not add up to the median of
a sum; they say where the time goes.

Also reported, to see what the machine spends (every part shares its cores): ``cpu_cores``,
the CPU each process used while measuring (``/proc``; ``localstack`` is the shared LocalStack,
``postgres`` every PostgreSQL process, ``other`` the rest of the machine's busy time, other
users of the machine included); ``sqs_calls_per_request``, every SQS call the gateway, engine
and persister made while measuring, by operation, per request (a ``sitecustomize`` put first on
their ``PYTHONPATH`` counts botocore's calls); ``follow_ups``, latency of requests due within
100 ms of their account's previous one (``orders.fifo`` hands out no message of an account's
group while an earlier one is in flight, that is received and not yet deleted) against the
others'. ``--gateways N`` runs N gateway processes, requests spread evenly over them (as Lambda
runs containers as processes; one process's workers are threads sharing one GIL).

Needs PostgreSQL, Redis and LocalStack (``./dev services``). Progress goes to stderr; the LAST
stdout line is one JSON object:
{"bench":"api_roundtrip","rate":200,"p50_ms":X,"p99_ms":X,"errors":0,"unanswered":0,
"breakdown_ms":{...}, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")

import aiohttp
import boto3
import redis

from bench.engine_service_bench import drop_database, fresh_database
from cloudex import names, signing
from localgw.stack import ROOT, EngineProcess, create_fifo_queue, free_port

REDIS_URL = os.environ.get("BENCH_API_REDIS_URL", "redis://127.0.0.1:6379/12")
DATABASE = "cloudex_bench_api"
MARKET = "SOL_USDC"
FOLLOW_UP_MS = 100.0
# The requirement at 200 requests/s: "ok" in the result says whether a run met it.
TARGET_P50_MS = 25.0
TARGET_P99_MS = 100.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank on sorted ``values`` (0.5: the median)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- THE STACK --------------------------------------------------------------------------------


# Put first on the children's PYTHONPATH: counts every AWS API call a process makes, by
# operation, in a JSON file rewritten twice a second (a dict update per call: nothing next to
# the call itself). How many SQS calls a command costs is what LocalStack's capacity is spent on.
_CALL_COUNTER = """\
import json, os, threading, time

_path = os.environ.get("CLOUDEX_BENCH_SQS_CALLS")
if _path:
    import botocore.client

    _counts = {}
    _lock = threading.Lock()
    _call = botocore.client.BaseClient._make_api_call

    def _make_api_call(self, operation_name, api_params):
        with _lock:
            _counts[operation_name] = _counts.get(operation_name, 0) + 1
        return _call(self, operation_name, api_params)

    def _dump():
        while True:
            time.sleep(0.5)
            with _lock:
                data = json.dumps(_counts)
            with open(_path + ".tmp", "w") as out:
                out.write(data)
            os.replace(_path + ".tmp", _path)

    botocore.client.BaseClient._make_api_call = _make_api_call
    threading.Thread(target=_dump, name="bench-call-counter", daemon=True).start()
"""


def read_calls(path: Path) -> dict[str, int]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


class Child:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: TextIO = open(log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; log {self.log_path}:\n"
                + self.log_path.read_text()[-3000:]
            )

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Stack:
    """Everything the bench starts; :meth:`close` undoes whatever of it was started."""

    workers: int
    engine_env: dict[str, str]
    log_dir: Path
    gateways: int = 1
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sqs: Any = None
    queues: list[str] = field(default_factory=list)
    database_url: str = ""
    engine: EngineProcess | None = None
    children: list[Child] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # one per gateway process

    def start(self) -> Stack:
        started = time.perf_counter()
        self.database_url = fresh_database(DATABASE)
        redis.Redis.from_url(REDIS_URL).flushdb()
        self.sqs = boto3.client("sqs")
        prefix = f"apibench{uuid.uuid4().hex[:6]}"
        orders = create_fifo_queue(self.sqs, f"{prefix}-orders.fifo")
        self.queues.append(orders)
        events = create_fifo_queue(self.sqs, f"{prefix}-events.fifo")
        self.queues.append(events)
        env = {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": REDIS_URL}
        counter = self.log_dir / "site"
        counter.mkdir(exist_ok=True)
        (counter / "sitecustomize.py").write_text(_CALL_COUNTER)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(counter), str(ROOT), os.environ.get("PYTHONPATH")])
        )
        # Quiet: the API and the persister log (and print metrics) through Powertools.
        env.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        self.children.append(
            Child(
                "persister",
                [
                    sys.executable,
                    "-m",
                    "localgw.sqs_event_source",
                    "--queue-url",
                    events,
                    "--handler",
                    "functions.persister.handler.handler",
                ],
                {**env, "CLOUDEX_BENCH_SQS_CALLS": str(self.calls_file("persister"))},
                self.log_dir / "persister.log",
            )
        )
        self.engine = EngineProcess(
            {
                "ORDERS_QUEUE_URL": orders,
                "EVENTS_QUEUE_URL": events,
                "DATABASE_URL": self.database_url,
                "REDIS_URL": REDIS_URL,
                "ENGINE_ID": "bench-engine",
                "PYTHONPATH": env["PYTHONPATH"],
                "CLOUDEX_BENCH_SQS_CALLS": str(self.calls_file("engine")),
                **self.engine_env,
            },
            log_path=self.log_dir / "engine.log",
        ).start()
        self.engine.wait_state("running", timeout_s=120)
        for n in range(self.gateways):
            port = free_port()
            self.children.append(
                Child(
                    f"gateway-{n}",
                    [
                        sys.executable,
                        "-m",
                        "localgw.rest",
                        "--handler",
                        "functions.api.handler:handler",
                        "--port",
                        str(port),
                        "--workers",
                        str(self.workers),
                    ],
                    {
                        **env,
                        "ORDERS_QUEUE_URL": orders,
                        "CLOUDEX_ADMIN_TOKEN": self.admin_token,
                        "CLOUDEX_BENCH_SQS_CALLS": str(self.calls_file(f"gateway-{n}")),
                    },
                    self.log_dir / f"gateway-{n}.log",
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        self._wait_ready()
        log(
            f"stack up in {time.perf_counter() - started:.1f} s: gateway {', '.join(self.urls)} "
            f"({self.workers} workers each), engine health :{self.engine.port}, "
            f"logs {self.log_dir}"
        )
        return self

    def calls_file(self, name: str) -> Path:
        return self.log_dir / f"sqs-calls-{name}.json"

    def sqs_calls(self) -> dict[str, dict[str, int]]:
        """AWS calls so far by process (gateways together) and operation."""
        calls: dict[str, dict[str, int]] = {}
        for path in self.log_dir.glob("sqs-calls-*.json"):
            name = path.stem.removeprefix("sqs-calls-").partition("-")[0]
            into = calls.setdefault(name, {})
            for operation, count in read_calls(path).items():
                into[operation] = into.get(operation, 0) + count
        return calls

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        """The gateway answers, and the engine's heartbeat is in Redis (else: MAINTENANCE)."""
        import urllib.error
        import urllib.request

        client = redis.Redis.from_url(REDIS_URL)
        deadline = time.monotonic() + timeout_s
        while True:
            for child in self.children:
                child.check()
            try:
                for url in self.urls:
                    with urllib.request.urlopen(url + "/api/v1/markets", timeout=2) as reply:
                        assert reply.status == 200
                if client.get(names.heartbeat_key()) is not None:
                    client.close()
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway or the engine did not come up")
            time.sleep(0.1)

    def close(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as error:
                log(f"stopping {child.name}: {error}")
        if self.engine is not None:
            try:
                self.engine.terminate()
            except Exception:
                self.engine.kill()
        release(self.sqs, self.queues, DATABASE if self.database_url else None, REDIS_URL)


def release(sqs: Any, queues: Sequence[str], database: str | None, redis_url: str) -> None:
    """Delete a bench's queues, drop its database and flush its Redis database, each on its
    own (a failure is logged, the rest still done): what every bench stack leaves behind."""
    for queue_url in queues:
        try:
            sqs.delete_queue(QueueUrl=queue_url)
        except Exception as error:
            log(f"deleting {queue_url}: {error}")
    if database:
        try:
            drop_database(database)
        except Exception as error:
            log(f"dropping {database}: {error}")
    try:
        redis.Redis.from_url(redis_url).flushdb()
    except Exception as error:
        log(f"flushing {redis_url}: {error}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def localstack_pid() -> int | None:
    try:
        return int((ROOT / ".localstack" / "localstack.pid").read_text())
    except (OSError, ValueError):
        return None


def processes_named(*names: str) -> list[int]:
    """Pids whose command name is one of ``names`` (redis-server, postgres backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """The CPU each part of the stack used over a stretch of time (in cores: 1.0 is one core
    busy all along), and the whole machine's (whatever else runs competes for the same cores).

    ``redis`` is the server's (shared by anything else using it); ``postgres`` is every
    PostgreSQL process, so it includes other databases' work; ``other`` is the machine's busy
    time minus all of those.
    """

    def __init__(self, stack: Stack) -> None:
        pids = {"generator": [os.getpid()]}
        for child in stack.children:  # gateway-0, gateway-1...: one figure
            pids.setdefault(child.name.partition("-")[0], []).append(child.process.pid)
        if stack.engine is not None and stack.engine.process is not None:
            pids["engine"] = [stack.engine.process.pid]
        if (pid := localstack_pid()) is not None:
            pids["localstack"] = [pid]
        pids["redis"] = processes_named("redis-server")
        self.pids = pids
        self.start = self._sample()

    def _sample(self) -> tuple[float, dict[str, dict[int, float]], float]:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
        pids = {**self.pids, "postgres": processes_named("postgres", "postmaster")}
        used = {
            name: {pid: cpu for pid in group if (cpu := cpu_seconds(pid)) is not None}
            for name, group in pids.items()
        }
        return time.monotonic(), used, busy

    def cores(self) -> dict[str, float]:
        now, used, busy = self._sample()
        began, first, busy_first = self.start
        elapsed = now - began
        figures = {
            # A process that started meanwhile counts whole; one that ended is lost.
            name: round(
                sum(cpu - first.get(name, {}).get(pid, 0.0) for pid, cpu in group.items())
                / elapsed,
                2,
            )
            for name, group in used.items()
        }
        figures["machine"] = round((busy - busy_first) / elapsed, 2)
        figures["other"] = round(
            figures["machine"] - sum(v for k, v in figures.items() if k != "machine"), 2
        )
        return figures


# -- CLIENTS ----------------------------------------------------------------------------------


@dataclass
class Trader:
    account: int
    api_key: str
    secret: str
    resting: list[str] = field(default_factory=list)  # far order ids, open and not cancelled
    last_due: float = float("-inf")  # when its latest request was due (loop time)


async def admin(
    session: aiohttp.ClientSession, stack: Stack, path: str, body: Any, status: int
) -> Any:
    async with session.post(
        stack.urls[0] + path, json=body, headers={"Authorization": f"Bearer {stack.admin_token}"}
    ) as reply:
        text = await reply.text()
        if reply.status != status:
            raise RuntimeError(f"POST {path}: {reply.status} {text}")
        return json.loads(text)


async def new_trader(session: aiohttp.ClientSession, stack: Stack, n: int) -> Trader:
    created = await admin(session, stack, "/admin/v1/accounts", {"label": f"bench-{n}"}, 201)
    account = int(created["accountId"])
    api_key, secret = signing.generate_keypair()
    await admin(
        session,
        stack,
        f"/admin/v1/accounts/{account}/keys",
        {"publicKey": api_key, "scope": "trade"},
        201,
    )
    for asset, amount in (("USDC", "1000000"), ("SOL", "10000")):
        await admin(
            session,
            stack,
            "/admin/v1/deposits",
            {
                "account": account,
                "asset": asset,
                "amount": amount,
                "reason": "bench funding",
                "idempotencyKey": uuid.uuid4().hex,
            },
            200,
        )
    return Trader(account, api_key, secret)


async def new_traders(session: aiohttp.ClientSession, stack: Stack, count: int) -> list[Trader]:
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> Trader:
        async with gate:
            return await new_trader(session, stack, n)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


# -- THE LOAD ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "place", "maker", "taker", "cancel"
    latency_ms: float = float("nan")
    status: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    error: str = ""
    unanswered: bool = False
    send_lag_ms: float = 0.0  # how late the generator started it
    gap_ms: float = float("inf")  # since the same account's previous request was due


def server_timing(header: str | None) -> dict[str, float]:
    phases: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, _, rest = entry.strip().partition(";dur=")
        if rest:
            phases[name] = phases.get(name, 0.0) + float(rest)
    return phases


def price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


class Load:
    """Chooses each request (see the module docstring) and keeps the accounts' resting orders."""

    def __init__(self, traders: list[Trader], seed: int) -> None:
        self.traders = traders
        self.rng = random.Random(seed)
        self.client_id = 0

    def next(self) -> tuple[Trader, str, str, dict[str, Any], str]:
        """``(trader, method, path, params, kind)`` of the next request."""
        rng = self.rng
        trader = rng.choice(self.traders)
        roll = rng.random()
        self.client_id += 1
        if roll < 0.40 and trader.resting:
            order_id = trader.resting.pop(rng.randrange(len(trader.resting)))
            return (
                trader,
                "DELETE",
                "/api/v1/order",
                {"symbol": MARKET, "orderId": order_id},
                ("cancel"),
            )
        side = rng.choice(("Bid", "Ask"))
        order: dict[str, Any] = {
            "symbol": MARKET,
            "side": side,
            "orderType": "Limit",
            "clientId": self.client_id,
        }
        if 0.40 <= roll < 0.55 and trader.account % 2 == 0:  # a maker near the mid
            ticks = rng.randint(9_950, 9_999) if side == "Bid" else rng.randint(10_001, 10_050)
            order.update(price=price(ticks), quantity=price(rng.randint(100, 500)))
            return trader, "POST", "/api/v1/order", order, "maker"
        if 0.40 <= roll < 0.55:  # a taker: crosses the makers near the mid, never a far one
            ticks = 10_060 if side == "Bid" else 9_940
            order.update(
                price=price(ticks), quantity=price(rng.randint(50, 300)), timeInForce="IOC"
            )
            return trader, "POST", "/api/v1/order", order, "taker"
        ticks = rng.randint(9_000, 9_500) if side == "Bid" else rng.randint(10_500, 11_000)
        order.update(price=price(ticks), quantity=price(rng.randint(10, 200)))
        return trader, "POST", "/api/v1/order", order, "place"


async def request(
    session: aiohttp.ClientSession,
    url: str,
    load: Load,
    due: float,
    timeout_s: float,
) -> Outcome:
    loop = asyncio.get_running_loop()
    trader, method, path, params, kind = load.next()
    outcome = Outcome(kind, send_lag_ms=(loop.time() - due) * 1e3)
    outcome.gap_ms, trader.last_due = (due - trader.last_due) * 1e3, due
    body = json.dumps(params, separators=(",", ":"))
    headers = signing.signed_headers(trader.api_key, trader.secret, method, path, params)
    headers["Content-Type"] = "application/json"
    try:
        async with asyncio.timeout(timeout_s):
            async with session.request(method, url + path, data=body, headers=headers) as reply:
                text = await reply.text()
                outcome.latency_ms = (loop.time() - due) * 1e3
                outcome.status = reply.status
                outcome.timing = server_timing(reply.headers.get("Server-Timing"))
    except TimeoutError:
        outcome.unanswered = True
        outcome.error = f"no answer within {timeout_s} s"
        return outcome  # a cancel's order is not cancelled again: its fate is unknown
    except aiohttp.ClientError as error:
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    if not 200 <= outcome.status < 300:
        outcome.error = f"{outcome.status} {text[:300]}"
    elif kind == "place":
        answer = json.loads(text)
        if answer.get("status") == "New":
            trader.resting.append(answer["id"])
    return outcome


async def run_load(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    load: Load,
    rate: float,
    seconds: float,
    timeout_s: float,
    label: str,
    progress: Callable[[list[Outcome], int, float], None] | None = None,
) -> tuple[list[Outcome], float]:
    """Open loop: request i is due at start + i / rate. Returns the outcomes (all answered or
    timed out) and how long the sending took."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[Outcome]] = []
    next_report = start + 5.0
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        url = urls[i % len(urls)]  # as API Gateway spreads requests over containers
        tasks.append(asyncio.create_task(request(session, url, load, due, timeout_s)))
        if progress is not None and loop.time() >= next_report:
            next_report += 5.0
            progress([t.result() for t in tasks if t.done()], len(tasks), loop.time() - start)
    sending = loop.time() - start
    outcomes = list(await asyncio.gather(*tasks))
    log(f"{label}: {len(outcomes)} requests sent in {sending:.2f} s, all finished")
    return outcomes, sending


def report_progress(outcomes: list[Outcome], sent: int, elapsed: float) -> None:
    done = [o.latency_ms for o in outcomes[-1000:] if not o.error]
    errors = sum(1 for o in outcomes if o.error and not o.unanswered)
    log(
        f"  {elapsed:5.1f} s: sent {sent}, answered {len(outcomes)}, errors {errors}; "
        f"last 1000: p50 {percentile(done, 0.5):.1f} ms, p99 {percentile(done, 0.99):.1f} ms"
    )


# -- FIGURES ----------------------------------------------------------------------------------


def breakdown(outcomes: list[Outcome], engine: dict[str, Any]) -> dict[str, float]:
    timed = [o for o in outcomes if not o.error and {"app", "sqs", "engine"} <= o.timing.keys()]

    def med(values: list[float]) -> float:
        return round(median(values), 2)

    phases = engine.get("phaseMedianMs") or {}
    engine_wait = median([o.timing["engine"] for o in timed])
    figures = {
        "gateway_handler": med(
            [o.latency_ms - o.timing["sqs"] - o.timing["engine"] for o in timed]
        ),
        "outside_app": med([o.latency_ms - o.timing["app"] for o in timed]),
        "app": med([o.timing["app"] for o in timed]),
        "app_redis": med([o.timing.get("redis", 0.0) for o in timed]),
        "app_subscribe": med([o.timing.get("subscribe", 0.0) for o in timed]),
        "app_other": med(
            [
                o.timing["app"]
                - o.timing["sqs"]
                - o.timing["engine"]
                - o.timing.get("redis", 0.0)
                - o.timing.get("subscribe", 0.0)
                for o in timed
            ]
        ),
        "sqs_send": med([o.timing["sqs"] for o in timed]),
        "engine_wait": round(engine_wait, 2),
    }
    for name in ("match", "journal", "confirm", "redis", "batch"):
        if name in phases:
            figures[f"engine_{name}"] = phases[name]
    if "confirm" in phases and "redis" in phases:
        figures["engine_reply"] = round(phases["confirm"] + phases["redis"], 3)
        del figures["engine_confirm"], figures["engine_redis"]
    if "batch" in phases:
        figures["engine_queue_hop_est"] = round(engine_wait - phases["batch"], 2)
    return figures


def summarise(
    outcomes: list[Outcome],
    sending_s: float,
    rate: float,
    engine_before: dict[str, Any],
    engine_after: dict[str, Any],
    accounts: int,
) -> dict[str, Any]:
    latencies = [o.latency_ms for o in outcomes if not o.error]
    errors = [o for o in outcomes if o.error and not o.unanswered]
    unanswered = [o for o in outcomes if o.unanswered]
    for outcome in (errors + unanswered)[:5]:
        log(f"  {outcome.kind} failed: {outcome.error}")
    error_kinds: dict[str, int] = {}
    for outcome in errors:
        kind = outcome.error
        if outcome.status:
            try:
                answer = json.loads(outcome.error.partition(" ")[2])
                kind = f"{outcome.status} {answer['code']}: {answer['message'][:60]}"
                # Refused by the engine (it answered), or by the API before anything was queued.
                kind += " (engine)" if "engine" in outcome.timing else " (api)"
            except (ValueError, KeyError, TypeError):
                kind = outcome.error[:80]
        error_kinds[kind] = error_kinds.get(kind, 0) + 1
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    lags = [o.send_lag_ms for o in outcomes]
    # orders.fifo's message group is the account: SQS hands out none of a group's messages
    # while an earlier one is received and not yet deleted, so a request that follows its
    # account's previous one closely may wait for that one's whole trip through the engine.
    close = [o.latency_ms for o in outcomes if not o.error and o.gap_ms < FOLLOW_UP_MS]
    apart = [o.latency_ms for o in outcomes if not o.error and o.gap_ms >= FOLLOW_UP_MS]
    batches = engine_after.get("batches", 0) - engine_before.get("batches", 0)
    commands = engine_after.get("commands", 0) - engine_before.get("commands", 0)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "bench": "api_roundtrip",
        "rate": int(rate) if rate.is_integer() else rate,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "errors": len(errors),
        "unanswered": len(unanswered),
        "breakdown_ms": breakdown(outcomes, engine_after),
        "ok": p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS and not errors and not unanswered,
        "p90_ms": round(percentile(latencies, 0.9), 2),
        "p999_ms": round(percentile(latencies, 0.999), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
        "requests": len(outcomes),
        "achieved_rate": round(len(outcomes) / sending_s, 1),
        "accounts": accounts,
        "mix": kinds,
        "error_kinds": error_kinds,
        "send_lag_p99_ms": round(percentile(lags, 0.99), 2),
        "follow_ups": {  # requests due within FOLLOW_UP_MS of their account's previous one
            "within_ms": FOLLOW_UP_MS,
            "count": len(close),
            "p50_ms": round(percentile(close, 0.5), 2),
            "p99_ms": round(percentile(close, 0.99), 2),
            "others_p50_ms": round(percentile(apart, 0.5), 2),
            "others_p99_ms": round(percentile(apart, 0.99), 2),
        },
        "engine_commands_per_batch": round(commands / batches, 2) if batches else None,
        "engine_batches_timed": engine_after.get("phaseBatches"),
    }


async def bench(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.engine is not None
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        started = time.perf_counter()
        traders = await new_traders(session, stack, args.accounts)
        log(f"{len(traders)} accounts with keys and funds in {time.perf_counter() - started:.1f} s")
        load = Load(traders, args.seed)
        if args.warmup > 0:
            warm, _ = await run_load(
                session, stack.urls, load, args.rate, args.warmup, args.timeout, "warm-up"
            )
            failed = [o for o in warm if o.error]
            if failed:
                log(f"warm-up: {len(failed)} failed, e.g. {failed[0].error}")
        await asyncio.sleep(1.0)  # the warm-up's last deletes and journal messages
        before = stack.engine.status() or {}
        calls_before, calls_from = stack.sqs_calls(), time.monotonic()
        meter = CpuMeter(stack)
        log(f"measuring: {args.rate:g} requests/s for {args.seconds:g} s")
        outcomes, sending = await run_load(
            session,
            stack.urls,
            load,
            args.rate,
            args.seconds,
            args.timeout,
            "measured",
            report_progress,
        )
        cores = meter.cores()
        after = stack.engine.status() or {}
        await asyncio.sleep(1.0)  # the same for the last requests (counts lag 0.5 s)
        calls = diff_calls(calls_before, stack.sqs_calls())
        calls_s = time.monotonic() - calls_from
    for child in stack.children:
        child.check()
    log(f"CPU used while measuring (cores of {os.cpu_count()}): {cores}")
    result = summarise(outcomes, sending, args.rate, before, after, args.accounts)
    result["cpu_cores"] = cores
    per_request = {
        f"{name}.{operation}": round(count / len(outcomes), 3)
        for name, operations in sorted(calls.items())
        for operation, count in sorted(operations.items())
        if count
    }
    total = sum(count for operations in calls.values() for count in operations.values())
    per_request["total"] = round(total / len(outcomes), 3)
    result["sqs_calls_per_request"] = per_request
    result["sqs_calls_per_s"] = round(total / calls_s, 1)
    log(f"SQS calls per request: {per_request}")
    return result


def diff_calls(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        name: {op: count - before.get(name, {}).get(op, 0) for op, count in operations.items()}
        for name, operations in after.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load")
    parser.add_argument("--timeout", type=float, default=30.0, help="unanswered after this")
    parser.add_argument(
        "--workers", type=int, default=16, help="workers (warm containers) per gateway process"
    )
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes (requests spread evenly)"
    )
    parser.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="engine setting, e.g. RECEIVERS=6 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory")
    args = parser.parse_args()
    if args.accounts < 2:
        parser.error("--accounts must be at least 2 (makers and takers)")
    engine_env = dict(item.split("=", 1) for item in args.engine_env)
    log_dir = Path(tempfile.mkdtemp(prefix="cloudex-api-bench-"))
    stack = Stack(
        workers=args.workers,
        engine_env=engine_env,
        log_dir=log_dir,
        gateways=args.gateways,
    )
    # SIGTERM (a timeout, a CI cancel) cleans up as Ctrl-C does: the finally below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ok = False
    try:
        stack.start()
        result = asyncio.run(bench(stack, args))
        ok = True
    finally:
        stack.close()
        if ok and not args.keep_logs:
            shutil.rmtree(log_dir)
        else:
            log(f"logs kept in {log_dir}")
    log(
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}, "
        f"unanswered {result['unanswered']}; breakdown (medians, ms): {result['breakdown_ms']}"
    )
    print(json.dumps(finite(result), separators=(",", ":")))
    return 0


def finite(value: Any) -> Any:
    """``value`` with NaN (a percentile of nothing) as null: the line stays strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    return value


if __name__ == "__main__":
    sys.exit(main())
