"""The whole exchange on one machine, in one command: ``./dev up`` (``python -m localgw.up``).

Given PostgreSQL, Redis and LocalStack (``./dev up`` starts them first), this creates the queues
(``cloudex/queues.py``, the same specs the CDK deploys), applies the migrations, and starts and
supervises, each as its own process with its own log:

======================  =====================================================================
persister               ``localgw.sqs_event_source``: events.fifo -> ``functions.persister``
lambda                  ``localgw.lambda_api``: Lambda Invoke serving ``ws_fanout``
websocket               ``localgw.websocket``: the WebSocket API and its management API
engine                  ``engine_service``: the matching engine (health on ``/live``)
rest                    ``localgw.rest``: the REST API (``functions.api``), admin by token
mm-maker, mm-taker      the market maker quoting every market, and its taker (``mm``)
======================  =====================================================================

then makes the demo accounts (funds and API keys, through the admin API) and prints the URLs
and examples. A component that dies is restarted, as ECS and Lambda would. Ctrl-C (or
``python -m localgw.up stop``) stops everything it started, engine last-but-one so it can
journal and snapshot; a second ``up`` while one runs prints its status and starts nothing.

``python -m localgw.up status`` prints each component's health, the queue depths and the
engine's last sequence. Configuration (environment; defaults for a developer machine):

- ``CLOUDEX_HOME``: state, logs, demo credentials (``.cloudex/``);
- ``CLOUDEX_PORT``: first of the ports: REST, WebSocket, Lambda, engine health (8000..8003);
- ``CLOUDEX_DATABASE_URL``, ``CLOUDEX_REDIS_URL``, ``CLOUDEX_QUEUE_PREFIX``;
- ``CLOUDEX_MARKET_MAKER=0`` starts no market maker.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from localgw.stack import ROOT

__all__ = ["Config", "Supervisor", "main"]

LOCALSTACK = "http://127.0.0.1:4566"
# Lines the supervisor prints itself, and what a process waiting for readiness looks for.
READY_LINE = "Cloudex is up"
STOP_GRACE_S = 20.0  # the engine journals and snapshots on SIGTERM


class Stopped(Exception):
    """Asked to stop (Ctrl-C, SIGTERM) while starting."""


@dataclass(frozen=True)
class Config:
    home: Path
    port: int
    database_url: str
    redis_url: str
    queue_prefix: str
    market_maker: bool

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        return cls(
            home=Path(env.get("CLOUDEX_HOME") or ROOT / ".cloudex").resolve(),
            port=int(env.get("CLOUDEX_PORT") or 8000),
            database_url=env.get("CLOUDEX_DATABASE_URL")
            or "postgresql://postgres@127.0.0.1:5432/cloudex",
            redis_url=env.get("CLOUDEX_REDIS_URL") or "redis://127.0.0.1:6379/0",
            queue_prefix=env.get("CLOUDEX_QUEUE_PREFIX", "local-"),
            market_maker=env.get("CLOUDEX_MARKET_MAKER", "1") != "0",
        )

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port + 1}/"

    @property
    def ws_management_url(self) -> str:
        return f"http://127.0.0.1:{self.port + 1}"

    @property
    def lambda_url(self) -> str:
        return f"http://127.0.0.1:{self.port + 2}"

    @property
    def engine_health_url(self) -> str:
        return f"http://127.0.0.1:{self.port + 3}"

    @property
    def state_file(self) -> Path:
        return self.home / "up.json"

    @property
    def accounts_file(self) -> Path:
        return self.home / "accounts.json"

    @property
    def logs(self) -> Path:
        return self.home / "logs"


# --- components -----------------------------------------------------------------------------


@dataclass
class Component:
    """One supervised process: ``python -m <argv...>`` with ``env``, logging to its file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, logs: Path, marker: dict[str, str]) -> None:
        log = open(logs / f"{self.name}.log", "ab")  # noqa: SIM115 (the child owns it)
        with log:
            # Its own session: a stop signal reaches the component's whole process group
            # (the Lambda and gateway workers too), and Ctrl-C in the terminal reaches only
            # the supervisor, which stops components in order.
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.argv],
                cwd=ROOT,
                env={**os.environ, **self.env, **marker},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace_s)
        # The whole group, also when the leader exited first and left workers behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (OSError, urllib.error.HTTPError):
        return False


def _http_json(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        with contextlib.suppress(ValueError):
            return json.loads(error.read())  # type: ignore[no-any-return]
        return None
    except (OSError, ValueError):
        return None


def _exchange_open(rest_url: str) -> bool:
    """The REST API answers and sees the engine's heartbeat (not in maintenance)."""
    answer = _http_json(rest_url + "/api/v1/status")
    return answer is not None and answer.get("status") == "Ok"


def _port_open(url: str) -> bool:
    import socket

    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _aws_env(config: Config) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": LOCALSTACK,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DATABASE_URL": config.database_url,
        "REDIS_URL": config.redis_url,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def exchange_components(
    config: Config, queues: dict[str, str], admin_token: str
) -> list[Component]:
    """The exchange's processes, in start order (each one's dependencies before it)."""
    base = _aws_env(config)
    return [
        Component(
            "persister",
            ["localgw.sqs_event_source", "--queue-url", queues["events.fifo"],
             "--handler", "functions.persister.handler.handler", "--function-name", "persister"],
            base,
            ready=lambda: True,
        ),
        Component(
            "lambda",
            ["localgw.lambda_api", "--port", str(config.port + 2),
             "--function", "ws_fanout=functions.ws_fanout.handler:handler,concurrency=4"],
            {**base, "WS_MANAGEMENT_ENDPOINT": config.ws_management_url},
            ready=lambda: _port_open(config.lambda_url),
        ),
        Component(
            "websocket",
            ["localgw.websocket", "--port", str(config.port + 1),
             "--connect", "functions.ws_routes.handler:connect",
             "--disconnect", "functions.ws_routes.handler:disconnect",
             "--default", "functions.ws_routes.handler:default", "--workers", "4"],
            base,
            ready=lambda: _port_open(config.ws_management_url),
        ),
        Component(
            "engine",
            ["engine_service"],
            {
                **base,
                "ORDERS_QUEUE_URL": queues["orders.fifo"],
                "EVENTS_QUEUE_URL": queues["events.fifo"],
                "FANOUT_FUNCTION": "ws_fanout",
                "AWS_ENDPOINT_URL_LAMBDA": config.lambda_url,
                "HEALTH_PORT": str(config.port + 3),
                "ENGINE_ID": "local",
            },
            ready=lambda: _http_ok(config.engine_health_url + "/ready"),
        ),
        Component(
            "rest",
            ["localgw.rest", "--port", str(config.port),
             "--handler", "functions.api.handler:handler", "--workers", "8"],
            {**base, "ORDERS_QUEUE_URL": queues["orders.fifo"], "CLOUDEX_ADMIN_TOKEN": admin_token},
            ready=lambda: _exchange_open(config.rest_url),
        ),
    ]  # fmt: skip


def market_maker_components(config: Config) -> list[Component]:
    files = {role: str(config.home / f"{role}.json") for role in ("maker", "taker")}
    return [
        Component(
            f"mm-{role}",
            ["mm", "--url", config.rest_url, "--credentials", files[role], "--mode", role],
            {},
            ready=lambda: True,
        )
        for role in ("maker", "taker")
    ]


# --- demo accounts --------------------------------------------------------------------------

DEMO_FUNDS: dict[str, dict[str, str]] = {
    "maker": {"USDC": "50000000", "SOL": "200000", "BTC": "300", "ETH": "5000", "INR": "100000000",
              "TATA": "1000000"},
    "taker": {"USDC": "2000000", "SOL": "10000", "BTC": "20", "ETH": "500", "INR": "5000000",
              "TATA": "50000"},
    "demo": {"USDC": "100000", "SOL": "500", "BTC": "1", "ETH": "20", "INR": "1000000",
             "TATA": "1000"},
}  # fmt: skip


def ensure_accounts(config: Config, admin_token: str) -> dict[str, dict[str, Any]]:
    """The maker, taker and demo accounts: reused while the database still has them, else made
    (account, Ed25519 key, deposits) through the admin API. Credentials go to CLOUDEX_HOME."""
    from cloudex import signing
    from cloudex.admin_client import AdminClient, AdminError

    client = AdminClient(config.rest_url, token=admin_token, announce=lambda _line: None)
    known: dict[str, dict[str, Any]] = {}
    if config.accounts_file.exists():
        known = json.loads(config.accounts_file.read_text())
    accounts: dict[str, dict[str, Any]] = {}
    for role, funds in DEMO_FUNDS.items():
        saved = known.get(role)
        if saved is not None:
            try:
                keys = client.account(int(saved["account"])).get("keys", [])
            except AdminError:
                keys = []
            if any(k["publicKey"] == saved["apiKey"] and not k["revokedAt"] for k in keys):
                accounts[role] = saved
                continue
        account = int(client.create_account(label=f"local {role}")["accountId"])
        api_key, secret = signing.generate_keypair()
        client.register_key(account, api_key, scope="trade")
        # The idempotency key ties each deposit to this account: a retried run never doubles it.
        for asset, amount in funds.items():
            client.deposit(
                account, asset, amount, reason="local demo funds",
                idempotency_key=f"local-{role}-{account}-{asset}",
            )  # fmt: skip
        accounts[role] = {"account": account, "apiKey": api_key, "secret": secret}
    config.accounts_file.write_text(json.dumps(accounts, indent=2))
    config.accounts_file.chmod(0o600)
    for role in ("maker", "taker"):
        path = config.home / f"{role}.json"
        path.write_text(json.dumps(accounts[role]))
        path.chmod(0o600)
    return accounts


# --- the supervisor -------------------------------------------------------------------------


class Supervisor:
    def __init__(self, config: Config, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.out = out
        self.run_id = uuid.uuid4().hex
        self.components: list[Component] = []
        self.stopping = threading.Event()
        self.stopped = False
        self.admin_token = secrets.token_urlsafe(24)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    @property
    def marker(self) -> dict[str, str]:
        # Every process started here carries it, so a test (or an operator) can find leftovers.
        return {"CLOUDEX_UP_RUN": self.run_id}

    def prepare(self) -> dict[str, str]:
        """Queues and schema: idempotent, so a restart of ``up`` reuses both."""
        import boto3

        from localgw.migrate import ensure_database
        from localstack.create_queues import create_queues  # type: ignore[import-not-found]

        sqs = boto3.client(
            "sqs", endpoint_url=LOCALSTACK, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        queues: dict[str, str] = create_queues(sqs, self.config.queue_prefix)
        from functions.migrate.runner import apply_migrations

        ensure_database(self.config.database_url)
        applied = apply_migrations(self.config.database_url)
        self.say(
            f"==> queues ready ({', '.join(sorted(queues))}); {len(applied)} migrations applied"
        )
        return queues

    def start(self, component: Component, timeout_s: float = 120.0) -> None:
        component.start(self.config.logs, self.marker)
        deadline = time.monotonic() + timeout_s
        while not component.ready():
            if self.stopping.is_set():
                raise Stopped
            if not component.alive:
                raise RuntimeError(
                    f"{component.name} exited; see {self.config.logs / component.name}.log"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{component.name} not ready within {timeout_s:.0f} s")
            time.sleep(0.1)
        self.say(
            f"==> {component.name} up (pid {component.process.pid if component.process else '?'})"
        )

    def check_ports(self) -> None:
        """Refuse to start when something already listens on one of our ports: the readiness
        checks would otherwise talk to it (another Cloudex with another home, say)."""
        c = self.config
        taken = [
            url for url in (c.rest_url, c.ws_management_url, c.lambda_url, c.engine_health_url)
            if _port_open(url)
        ]  # fmt: skip
        if taken:
            raise RuntimeError(
                f"something already listens on {', '.join(taken)}: another Cloudex (stop it with "
                "its CLOUDEX_HOME and ./dev stop) or another program; or choose other ports "
                "with CLOUDEX_PORT"
            )

    def run(self) -> int:
        started = time.monotonic()
        self.check_ports()
        self.config.logs.mkdir(parents=True, exist_ok=True)
        queues = self.prepare()
        for component in exchange_components(self.config, queues, self.admin_token):
            self.components.append(component)
            self.start(component)
        accounts = ensure_accounts(self.config, self.admin_token)
        if self.config.market_maker:
            for component in market_maker_components(self.config):
                self.components.append(component)
                self.start(component)
        self.write_state(queues, accounts)
        self.say(self.banner(accounts, time.monotonic() - started))
        self.supervise()
        return 0

    def write_state(self, queues: dict[str, str], accounts: dict[str, dict[str, Any]]) -> None:
        state = {
            "pid": os.getpid(),
            "runId": self.run_id,
            "adminToken": self.admin_token,
            "restUrl": self.config.rest_url,
            "wsUrl": self.config.ws_url,
            "lambdaUrl": self.config.lambda_url,
            "engineHealthUrl": self.config.engine_health_url,
            "databaseUrl": self.config.database_url,
            "redisUrl": self.config.redis_url,
            "queues": queues,
            "demoAccount": accounts["demo"]["account"],
            "components": {c.name: c.process.pid for c in self.components if c.process is not None},
        }
        self.config.state_file.write_text(json.dumps(state, indent=2))
        self.config.state_file.chmod(0o600)

    def supervise(self) -> None:
        """Until asked to stop: restart a component that died (at most 5 times a minute)."""
        while not self.stopping.wait(0.5):
            for component in self.components:
                if component.alive or self.stopping.is_set():
                    continue
                now = time.monotonic()
                component.restarts = [t for t in component.restarts if now - t < 60] + [now]
                code = component.process.returncode if component.process else None
                if len(component.restarts) > 5:
                    self.say(f"!! {component.name} keeps exiting (last code {code}); stopping")
                    self.stopping.set()
                    break
                self.say(f"!! {component.name} exited with {code}; restarting it")
                component.start(self.config.logs, self.marker)

    def shutdown(self) -> None:
        self.stopping.set()
        if self.stopped:
            return
        self.stopped = True
        # The market maker first (it cancels its quotes), then the API, the engine (it
        # journals and snapshots), and the fan-out, gateways and persister it still feeds.
        for component in reversed(self.components):
            if component.alive:
                self.say(f"==> stopping {component.name}")
            component.stop(STOP_GRACE_S)
        with contextlib.suppress(FileNotFoundError):
            self.config.state_file.unlink()
        self.say("==> stopped")

    def banner(self, accounts: dict[str, dict[str, Any]], took_s: float) -> str:
        demo = accounts["demo"]
        c = self.config
        return f"""
{READY_LINE} ({took_s:.1f} s). Ctrl-C stops everything; `./dev status` shows its health.

  REST API      {c.rest_url}        (Backpack-compatible: /api/v1/..., /wapi/v1/...)
  WebSocket     {c.ws_url}
  Engine        {c.engine_health_url}/ready
  Logs          {c.logs}/
  Demo account  {demo["account"]}: credentials in {c.accounts_file}
  Frontend      not built yet

Public market data:
  curl -s '{c.rest_url}/api/v1/depth?symbol=SOL_USDC' | head -c 300; echo

A signed order with the demo key (docs/api.md explains the signature):
  .venv/bin/python -m localgw.demo_order --side Bid --symbol SOL_USDC --price 120 --quantity 0.5

Subscribe to a stream:
  .venv/bin/python -m localgw.demo_order --watch depth.SOL_USDC
"""


# --- status ---------------------------------------------------------------------------------


def status(config: Config, out: TextIO = sys.stdout) -> int:
    """Each component's health, the queue depths and the engine's sequence; 0 when healthy."""
    if not config.state_file.exists():
        print("Cloudex is not running here (no state file; start it with ./dev up).", file=out)
        return 1
    state = json.loads(config.state_file.read_text())
    healthy = True
    print(f"Cloudex (supervisor pid {state['pid']}, {state['restUrl']})", file=out)
    for name, pid in state["components"].items():
        alive = _pid_alive(pid)
        healthy &= alive
        print(f"  {name:<10} {'running' if alive else 'DOWN':<8} pid {pid}", file=out)
    engine = _http_json(state["engineHealthUrl"] + "/ready")
    if engine is None:
        healthy = False
        print("  engine     no answer on /ready", file=out)
    else:
        healthy &= engine.get("state") == "running"
        print(
            f"  engine     state {engine.get('state')}, epoch {engine.get('epoch')}, "
            f"last sequence {engine.get('seq')}, commands {engine.get('commands')}",
            file=out,
        )
    api = _http_json(state["restUrl"] + "/api/v1/status")
    healthy &= api is not None and api.get("status") == "Ok"
    print(f"  rest       /api/v1/status: {api.get('status') if api else 'no answer'}", file=out)
    import boto3

    sqs = boto3.client(
        "sqs", endpoint_url=LOCALSTACK, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    for name, url in sorted(state["queues"].items()):
        try:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
        except Exception as error:
            healthy = False
            print(f"  {name:<16} unreachable ({type(error).__name__})", file=out)
            continue
        print(
            f"  {name:<16} {attributes['ApproximateNumberOfMessages']} waiting, "
            f"{attributes['ApproximateNumberOfMessagesNotVisible']} in flight",
            file=out,
        )
    journal = _journal_head(state["databaseUrl"])
    print(f"  journal    persisted through sequence {journal}", file=out)
    print("healthy" if healthy else "NOT HEALTHY", file=out)
    return 0 if healthy else 1


def _journal_head(database_url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute("SELECT last_seq FROM journal_head WHERE id = 1").fetchone()
    except psycopg.Error as error:
        return f"unknown ({type(error).__name__})"
    return str(row[0] if row and row[0] is not None else 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- entry point ----------------------------------------------------------------------------


def _lock(config: Config) -> TextIO | None:
    """The single-instance lock, held for the supervisor's lifetime; None if another holds it."""
    config.home.mkdir(parents=True, exist_ok=True)
    handle = open(config.home / "up.lock", "w")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def stop(config: Config) -> int:
    if not config.state_file.exists():
        print("Cloudex is not running here.")
        return 0
    pid = json.loads(config.state_file.read_text())["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S * 3
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return 0 if not _pid_alive(pid) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localgw.up", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", nargs="?", default="up", choices=["up", "status", "stop"])
    args = parser.parse_args(argv)
    config = Config.from_env()
    if args.command == "status":
        return status(config)
    if args.command == "stop":
        return stop(config)

    lock = _lock(config)
    if lock is None:
        print("Cloudex is already running here; not starting a second one.\n")
        status(config)
        return 0
    supervisor = Supervisor(config)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.run()
    except Stopped:
        pass
    except Exception as error:
        print(f"!! {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        supervisor.shutdown()
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
