"""The API Lambda handler invoked directly, as Lambda does it: API Gateway REST proxy events
(payload format 1.0) in, proxy responses out. The events are built by ``localgw.rest`` (what
the local gateway sends) and, once, written by hand in the shape of AWS's documentation; each is
checked to parse with Powertools' ``APIGatewayProxyEvent``. Plus the function's configuration
(``ApiSettings.from_env``), checked at cold start.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventModel

from cloudex import signing
from functions.api.settings import ApiSettings, SettingsError
from localgw.rest import ADMIN_IDENTITY, LambdaContext, http_response, proxy_event
from tests.integration.api_support import ApiStack, Trader

SYMBOL = "SOL_USDC"
ORDER = {"symbol": SYMBOL, "side": "Bid", "orderType": "Limit", "price": "10", "quantity": "1"}
SOURCE_IP = "198.51.100.7"
ROOT = Path(__file__).resolve().parents[2]


# -- HELPERS ------------------------------------------------------------------------------------


def context() -> LambdaContext:
    return LambdaContext("api", deadline=time.monotonic() + 29, log_stream_name="test/stream")


def event_for(
    method: str,
    path: str,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    identity: Any = None,
) -> dict[str, Any]:
    all_headers = [("Host", "api.example.com"), ("User-Agent", "pytest"), *(headers or {}).items()]
    event = proxy_event(
        method, path, query, all_headers, body, source_ip=SOURCE_IP, identity=identity
    )
    check_event(event)
    return event


def check_event(event: dict[str, Any]) -> None:
    """The event is one Powertools reads as an API Gateway REST proxy event."""
    parsed = APIGatewayProxyEvent(event)
    assert parsed.http_method == event["httpMethod"]
    assert parsed.path == event["path"]
    assert parsed.resource == event["resource"]
    assert parsed.request_context.stage == event["requestContext"]["stage"]
    assert (
        parsed.request_context.identity.source_ip == event["requestContext"]["identity"]["sourceIp"]
    )
    assert parsed.query_string_parameters == (event["queryStringParameters"] or {})
    assert parsed.is_base64_encoded == event["isBase64Encoded"]
    APIGatewayProxyEventModel.model_validate(event)  # the Powertools parser's model too


def invoke(stack: ApiStack, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """Invoke the handler; check the result is a proxy response API Gateway accepts."""
    result = stack.handler(event, context())
    assert isinstance(result, dict)
    assert isinstance(result["statusCode"], int)
    assert isinstance(result.get("headers", {}), dict)
    assert isinstance(result["body"], str)
    assert result.get("isBase64Encoded") is False
    response = http_response(result)  # raises on anything API Gateway would answer 502 to
    headers = {name.lower(): value for name, value in response.headers}
    body: Any = response.body
    if headers.get("content-type", "").startswith("application/json"):
        body = json.loads(response.body)
    return response.status, headers, body


def signed_event(
    trader: Trader, method: str, path: str, params: Any = None, *, base64_body: bool = False
) -> dict[str, Any]:
    headers = signing.signed_headers(trader.api_key, trader.secret, method, path, params or {})
    if method == "GET":
        query = "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
        return event_for(method, path, query, headers)
    body = msgspec.json.encode(params)
    event = event_for(method, path, "", {**headers, "Content-Type": "application/json"}, body)
    if base64_body:  # as API Gateway sends a body matching binaryMediaTypes
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
        check_event(event)
    return event


def assert_error(answer: tuple[int, dict[str, str], Any], status: int, code: str) -> None:
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["content-type"].startswith("application/json")
    assert set(body) == {"code", "message"} and body["code"] == code, body


# -- EVENTS IN, PROXY RESPONSES OUT --------------------------------------------------------------


def test_public_reads(api_stack: ApiStack) -> None:
    status, headers, markets = invoke(api_stack, event_for("GET", "/api/v1/markets"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert SYMBOL in {m["symbol"] for m in markets}
    assert "app;dur=" in headers["server-timing"]
    status, _, depth = invoke(
        api_stack, event_for("GET", "/api/v1/depth", f"symbol={SYMBOL}&limit=5")
    )
    assert status == 200 and set(depth) >= {"bids", "asks", "lastUpdateId", "timestamp"}
    status, headers, body = invoke(api_stack, event_for("GET", "/api/v1/ping"))
    assert (status, body) == (200, b"pong") and headers["content-type"].startswith("text/plain")
    status, _, server_time = invoke(api_stack, event_for("GET", "/api/v1/time"))
    assert status == 200 and abs(server_time - time.time() * 1000) < 60_000


def test_an_event_shaped_as_in_the_aws_documentation(api_stack: ApiStack) -> None:
    """The REST API proxy event of AWS's "Lambda proxy integration" input format, every field as
    documented (a stage on the execute-api domain, an authorizer with no claims)."""
    event: dict[str, Any] = {
        "resource": "/{proxy+}",
        "path": "/api/v1/depth",
        "httpMethod": "GET",
        "headers": {
            "Accept": "application/json",
            "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "User-Agent": "curl/8.5.0",
            "X-Amzn-Trace-Id": "Root=1-5e66d96f-7491f09xmpl79d18acf3d050",
            "X-Forwarded-For": "203.0.113.10",
            "X-Forwarded-Port": "443",
            "X-Forwarded-Proto": "https",
        },
        "multiValueHeaders": {
            "Accept": ["application/json"],
            "Host": ["abcdef1234.execute-api.us-east-1.amazonaws.com"],
            "User-Agent": ["curl/8.5.0"],
            "X-Amzn-Trace-Id": ["Root=1-5e66d96f-7491f09xmpl79d18acf3d050"],
            "X-Forwarded-For": ["203.0.113.10"],
            "X-Forwarded-Port": ["443"],
            "X-Forwarded-Proto": ["https"],
        },
        "queryStringParameters": {"symbol": SYMBOL, "limit": "3"},
        "multiValueQueryStringParameters": {"symbol": [SYMBOL], "limit": ["3"]},
        "pathParameters": {"proxy": "api/v1/depth"},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "authorizer": {"claims": None, "scopes": None},
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "extendedRequestId": "BQGojGVlvHcFdzg=",
            "httpMethod": "GET",
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": "203.0.113.10",
                "user": None,
                "userAgent": "curl/8.5.0",
                "userArn": None,
            },
            "path": "/prod/api/v1/depth",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": "04/Mar/2020:19:15:17 +0000",
            "requestTimeEpoch": 1583349317135,
            "resourceId": "roq9wj",
            "resourcePath": "/{proxy+}",
            "stage": "prod",
        },
        "body": None,
        "isBase64Encoded": False,
    }
    check_event(event)
    status, headers, depth = invoke(api_stack, event)
    assert status == 200, depth
    assert headers["content-type"] == "application/json"
    assert depth["bids"] == [] or len(depth["bids"]) <= 3
    # The same event for an unknown market: Backpack's error, from the function itself.
    event["queryStringParameters"] = {"symbol": "NOPE"}
    event["multiValueQueryStringParameters"] = {"symbol": ["NOPE"]}
    assert_error(invoke(api_stack, event), 400, "INVALID_MARKET")


def test_signed_orders(api_stack: ApiStack) -> None:
    trader = api_stack.new_trader({"USDC": "1000"})
    status, _, order = invoke(api_stack, signed_event(trader, "POST", "/api/v1/order", ORDER))
    assert status == 200 and order["status"] == "New", order
    # A base64-encoded body (binary media type) is decoded before it is verified and parsed.
    second = {**ORDER, "price": "9", "clientId": 2}
    event = signed_event(trader, "POST", "/api/v1/order", second, base64_body=True)
    status, _, other = invoke(api_stack, event)
    assert status == 200 and other["clientId"] == 2, other
    status, _, listed = invoke(
        api_stack, signed_event(trader, "GET", "/api/v1/orders", {"symbol": SYMBOL})
    )
    assert status == 200 and {o["id"] for o in listed} == {order["id"], other["id"]}
    cancel = {"orderId": order["id"], "symbol": SYMBOL}
    status, _, cancelled = invoke(
        api_stack, signed_event(trader, "DELETE", "/api/v1/order", cancel)
    )
    assert status == 200 and cancelled["status"] == "Cancelled"
    status, _, capital = invoke(api_stack, signed_event(trader, "GET", "/api/v1/capital"))
    assert status == 200
    assert capital["USDC"] == {"available": "991.000000", "locked": "9.000000", "staked": "0"}


def test_errors(api_stack: ApiStack) -> None:
    trader = api_stack.new_trader({"USDC": "1000"})
    assert_error(invoke(api_stack, event_for("GET", "/api/v1/nope")), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        invoke(api_stack, event_for("PUT", "/api/v1/order")), 405, "INVALID_CLIENT_REQUEST"
    )
    unsigned = event_for("POST", "/api/v1/order", "", {"Content-Type": "application/json"}, b"{}")
    assert_error(invoke(api_stack, unsigned), 401, "UNAUTHORIZED")
    forged = signed_event(trader, "POST", "/api/v1/order", ORDER)
    forged["body"] = msgspec.json.encode({**ORDER, "price": "11"}).decode()
    assert_error(invoke(api_stack, forged), 401, "INVALID_SIGNATURE")
    bad_json = signed_event(trader, "POST", "/api/v1/order", ORDER)
    bad_json["body"] = '{"symbol": '
    assert_error(invoke(api_stack, bad_json), 400, "INVALID_CLIENT_REQUEST")
    off_tick = signed_event(trader, "POST", "/api/v1/order", {**ORDER, "price": "10.001"})
    assert_error(invoke(api_stack, off_tick), 400, "INVALID_PRICE")
    # A path local HTTP cannot route (a newline in it) is still the function's to answer.
    newline = event_for("GET", "/api/v1/market", "symbol=SOL%0AUSDC")
    assert_error(invoke(api_stack, newline), 400, "INVALID_MARKET")
    odd_path = event_for("POST", "/admin/v1/markets/%0A/state", identity=ADMIN_IDENTITY)
    assert invoke(api_stack, odd_path)[0] in (400, 404)
    status, _, capital = invoke(api_stack, signed_event(trader, "GET", "/api/v1/capital"))
    assert status == 200 and capital["USDC"]["locked"] == "0.000000"  # nothing placed


def test_admin_routes_need_an_iam_caller_in_the_event(api_stack: ApiStack) -> None:
    body = msgspec.json.encode({"label": "from the handler test"})
    headers = {"Content-Type": "application/json"}
    # A route wired without IAM authorisation: the event names no caller, the function refuses.
    no_caller = event_for("POST", "/admin/v1/accounts", "", headers, body)
    assert_error(invoke(api_stack, no_caller), 403, "FORBIDDEN")
    # A bearer token means nothing to the function itself: only the event's identity counts.
    token = event_for(
        "POST",
        "/admin/v1/accounts",
        "",
        {**headers, "Authorization": f"Bearer {api_stack.admin_token}"},
        body,
    )
    assert_error(invoke(api_stack, token), 403, "FORBIDDEN")
    status, _, account = invoke(
        api_stack,
        event_for("POST", "/admin/v1/accounts", "", headers, body, identity=ADMIN_IDENTITY),
    )
    assert status == 201 and account["label"] == "from the handler test"
    status, _, fetched = invoke(
        api_stack,
        event_for("GET", f"/admin/v1/accounts/{account['accountId']}", identity=ADMIN_IDENTITY),
    )
    assert status == 200 and fetched["keys"] == []


# -- CONFIGURATION -------------------------------------------------------------------------------

REQUIRED = {
    "ORDERS_QUEUE_URL": "http://127.0.0.1:4566/000000000000/orders.fifo",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/cloudex",
}


def test_settings_need_the_three_urls() -> None:
    with pytest.raises(SettingsError, match="ORDERS_QUEUE_URL, REDIS_URL, DATABASE_URL"):
        ApiSettings.from_env({})
    for name in REQUIRED:
        with pytest.raises(SettingsError, match=f"missing environment variables: {name}$"):
            ApiSettings.from_env({**REQUIRED, name: ""})


def test_settings_defaults_and_overrides() -> None:
    defaults = ApiSettings.from_env({**REQUIRED, "UNRELATED": "x", "RATE_PER_KEY": ""})
    assert defaults == ApiSettings(
        orders_queue_url=REQUIRED["ORDERS_QUEUE_URL"],
        redis_url=REQUIRED["REDIS_URL"],
        database_url=REQUIRED["DATABASE_URL"],
    )
    assert (defaults.key_cache_ttl_s, defaults.reply_timeout_s, defaults.max_window_ms) == (
        5.0,
        10.0,
        60_000,
    )
    settings = ApiSettings.from_env(
        {
            **REQUIRED,
            "REPLY_TIMEOUT_S": "2.5",
            "HEARTBEAT_MAX_AGE_MS": "1500",
            "KEY_CACHE_TTL_S": "0",
            "MAX_WINDOW_MS": "30000",
            "MAX_BATCH_ORDERS": "10",
            "RATE_PER_KEY": "5",
            "BURST_PER_KEY": "7",
            "RATE_PER_IP": "0.5",
            "BURST_PER_IP": "20",
        }
    )
    assert settings.reply_timeout_s == 2.5 and settings.heartbeat_max_age_ms == 1_500
    assert settings.key_cache_ttl_s == 0 and settings.max_window_ms == 30_000
    assert settings.max_batch_orders == 10
    assert (settings.rate_per_key, settings.burst_per_key) == (5.0, 7)
    assert (settings.rate_per_ip, settings.burst_per_ip) == (0.5, 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BURST_PER_KEY", "many"),
        ("BURST_PER_KEY", "1.5"),
        ("BURST_PER_KEY", "0"),
        ("RATE_PER_KEY", "-1"),
        ("RATE_PER_KEY", "0"),
        ("RATE_PER_IP", "nan"),
        ("RATE_PER_IP", "inf"),
        ("BURST_PER_IP", "-5"),
        ("REPLY_TIMEOUT_S", "29"),
        ("REPLY_TIMEOUT_S", "0"),
        ("REPLY_TIMEOUT_S", "nan"),
        ("REPLY_TIMEOUT_S", "soon"),
        ("HEARTBEAT_MAX_AGE_MS", "0"),
        ("HEARTBEAT_MAX_AGE_MS", "5s"),
        ("KEY_CACHE_TTL_S", "-1"),
        ("MAX_WINDOW_MS", "0"),
        ("MAX_WINDOW_MS", "600001"),
        ("MAX_CLOCK_SKEW_MS", "-1"),
        ("MAX_BATCH_ORDERS", "0"),
    ],
)
def test_settings_refuse_bad_values_naming_them(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        ApiSettings.from_env({**REQUIRED, name: value})
    assert name.lower() in str(raised.value).lower()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEY_CACHE_TTL_S", "0.5")
    assert ApiSettings.from_env().key_cache_ttl_s == 0.5


def test_a_misconfigured_function_fails_its_cold_start() -> None:
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env["REPLY_TIMEOUT_S"] = "60"
    failed = subprocess.run(
        [sys.executable, "-c", "import functions.api.handler"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode != 0
    assert "SettingsError: missing environment variables" in failed.stderr
    failed = subprocess.run(
        [sys.executable, "-c", "import functions.api.handler"],
        env={**env, **REQUIRED},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode != 0
    assert "REPLY_TIMEOUT_S" in failed.stderr
