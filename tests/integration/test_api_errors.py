"""Every refusal is a clear 4xx with Backpack's ``{"code", "message"}`` (contract §3) and
changes nothing: bad bodies, wrong types, off-tick prices, unknown markets and routes, bad
pages and ranges, batches, admin input; and the engine's absence: MAINTENANCE when it is not
running (nothing queued), TIMEOUT when it does not answer in time, after which the same signed
request, resent, reads the command's final outcome.

The module has its own stack (it stops and restarts the engine), with a short reply timeout
and heartbeat age so that the outage cases take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import redis
import requests

from cloudex import names, signing
from tests.integration.api_support import (
    ApiStack,
    Trader,
    account_state,
    assert_error,
    settled_state,
)
from tests.integration.conftest import API_REDIS_URL, PG_ADMIN_URL

SYMBOL = "SOL_USDC"
ORDER = {"symbol": SYMBOL, "side": "Bid", "orderType": "Limit", "price": "10", "quantity": "1"}
REPLY_TIMEOUT_S = 2.0
HEARTBEAT_MAX_AGE_MS = 1_500
BAD = "INVALID_CLIENT_REQUEST"


def _pg(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def stack(database_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    """Like ``api_stack`` (one at a time on the API's Redis database), with short timeouts."""
    name = f"cloudex_apierr_{uuid.uuid4().hex[:12]}"
    _pg(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    client = redis.Redis.from_url(API_REDIS_URL)
    client.flushdb()
    client.close()
    api = ApiStack(
        f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}",
        API_REDIS_URL,
        Path(tmp_path_factory.mktemp("api-errors")),
        settings_overrides={
            "reply_timeout_s": REPLY_TIMEOUT_S,
            "heartbeat_max_age_ms": HEARTBEAT_MAX_AGE_MS,
        },
    )
    try:
        yield api.start()
    finally:
        api.close()
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def trader(stack: ApiStack) -> Trader:
    return stack.new_trader({"USDC": "1000", "SOL": "10"})


# -- HELPERS ------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _signable(params: Any) -> Any:
    """What the server will verify for a body: the parsed JSON if it can be signed at all."""
    try:
        signing.signing_payload("x", params, 0, 0)
    except (signing.SignatureError, TypeError, AttributeError):
        return {}
    return params


def raw(
    stack: ApiStack,
    trader: Trader,
    method: str,
    path: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """``body`` as it is, signed over its parsed JSON when that can be signed (so that what is
    tested is the body's validation, not the signature), else over no parameters."""
    try:
        params = _signable(json.loads(body))
    except (ValueError, RecursionError):
        params = {}
    signed = signing.signed_headers(trader.api_key, trader.secret, method, path, params)
    return stack.session.request(
        method,
        stack.url + path,
        data=body,
        headers={"Content-Type": "application/json", **signed, **(headers or {})},
        timeout=30,
    )


def queued(stack: ApiStack) -> int:
    """Messages in orders.fifo, waiting or in flight."""
    assert stack.engines is not None
    attributes = stack.engines.sqs.get_queue_attributes(
        QueueUrl=stack.engines.orders_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def wait_queued(stack: ApiStack, count: int, timeout_s: float = 10.0) -> None:
    """Until orders.fifo holds ``count`` messages (a processed one is deleted just after its
    reply is published)."""
    deadline = time.monotonic() + timeout_s
    while (found := queued(stack)) != count:
        assert time.monotonic() < deadline, f"{found} messages queued, expected {count}"
        time.sleep(0.05)


def assert_engine_healthy(stack: ApiStack) -> None:
    """The engine still runs and the persister's projections are not stuck on anything."""
    assert stack.engines is not None
    assert stack.engines.engines[-1].alive
    with psycopg.connect(stack.database_url) as conn:
        failing = conn.execute(
            "SELECT name, last_error FROM projection_checkpoints WHERE failures > 0"
        ).fetchall()
    assert failing == []


# -- BODIES ------------------------------------------------------------------------------------

BAD_BODIES: dict[str, tuple[bytes, str, str]] = {
    # name: (body, the code, a part of the message)
    "not_json": (b"{not json", BAD, "JSON"),
    "truncated_json": (b'{"symbol": "SOL_USDC"', BAD, "JSON"),
    "not_utf8": (b"\xff\xfe{}", BAD, ""),
    "number": (b"42", BAD, "JSON object"),
    "string": (b'"order"', BAD, "JSON object"),
    "null": (b"null", BAD, "JSON object"),
    "empty_list": (b"[]", BAD, "empty batch"),
    "list_of_one": (msgspec.json.encode([ORDER]), BAD, ""),
    "empty": (b"", BAD, "required"),
    "empty_object": (b"{}", BAD, "required"),
    "deeply_nested": (b"[" * 50_000 + b"]" * 50_000, BAD, ""),
    "nan": (b'{"price": NaN}', BAD, ""),
    "price_number": (msgspec.json.encode({**ORDER, "price": 10.5}), BAD, "float"),
    "price_null": (msgspec.json.encode({**ORDER, "price": None}), BAD, ""),
    "price_object": (msgspec.json.encode({**ORDER, "price": {"v": "1"}}), BAD, ""),
    "price_exponent": (msgspec.json.encode({**ORDER, "price": "1e2"}), BAD, "price"),
    "price_negative": (msgspec.json.encode({**ORDER, "price": "-10"}), BAD, "price"),
    "price_spaces": (msgspec.json.encode({**ORDER, "price": " 10"}), BAD, "price"),
    "price_empty": (msgspec.json.encode({**ORDER, "price": ""}), BAD, "price"),
    "price_arabic_digits": (msgspec.json.encode({**ORDER, "price": "\u0661\u0660"}), BAD, "price"),
    "quantity_number": (msgspec.json.encode({**ORDER, "quantity": 1}), BAD, "quantity"),
    "client_id_string": (msgspec.json.encode({**ORDER, "clientId": "42"}), BAD, "clientId"),
    "client_id_negative": (msgspec.json.encode({**ORDER, "clientId": -1}), BAD, "clientId"),
    "client_id_too_big": (msgspec.json.encode({**ORDER, "clientId": 2**32}), BAD, "clientId"),
    "client_id_bool": (msgspec.json.encode({**ORDER, "clientId": True}), BAD, "clientId"),
    "side_unknown": (msgspec.json.encode({**ORDER, "side": "Buy"}), BAD, "side"),
    "side_missing": (
        msgspec.json.encode({k: v for k, v in ORDER.items() if k != "side"}),
        BAD,
        "side",
    ),
    "order_type_unknown": (
        msgspec.json.encode({**ORDER, "orderType": "StopLimit"}),
        BAD,
        "orderType",
    ),
    "time_in_force_unknown": (
        msgspec.json.encode({**ORDER, "timeInForce": "GTD"}),
        BAD,
        "timeInForce",
    ),
    "stp_unknown": (
        msgspec.json.encode({**ORDER, "selfTradePrevention": "Allow"}),
        BAD,
        "selfTradePrevention",
    ),
    "post_only_string": (msgspec.json.encode({**ORDER, "postOnly": "true"}), BAD, "postOnly"),
    "unknown_field": (msgspec.json.encode({**ORDER, "triggerPrice": "9"}), BAD, "triggerPrice"),
    "symbol_too_long": (msgspec.json.encode({**ORDER, "symbol": "S" * 41}), BAD, "symbol"),
    "symbol_nul": (msgspec.json.encode({**ORDER, "symbol": "SOL\x00USDC"}), BAD, "NUL"),
}


def test_bad_order_bodies_are_refused(stack: ApiStack, trader: Trader) -> None:
    before = settled_state(stack, trader.account)
    for name, (body, code, text) in BAD_BODIES.items():
        response = raw(stack, trader, "POST", "/api/v1/order", body)
        assert response.status_code == 400, (name, response.text)
        message = assert_error(response, 400, code)["message"]
        assert text in message, (name, message)
    # The same bodies, unsigned: refused, never a 5xx (401 when the body parses at all).
    for name, (body, _, _) in BAD_BODIES.items():
        response = stack.session.post(
            stack.url + "/api/v1/order",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code in (400, 401), (name, response.text)
        assert set(response.json()) == {"code", "message"}
    assert settled_state(stack, trader.account) == before


def test_refused_orders_name_the_backpack_code(stack: ApiStack, trader: Trader) -> None:
    """Checked against the market by the API (nothing queued) or judged by the engine."""
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"price": "10.005"}, "INVALID_PRICE", "decimals"),
        ({"symbol": "BTC_USDC", "price": "100.05", "quantity": "0.001"}, "INVALID_PRICE", ""),
        ({"symbol": "TATA_INR", "price": "1.03", "quantity": "10"}, "INVALID_PRICE", "multiple"),
        ({"quantity": "1.001"}, "INVALID_QUANTITY", "decimals"),
        ({"symbol": "BTC_USDC", "price": "100", "quantity": "0.000001"}, "INVALID_QUANTITY", ""),
        ({"quantity": "0"}, "INVALID_QUANTITY", "greater than zero"),
        # Well-formed but beyond any 64-bit amount: refused before the engine sees it.
        ({"price": "9" * 32}, "INVALID_PRICE", "out of range"),
        ({"quantity": "9" * 32}, "INVALID_QUANTITY", "out of range"),
        ({"price": "92233720368547758.08"}, "INVALID_PRICE", "out of range"),
        (
            {"orderType": "Market", "price": None, "quantity": None, "quoteQuantity": "9" * 40},
            "INVALID_QUANTITY",
            "out of range",
        ),
        ({"symbol": "NOPE_USDC"}, "INVALID_MARKET", "NOPE_USDC"),
        ({"symbol": "sol_usdc"}, "INVALID_MARKET", ""),
        ({"reduceOnly": True}, "INVALID_ORDER", "reduceOnly"),
        # The engine's rules.
        ({"price": None}, "INVALID_ORDER", "price"),
        ({"orderType": "Market", "price": None, "quantity": None}, "INVALID_ORDER", ""),
        ({"orderType": "Market"}, "INVALID_ORDER", "price"),
        ({"postOnly": True, "timeInForce": "IOC"}, "INVALID_ORDER", ""),
        ({"price": "1000000.01"}, "INVALID_PRICE", "range"),
        ({"price": "1", "quantity": "0.01"}, "INVALID_ORDER", "minimum"),
        ({"quantity": "1000"}, "INSUFFICIENT_FUNDS", ""),
        ({"side": "Ask", "quantity": "11"}, "INSUFFICIENT_FUNDS", ""),
    ]
    before = settled_state(stack, trader.account)
    for change, code, text in cases:
        body = {k: v for k, v in {**ORDER, **change}.items() if v is not None}
        response = stack.signed(trader, "POST", "/api/v1/order", body)
        message = assert_error(response, 400, code)["message"]
        assert text.lower() in message.lower(), (change, message)
    assert settled_state(stack, trader.account) == before
    assert_engine_healthy(stack)


def test_bad_cancels_are_refused(stack: ApiStack, trader: Trader) -> None:
    placed = stack.signed(trader, "POST", "/api/v1/order", {**ORDER, "clientId": 5})
    assert placed.status_code == 200
    before = settled_state(stack, trader.account)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("DELETE", "/api/v1/order", {"symbol": SYMBOL}, 400, BAD),
        (
            "DELETE",
            "/api/v1/order",
            {"symbol": SYMBOL, "orderId": "999999"},
            404,
            "RESOURCE_NOT_FOUND",
        ),
        ("DELETE", "/api/v1/order", {"symbol": SYMBOL, "clientId": 6}, 404, "RESOURCE_NOT_FOUND"),
        (
            "DELETE",
            "/api/v1/order",
            {"symbol": SYMBOL, "orderId": "9" * 19},
            404,
            "RESOURCE_NOT_FOUND",
        ),
        ("DELETE", "/api/v1/order", {"symbol": SYMBOL, "orderId": "9" * 20}, 400, BAD),
        ("DELETE", "/api/v1/order", {"symbol": SYMBOL, "orderId": "abc"}, 400, BAD),
        ("DELETE", "/api/v1/order", {"symbol": SYMBOL, "orderId": 1}, 400, BAD),
        (
            "DELETE",
            "/api/v1/order",
            {"symbol": "BTC_USDC", "clientId": 5},
            404,
            "RESOURCE_NOT_FOUND",
        ),
        ("DELETE", "/api/v1/order", {"symbol": "NOPE", "clientId": 5}, 400, "INVALID_MARKET"),
        ("DELETE", "/api/v1/orders", {"symbol": "NOPE"}, 400, "INVALID_MARKET"),
        ("DELETE", "/api/v1/orders", {}, 400, BAD),
        ("DELETE", "/api/v1/orders", {"symbol": SYMBOL, "orderType": "Market"}, 400, BAD),
        ("GET", "/api/v1/order", {"symbol": SYMBOL}, 400, BAD),
        (
            "GET",
            "/api/v1/order",
            {"symbol": SYMBOL, "orderId": "999999"},
            404,
            "RESOURCE_NOT_FOUND",
        ),
        ("GET", "/api/v1/order", {"symbol": SYMBOL, "orderId": "x"}, 400, BAD),
        ("GET", "/api/v1/order", {"symbol": SYMBOL, "clientId": "-1"}, 400, BAD),
        ("GET", "/api/v1/order", {"symbol": "NOPE", "clientId": "5"}, 400, "INVALID_MARKET"),
        ("GET", "/api/v1/orders", {"symbol": "NOPE"}, 400, "INVALID_MARKET"),
        ("GET", "/api/v1/orders", {"marketType": "PERP"}, 400, BAD),
    ]
    for method, path, params, status, code in cases:
        assert_error(stack.signed(trader, method, path, params), status, code)
    assert settled_state(stack, trader.account) == before
    # A repeated query parameter is ambiguous: refused before anything else.
    headers = signing.signed_headers(
        trader.api_key, trader.secret, "GET", "/api/v1/orders", {"symbol": SYMBOL}
    )
    repeated = stack.session.get(
        f"{stack.url}/api/v1/orders?symbol={SYMBOL}&symbol=BTC_USDC", headers=headers, timeout=30
    )
    assert "Repeated" in assert_error(repeated, 400, BAD)["message"]


def test_batches_with_a_bad_order_are_refused_whole(stack: ApiStack, trader: Trader) -> None:
    before = settled_state(stack, trader.account)
    good = dict(ORDER)
    cases: list[tuple[Any, str, str]] = [
        ([good] * (stack.settings.max_batch_orders + 1), BAD, "1 to 50"),  # type: ignore[union-attr]
        ([good, {**good, "price": "10.001"}, good], "INVALID_PRICE", "order 1"),
        ([good, good, {**good, "symbol": "NOPE_USDC"}], "INVALID_MARKET", "order 2"),
        ([good, {**good, "quantity": "0"}], "INVALID_QUANTITY", "order 1"),
        ([good, {**good, "side": "Buy"}], BAD, ""),
        ([good, {**good, "extra": "1"}], BAD, ""),
    ]
    for body, code, text in cases:
        response = stack.signed(trader, "POST", "/api/v1/orders", body)
        assert text in assert_error(response, 400, code)["message"]
    for body in (b"[]", b"[1, 2]", b'[{"symbol": "SOL_USDC"}, "x"]', b"{}", b"[[]]"):
        assert_error(raw(stack, trader, "POST", "/api/v1/orders", body), 400, BAD)
    assert settled_state(stack, trader.account) == before

    # What only the engine can judge is answered per order: the others still go through.
    response = stack.signed(trader, "POST", "/api/v1/orders", [good, {**good, "quantity": "1000"}])
    assert response.status_code == 200, response.text
    placed, refused = response.json()
    assert placed["status"] == "New"
    assert refused == {"code": "INSUFFICIENT_FUNDS", "message": "Insufficient funds"}
    orders = stack.signed(trader, "GET", "/api/v1/orders").json()
    assert [o["id"] for o in orders] == [placed["id"]]


# -- ROUTES, METHODS, QUERIES ---------------------------------------------------------------------


def test_unknown_routes_and_wrong_methods(stack: ApiStack, trader: Trader) -> None:
    session, url = stack.session, stack.url
    for path in ("/", "/nope", "/api/v1/nope", "/api/v2/order", "/api/v1/order/1", "/wapi/v1/x"):
        for method in ("GET", "POST", "DELETE"):
            response = session.request(method, url + path, timeout=30)
            assert_error(response, 404, "RESOURCE_NOT_FOUND")
    assert_error(stack.admin("GET", "/admin/v1/nope"), 404, "RESOURCE_NOT_FOUND")
    for method, path in [
        ("PUT", "/api/v1/order"),
        ("PATCH", "/api/v1/orders"),
        ("PATCH", "/api/v1/account"),
        ("POST", "/api/v1/capital"),
        ("DELETE", "/api/v1/markets"),
        ("POST", "/api/v1/depth"),
        ("OPTIONS", "/api/v1/markets"),
    ]:
        response = session.request(method, url + path, timeout=30)
        assert_error(response, 405, BAD)
    # A signed request on a wrong method is refused the same way, and changes nothing.
    before = settled_state(stack, trader.account)
    assert_error(stack.signed(trader, "PUT", "/api/v1/order", ORDER), 405, BAD)
    assert settled_state(stack, trader.account) == before


HUGE = str(10**30)
PUBLIC_QUERIES: list[tuple[str, dict[str, str], str]] = [
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": HUGE}, BAD),
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": "0"}, BAD),
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": "-1"}, BAD),
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": "1001"}, BAD),
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": "ten"}, BAD),
    ("/api/v1/trades", {"symbol": SYMBOL, "limit": "1e3"}, BAD),
    ("/api/v1/trades", {"limit": "10"}, BAD),
    ("/api/v1/trades", {"symbol": "NOPE"}, "INVALID_MARKET"),
    ("/api/v1/trades/history", {"symbol": SYMBOL, "offset": HUGE}, BAD),
    ("/api/v1/trades/history", {"symbol": SYMBOL, "offset": "-1"}, BAD),
    ("/api/v1/trades/history", {"symbol": SYMBOL, "offset": "100001"}, BAD),
    ("/api/v1/trades/history", {"symbol": SYMBOL, "limit": HUGE, "offset": HUGE}, BAD),
    ("/api/v1/depth", {"symbol": SYMBOL, "limit": "0"}, BAD),
    ("/api/v1/depth", {"symbol": SYMBOL, "limit": HUGE}, BAD),
    ("/api/v1/depth", {"symbol": "S" * 41}, BAD),
    ("/api/v1/depth", {"symbol": "NOPE_USDC"}, "INVALID_MARKET"),
    ("/api/v1/ticker", {}, BAD),
    ("/api/v1/ticker", {"symbol": SYMBOL, "interval": "1h"}, BAD),
    ("/api/v1/ticker", {"symbol": "NOPE"}, "INVALID_MARKET"),
    ("/api/v1/tickers", {"interval": "1w"}, BAD),
    ("/api/v1/market", {"symbol": "NOPE"}, "INVALID_MARKET"),
    ("/api/v1/market", {"symbol": "SOL\x00USDC"}, "INVALID_MARKET"),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "7m", "startTime": "0"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "1M", "startTime": "0"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "1m"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "startTime": "0"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "1m", "startTime": "-1"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "1m", "startTime": HUGE}, BAD),
    (
        "/api/v1/klines",
        {"symbol": SYMBOL, "interval": "1m", "startTime": "0", "endTime": HUGE},
        BAD,
    ),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "1m", "startTime": "yesterday"}, BAD),
    ("/api/v1/klines", {"symbol": SYMBOL, "interval": "x" * 11, "startTime": "0"}, BAD),
    ("/api/v1/klines", {"symbol": "NOPE", "interval": "1m", "startTime": "0"}, "INVALID_MARKET"),
]


def test_bad_public_queries(stack: ApiStack) -> None:
    for path, params, code in PUBLIC_QUERIES:
        response = stack.session.get(stack.url + path, params=params, timeout=30)
        assert response.status_code == 400, (path, params, response.text)
        assert_error(response, 400, code)
    # An empty or reversed kline range is no error: there is nothing in it.
    for start, end in (("100", "100"), ("200", "100")):
        empty = stack.session.get(
            stack.url + "/api/v1/klines",
            params={"symbol": SYMBOL, "interval": "1m", "startTime": start, "endTime": end},
            timeout=30,
        )
        assert empty.status_code == 200 and empty.json() == []


def test_bad_private_queries(stack: ApiStack, trader: Trader) -> None:
    cases: list[tuple[str, dict[str, str], str]] = [
        ("/wapi/v1/history/orders", {"limit": HUGE}, BAD),
        ("/wapi/v1/history/orders", {"offset": HUGE}, BAD),
        ("/wapi/v1/history/orders", {"limit": "0"}, BAD),
        ("/wapi/v1/history/orders", {"orderId": "1" * 20}, BAD),
        ("/wapi/v1/history/orders", {"symbol": "NOPE"}, "INVALID_MARKET"),
        ("/wapi/v1/history/fills", {"limit": HUGE}, BAD),
        ("/wapi/v1/history/fills", {"offset": "-1"}, BAD),
        ("/wapi/v1/history/fills", {"from": "-1"}, BAD),
        ("/wapi/v1/history/fills", {"from": HUGE}, BAD),
        ("/wapi/v1/history/fills", {"from": "999999999999999"}, BAD),  # year 33658
        ("/wapi/v1/history/fills", {"to": "soon"}, BAD),
        ("/wapi/v1/history/fills", {"symbol": "NOPE"}, "INVALID_MARKET"),
        ("/wapi/v1/history/fills", {"marketType": "PERP"}, BAD),
    ]
    for path, params, code in cases:
        response = stack.signed(trader, "GET", path, params)
        assert response.status_code == 400, (path, params, response.text)
        assert_error(response, 400, code)


def test_bad_admin_input(stack: ApiStack, trader: Trader) -> None:
    before = settled_state(stack, trader.account)

    def transfer(kind: str, **change: Any) -> requests.Response:
        body = {
            "account": trader.account,
            "asset": "USDC",
            "amount": "1",
            "reason": "test",
            "idempotencyKey": uuid.uuid4().hex,
            **change,
        }
        return stack.admin("POST", f"/admin/v1/{kind}", body)

    for kind in ("deposits", "withdrawals"):
        assert_error(transfer(kind, amount="9" * 40), 400, "INVALID_QUANTITY")
        assert_error(transfer(kind, amount="9223372036854.775808"), 400, "INVALID_QUANTITY")
        assert_error(transfer(kind, amount="0.0000001"), 400, "INVALID_QUANTITY")
        assert_error(transfer(kind, amount="0"), 400, "INVALID_QUANTITY")
        assert_error(transfer(kind, amount="-1"), 400, BAD)
        assert_error(transfer(kind, amount=1), 400, BAD)
        assert_error(transfer(kind, asset="DOGE"), 400, "INVALID_ASSET")
        assert_error(transfer(kind, account=10**9), 404, "RESOURCE_NOT_FOUND")
        assert_error(transfer(kind, account=0), 400, BAD)
        assert_error(transfer(kind, reason="a\x00b"), 400, BAD)  # would stop the ledger projection
        assert_error(transfer(kind, reason=""), 400, BAD)
        assert_error(transfer(kind, idempotencyKey="has space"), 400, BAD)
    # The engine's limit on a balance.
    assert_error(transfer("deposits", amount="9223372036854.775807"), 400, "INVALID_QUANTITY")
    assert_error(transfer("withdrawals", amount="100000"), 400, "INSUFFICIENT_FUNDS")

    counts_sql = "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM api_keys)"
    with psycopg.connect(stack.database_url) as conn:
        counts = conn.execute(counts_sql).fetchone()
    key = signing.generate_keypair()[0]
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/admin/v1/accounts", {"label": "a\x00b"}, 400, BAD),
        ("POST", "/admin/v1/accounts", {"label": "x" * 201}, 400, BAD),
        ("POST", "/admin/v1/accounts", [], 400, BAD),
        ("GET", "/admin/v1/accounts/abc", None, 400, BAD),
        ("GET", "/admin/v1/accounts/0", None, 400, BAD),
        ("GET", f"/admin/v1/accounts/{HUGE}", None, 400, BAD),
        ("GET", "/admin/v1/accounts/999999999", None, 404, "RESOURCE_NOT_FOUND"),
        (
            "POST",
            f"/admin/v1/accounts/{trader.account}/keys",
            {"publicKey": "AAAA", "scope": "trade"},
            400,
            BAD,
        ),
        (
            "POST",
            f"/admin/v1/accounts/{trader.account}/keys",
            {"publicKey": key, "scope": "admin"},
            400,
            BAD,
        ),
        (
            "POST",
            f"/admin/v1/accounts/{trader.account}/keys",
            {"publicKey": key, "scope": "read", "label": "\x00"},
            400,
            BAD,
        ),
        (
            "POST",
            "/admin/v1/accounts/999999999/keys",
            {"publicKey": key, "scope": "read"},
            404,
            "RESOURCE_NOT_FOUND",
        ),
        (
            "POST",
            f"/admin/v1/accounts/{trader.account}/keys",
            {"publicKey": trader.api_key, "scope": "read"},
            409,
            BAD,
        ),
        ("POST", "/admin/v1/keys/revoke", {"publicKey": "\x00"}, 400, BAD),
        ("POST", "/admin/v1/keys/revoke", {}, 400, BAD),
        ("POST", "/admin/v1/keys/revoke", {"publicKey": trader.api_key, "also": "x"}, 400, BAD),
        ("POST", "/admin/v1/keys/revoke", {"publicKey": key}, 404, "RESOURCE_NOT_FOUND"),
        (
            "POST",
            "/admin/v1/markets/NOPE/state",
            {"state": "Closed", "idempotencyKey": "k"},
            400,
            "INVALID_MARKET",
        ),
        (
            "POST",
            f"/admin/v1/markets/{SYMBOL}/state",
            {"state": "Paused", "idempotencyKey": "k"},
            400,
            BAD,
        ),
        (
            "POST",
            f"/admin/v1/markets/{SYMBOL}/fees",
            {"makerFeeBps": 1001, "takerFeeBps": 1, "idempotencyKey": "k"},
            400,
            BAD,
        ),
        (
            "POST",
            f"/admin/v1/markets/{SYMBOL}/fees",
            {"makerFeeBps": -1, "takerFeeBps": 1, "idempotencyKey": "k"},
            400,
            BAD,
        ),
    ]
    for method, path, body, status, code in cases:
        response = stack.admin(method, path, body)
        assert response.status_code == status, (path, body, response.text)
        assert_error(response, status, code)
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute(counts_sql).fetchone() == counts
    assert stack.signed(trader, "GET", "/api/v1/capital").status_code == 200  # still a key
    assert settled_state(stack, trader.account) == before
    market = stack.session.get(f"{stack.url}/api/v1/market", params={"symbol": SYMBOL}, timeout=30)
    assert market.json()["orderBookState"] == "Open"
    assert_engine_healthy(stack)


# -- THE ENGINE AWAY ------------------------------------------------------------------------------


def _status(stack: ApiStack) -> str:
    response = stack.session.get(stack.url + "/api/v1/status", timeout=30)
    assert response.status_code == 200
    return str(response.json()["status"])


def _wait_status(stack: ApiStack, status: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _status(stack) != status:
        assert time.monotonic() < deadline, f"status never became {status}"
        time.sleep(0.05)


@contextlib.contextmanager
def engine_stopped(stack: ApiStack) -> Iterator[None]:
    """Stop the running engine (SIGTERM: it finishes its batch); start a new one after, unless
    the block did."""
    assert stack.engines is not None
    for engine in stack.engines.engines:
        if engine.alive:
            assert engine.terminate() == 0
    try:
        yield
    finally:
        if not any(engine.alive for engine in stack.engines.engines):
            stack.engines.start_engine().wait_state("running")
        _wait_status(stack, "Ok")


def test_maintenance_when_the_engine_is_not_running(stack: ApiStack, trader: Trader) -> None:
    before = settled_state(stack, trader.account)
    wait_queued(stack, 0)
    with engine_stopped(stack):
        _wait_status(stack, "Maintenance")
        status = stack.session.get(stack.url + "/api/v1/status", timeout=30).json()
        assert status["status"] == "Maintenance" and status["message"]
        commands: list[tuple[str, str, Any]] = [
            ("POST", "/api/v1/order", ORDER),
            ("POST", "/api/v1/orders", [ORDER, ORDER]),
            ("DELETE", "/api/v1/order", {"orderId": "1", "symbol": SYMBOL}),
            ("DELETE", "/api/v1/orders", {"symbol": SYMBOL}),
        ]
        for method, path, body in commands:
            response = stack.signed(trader, method, path, body)
            assert "nothing was queued" in assert_error(response, 503, "MAINTENANCE")["message"]
        deposit = stack.admin(
            "POST",
            "/admin/v1/deposits",
            {
                "account": trader.account,
                "asset": "USDC",
                "amount": "5",
                "reason": "x",
                "idempotencyKey": "m1",
            },
        )
        assert_error(deposit, 503, "MAINTENANCE")
        # Checks that need no engine still come first, and reads still work.
        off_tick = stack.signed(trader, "POST", "/api/v1/order", {**ORDER, "price": "10.001"})
        assert_error(off_tick, 400, "INVALID_PRICE")
        capital = stack.signed(trader, "GET", "/api/v1/capital")
        assert capital.status_code == 200
        assert capital.json()["USDC"]["available"] == "1000.000000"
        assert stack.session.get(stack.url + "/api/v1/markets", timeout=30).status_code == 200
        assert queued(stack) == 0
        assert account_state(stack, trader.account) == before
    # Back: nothing that was refused happens later.
    assert settled_state(stack, trader.account) == before
    assert stack.signed(trader, "POST", "/api/v1/order", ORDER).status_code == 200


def _fake_heartbeat(stack: ApiStack) -> None:
    """A heartbeat as fresh as a running engine's, with no engine behind it."""
    assert stack.engines is not None
    beat = {"ts": time.time_ns() // 1_000, "epoch": 0, "eventSeq": 0, "engineId": "fake"}
    stack.engines.redis.set(names.heartbeat_key(), json.dumps(beat), ex=30)


def _command_id(headers: dict[str, str]) -> str:
    key = f"{headers['X-API-Key']}|{headers['X-Signature']}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def test_timeout_then_the_resent_request_reads_the_final_outcome(
    stack: ApiStack, trader: Trader
) -> None:
    assert stack.engines is not None
    before = settled_state(stack, trader.account)
    path = "/api/v1/order"
    lasting = {**ORDER, "clientId": 7001}  # a 60 s window: still valid when the engine is back
    lasting_headers = signing.signed_headers(
        trader.api_key, trader.secret, "POST", path, lasting, window_ms=60_000
    )
    brief = {**ORDER, "clientId": 7002}  # a 2.5 s window: over before the engine is back
    brief_ts = now_ms()
    brief_headers = signing.signed_headers(
        trader.api_key, trader.secret, "POST", path, brief, timestamp_ms=brief_ts, window_ms=2_500
    )

    def send(body: dict[str, Any], headers: dict[str, str]) -> requests.Response:
        return stack.session.post(stack.url + path, json=body, headers=headers, timeout=30)

    with engine_stopped(stack):
        timeouts = []
        for body, headers in ((brief, brief_headers), (lasting, lasting_headers)):
            _fake_heartbeat(stack)
            started = time.monotonic()
            response = send(body, headers)
            assert time.monotonic() - started >= REPLY_TIMEOUT_S
            answer = assert_error(response, 504, "TIMEOUT", frozenset({"commandIds"}))
            assert answer["commandIds"] == [_command_id(headers)]
            timeouts.append(answer)
        assert queued(stack) == 2
        # Resent while the engine is still away: TIMEOUT again, and queued only once.
        _fake_heartbeat(stack)
        again = assert_error(
            send(lasting, lasting_headers), 504, "TIMEOUT", frozenset({"commandIds"})
        )
        assert again["commandIds"] == timeouts[1]["commandIds"]
        assert queued(stack) == 2
        assert account_state(stack, trader.account) == before

        time.sleep(max(0.0, (brief_ts + 2_500 - now_ms()) / 1_000) + 0.1)
        stack.engines.start_engine().wait_state("running")
        _wait_status(stack, "Ok")

    # Within its window the resend answers the order the queued command placed, every time.
    placed = send(lasting, lasting_headers)
    assert placed.status_code == 200, placed.text
    order = placed.json()
    assert order["clientId"] == 7001 and order["status"] == "New"
    assert send(lasting, lasting_headers).json() == order
    # After its window the resend is refused as expired; the engine, which got the command
    # after its deadline, refused it as expired too: it never took effect.
    expired = send(brief, brief_headers)
    assert "expired" in assert_error(expired, 400, BAD)["message"]
    results = stack.engines.wait_results([_command_id(brief_headers)], timeout_s=10)
    (verdict,) = results.values()
    assert verdict.error == BAD and "expired" in verdict.message
    lookup = stack.signed(trader, "GET", path, {"symbol": SYMBOL, "clientId": "7002"})
    assert_error(lookup, 404, "RESOURCE_NOT_FOUND")

    open_orders = stack.signed(trader, "GET", "/api/v1/orders").json()
    assert [o["id"] for o in open_orders] == [order["id"]]
    usdc = stack.signed(trader, "GET", "/api/v1/capital").json()["USDC"]
    assert usdc == {"available": "990.000000", "locked": "10.000000", "staked": "0"}
    wait_queued(stack, 0)
    assert_engine_healthy(stack)
