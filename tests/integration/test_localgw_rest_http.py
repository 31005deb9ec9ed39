"""The local REST API gateway over real HTTP, with a tiny FastAPI app behind Mangum and plain
handlers: echo, binary bodies, the 413/502/504 gateway answers, admin authorisation, and the
Lambda concurrency model (N workers, one invocation each at a time, each with its own loop).

Needs no service: everything runs in this process on loopback (the command-line test starts one
subprocess)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from mangum import Mangum

from localgw.rest import ADMIN_IDENTITY, LambdaHandler, RestGateway

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "local-admin-token"

app = FastAPI()


@app.post("/binary/reverse")
async def reverse(request: Request) -> Response:
    return Response(content=(await request.body())[::-1], media_type="application/octet-stream")


@app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(rest: str, request: Request) -> JSONResponse:
    event = request.scope["aws.event"]
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.query_params.multi_items(),
            "body": body.decode("utf-8", "replace"),
            "client": request.client.host if request.client else None,
            "scheme": request.url.scheme,
            "event": event,
        }
    )


mangum_handler = Mangum(app, lifespan="off")


def cli_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The handler the command-line test serves."""
    identity = event["requestContext"]["identity"]
    return {"statusCode": 200, "body": f"{event['path']} {identity['userArn']}"}


class Recorder:
    """A handler that counts invocations and concurrent ones, per worker and in all."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.lock = threading.Lock()
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.active_per_thread: dict[str, int] = {}
        self.max_per_thread = 0
        self.loops: dict[str, set[int]] = {}

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        name = threading.current_thread().name
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.active_per_thread[name] = self.active_per_thread.get(name, 0) + 1
            self.max_per_thread = max(self.max_per_thread, self.active_per_thread[name])
            self.loops.setdefault(name, set()).add(id(asyncio.get_event_loop()))
        try:
            time.sleep(self.sleep_s)
            return {"statusCode": 200, "body": name}
        finally:
            with self.lock:
                self.active -= 1
                self.active_per_thread[name] -= 1


@pytest.fixture
def gateway() -> Iterator[RestGateway]:
    with RestGateway(mangum_handler, admin_token=TOKEN, workers=2) as gw:
        yield gw


def serve(handler: LambdaHandler, **kwargs: Any) -> RestGateway:
    return RestGateway(handler, **kwargs).start()


# -- REQUESTS AND RESPONSES -------------------------------------------------------------------


def test_echo_passes_method_path_query_body_and_source_ip(gateway: RestGateway) -> None:
    response = requests.post(
        f"{gateway.url}/api/v1/a%20b?side=Bid&side=Ask&q=x+y",
        data=b'{"n":1}',
        headers={"X-Custom-Header": "v"},
        timeout=5,
    )

    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/api/v1/a b"
    assert echoed["query"] == [["side", "Bid"], ["side", "Ask"], ["q", "x y"]]
    assert echoed["body"] == '{"n":1}'
    assert echoed["client"] == "127.0.0.1"
    assert echoed["scheme"] == "http"
    event = echoed["event"]
    assert event["path"] == "/api/v1/a%20b"
    assert event["multiValueQueryStringParameters"] == {"side": ["Bid", "Ask"], "q": ["x y"]}
    assert event["headers"]["X-Custom-Header"] == "v"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["headers"]["X-Forwarded-Port"] == str(gateway.port)
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["identity"]["userArn"] is None
    assert event["requestContext"]["path"] == "/local/api/v1/a%20b"
    assert response.headers["x-amzn-RequestId"] == event["requestContext"]["requestId"]


def test_binary_body_round_trips_base64_both_ways(gateway: RestGateway) -> None:
    payload = bytes(range(256)) * 4

    response = requests.post(f"{gateway.url}/binary/reverse", data=payload, timeout=5)

    assert response.status_code == 200
    assert response.content == payload[::-1]
    assert response.headers["content-type"] == "application/octet-stream"


def test_unsupported_method_is_refused_without_invocation() -> None:
    recorder = Recorder()
    gw = serve(recorder)
    try:
        response = requests.request("PROPFIND", f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}
    assert recorder.calls == 0


def test_handler_raising_gives_502_and_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise ValueError("boom in handler")

    gw = serve(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="localgw.rest"):
            response = requests.get(f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert response.headers["content-type"] == "application/json"
    [record] = [r for r in caplog.records if "raised" in r.getMessage()]
    assert record.exc_info is not None
    assert "boom in handler" in caplog.text
    assert "Traceback" in caplog.text


def test_handler_raising_timeout_error_is_a_function_error_not_a_timeout() -> None:
    def redis_timed_out(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise TimeoutError("Timeout reading from socket")

    gw = serve(redis_timed_out)
    try:
        response = requests.get(f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert response.status_code == 502


def test_malformed_proxy_response_gives_502(caplog: pytest.LogCaptureFixture) -> None:
    gw = serve(lambda event, context: {"statusCode": 200, "body": {"not": "a string"}})
    try:
        with caplog.at_level(logging.ERROR, logger="localgw.rest"):
            response = requests.get(f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert "malformed Lambda proxy response" in caplog.text


def test_result_lambda_cannot_serialise_gives_502() -> None:
    gw = serve(lambda event, context: {"statusCode": 200, "body": "x", "extra": object()})
    try:
        response = requests.get(f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert response.status_code == 502


def test_slow_handler_gives_504_and_context_counts_down_the_timeout() -> None:
    remaining: list[int] = []

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        remaining.append(context.get_remaining_time_in_millis())
        time.sleep(0.4)
        return {"statusCode": 200, "body": "late"}

    gw = serve(slow, timeout_s=0.15)
    try:
        started = time.monotonic()
        response = requests.get(f"{gw.url}/x", timeout=5)
        elapsed = time.monotonic() - started
    finally:
        gw.stop()

    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}
    assert elapsed < 0.35
    assert 0 < remaining[0] <= 150


def test_request_timing_out_in_the_queue_is_never_invoked() -> None:
    recorder = Recorder(sleep_s=0.3)
    gw = serve(recorder, workers=1, timeout_s=0.15)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(requests.get, f"{gw.url}/first", timeout=5)
            time.sleep(0.05)
            second = pool.submit(requests.get, f"{gw.url}/second", timeout=5)
            statuses = [first.result().status_code, second.result().status_code]
        time.sleep(0.25)  # the first invocation ends; the queued one must not start
    finally:
        gw.stop()

    assert statuses == [504, 504]
    assert recorder.calls == 1


def test_body_over_the_limit_gives_413_without_invocation() -> None:
    recorder = Recorder()
    gw = serve(recorder, max_body_bytes=1024)
    try:
        at_limit = requests.post(f"{gw.url}/x", data=b"a" * 1024, timeout=5)
        over = requests.post(f"{gw.url}/x", data=b"a" * 1025, timeout=5)
        chunked_over = requests.post(f"{gw.url}/x", data=iter([b"a" * 700, b"b" * 700]), timeout=5)
    finally:
        gw.stop()

    assert at_limit.status_code == 200
    assert over.status_code == 413
    assert over.json() == {"message": "Request Too Long"}
    assert chunked_over.status_code == 413
    assert recorder.calls == 1


def test_compressed_body_is_passed_on_as_sent() -> None:
    seen: list[dict[str, Any]] = []

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200}

    compressed = gzip.compress(b'{"a":1}')
    gw = serve(record)
    try:
        requests.post(
            f"{gw.url}/x", data=compressed, headers={"Content-Encoding": "gzip"}, timeout=5
        )
    finally:
        gw.stop()

    assert seen[0]["isBase64Encoded"] is True
    assert base64.b64decode(seen[0]["body"]) == compressed


def test_payloads_over_lambdas_6_mb_limit_give_502() -> None:
    recorder = Recorder()
    gw = serve(recorder)
    big_response = serve(lambda event, context: {"statusCode": 200, "body": "x" * (6 << 20)})
    try:
        big_event = requests.post(f"{gw.url}/x", data=b"a" * (7 << 20), timeout=5)
        too_big_answer = requests.get(f"{big_response.url}/x", timeout=5)
    finally:
        gw.stop()
        big_response.stop()

    assert big_event.status_code == 502
    assert recorder.calls == 0
    assert too_big_answer.status_code == 502


# -- ADMIN ROUTES -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["missing", "wrong", "basic-scheme", "no-scheme", "longer"],
)
def test_admin_route_without_the_right_token_is_403(
    gateway: RestGateway, headers: dict[str, str]
) -> None:
    response = requests.get(f"{gateway.url}/admin/markets", headers=headers, timeout=5)

    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_admin_route_with_the_token_is_invoked_as_the_admin_user(gateway: RestGateway) -> None:
    response = requests.post(
        f"{gateway.url}/admin/markets",
        json={"symbol": "SOL_USDC"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )

    assert response.status_code == 200
    event = response.json()["event"]
    identity = event["requestContext"]["identity"]
    assert identity["userArn"] == "arn:aws:iam::000000000000:user/cloudex-local-admin"
    assert identity["caller"] == ADMIN_IDENTITY["caller"]
    assert identity["accessKey"] == ADMIN_IDENTITY["accessKey"]
    assert not any(name.lower() == "authorization" for name in event["headers"])
    assert not any(name.lower() == "authorization" for name in event["multiValueHeaders"])


def test_encoded_admin_path_is_still_guarded(gateway: RestGateway) -> None:
    response = requests.get(f"{gateway.url}/%61dmin/markets", timeout=5)

    assert response.status_code == 403


def test_non_admin_route_keeps_authorization_and_has_no_user(gateway: RestGateway) -> None:
    response = requests.get(
        f"{gateway.url}/api/v1/capital", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )

    event = response.json()["event"]
    assert event["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert event["requestContext"]["identity"]["userArn"] is None


def test_admin_route_without_a_configured_token_is_always_403() -> None:
    recorder = Recorder()
    gw = serve(recorder, admin_token=None)
    try:
        refused = [
            requests.get(f"{gw.url}/admin/x", headers=headers, timeout=5).status_code
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"})
        ]
    finally:
        gw.stop()

    assert refused == [403, 403, 403]
    assert recorder.calls == 0


# -- CONCURRENCY ------------------------------------------------------------------------------


def test_workers_run_in_parallel_one_invocation_each_and_queue_the_rest() -> None:
    recorder = Recorder(sleep_s=0.2)
    gw = serve(recorder, workers=4)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: requests.get(f"{gw.url}/{i}", timeout=5), range(8)))
        elapsed = time.monotonic() - started
    finally:
        gw.stop()

    assert [r.status_code for r in responses] == [200] * 8
    assert recorder.max_active == 4  # all four workers busy at once...
    assert recorder.max_per_thread == 1  # ...each with one invocation
    assert len({r.text for r in responses}) == 4
    assert 0.4 <= elapsed < 1.0  # eight 0.2 s invocations on four workers: two rounds


def test_each_worker_keeps_its_own_event_loop() -> None:
    recorder = Recorder(sleep_s=0.05)
    gw = serve(recorder, workers=3)
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: requests.get(f"{gw.url}/{i}", timeout=5), range(12)))
    finally:
        gw.stop()

    loops = list(recorder.loops.values())
    assert all(len(per_worker) == 1 for per_worker in loops)  # the same loop every time
    assert len(set.union(*loops)) == len(loops)  # and not another worker's


def test_context_has_what_handlers_read() -> None:
    seen: dict[str, Any] = {}

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.update(
            function_name=context.function_name,
            arn=context.invoked_function_arn,
            memory=context.memory_limit_in_mb,
            request_id=context.aws_request_id,
            stream=context.log_stream_name,
            group=context.log_group_name,
            version=context.function_version,
            api_request_id=event["requestContext"]["requestId"],
        )
        return {"statusCode": 200}

    gw = serve(record, function_name="api")
    try:
        requests.get(f"{gw.url}/x", timeout=5)
    finally:
        gw.stop()

    assert seen["function_name"] == "api"
    assert seen["arn"].endswith(":function:api")
    assert seen["memory"] > 0
    assert seen["request_id"] != seen["api_request_id"]
    assert "[$LATEST]" in seen["stream"]
    assert seen["group"] == "/aws/lambda/api"
    assert seen["version"] == "$LATEST"


# -- COMMAND LINE -----------------------------------------------------------------------------


def test_command_line_serves_reads_the_token_from_env_and_stops_on_sigterm() -> None:
    env = dict(os.environ, CLOUDEX_ADMIN_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localgw.rest",
            "--handler",
            "tests.integration.test_localgw_rest_http:cli_handler",
            "--port",
            "0",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        admin = requests.get(
            f"{url}/admin/x", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        public = requests.get(f"{url}/y", timeout=5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert admin.text == "/admin/x arn:aws:iam::000000000000:user/cloudex-local-admin"
    assert public.text == "/y None"
    assert TOKEN not in " ".join(process.args)  # type: ignore[arg-type]


def test_any_path_reaches_the_function_even_with_a_newline() -> None:
    # API Gateway's {proxy+} takes every path; a route pattern of ".*" would miss "\n".
    seen: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event["path"])
        return {"statusCode": 200, "body": "ok"}

    with RestGateway(handler) as gateway:
        response = requests.get(gateway.url + "/api/v1/x%0Ay", timeout=5)
    assert (response.status_code, response.text) == (200, "ok")
    assert seen == ["/api/v1/x%0Ay"]
