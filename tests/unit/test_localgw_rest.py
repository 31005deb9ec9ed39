"""The local REST API gateway's pure parts: the proxy events it builds (read back through
Powertools, its Pydantic model and Mangum) and the HTTP responses it makes of proxy responses."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventModel
from fastapi import FastAPI, Request
from fastapi.responses import Response
from mangum import Mangum
from mangum.handlers.api_gateway import APIGateway, HTTPGateway

from localgw.rest import (
    ADMIN_IDENTITY,
    HttpResponse,
    LambdaContext,
    MalformedProxyResponse,
    http_response,
    is_admin_path,
    proxy_event,
)

HEADERS = [("Host", "api.example.test:8000"), ("User-Agent", "ccxt/4.5"), ("Accept", "*/*")]


def event_for(
    method: str = "GET",
    path: str = "/api/v1/depth",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    **kwargs: Any,
) -> dict[str, Any]:
    return proxy_event(
        method,
        path,
        query,
        HEADERS if headers is None else headers,
        body,
        source_ip="203.0.113.7",
        **kwargs,
    )


def context() -> LambdaContext:
    return LambdaContext("api", deadline=time.monotonic() + 29, log_stream_name="stream")


# -- EVENTS -----------------------------------------------------------------------------------


def test_proxy_event_reads_back_through_powertools() -> None:
    event = APIGatewayProxyEvent(
        event_for(query="symbol=SOL_USDC", request_id="req-1", request_time=1_795_600_800.25)
    )

    assert event.http_method == "GET"
    assert event.path == "/api/v1/depth"
    assert event.resource == "/{proxy+}"
    assert event.path_parameters == {"proxy": "api/v1/depth"}
    assert event.stage_variables == {}
    assert event.query_string_parameters == {"symbol": "SOL_USDC"}
    assert event.headers.get("user-agent") == "ccxt/4.5"
    assert event.body is None
    assert event.is_base64_encoded is False
    ctx = event.request_context
    assert ctx.stage == "local"
    assert ctx.path == "/local/api/v1/depth"
    assert ctx.resource_path == "/{proxy+}"
    assert ctx.http_method == "GET"
    assert ctx.request_id == "req-1"
    assert ctx.account_id == "000000000000"
    assert ctx.api_id and ctx.resource_id and ctx.extended_request_id
    assert ctx.protocol == "HTTP/1.1"
    assert ctx.domain_name == "api.example.test:8000"
    assert ctx.request_time == "25/Nov/2026:10:00:00 +0000"
    assert ctx.request_time_epoch == 1_795_600_800_250
    assert ctx.identity.source_ip == "203.0.113.7"
    assert ctx.identity.user_agent == "ccxt/4.5"
    assert ctx.identity.user_arn is None
    assert ctx.identity.caller is None
    assert ctx.identity.access_key is None
    assert ctx.identity.cognito_identity_id is None


def test_proxy_event_request_ids_and_times_are_fresh_by_default() -> None:
    first, second = event_for(), event_for()

    ids = {first["requestContext"]["requestId"], second["requestContext"]["requestId"]}
    assert len(ids) == 2
    assert re.fullmatch(r"[0-9a-f-]{36}", first["requestContext"]["requestId"])
    assert re.fullmatch(
        r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", first["requestContext"]["requestTime"]
    )
    assert abs(first["requestContext"]["requestTimeEpoch"] - time.time() * 1000) < 5_000


def test_proxy_event_validates_against_the_powertools_pydantic_model() -> None:
    raw = event_for(
        "POST", "/api/v1/order", "a=1&a=2", body=b'{"x":1}', identity=dict(ADMIN_IDENTITY)
    )

    model = APIGatewayProxyEventModel.model_validate(raw)

    assert model.httpMethod == "POST"
    assert model.body == '{"x":1}'
    assert model.multiValueQueryStringParameters == {"a": ["1", "2"]}
    assert model.requestContext.identity.userArn == ADMIN_IDENTITY["userArn"]
    assert str(model.requestContext.identity.sourceIp).startswith("203.0.113.7")


def test_proxy_event_is_taken_by_mangum_for_a_rest_api_event() -> None:
    raw = event_for("POST", "/api/v1/a%20b", "x=1&x=2&q=a+b", body=b"hi")
    config: Any = {"api_gateway_base_path": "/", "text_mime_types": [], "exclude_headers": []}

    assert APIGateway.infer(raw, context(), config)
    assert not HTTPGateway.infer(raw, context(), config)  # no "version" key
    scope = APIGateway(raw, context(), config).scope
    assert scope["method"] == "POST"
    assert scope["path"] == "/api/v1/a b"
    assert scope["query_string"] == b"x=1&x=2&q=a+b"
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["server"] == ("api.example.test", 8000)
    assert APIGateway(raw, context(), config).body == b"hi"


def test_proxy_event_repeated_headers_keep_client_casing_and_every_value() -> None:
    headers = [("Host", "h"), ("X-Tag", "a"), ("x-tag", "b"), ("Accept", "x/y, z/w")]

    raw = event_for(headers=headers)

    assert raw["headers"] == {"Host": "h", "X-Tag": "b", "Accept": "x/y, z/w"}
    assert raw["multiValueHeaders"] == {"Host": ["h"], "X-Tag": ["a", "b"], "Accept": ["x/y, z/w"]}
    assert APIGatewayProxyEvent(raw).multi_value_headers["x-tag"] == ["a", "b"]


def test_proxy_event_query_is_decoded_with_single_and_multi_value_forms() -> None:
    raw = event_for(query="side=Bid&side=Ask&q=a+b%2Bc&empty=&flag&name=%E2%82%AC&eq=1=2")

    assert raw["queryStringParameters"] == {
        "side": "Ask",
        "q": "a b+c",
        "empty": "",
        "flag": "",
        "name": "€",
        "eq": "1=2",
    }
    assert raw["multiValueQueryStringParameters"]["side"] == ["Bid", "Ask"]
    event = APIGatewayProxyEvent(raw)
    assert event.get_multi_value_query_string_values("side") == ["Bid", "Ask"]
    assert event.get_query_string_value("q") == "a b+c"


@pytest.mark.parametrize("query", ["", "&"])
def test_proxy_event_without_query_parameters_has_nulls(query: str) -> None:
    raw = event_for(query=query)

    assert raw["queryStringParameters"] is None
    assert raw["multiValueQueryStringParameters"] is None


def test_proxy_event_text_body_is_passed_as_text() -> None:
    raw = event_for("POST", body='{"price":"1.5","note":"é"}'.encode())

    assert raw["isBase64Encoded"] is False
    assert APIGatewayProxyEvent(raw).json_body == {"price": "1.5", "note": "é"}


def test_proxy_event_binary_body_is_base64_encoded() -> None:
    payload = bytes(range(256))

    raw = event_for("PUT", body=payload)

    assert raw["isBase64Encoded"] is True
    assert base64.b64decode(raw["body"]) == payload
    config: Any = {"api_gateway_base_path": "/", "text_mime_types": [], "exclude_headers": []}
    assert APIGateway(raw, context(), config).body == payload


def test_proxy_event_root_path_is_the_root_resource() -> None:
    raw = event_for(path="/")

    assert raw["resource"] == "/"
    assert raw["pathParameters"] is None
    assert raw["requestContext"]["resourcePath"] == "/"
    assert raw["requestContext"]["path"] == "/local/"


def test_proxy_event_path_stays_encoded_and_the_proxy_parameter_is_decoded() -> None:
    raw = event_for(path="/files/a%2Fb%20c/", stage="prod")

    assert raw["path"] == "/files/a%2Fb%20c/"
    assert raw["pathParameters"] == {"proxy": "files/a/b c/"}
    assert raw["requestContext"]["path"] == "/prod/files/a%2Fb%20c/"
    assert raw["requestContext"]["stage"] == "prod"


def test_proxy_event_with_iam_identity_names_the_admin_user() -> None:
    raw = event_for(path="/admin/markets", identity=dict(ADMIN_IDENTITY))

    identity = APIGatewayProxyEvent(raw).request_context.identity
    assert identity.user_arn == "arn:aws:iam::000000000000:user/cloudex-local-admin"
    assert identity.caller and identity.access_key and identity.account_id
    assert identity.source_ip == "203.0.113.7"


@pytest.mark.parametrize(
    ("path", "admin"),
    [
        ("/admin/markets", True),
        ("/admin", True),
        ("/admin/", True),
        ("/%61dmin/markets", True),
        ("/admin%2Fmarkets", True),
        ("//admin/markets", True),
        ("/api/../admin/markets", True),
        ("/administrator", False),
        ("/api/v1/admin", False),
        ("/", False),
    ],
)
def test_is_admin_path_catches_every_spelling_of_admin(path: str, admin: bool) -> None:
    assert is_admin_path(path) is admin


def test_lambda_context_counts_down_the_integration_timeout() -> None:
    ctx = LambdaContext("api", deadline=time.monotonic() + 1.5, log_stream_name="s")

    assert 1_000 < ctx.get_remaining_time_in_millis() <= 1_500
    assert ctx.invoked_function_arn == "arn:aws:lambda:us-east-1:000000000000:function:api"
    assert ctx.function_version == "$LATEST"
    assert ctx.log_group_name == "/aws/lambda/api"
    assert (
        ctx.aws_request_id != LambdaContext("api", deadline=0, log_stream_name="s").aws_request_id
    )
    assert LambdaContext("api", deadline=0, log_stream_name="s").get_remaining_time_in_millis() == 0


# -- RESPONSES --------------------------------------------------------------------------------


def test_http_response_maps_status_headers_and_body() -> None:
    response = http_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-Count": 3, "X-Ok": True},
            "body": "créé",
            "isBase64Encoded": False,
        }
    )

    assert response == HttpResponse(
        201,
        [("Content-Type", "text/plain"), ("X-Count", "3"), ("X-Ok", "true")],
        "créé".encode(),
    )


def test_http_response_merges_multi_value_headers_and_multi_value_wins() -> None:
    response = http_response(
        {
            "statusCode": 200,
            "headers": {"content-type": "application/json", "Set-Cookie": "lost=1"},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"], "Vary": ["Accept"]},
            "body": "{}",
        }
    )

    assert response.headers == [
        ("content-type", "application/json"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("Vary", "Accept"),
    ]


def test_http_response_defaults_to_json_and_drops_framing_headers() -> None:
    response = http_response(
        {"statusCode": 204, "headers": {"Content-Length": "99", "Connection": "close"}}
    )

    assert response == HttpResponse(204, [("Content-Type", "application/json")], b"")


def test_http_response_decodes_a_base64_body() -> None:
    payload = b"\x00\xff\x10binary"

    response = http_response(
        {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(payload).decode(),
            "isBase64Encoded": True,
        }
    )

    assert response.body == payload


def test_http_response_accepts_a_numeric_string_status() -> None:
    assert http_response({"statusCode": "404", "body": "x"}).status == 404


@pytest.mark.parametrize(
    "result",
    [
        None,
        "ok",
        [200],
        {},
        {"body": "no status"},
        {"statusCode": True},
        {"statusCode": 1000},
        {"statusCode": "OK"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": b"bytes"},
        {"statusCode": 200, "headers": [["a", "b"]]},
        {"statusCode": 200, "headers": {"a": {"b": 1}}},
        {"statusCode": 200, "multiValueHeaders": {"a": "b"}},
        {"statusCode": 200, "body": "***", "isBase64Encoded": True},
        {"statusCode": 200, "body": "", "isBase64Encoded": "yes"},
    ],
)
def test_http_response_rejects_malformed_proxy_responses(result: Any) -> None:
    with pytest.raises(MalformedProxyResponse):
        http_response(result)


# -- MANGUM -----------------------------------------------------------------------------------


def test_mangum_round_trip_through_event_and_response() -> None:
    app = FastAPI()

    @app.post("/api/v1/echo/{name}")
    async def echo(name: str, request: Request) -> Response:
        body = await request.body()
        return Response(
            content=body[::-1],
            media_type="application/octet-stream",
            headers={"X-Name": name, "X-Query": request.url.query, "X-Ip": request.client.host}
            if request.client
            else {},
        )

    handler = Mangum(app, lifespan="off")
    raw = event_for("POST", "/api/v1/echo/a%20b", "k=v", body=b"\x01\x02\xff")

    result = _in_fresh_worker_thread(lambda: handler(raw, context()))

    response = http_response(result)
    assert response.status == 200
    assert response.body == b"\xff\x02\x01"
    headers = dict(response.headers)
    assert headers["x-name"] == "a b"
    assert headers["x-query"] == "k=v"
    assert headers["x-ip"] == "203.0.113.7"


def test_mangum_needs_an_event_loop_set_in_a_worker_thread() -> None:
    # Why every gateway worker sets its own loop: Python 3.11 has none in a new thread.
    def bare() -> object:
        return asyncio.get_event_loop()

    with pytest.raises(RuntimeError, match="no current event loop"):
        _in_thread(bare)


def _in_thread(fn: Any) -> Any:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _in_fresh_worker_thread(fn: Any) -> Any:
    def run() -> Any:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return fn()
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return _in_thread(run)
