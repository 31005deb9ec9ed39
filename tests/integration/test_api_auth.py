"""Signed requests over real HTTP (contract §2): valid and forged signatures, time windows,
replays, key scopes, revocation, the admin credential and rate limits.

Every refused request is checked to change nothing: after it, a barrier command in the same
account's SQS message group (an admin withdrawal the engine must refuse) has been answered, so
anything the refused request might have queued has been processed too, and the account's
balances and orders in Redis are compared with what they were before.

Revocation and rate limits are also checked on a second gateway over the same engine (another
"container", with its own key cache and its own, much smaller, token buckets), reached from
other loopback addresses so that its per-IP buckets are its own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import boto3
import msgspec
import psycopg
import pytest
import requests
from requests.adapters import HTTPAdapter

from cloudex import signing
from functions.api.app import make_handler
from localgw.rest import RestGateway
from tests.integration.api_support import (
    ApiStack,
    Trader,
    account_state,
    assert_error,
    settled_state,
)

SYMBOL = "SOL_USDC"
ORDER = {"symbol": SYMBOL, "side": "Bid", "orderType": "Limit", "price": "10", "quantity": "1"}


# -- HELPERS ------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def headers_for(
    trader: Trader,
    method: str,
    path: str,
    params: Any = None,
    *,
    timestamp_ms: int | None = None,
    window_ms: int = 5_000,
) -> dict[str, str]:
    return signing.signed_headers(
        trader.api_key,
        trader.secret,
        method,
        path,
        params or {},
        timestamp_ms=timestamp_ms,
        window_ms=window_ms,
    )


def send(
    url: str,
    method: str,
    path: str,
    params: Any = None,
    headers: dict[str, str] | None = None,
    *,
    session: requests.Session | None = None,
) -> requests.Response:
    """GET params in the query, other methods' as a compact JSON body (as ccxt sends them)."""
    http = session or requests
    if method == "GET":
        return http.request(method, url + path, params=params, headers=headers, timeout=30)
    body = None if params is None else msgspec.json.encode(params)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return http.request(method, url + path, data=body, headers=all_headers, timeout=30)


def signed(
    url: str,
    trader: Trader,
    method: str,
    path: str,
    params: Any = None,
    *,
    session: requests.Session | None = None,
    **signing_options: Any,
) -> requests.Response:
    headers = headers_for(trader, method, path, params, **signing_options)
    return send(url, method, path, params, headers, session=session)


class SourceAddress(HTTPAdapter):
    """Connections from a given loopback address: the gateway sees it as the source IP."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.ip, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(ip: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddress(ip))
    return session


class SecondGateway:
    """Another API container over the same engine, queues, Redis and database, with its own
    settings (key cache, token buckets)."""

    def __init__(self, stack: ApiStack, **overrides: Any) -> None:
        assert stack.settings is not None
        self.settings = msgspec.structs.replace(stack.settings, **overrides)
        self.gateway = RestGateway(
            make_handler(self.settings, sqs=boto3.client("sqs")), workers=2
        ).start()
        self.url = self.gateway.url

    def close(self) -> None:
        self.gateway.stop()


@pytest.fixture
def trader(api_stack: ApiStack) -> Trader:
    return api_stack.new_trader({"USDC": "1000", "SOL": "10"})


# -- VALID REQUESTS -----------------------------------------------------------------------------


def test_valid_signatures_read_and_trade(api_stack: ApiStack, trader: Trader) -> None:
    url = api_stack.url
    capital = signed(url, trader, "GET", "/api/v1/capital")
    assert capital.status_code == 200, capital.text
    assert capital.json()["USDC"] == {
        "available": "1000.000000",
        "locked": "0.000000",
        "staked": "0",
    }

    # ccxt's headers, X-Broker-Id included, and its body (keys sorted, compact JSON).
    headers = {**headers_for(trader, "POST", "/api/v1/order", ORDER), "X-Broker-Id": "1400"}
    placed = send(url, "POST", "/api/v1/order", ORDER, headers)
    assert placed.status_code == 200, placed.text
    order = placed.json()
    assert order["status"] == "New" and "code" not in order

    # A GET with a query: the signature covers the sorted query parameters.
    query = {"orderId": order["id"], "symbol": SYMBOL}
    fetched = signed(url, trader, "GET", "/api/v1/order", query)
    assert fetched.status_code == 200 and fetched.json()["id"] == order["id"]
    listed = signed(url, trader, "GET", "/api/v1/orders", {"symbol": SYMBOL})
    assert [o["id"] for o in listed.json()] == [order["id"]]

    # X-Window may be left out: Backpack's default window (5000 ms) is what was signed.
    headers = headers_for(trader, "GET", "/api/v1/capital", window_ms=5_000)
    del headers["X-Window"]
    assert send(url, "GET", "/api/v1/capital", None, headers).status_code == 200

    # The largest window is accepted, and a timestamp slightly ahead (clock skew).
    assert signed(url, trader, "GET", "/api/v1/account", window_ms=60_000).status_code == 200
    ahead = signed(url, trader, "GET", "/api/v1/capital", timestamp_ms=now_ms() + 2_000)
    assert ahead.status_code == 200, ahead.text

    cancelled = signed(
        url, trader, "DELETE", "/api/v1/order", {"orderId": order["id"], "symbol": SYMBOL}
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "Cancelled"


# -- REFUSED REQUESTS ---------------------------------------------------------------------------


def _forge(case: str, trader: Trader, stranger: Trader) -> tuple[dict[str, str], Any]:
    """Headers and body of a POST /api/v1/order attempt on ``trader``'s account."""
    path = "/api/v1/order"
    body = dict(ORDER)
    if case == "wrong_key":  # trader's key, a stranger's signature
        headers = headers_for(stranger, "POST", path, body)
        return {**headers, "X-API-Key": trader.api_key}, body
    if case == "unknown_key":  # a well-formed, correctly signed key nobody registered
        api_key, secret = signing.generate_keypair()
        return headers_for(Trader(0, api_key, secret), "POST", path, body), body
    if case == "tampered_body":
        return headers_for(trader, "POST", path, body), {**body, "price": "9"}
    if case == "added_field":
        return headers_for(trader, "POST", path, body), {**body, "clientId": 1}
    if case == "other_instruction":  # a cancel's signature on an order
        return headers_for(trader, "DELETE", path, body), body
    if case == "tampered_timestamp":
        headers = headers_for(trader, "POST", path, body)
        return {**headers, "X-Timestamp": str(int(headers["X-Timestamp"]) + 1)}, body
    if case == "tampered_window":
        headers = headers_for(trader, "POST", path, body)
        return {**headers, "X-Window": "6000"}, body
    if case == "window_left_out":  # the default window (5000) is not the one signed
        headers = headers_for(trader, "POST", path, body, window_ms=6_000)
        del headers["X-Window"]
        return headers, body
    if case == "expired":
        return headers_for(trader, "POST", path, body, timestamp_ms=now_ms() - 10_000), body
    if case == "future":
        return headers_for(trader, "POST", path, body, timestamp_ms=now_ms() + 60_000), body
    if case == "window_too_large":
        return headers_for(trader, "POST", path, body, window_ms=60_001), body
    if case == "window_zero":
        return headers_for(trader, "POST", path, body, window_ms=0), body
    if case == "timestamp_not_integer":
        return {**headers_for(trader, "POST", path, body), "X-Timestamp": "17e11"}, body
    if case == "window_negative":
        return {**headers_for(trader, "POST", path, body), "X-Window": "-5000"}, body
    if case.startswith("missing_"):
        headers = headers_for(trader, "POST", path, body)
        del headers[
            {"missing_key": "X-API-Key", "missing_signature": "X-Signature"}.get(
                case, "X-Timestamp"
            )
        ]
        return headers, body
    if case == "no_headers":
        return {}, body
    if case == "garbage_signature":
        return {**headers_for(trader, "POST", path, body), "X-Signature": "%%%not-base64%%%"}, body
    if case == "short_signature":
        signature = base64.b64decode(headers_for(trader, "POST", path, body)["X-Signature"])
        short = base64.b64encode(signature[:63]).decode()
        return {**headers_for(trader, "POST", path, body), "X-Signature": short}, body
    if case == "garbage_key":
        return {**headers_for(trader, "POST", path, body), "X-API-Key": "not a key"}, body
    if case == "noncanonical_key":  # the same 32 bytes, spelled without padding
        headers = headers_for(trader, "POST", path, body)
        return {**headers, "X-API-Key": trader.api_key.rstrip("=")}, body
    raise AssertionError(case)


REFUSALS = {
    "wrong_key": (401, "INVALID_SIGNATURE"),
    "unknown_key": (401, "UNAUTHORIZED"),
    "tampered_body": (401, "INVALID_SIGNATURE"),
    "added_field": (401, "INVALID_SIGNATURE"),
    "other_instruction": (401, "INVALID_SIGNATURE"),
    "tampered_timestamp": (401, "INVALID_SIGNATURE"),
    "tampered_window": (401, "INVALID_SIGNATURE"),
    "window_left_out": (401, "INVALID_SIGNATURE"),
    "expired": (400, "INVALID_CLIENT_REQUEST"),
    "future": (400, "INVALID_CLIENT_REQUEST"),
    "window_too_large": (400, "INVALID_CLIENT_REQUEST"),
    "window_zero": (400, "INVALID_CLIENT_REQUEST"),
    "timestamp_not_integer": (400, "INVALID_CLIENT_REQUEST"),
    "window_negative": (400, "INVALID_CLIENT_REQUEST"),
    "missing_key": (401, "UNAUTHORIZED"),
    "missing_signature": (401, "UNAUTHORIZED"),
    "missing_timestamp": (401, "UNAUTHORIZED"),
    "no_headers": (401, "UNAUTHORIZED"),
    "garbage_signature": (401, "INVALID_SIGNATURE"),
    "short_signature": (401, "INVALID_SIGNATURE"),
    "garbage_key": (401, "INVALID_SIGNATURE"),
    "noncanonical_key": (401, "INVALID_SIGNATURE"),
}


def test_refused_signatures_change_nothing(api_stack: ApiStack, trader: Trader) -> None:
    stranger = api_stack.new_trader({"USDC": "1000"})
    before = settled_state(api_stack, trader.account)
    stranger_before = account_state(api_stack, stranger.account)
    for case, (status, code) in REFUSALS.items():
        headers, body = _forge(case, trader, stranger)
        response = send(api_stack.url, "POST", "/api/v1/order", body, headers)
        assert response.status_code == status, (case, response.text)
        assert_error(response, status, code)
    assert settled_state(api_stack, trader.account) == before
    assert settled_state(api_stack, stranger.account) == stranger_before


def test_expired_and_future_reads_are_refused(api_stack: ApiStack, trader: Trader) -> None:
    url = api_stack.url
    expired = signed(url, trader, "GET", "/api/v1/capital", timestamp_ms=now_ms() - 6_000)
    assert "expired" in assert_error(expired, 400, "INVALID_CLIENT_REQUEST")["message"]
    future = signed(url, trader, "GET", "/api/v1/capital", timestamp_ms=now_ms() + 30_000)
    assert "future" in assert_error(future, 400, "INVALID_CLIENT_REQUEST")["message"]
    # A long window does not make a stale timestamp good, only a recent one last longer.
    old = now_ms() - 50_000
    assert signed(url, trader, "GET", "/api/v1/capital", timestamp_ms=old, window_ms=60_000).ok
    too_old = signed(
        url, trader, "GET", "/api/v1/capital", timestamp_ms=old - 20_000, window_ms=60_000
    )
    assert_error(too_old, 400, "INVALID_CLIENT_REQUEST")
    # The query is signed too: a GET cannot be pointed at other parameters.
    headers = headers_for(trader, "GET", "/api/v1/orders", {"symbol": SYMBOL})
    moved = send(url, "GET", "/api/v1/orders", {"symbol": "BTC_USDC"}, headers)
    assert_error(moved, 401, "INVALID_SIGNATURE")


# -- REPLAYS ------------------------------------------------------------------------------------


def _command_id(headers: dict[str, str]) -> str:
    return hashlib.sha256(f"{headers['X-API-Key']}|{headers['X-Signature']}".encode()).hexdigest()[
        :32
    ]


def test_replay_within_the_window_returns_the_same_order(
    api_stack: ApiStack, trader: Trader
) -> None:
    url = api_stack.url
    body = {**ORDER, "clientId": 77}
    headers = headers_for(trader, "POST", "/api/v1/order", body, window_ms=30_000)
    first = send(url, "POST", "/api/v1/order", body, headers)
    assert first.status_code == 200, first.text
    order = first.json()
    after_first = settled_state(api_stack, trader.account)

    # Sequential resends, then concurrent ones: all answered with the first result.
    for _ in range(3):
        again = send(url, "POST", "/api/v1/order", body, headers)
        assert again.status_code == 200 and again.json() == order
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(lambda _: send(url, "POST", "/api/v1/order", body, headers), range(6))
        )
    assert [r.status_code for r in replies] == [200] * 6
    assert {r.json()["id"] for r in replies} == {order["id"]}

    assert settled_state(api_stack, trader.account) == after_first
    open_orders = signed(url, trader, "GET", "/api/v1/orders").json()
    assert [o["id"] for o in open_orders] == [order["id"]]
    usdc = signed(url, trader, "GET", "/api/v1/capital").json()["USDC"]
    assert usdc == {"available": "990.000000", "locked": "10.000000", "staked": "0"}
    # The engine kept one result for the command, answered once.
    assert api_stack.engines is not None
    result = api_stack.engines.result(_command_id(headers))
    assert result is not None and result.error is None

    # The same holds for a cancel: resent, it answers the cancelled order again.
    cancel = {"orderId": order["id"], "symbol": SYMBOL}
    cancel_headers = headers_for(trader, "DELETE", "/api/v1/order", cancel)
    cancelled = [send(url, "DELETE", "/api/v1/order", cancel, cancel_headers) for _ in range(2)]
    assert [r.status_code for r in cancelled] == [200, 200]
    assert cancelled[0].json() == cancelled[1].json()
    assert cancelled[0].json()["status"] == "Cancelled"


def test_replay_after_the_window_is_refused(api_stack: ApiStack, trader: Trader) -> None:
    url = api_stack.url
    timestamp = now_ms()
    headers = headers_for(
        trader, "POST", "/api/v1/order", ORDER, timestamp_ms=timestamp, window_ms=1_000
    )
    first = send(url, "POST", "/api/v1/order", ORDER, headers)
    assert first.status_code == 200, first.text
    after_first = settled_state(api_stack, trader.account)
    time.sleep(max(0.0, (timestamp + 1_000 - now_ms()) / 1_000) + 0.05)
    replay = send(url, "POST", "/api/v1/order", ORDER, headers)
    assert "expired" in assert_error(replay, 400, "INVALID_CLIENT_REQUEST")["message"]
    assert settled_state(api_stack, trader.account) == after_first
    assert len(signed(url, trader, "GET", "/api/v1/orders").json()) == 1


# -- KEY SCOPES AND REVOCATION ------------------------------------------------------------------


def test_read_only_key_reads_but_cannot_trade(api_stack: ApiStack) -> None:
    url = api_stack.url
    reader = api_stack.new_trader({"USDC": "1000"}, scope="read")
    capital = signed(url, reader, "GET", "/api/v1/capital")
    assert capital.status_code == 200 and capital.json()["USDC"]["available"] == "1000.000000"
    account = signed(url, reader, "GET", "/api/v1/account")
    assert account.status_code == 200 and account.json()["apiKeyScope"] == "read"
    assert signed(url, reader, "GET", "/api/v1/orders").json() == []
    assert signed(url, reader, "GET", "/wapi/v1/history/orders").status_code == 200

    before = settled_state(api_stack, reader.account)
    attempts = [
        ("POST", "/api/v1/order", ORDER),
        ("POST", "/api/v1/orders", [ORDER, ORDER]),
        ("DELETE", "/api/v1/order", {"orderId": "1", "symbol": SYMBOL}),
        ("DELETE", "/api/v1/orders", {"symbol": SYMBOL}),
    ]
    for method, path, body in attempts:
        assert_error(signed(url, reader, method, path, body), 403, "FORBIDDEN")
    assert settled_state(api_stack, reader.account) == before


def _revoke(stack: ApiStack, public_key: str) -> requests.Response:
    return stack.admin("POST", "/admin/v1/keys/revoke", {"publicKey": public_key})


def test_revoked_key_stops_at_once_in_the_revoking_container(
    api_stack: ApiStack, trader: Trader
) -> None:
    url = api_stack.url
    assert signed(url, trader, "GET", "/api/v1/capital").status_code == 200  # cached now
    before = settled_state(api_stack, trader.account)
    revoked = _revoke(api_stack, trader.api_key)
    assert revoked.status_code == 200, revoked.text
    answer = revoked.json()
    assert answer["accountId"] == trader.account
    assert answer["effectiveWithinSeconds"] == api_stack.settings.key_cache_ttl_s == 5.0  # type: ignore[union-attr]

    assert_error(signed(url, trader, "GET", "/api/v1/capital"), 401, "UNAUTHORIZED")
    assert_error(signed(url, trader, "POST", "/api/v1/order", ORDER), 401, "UNAUTHORIZED")
    assert settled_state(api_stack, trader.account) == before
    # Revoking again keeps the first revocation time; an unknown key is not found.
    again = _revoke(api_stack, trader.api_key)
    assert again.status_code == 200 and again.json()["revokedAt"] == answer["revokedAt"]
    assert_error(_revoke(api_stack, signing.generate_keypair()[0]), 404, "RESOURCE_NOT_FOUND")
    # The account's other keys are untouched.
    other_key, other_secret = signing.generate_keypair()
    registered = api_stack.admin(
        "POST",
        f"/admin/v1/accounts/{trader.account}/keys",
        {"publicKey": other_key, "scope": "trade"},
    )
    assert registered.status_code == 201
    other = Trader(trader.account, other_key, other_secret)
    assert signed(url, other, "GET", "/api/v1/capital").status_code == 200


@pytest.fixture(scope="module")
def short_cache_gateway(api_stack: ApiStack) -> Iterator[SecondGateway]:
    gateway = SecondGateway(api_stack, key_cache_ttl_s=0.5)
    yield gateway
    gateway.close()


def test_revoked_key_stops_within_the_key_cache_ttl_everywhere(
    api_stack: ApiStack, short_cache_gateway: SecondGateway, trader: Trader
) -> None:
    ttl = short_cache_gateway.settings.key_cache_ttl_s
    url = short_cache_gateway.url
    assert signed(url, trader, "GET", "/api/v1/capital").status_code == 200  # cached there
    before = settled_state(api_stack, trader.account)
    assert _revoke(api_stack, trader.api_key).status_code == 200  # in the other container
    revoked_at = time.monotonic()
    while True:
        response = signed(url, trader, "GET", "/api/v1/capital")
        if response.status_code != 200:
            break
        assert time.monotonic() - revoked_at < ttl + 1.0, "the revoked key kept working"
        time.sleep(0.02)
    assert_error(response, 401, "UNAUTHORIZED")
    assert time.monotonic() - revoked_at <= ttl + 0.5
    assert_error(signed(url, trader, "POST", "/api/v1/order", ORDER), 401, "UNAUTHORIZED")
    assert settled_state(api_stack, trader.account) == before


# -- THE ADMIN CREDENTIAL -----------------------------------------------------------------------


def _admin_counts(stack: ApiStack) -> tuple[int, int, int]:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM api_keys),"
            " (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_admin_routes_refuse_a_missing_or_wrong_credential(
    api_stack: ApiStack, trader: Trader
) -> None:
    url = api_stack.url
    before = settled_state(api_stack, trader.account)
    counts = _admin_counts(api_stack)
    new_key = signing.generate_keypair()[0]
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/admin/v1/accounts", {"label": "intruder"}),
        ("GET", f"/admin/v1/accounts/{trader.account}", None),
        (
            "POST",
            f"/admin/v1/accounts/{trader.account}/keys",
            {"publicKey": new_key, "scope": "trade"},
        ),
        ("POST", "/admin/v1/keys/revoke", {"publicKey": trader.api_key}),
        (
            "POST",
            "/admin/v1/deposits",
            {
                "account": trader.account,
                "asset": "USDC",
                "amount": "1",
                "reason": "x",
                "idempotencyKey": "intruder",
            },
        ),
        (
            "POST",
            "/admin/v1/withdrawals",
            {
                "account": trader.account,
                "asset": "USDC",
                "amount": "1",
                "reason": "x",
                "idempotencyKey": "intruder",
            },
        ),
        (
            "POST",
            f"/admin/v1/markets/{SYMBOL}/state",
            {"state": "Closed", "idempotencyKey": "intruder"},
        ),
        (
            "POST",
            f"/admin/v1/markets/{SYMBOL}/fees",
            {"makerFeeBps": 0, "takerFeeBps": 0, "idempotencyKey": "x"},
        ),
        ("GET", "/%61dmin/v1/accounts/1", None),  # the path percent-encoded
        ("GET", "//admin/v1/accounts/1", None),
    ]
    credentials: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {api_stack.admin_token}x"},
        {"Authorization": f"Basic {api_stack.admin_token}"},
        {"Authorization": api_stack.admin_token},
        # A trader's valid signature is no admin credential.
        headers_for(trader, "POST", "/admin/v1/accounts", {"label": "intruder"}),
    ]
    for method, path, body in calls:
        for headers in credentials:
            response = send(url, method, path, body, headers)
            assert response.status_code == 403, (method, path, headers, response.text)
            # API Gateway's own answer (no invocation), as AWS gives it for IAM routes.
            assert response.json() == {"message": "Missing Authentication Token"}
    assert _admin_counts(api_stack) == counts
    assert settled_state(api_stack, trader.account) == before
    assert signed(url, trader, "GET", "/api/v1/capital").status_code == 200  # not revoked
    market = requests.get(f"{url}/api/v1/market", params={"symbol": SYMBOL}, timeout=10).json()
    assert market["orderBookState"] == "Open"


# -- RATE LIMITS --------------------------------------------------------------------------------

RATE_PER_KEY, BURST_PER_KEY = 1.0, 5
RATE_PER_IP, BURST_PER_IP = 0.5, 20


@pytest.fixture(scope="module")
def limited_gateway(api_stack: ApiStack) -> Iterator[SecondGateway]:
    gateway = SecondGateway(
        api_stack,
        rate_per_key=RATE_PER_KEY,
        burst_per_key=BURST_PER_KEY,
        rate_per_ip=RATE_PER_IP,
        burst_per_ip=BURST_PER_IP,
    )
    yield gateway
    gateway.close()


def assert_rate_limited(response: requests.Response) -> None:
    assert_error(response, 429, "TOO_MANY_REQUESTS")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1


def test_rate_limit_per_key(api_stack: ApiStack, limited_gateway: SecondGateway) -> None:
    url = limited_gateway.url
    busy = api_stack.new_trader({"USDC": "1000"})
    quiet = api_stack.new_trader({"USDC": "1000"})
    with session_from("127.0.0.2") as session:
        statuses = [
            signed(url, busy, "GET", "/api/v1/capital", session=session).status_code
            for _ in range(BURST_PER_KEY)
        ]
        assert statuses == [200] * BURST_PER_KEY
        before = settled_state(api_stack, busy.account)
        limited = signed(url, busy, "POST", "/api/v1/order", ORDER, session=session)
        assert_rate_limited(limited)
        assert_rate_limited(signed(url, busy, "GET", "/api/v1/capital", session=session))
        # Another key from the same address is not limited, and the refused order placed nothing.
        assert signed(url, quiet, "GET", "/api/v1/capital", session=session).status_code == 200
        assert settled_state(api_stack, busy.account) == before
        # The bucket refills at its rate: after Retry-After the key works again.
        time.sleep(int(limited.headers["Retry-After"]))
        assert signed(url, busy, "GET", "/api/v1/capital", session=session).status_code == 200


def test_rate_limit_per_ip(api_stack: ApiStack, limited_gateway: SecondGateway) -> None:
    url = limited_gateway.url
    trader = api_stack.new_trader({"USDC": "1000"})
    with session_from("127.0.0.3") as session:
        start = time.monotonic()
        statuses = [
            session.get(f"{url}/api/v1/time", timeout=10).status_code
            for _ in range(BURST_PER_IP + 5)
        ]
        refilled = int((time.monotonic() - start) * RATE_PER_IP)
        assert statuses[:BURST_PER_IP] == [200] * BURST_PER_IP
        assert 429 in statuses and statuses.count(200) <= BURST_PER_IP + refilled
        limited = session.get(f"{url}/api/v1/markets", timeout=10)
        assert_rate_limited(limited)
        # Signed requests from that address are limited too, whatever their key.
        assert_rate_limited(signed(url, trader, "GET", "/api/v1/capital", session=session))
    with session_from("127.0.0.4") as other:  # another address has its own bucket
        assert other.get(f"{url}/api/v1/time", timeout=10).status_code == 200
        assert signed(url, trader, "GET", "/api/v1/capital", session=other).status_code == 200


def test_failed_signatures_spend_the_ip_budget(
    api_stack: ApiStack, limited_gateway: SecondGateway
) -> None:
    url = limited_gateway.url
    trader = api_stack.new_trader()
    headers = {**headers_for(trader, "GET", "/api/v1/capital"), "X-Signature": "AAAA"}
    with session_from("127.0.0.5") as session:
        statuses = [
            send(url, "GET", "/api/v1/capital", None, headers, session=session).status_code
            for _ in range(BURST_PER_IP + 3)
        ]
    assert statuses[:BURST_PER_IP] == [401] * BURST_PER_IP
    assert statuses[-1] == 429
