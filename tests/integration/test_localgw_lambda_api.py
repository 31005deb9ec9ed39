"""The local Lambda Invoke API (``localgw.lambda_api``) through a real boto3 Lambda client: results
and function errors as boto3 reports them, worker processes as execution environments (warm
reuse, parallelism, reserved concurrency, timeouts and crashes replaced), Event and DryRun
invocations, the API's errors, and workers ended by stop().

Needs no service: the Lambda service runs in this process on loopback, its workers are child
processes; the handlers are in ``tests/localgw_lambda_fixtures.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localgw.lambda_api import (
    EVENT_PAYLOAD_LIMIT_BYTES,
    RESPONSE_LIMIT_BYTES,
    SYNC_PAYLOAD_LIMIT_BYTES,
    FunctionConfig,
    LambdaService,
)

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.localgw_lambda_fixtures:handler"
FIXTURES = FunctionConfig(
    HANDLER, concurrency=2, timeout_s=5, memory_mb=256, environment={"FIXTURE_SETTING": "set"}
)
SHORT = FunctionConfig(HANDLER, concurrency=1, timeout_s=0.5)
MISSING_HANDLER = FunctionConfig("tests.localgw_lambda_fixtures:no_such_handler", concurrency=1)


def lambda_client(endpoint_url: str) -> Any:
    # One attempt: boto3 would otherwise retry throttles (429) and hide them.
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )


@pytest.fixture(scope="module")
def service() -> Iterator[LambdaService]:
    functions = {"fixtures": FIXTURES, "short": SHORT, "missing_handler": MISSING_HANDLER}
    with LambdaService(functions) as running:
        yield running


@pytest.fixture(scope="module")
def client(service: LambdaService) -> Any:
    return lambda_client(service.endpoint_url)


def invoke(client: Any, event: Any, function: str = "fixtures", **kwargs: Any) -> tuple[Any, Any]:
    response = client.invoke(FunctionName=function, Payload=json.dumps(event), **kwargs)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def request_id(response: Any) -> str:
    return str(response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a zombie (exited, not reaped) still answers
    except ProcessLookupError:
        return True
    return False


# -- RESULTS ----------------------------------------------------------------------------------


def test_invoke_returns_the_handler_result_computed_in_another_process(client: Any) -> None:
    response, result = invoke(client, {"action": "echo", "n": [1, "two"]})

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert result["event"] == {"action": "echo", "n": [1, "two"]}
    assert result["pid"] != os.getpid()


def test_sequential_invocations_reuse_one_warm_worker_and_its_module_state(client: Any) -> None:
    _, first = invoke(client, {"action": "echo"})
    _, second = invoke(client, {"action": "echo"})

    assert second["pid"] == first["pid"]
    assert second["invocations"] == first["invocations"] + 1


def test_concurrent_invocations_run_in_parallel_in_separate_processes(client: Any) -> None:
    def together(seconds: float) -> list[Any]:
        event = {"action": "sleep", "seconds": seconds}
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(invoke, client, event) for _ in "ab"]
            return [call.result()[1] for call in calls]

    together(0.2)  # both workers warm: no cold start in what is measured
    started = time.monotonic()
    results = together(0.5)
    elapsed = time.monotonic() - started

    assert results[0]["pid"] != results[1]["pid"]
    overlap = min(r["ended"] for r in results) - max(r["started"] for r in results)
    assert overlap > 0.4, f"the two invocations overlapped {overlap:.2f} s"
    assert elapsed < 0.9, f"two 0.5 s invocations took {elapsed:.2f} s"


def test_context_and_environment_reach_the_handler(client: Any) -> None:
    response, result = invoke(client, {"action": "context"})

    assert result["function_name"] == "fixtures"
    assert result["aws_request_id"] == request_id(response)
    assert 0 < result["remaining_ms"] <= 5000
    assert result["memory_limit_in_mb"] == 256
    environment = result["environment"]
    assert environment["FIXTURE_SETTING"] == "set"
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == "fixtures"
    assert environment["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert environment["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fixtures"
    assert environment["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert environment["AWS_REGION"] and environment["AWS_DEFAULT_REGION"]
    assert environment["_HANDLER"] == HANDLER


def test_a_function_is_found_by_arn_and_by_qualified_name(client: Any) -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:fixtures"
    names = [arn, f"{arn}:$LATEST", "fixtures:live", "000000000000:function:fixtures"]

    for name in names:
        response, result = invoke(client, {"action": "echo"}, function=name)
        assert response["StatusCode"] == 200 and result["event"] == {"action": "echo"}, name


def test_a_handler_can_invoke_its_own_function_through_the_service(
    service: LambdaService, client: Any
) -> None:
    event = {"action": "invoke_itself", "endpoint_url": service.endpoint_url}

    response, result = invoke(client, event)

    assert "FunctionError" not in response, result
    assert result["inner"]["event"] == {"action": "echo"}
    assert result["inner"]["pid"] != result["pid"]  # the other worker: this one is busy


def test_a_result_at_the_response_limit_is_returned(client: Any) -> None:
    response, result = invoke(client, {"action": "result_of_size", "bytes": RESPONSE_LIMIT_BYTES})

    assert "FunctionError" not in response
    assert len(result) == RESPONSE_LIMIT_BYTES - 2


# -- FUNCTION ERRORS --------------------------------------------------------------------------


def test_a_handler_exception_is_an_unhandled_function_error(client: Any) -> None:
    response, error = invoke(client, {"action": "raise", "message": "no such market"})

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "no such market"
    assert error["requestId"] == request_id(response)
    assert "localgw_lambda_fixtures.py" in error["stackTrace"][0]
    assert not any("lambda_api.py" in frame for frame in error["stackTrace"])


def test_a_result_that_is_not_json_is_a_marshal_error(client: Any) -> None:
    response, error = invoke(client, {"action": "unserialisable"})

    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response: Object of type set")


def test_a_result_over_the_response_limit_is_a_function_error(client: Any) -> None:
    event = {"action": "result_of_size", "bytes": RESPONSE_LIMIT_BYTES + 1}
    response, error = invoke(client, event)

    assert response["FunctionError"] == "Unhandled"
    assert error == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size"
        " (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }


def test_a_timeout_kills_the_worker_and_the_next_invocation_gets_a_new_one(client: Any) -> None:
    _, before = invoke(client, {"action": "echo"}, function="short")
    started = time.monotonic()

    response, error = invoke(client, {"action": "sleep", "seconds": 5}, function="short")
    elapsed = time.monotonic() - started
    _, after = invoke(client, {"action": "echo"}, function="short")

    assert response["FunctionError"] == "Unhandled"
    assert error == {
        "errorMessage": f"RequestId: {request_id(response)} Error: Task timed out after 0.50"
        " seconds",
        "errorType": "Sandbox.Timedout",
    }
    assert 0.5 <= elapsed < 1.5
    assert wait_for(lambda: process_gone(before["pid"])), "the timed-out worker is still alive"
    assert after["pid"] != before["pid"]
    assert after["invocations"] == 1  # a cold start: fresh module state


def test_a_worker_that_dies_is_an_exit_error_and_is_replaced(client: Any) -> None:
    _, before = invoke(client, {"action": "echo"})

    response, error = invoke(client, {"action": "exit", "code": 3})
    _, after = invoke(client, {"action": "echo"})

    assert response["FunctionError"] == "Unhandled"
    assert error == {
        "errorMessage": f"RequestId: {request_id(response)} Error: Runtime exited with error:"
        " exit status 3",
        "errorType": "Runtime.ExitError",
    }
    assert wait_for(lambda: process_gone(before["pid"])), "the dead worker was not reaped"
    assert after["event"] == {"action": "echo"}
    assert after["pid"] != before["pid"]


def test_an_init_error_is_reported_with_the_runtime_error_type(client: Any) -> None:
    response, error = invoke(client, {}, function="missing_handler")

    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert error["errorMessage"] == (
        "Handler 'no_such_handler' missing on module 'tests.localgw_lambda_fixtures'"
    )


# -- INVOCATION TYPES -------------------------------------------------------------------------


def test_an_event_invocation_is_accepted_at_once_and_run(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    response, body = invoke(
        client, {"action": "write", "path": str(marker)}, InvocationType="Event"
    )

    assert response["StatusCode"] == 202
    assert body is None
    assert wait_for(marker.exists), "the Event invocation did not run"
    pid, invocation_id = marker.read_text().split()
    assert int(pid) != os.getpid()
    assert invocation_id == request_id(response)


def test_a_dry_run_answers_204_and_runs_nothing(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    response, body = invoke(
        client, {"action": "write", "path": str(marker)}, InvocationType="DryRun"
    )
    invoke(client, {"action": "echo"})  # a later invocation: had anything been queued...

    assert response["StatusCode"] == 204
    assert body is None
    assert not marker.exists()


def test_a_synchronous_invocation_past_the_concurrency_is_throttled(
    client: Any, tmp_path: Path
) -> None:
    # Given both of the function's workers busy
    markers = [tmp_path / "first", tmp_path / "second"]
    with ThreadPoolExecutor(2) as pool:
        busy = [
            pool.submit(
                invoke, client, {"action": "sleep", "seconds": 1, "started_path": str(marker)}
            )
            for marker in markers
        ]
        assert wait_for(lambda: all(marker.exists() for marker in markers))

        # When a third invocation comes, Then it is throttled at once
        started = time.monotonic()
        with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
            invoke(client, {"action": "echo"})
        assert time.monotonic() - started < 0.5
        for call in busy:
            assert "FunctionError" not in call.result()[0]

    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert invoke(client, {"action": "echo"})[0]["StatusCode"] == 200  # and slots come back


# -- API ERRORS -------------------------------------------------------------------------------


def test_an_unknown_function_is_not_found(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:
        invoke(client, {}, function="no_such_function")

    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:no_such_function" in missing.value.response["Error"]["Message"]


def test_a_payload_that_is_not_json_is_invalid_request_content(client: Any) -> None:
    with pytest.raises(client.exceptions.InvalidRequestContentException) as invalid:
        client.invoke(FunctionName="fixtures", Payload=b"{not json")

    assert invalid.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("invocation_type", "limit", "status"),
    [("RequestResponse", SYNC_PAYLOAD_LIMIT_BYTES, 200), ("Event", EVENT_PAYLOAD_LIMIT_BYTES, 202)],
)
def test_a_request_at_the_payload_limit_is_accepted(
    client: Any, invocation_type: str, limit: int, status: int
) -> None:
    event = {"action": "echo", "padding": ""}
    event["padding"] = "x" * (limit - len(json.dumps(event)))

    response = client.invoke(
        FunctionName="fixtures", InvocationType=invocation_type, Payload=json.dumps(event)
    )

    assert response["StatusCode"] == status
    assert "FunctionError" not in response


@pytest.mark.parametrize(
    ("invocation_type", "limit"),
    [("RequestResponse", SYNC_PAYLOAD_LIMIT_BYTES), ("Event", EVENT_PAYLOAD_LIMIT_BYTES)],
)
def test_a_request_over_the_payload_limit_is_too_large(
    client: Any, invocation_type: str, limit: int
) -> None:
    payload = json.dumps("x" * (limit - 1))  # limit + 1 bytes with the quotes

    with pytest.raises(ClientError) as too_large:
        client.invoke(FunctionName="fixtures", InvocationType=invocation_type, Payload=payload)

    error = too_large.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"  # AWS's, not in botocore
    assert error["Error"]["Message"] == (
        f"{limit + 1} byte payload is too large for the {invocation_type} invocation type"
        f" (limit {limit} bytes)"
    )


# -- LIFECYCLE --------------------------------------------------------------------------------


def test_stop_ends_every_worker_idle_or_busy(tmp_path: Path) -> None:
    functions = {"fixtures": FunctionConfig(HANDLER, concurrency=2, timeout_s=60)}
    lambda_service = LambdaService(functions).start()
    client = lambda_client(lambda_service.endpoint_url)
    try:
        marker = tmp_path / "busy"
        event = {"action": "sleep", "seconds": 60, "started_path": str(marker)}
        invoke(client, event, InvocationType="Event")
        assert wait_for(marker.exists)
        busy_pid = int(marker.read_text())
        _, idle = invoke(client, {"action": "echo"})  # the other worker, idle afterwards
    finally:
        started = time.monotonic()
        lambda_service.stop()
        stopped_in = time.monotonic() - started

    assert busy_pid != idle["pid"]
    assert process_gone(idle["pid"]), "the idle worker outlived stop()"
    assert process_gone(busy_pid), "the busy worker outlived stop()"
    assert stopped_in < 6


def test_the_command_line_serves_until_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "localgw.lambda_api",
        "--function",
        f"echo={HANDLER},concurrency=1,timeout=5",
        "--port",
        "0",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert server.stderr is not None
        for line in server.stderr:
            lines.append(line)
            found = re.search(r"Lambda API on (http://\S+)", line)
            if found:
                break
        else:
            pytest.fail("".join(lines))
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep it drained

        _, result = invoke(lambda_client(found.group(1)), {"action": "echo"}, function="echo")
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert result["event"] == {"action": "echo"}
    assert exit_code == 0
    assert wait_for(lambda: process_gone(result["pid"]), 2), "the CLI left its worker running"
