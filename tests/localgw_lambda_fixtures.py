"""Lambda handlers for ``tests/integration/test_localgw_lambda_api.py``. They run in the worker
processes of ``localgw.lambda_api.LambdaService``, which import this module by name: one handler
doing what the event's ``action`` asks, so that one warm worker serves many tests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

# Module state: kept across the warm invocations of one worker, never shared between workers.
_invocations = 0

_ENVIRONMENT = (
    "FIXTURE_SETTING",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "_HANDLER",
)


def handler(event: Any, context: Any) -> Any:
    global _invocations
    _invocations += 1
    action = event.get("action", "echo") if isinstance(event, dict) else "echo"
    if action == "echo":
        return {"event": event, "pid": os.getpid(), "invocations": _invocations}
    if action == "sleep":
        started = time.time()
        if "started_path" in event:  # tells the test this invocation holds its worker
            _write(event["started_path"], str(os.getpid()))
        time.sleep(event["seconds"])
        return {"pid": os.getpid(), "started": started, "ended": time.time()}
    if action == "raise":
        raise ValueError(event["message"])
    if action == "exit":
        os._exit(event["code"])
    if action == "write":
        _write(event["path"], f"{os.getpid()} {context.aws_request_id}")
        return None
    if action == "context":
        return {
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "environment": {name: os.environ.get(name) for name in _ENVIRONMENT},
        }
    if action == "invoke_itself":  # as ws_fanout does for its shards
        import boto3  # only here: the other actions keep cold starts light

        client = boto3.client(
            "lambda",
            endpoint_url=event["endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        response = client.invoke(FunctionName=context.function_name, Payload=b'{"action": "echo"}')
        return {"pid": os.getpid(), "inner": json.loads(response["Payload"].read())}
    if action == "unserialisable":
        return {"a set": {1, 2}}
    if action == "result_of_size":
        return "x" * (event["bytes"] - 2)  # the JSON string's quotes make up the size
    raise ValueError(f"unknown action {action!r}")


def _write(path: str, text: str) -> None:
    # Whole or not at all: the test reads the file as soon as it exists.
    partial = Path(f"{path}.partial")
    partial.write_text(text)
    os.replace(partial, path)
