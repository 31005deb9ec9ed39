"""The README's first command, ``./dev up``, end to end.

It runs in the background with its own home, ports, database, Redis database and queue names
(so it never meets a developer's running stack); the test waits for its ready line, places an
order with a signed HTTP client, sees it on the signed ``account.orderUpdate`` stream and in
PostgreSQL, checks that a second ``./dev up`` starts nothing, stops the stack with Ctrl-C
(SIGINT) and finds no process left that it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import psycopg
import pytest
import redis
import requests

from cloudex import signing
from localgw.stack import ROOT
from localgw.up import READY_LINE
from tests.integration.conftest import PG_ADMIN_URL

REDIS_DB = 11  # no other test uses it
READY_TIMEOUT_S = 180


def _free_port_range(count: int) -> int:
    """A base port such that base..base+count-1 are all free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError("no free port range")


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class UpRun:
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "up.json").read_text())  # type: ignore[no-any-return]

    @property
    def demo(self) -> dict[str, Any]:
        return json.loads((self.home / "accounts.json").read_text())["demo"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def up_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpRun]:
    run = uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("cloudex-home")
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    database_url = f"{base}/cloudex_up_{run}"
    redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "CLOUDEX_HOME": str(home),
        "CLOUDEX_PORT": str(_free_port_range(4)),
        "CLOUDEX_DATABASE_URL": database_url,
        "CLOUDEX_REDIS_URL": redis_url,
        "CLOUDEX_QUEUE_PREFIX": f"up-{run}-",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        ["./dev", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    for line in process.stdout:
        output.append(line)
        if line.startswith(READY_LINE) or time.monotonic() > deadline:
            break
    assert any(line.startswith(READY_LINE) for line in output), "".join(output[-40:])
    # Keep draining its output so it never blocks on a full pipe.
    drain = subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
    up = UpRun(env, home, process, output)
    try:
        yield up
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        drain.kill()
        sqs = boto3.client("sqs")
        for name in ("orders.fifo", "orders-dlq.fifo", "events.fifo"):
            try:
                url = sqs.get_queue_url(QueueName=env["CLOUDEX_QUEUE_PREFIX"] + name)["QueueUrl"]
                sqs.delete_queue(QueueUrl=url)
            except sqs.exceptions.QueueDoesNotExist:
                pass
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "cloudex_up_{run}" WITH (FORCE)')


async def _order_seen_on_stream(up: UpRun, place: Any) -> dict[str, Any]:
    """Subscribe to the demo account's order updates, place the order, return its frame."""
    demo = up.demo
    async with aiohttp.ClientSession() as session, session.ws_connect(up.state["wsUrl"]) as ws:
        signature = signing.ws_subscribe_signature(demo["apiKey"], demo["secret"])
        await ws.send_json(
            {
                "method": "SUBSCRIBE",
                "params": ["account.orderUpdate"],
                "signature": signature,
                "id": 1,
            }
        )
        ack = await ws.receive_json(timeout=10)
        assert ack == {"id": 1, "result": None}
        order = await asyncio.get_running_loop().run_in_executor(None, place)
        while True:
            frame = await ws.receive_json(timeout=15)
            if (
                frame.get("stream") == "account.orderUpdate"
                and frame["data"].get("i") == order["id"]
            ):
                return {"order": order, "frame": frame}


def test_up_serves_a_signed_order_on_the_stream_and_in_postgres(up_run: UpRun) -> None:
    demo = up_run.demo
    rest = up_run.state["restUrl"]
    body = {
        "symbol": "SOL_USDC",
        "side": "Bid",
        "orderType": "Limit",
        "price": "1.00",  # far below any quote: it rests
        "quantity": "2",
        "clientId": 4242,
    }

    def place() -> dict[str, Any]:
        headers = signing.signed_headers(
            demo["apiKey"], demo["secret"], "POST", "/api/v1/order", body
        )
        response = requests.post(rest + "/api/v1/order", json=body, headers=headers, timeout=15)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    seen = asyncio.run(_order_seen_on_stream(up_run, place))
    order, frame = seen["order"], seen["frame"]
    assert order["status"] == "New" and order["clientId"] == 4242
    assert frame["data"]["e"] == "orderAccepted"
    assert frame["data"]["s"] == "SOL_USDC"

    deadline = time.monotonic() + 20
    row = None
    while row is None and time.monotonic() < deadline:
        with psycopg.connect(up_run.env["CLOUDEX_DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT account, market, side, client_id, status FROM orders WHERE order_id = %s",
                (int(order["id"]),),
            ).fetchone()
        time.sleep(0.2)
    assert row == (demo["account"], "SOL_USDC", "Bid", 4242, "New")


def test_status_reports_every_component_healthy(up_run: UpRun) -> None:
    result = subprocess.run(
        ["./dev", "status"], cwd=ROOT, env=up_run.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("persister", "lambda", "websocket", "engine", "rest", "mm-maker", "mm-taker"):
        assert re.search(rf"^\s+{name}\s+running\s+pid \d+$", result.stdout, re.MULTILINE), name
    assert "last sequence" in result.stdout
    assert "orders.fifo" in result.stdout and "events.fifo" in result.stdout
    assert result.stdout.rstrip().endswith("healthy")


def test_a_second_up_starts_nothing(up_run: UpRun) -> None:
    before = sorted(_processes_with(f"CLOUDEX_HOME={up_run.home}"))
    result = subprocess.run(
        ["./dev", "up"], cwd=ROOT, env=up_run.env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "already running" in result.stdout
    assert sorted(_processes_with(f"CLOUDEX_HOME={up_run.home}")) == before


def test_ctrl_c_stops_everything_it_started(up_run: UpRun) -> None:
    marker = f"CLOUDEX_HOME={up_run.home}"
    assert len(_processes_with(marker)) >= 7  # the supervisor and its components (and workers)
    os.kill(up_run.process.pid, signal.SIGINT)  # ./dev execs the supervisor: this is Ctrl-C
    assert up_run.process.wait(90) == 0
    deadline = time.monotonic() + 10
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker) == []
    assert not (up_run.home / "up.json").exists()
