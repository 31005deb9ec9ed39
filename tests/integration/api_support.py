"""A running Cloudex REST API for tests and benchmarks: queues, persister, engine, the API
Lambda handler, and the local gateway serving it over HTTP; plus the clients that talk to it
(signed HTTP, the admin API, ccxt's ``backpack`` class).

Everything is real: LocalStack SQS, Redis, PostgreSQL, the engine process, HTTP.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests

from cloudex import names, signing
from cloudex.cache import decode_balance, decode_closed_order, decode_open_order
from functions.api.app import make_handler
from functions.api.settings import ApiSettings
from functions.ws_routes.handler import make_routes
from functions.ws_routes.runtime import WsRuntime
from functions.ws_routes.settings import WsSettings
from localgw.lambda_api import FunctionConfig, LambdaService
from localgw.rest import RestGateway
from localgw.stack import free_port
from localgw.websocket import WebSocketGateway
from tests.integration.engine_support import EngineStack

FANOUT_HANDLER = "functions.ws_fanout.handler:handler"

__all__ = ["Trader", "ApiStack", "assert_error", "account_state", "settled_state"]


@dataclass(frozen=True)
class Trader:
    account: int
    api_key: str
    secret: str


@dataclass
class ApiStack:
    """Start with :meth:`start`; ``url`` is the gateway's base URL (no trailing slash)."""

    database_url: str
    redis_url: str
    log_dir: Path
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    engine_overrides: dict[str, str] = field(default_factory=dict)
    workers: int = 8
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    engines: EngineStack | None = None
    gateway: RestGateway | None = None
    handler: Any = None
    settings: ApiSettings | None = None
    session: requests.Session = field(default_factory=requests.Session)
    # The WebSocket API: gateway (route handlers in this process), the ws_fanout function
    # (worker processes of the local Lambda API) and the engine invoking it.
    websocket: bool = False
    conflation_ms: int = 50
    ws_gateway: WebSocketGateway | None = None
    lambdas: LambdaService | None = None
    _fanout_functions: dict[str, FunctionConfig] = field(default_factory=dict)
    _fanout_port: int = 0

    def start(self) -> ApiStack:
        sqs = boto3.client("sqs")
        self.engines = EngineStack(sqs, self.database_url, self.redis_url, self.log_dir)
        self.engines.start_persister()
        if self.websocket:
            self.engine_overrides = {**self._start_websocket(), **self.engine_overrides}
        self.engines.start_engine(**self.engine_overrides).wait_state("running")
        self.wait_heartbeat()
        self.settings = ApiSettings(
            orders_queue_url=self.engines.orders_url,
            redis_url=self.redis_url,
            database_url=self.database_url,
            **self.settings_overrides,
        )
        self.handler = make_handler(self.settings, sqs=sqs)
        self.gateway = RestGateway(
            self.handler, workers=self.workers, admin_token=self.admin_token
        ).start()
        return self

    def _start_websocket(self) -> dict[str, str]:
        """Start the WebSocket gateway and the fan-out function; the engine's settings."""
        runtime = WsRuntime(WsSettings(redis_url=self.redis_url, database_url=self.database_url))
        self.ws_gateway = WebSocketGateway(*make_routes(lambda: runtime), workers=4).start()
        port = free_port()
        lambda_url = f"http://127.0.0.1:{port}"
        environment = {
            "REDIS_URL": self.redis_url,
            "WS_MANAGEMENT_ENDPOINT": self.ws_gateway.management_endpoint,
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        self._fanout_functions = {
            "ws_fanout": FunctionConfig(FANOUT_HANDLER, concurrency=6, environment=environment),
            # The same function with tiny shards, for the tests of sharding.
            "ws_fanout_sharded": FunctionConfig(
                FANOUT_HANDLER, concurrency=6, environment={**environment, "SHARD_SIZE": "2"}
            ),
        }
        self._fanout_port = port
        self.start_fanout()
        return {
            "FANOUT_FUNCTION": "ws_fanout",
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "CONFLATION_MS": str(self.conflation_ms),
        }

    def start_fanout(self) -> None:
        """(Re)start the local Lambda API serving ws_fanout, on its port."""
        self.lambdas = LambdaService(self._fanout_functions, port=self._fanout_port).start()

    def stop_fanout(self) -> None:
        """Make the fan-out unreachable: the engine's deliveries fail and are retried."""
        assert self.lambdas is not None
        self.lambdas.stop()
        self.lambdas = None

    def restart_engine(self, *, kill: bool = True) -> None:
        """Stop the running engine (SIGKILL, or SIGTERM) and start another, as ECS would."""
        assert self.engines is not None
        engine = self.engines.engines[-1]
        if kill:
            engine.kill()
        else:
            engine.terminate()
        self.engines.start_engine(**self.engine_overrides).wait_state("running")

    @property
    def ws_url(self) -> str:
        assert self.ws_gateway is not None
        return self.ws_gateway.url

    def wait_heartbeat(self, timeout_s: float = 10.0) -> None:
        """Until the engine's first heartbeat: before it the API answers MAINTENANCE."""
        assert self.engines is not None
        deadline = time.monotonic() + timeout_s
        while self.engines.redis.get(names.heartbeat_key()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no engine heartbeat")
            time.sleep(0.02)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.engines is not None:
            self.engines.close()
        if self.ws_gateway is not None:
            self.ws_gateway.stop()
        if self.lambdas is not None:
            self.lambdas.stop()
        self.session.close()

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    # -- ADMIN --------------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )

    def new_trader(
        self, funds: dict[str, str] | None = None, *, scope: str = "trade", label: str = ""
    ) -> Trader:
        """An account with a key of ``scope`` and ``funds`` deposited (``{"USDC": "1000"}``)."""
        created = self.admin("POST", "/admin/v1/accounts", {"label": label})
        assert created.status_code == 201, created.text
        account = created.json()["accountId"]
        api_key, secret = signing.generate_keypair()
        registered = self.admin(
            "POST", f"/admin/v1/accounts/{account}/keys", {"publicKey": api_key, "scope": scope}
        )
        assert registered.status_code == 201, registered.text
        for asset, amount in (funds or {}).items():
            self.deposit(account, asset, amount)
        return Trader(account, api_key, secret)

    def deposit(self, account: int, asset: str, amount: str) -> dict[str, Any]:
        response = self.admin(
            "POST",
            "/admin/v1/deposits",
            {
                "account": account,
                "asset": asset,
                "amount": amount,
                "reason": "test funding",
                "idempotencyKey": uuid.uuid4().hex,
            },
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    # -- SIGNED REQUESTS ----------------------------------------------------------------------

    def signed(
        self,
        trader: Trader,
        method: str,
        path: str,
        params: Any = None,
        *,
        timestamp_ms: int | None = None,
        window_ms: int = 5_000,
    ) -> requests.Response:
        """A request signed as ccxt signs it: GET params in the query, others a JSON body."""
        headers = signing.signed_headers(
            trader.api_key,
            trader.secret,
            method,
            path,
            params or {},
            timestamp_ms=timestamp_ms,
            window_ms=window_ms,
        )
        if method == "GET":
            return self.session.get(self.url + path, params=params, headers=headers, timeout=30)
        return self.session.request(
            method, self.url + path, json=params, headers=headers, timeout=30
        )

    # -- CCXT ---------------------------------------------------------------------------------

    def ccxt(self, trader: Trader | None = None) -> Any:
        """ccxt's own ``backpack`` class with only the URLs changed (contract §0)."""
        import ccxt

        options: dict[str, Any] = {}
        if trader is not None:
            options = {"apiKey": trader.api_key, "secret": trader.secret}
        exchange = ccxt.backpack(options)
        exchange.urls["api"] = {"public": self.url, "private": self.url}
        return exchange

    def ccxt_pro(self, trader: Trader | None = None, **options: Any) -> Any:
        """ccxt.pro's ``backpack`` with only the URLs changed (REST and WebSocket)."""
        import ccxt.pro

        if trader is not None:
            options = {"apiKey": trader.api_key, "secret": trader.secret, **options}
        exchange = ccxt.pro.backpack(options)
        exchange.urls["api"] = {
            "public": self.url,
            "private": self.url,
            "ws": {"public": self.ws_url, "private": self.ws_url},
        }
        return exchange


# -- CHECKS -------------------------------------------------------------------------------------


def assert_error(
    response: requests.Response, status: int, code: str, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``response`` is the Backpack error ``{code, message}`` (plus ``extra`` keys)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"code", "message", *extra}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def account_state(stack: ApiStack, account: int) -> tuple[Any, ...]:
    """The account as the engine last wrote it: non-zero balances, open and recently closed
    orders (decoded: a restarted engine rewrites the keys, zero balances included)."""
    assert stack.engines is not None
    r = stack.engines.redis
    balances = {
        asset: balance
        for asset, value in r.hgetall(names.balances_key(account)).items()
        if (balance := decode_balance(value)) != (0, 0)
    }
    open_orders = {
        key: decode_open_order(value)
        for key, value in r.hgetall(names.open_orders_key(account)).items()
    }
    closed = [
        decode_closed_order(value) for value in r.zrange(names.closed_orders_key(account), 0, -1)
    ]
    return balances, open_orders, closed


def settled_state(stack: ApiStack, account: int) -> tuple[Any, ...]:
    """:func:`account_state` once every command queued for the account so far has been
    processed: a withdrawal the engine refuses, sent in the same message group, is answered."""
    response = stack.admin(
        "POST",
        "/admin/v1/withdrawals",
        {
            "account": account,
            "asset": "USDC",
            "amount": "1000000000",
            "reason": "barrier",
            "idempotencyKey": uuid.uuid4().hex,
        },
    )
    assert_error(response, 400, "INSUFFICIENT_FUNDS")
    return account_state(stack, account)
