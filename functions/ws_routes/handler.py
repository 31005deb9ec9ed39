"""The WebSocket API's route functions: ``$connect``, ``$disconnect`` and ``$default``.

Each is a thin Lambda handler over :mod:`functions.ws_routes.frames` and the subscription
registry. Deployed as three functions from one asset (handlers ``connect``, ``disconnect``,
``default``); the local gateway invokes the same three. ``$default`` has a route response, so
the ``body`` it returns (an ack or an error frame) goes back to the client.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_websocket_event import (
    APIGatewayWebSocketEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudex.streams import WsErrorCode
from functions.ws_routes.frames import error_frame, handle_frame
from functions.ws_routes.runtime import WsRuntime
from functions.ws_routes.settings import WsSettings

__all__ = ["connect", "disconnect", "default", "make_routes", "runtime"]

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ws"))

_runtime: WsRuntime | None = None


def runtime() -> WsRuntime:
    """Built at the first invocation, so importing this module needs no environment."""
    global _runtime
    if _runtime is None:
        _runtime = WsRuntime(WsSettings.from_env())
    return _runtime


Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def make_routes(get_runtime: Callable[[], WsRuntime]) -> tuple[Handler, Handler, Handler]:
    """The three route handlers over the runtime ``get_runtime`` returns: the deployed
    functions' (from the environment), or a test's."""

    @logger.inject_lambda_context(clear_state=True)
    @event_source(data_class=APIGatewayWebSocketEvent)
    def connect(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
        context_data = event.request_context
        registry = get_runtime().registry
        registry.connect(context_data.connection_id, context_data.connected_at)
        if random.random() < 0.01:  # leftovers of lost $disconnects, a little at a time
            registry.sweep(get_runtime().now_ms())
        logger.info("connected", connection_id=context_data.connection_id)
        return {"statusCode": 200}

    @logger.inject_lambda_context(clear_state=True)
    @event_source(data_class=APIGatewayWebSocketEvent)
    def disconnect(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
        connection_id = event.request_context.connection_id
        get_runtime().registry.remove(connection_id)
        logger.info(
            "disconnected",
            connection_id=connection_id,
            status=event.request_context.disconnect_status_code,
            reason=event.request_context.disconnect_reason,
        )
        return {"statusCode": 200}

    @logger.inject_lambda_context(clear_state=True)
    @event_source(data_class=APIGatewayWebSocketEvent)
    def default(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
        connection_id = event.request_context.connection_id
        try:
            reply = handle_frame(get_runtime(), connection_id, event.decoded_body)
        except Exception:
            logger.exception("frame failed", connection_id=connection_id)
            reply = error_frame(None, WsErrorCode.SERVER_ERROR, "Internal error, try again")
        if reply is None:
            return {"statusCode": 200}
        return {"statusCode": 200, "body": reply}

    return connect, disconnect, default  # type: ignore[return-value]


connect, disconnect, default = make_routes(runtime)
