"""The Lambda context object, as far as handlers and Powertools read it: one class for every
place the local gateway runs a handler (REST, WebSocket routes, Lambda Invoke, SQS polling)."""

from __future__ import annotations

import time
import uuid
from typing import Any

__all__ = ["ACCOUNT_ID", "REGION", "LambdaContext"]

ACCOUNT_ID = "000000000000"  # LocalStack's, so ARNs look alike across the local stack
REGION = "us-east-1"


class LambdaContext:
    """``get_remaining_time_in_millis`` counts down to ``deadline`` (``time.monotonic()``), or
    to ``timeout_s`` from now: the function's timeout, or the integration timeout of the
    request that invoked it, whichever ends first."""

    __slots__ = (
        "function_name",
        "function_version",
        "invoked_function_arn",
        "memory_limit_in_mb",
        "aws_request_id",
        "log_group_name",
        "log_stream_name",
        "identity",
        "client_context",
        "_deadline",
    )

    def __init__(
        self,
        function_name: str,
        *,
        deadline: float | None = None,
        timeout_s: float = 30.0,
        log_stream_name: str | None = None,
        memory_limit_in_mb: int = 1024,
        aws_request_id: str | None = None,
        region: str = REGION,
        account: str = ACCOUNT_ID,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = (
            log_stream_name or f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        )
        self.identity: Any = None  # Cognito identity: never, through API Gateway
        self.client_context: Any = None  # mobile SDK client context: never either
        self._deadline = time.monotonic() + timeout_s if deadline is None else deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
