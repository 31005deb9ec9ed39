"""The local stand-in for an API Gateway WebSocket API whose routes are Lambda proxy integrations,
and for its management API (``@connections``), on one port.

Clients connect with a WebSocket client to ``ws://host:port/`` (or ``/{stage}``); the route
handlers ``handler(event, context)`` get the events API Gateway sends; the application pushes to
the clients with boto3's ``apigatewaymanagementapi`` client, whose ``endpoint_url`` is
``http://host:port`` (or ``http://host:port/{stage}``), unchanged from AWS. The events parse with
Powertools (``APIGatewayWebSocketEvent`` and the ``APIGatewayWebSocket*EventModel`` models).

What it emulates:

- ``$connect``: invoked before the upgrade is accepted, with the handshake's headers (plus the
  ``X-Forwarded-*`` and ``X-Amzn-Trace-Id`` headers API Gateway adds) and query parameters (the
  keys are absent, not null, when there are none, as in the events AWS sends). The handler
  refuses the connection by returning a ``statusCode`` outside 2xx, which the client gets as the
  handshake's status; a handler that raises gets the client a 500, one that times out a 504. A
  result without ``statusCode`` (or ``None``) accepts. A ``Sec-WebSocket-Protocol`` header in
  the result selects the subprotocol, as API Gateway requires of ``$connect`` integrations. The
  connection exists only once ``$connect`` has returned: posting to it from ``$connect`` gets 410;
- ``$default``: one invocation per text message (``eventType`` ``MESSAGE``, a fresh
  ``messageId``). The ``body`` of the result goes back to the client as a text frame, as with a
  route response, which the deployment configures for ``$default``; a handler that raises or
  returns a malformed result gets the client API Gateway's ``{"message": "Internal server
  error", "connectionId":..., "requestId":...}`` frame (and the traceback is logged), one that
  times out ``{"message": "Endpoint request timed out", ...}``. A binary frame is refused: the
  connection closes with 1003, as API Gateway does (it takes text frames only);
- ``$disconnect``: invoked once per connection whose ``$connect`` accepted, after the
  connection is gone (posting to it then gets 410), whoever closed it, with
  ``disconnectStatusCode`` and ``disconnectReason``: the client's close code and reason (1005
  ``Client-side close frame status not set`` when its close frame has no code, 1006 when the
  TCP connection dropped without one); 1000 ``Connection Closed Normally`` after a DELETE; 1001
  ``Going away`` after the idle timeout, the maximum duration, or ``stop()``; 1009 for a frame
  or a message over the limits; 1003 for a binary frame; 1008 when the client does not read
  fast enough (below). Its result is ignored, as in AWS;
- the management API at ``/@connections/{id}`` and ``/{stage}/@connections/{id}``: POST sends
  the body as one text frame (a binary frame when it is not UTF-8) and answers 200 at once; GET
  answers ``connectedAt``, ``identity`` (``sourceIp``, ``userAgent``) and ``lastActiveAt``
  (the service model's JSON names: boto3 returns them as ``ConnectedAt``, ``Identity``...);
  DELETE answers 204 and closes the connection with 1000, after the messages already posted to
  it. An unknown or closed id gets 410 ``GoneException`` (``{"message":null}``), data over
  128 KB 413 ``PayloadTooLargeException``, both with ``x-amzn-ErrorType`` so that boto3 raises
  ``client.exceptions.GoneException`` and ``PayloadTooLargeException``;
- the quotas: frames of at most 32 KB and messages of at most 128 KB from the client (over
  either, the connection closes with 1009); an idle timeout of 10 minutes and a maximum
  duration of 2 hours (1001 ``Going away``); the 29 s integration timeout; ids (connection,
  request, message) in API Gateway's format: 16 characters of URL-safe base64 ending in ``=``;
- PING frames are answered with PONG. They do not count as activity for the idle timeout, nor
  do PONGs: only data messages, in either direction, do. AWS documents an idle timeout without
  saying what resets it; server-to-client messages do (services keep connections open by
  posting every few minutes), and API Gateway is reported not to act on control frames. This
  is the stricter reading, so a client kept open only by its pings (ccxt.pro sends one every
  119 s) is closed here as it may be in AWS, rather than surviving here and not there;
- Lambda's concurrency as the REST gateway emulates it: ``workers`` threads shared by the three
  routes, each running one invocation at a time with its own event loop; each invocation gets
  a fresh ``LambdaContext`` (``ws-connect``, ``ws-default``, ``ws-disconnect``) whose remaining
  time counts down from the integration timeout.

What it does not emulate, or does differently:

- message order: the messages of one connection are handled one at a time in arrival order,
  each invocation after the previous one returned. API Gateway promises no order: it invokes
  the integration for each message as it arrives, so concurrent invocations for one connection
  may finish in any order. ``$disconnect`` may run while a ``$default`` invocation of the same
  connection still does, as in AWS; messages received before the close are still handled;
- a client that does not read: each connection has an outbound queue drained by its own writer
  task, so a POST never waits for a client. When more than ``send_buffer_bytes`` are queued
  for a connection, the POST that went over gets 410 and the connection closes with 1008
  (policy violation, reason ``Send buffer full``), without waiting for the client to take its
  close frame. AWS documents ``LimitExceededException`` (429) for a full client-side buffer and
  does not say it closes the connection; here the connection goes, so that a stuck client
  does not hold memory, and the 410 spares boto3 the retries (with back-off) it makes on 429;
- outbound frames: a posted message goes as one frame, however large (API Gateway splits
  messages over 32 KB into frames of 32 KB). The binary frame for non-UTF-8 data was not
  checked against AWS; nor were the bodies of the 413 and of a refused ``$connect``'s
  response, the reasons for 1003, 1006, 1008 and 1009, the close code and reason for the
  maximum duration (1001 ``Going away`` is what AWS reports after the idle timeout), and the
  reason sent in the close frame after a DELETE (here the ``disconnectReason``);
- compression: permessage-deflate is never negotiated (API Gateway does not offer it);
- a frame guard: aiohttp limits whole messages only, so a small wrapper in front of its frame
  parser reads frame headers to enforce the 32 KB frame limit (a private hook into aiohttp:
  if a future version breaks it, only messages are limited, and a warning is logged);
- SigV4 (the management API takes any request, signed or not; boto3 signs with whatever
  credentials it finds, dummy ones included), IAM authorisation of ``$connect``, Lambda
  authorizers, API keys, custom routes and route selection expressions (every message goes
  to ``$default``), non-proxy integrations and mapping templates, throttling, the rate limit
  on new connections, TLS, and more containers on demand (when every worker is busy,
  invocations wait in a queue, and the wait counts against the integration timeout).

Run it from the command line::

    python -m localgw.websocket --connect functions.ws_routes.handler:connect \\
        --disconnect functions.ws_routes.handler:disconnect \\
        --default functions.ws_routes.handler:default --port 8001 --workers 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError, WebSocketWriter

from localgw.handlers import import_handler
from localgw.lambda_context import LambdaContext
from localgw.rest import (  # events of the same conventions as the REST gateway's
    LambdaHandler,
    format_request_time,
    group_headers,
    query_parameters,
)
from localgw.server import LambdaWorkers, ThreadedServer, catch_stop_signals

__all__ = [
    "API_ID",
    "MAX_FRAME_BYTES",
    "MAX_MESSAGE_BYTES",
    "IDLE_TIMEOUT_S",
    "MAX_DURATION_S",
    "INTEGRATION_TIMEOUT_S",
    "SEND_BUFFER_BYTES",
    "IntegrationTimeout",
    "ConnectionInfo",
    "new_id",
    "connect_event",
    "message_event",
    "disconnect_event",
    "WebSocketGateway",
    "main",
]

API_ID = "cloudexwss"
MAX_FRAME_BYTES: Final = 32 * 1024
MAX_MESSAGE_BYTES: Final = 128 * 1024
IDLE_TIMEOUT_S: Final = 600.0
MAX_DURATION_S: Final = 7200.0
INTEGRATION_TIMEOUT_S: Final = 29.0
SEND_BUFFER_BYTES: Final = 1024 * 1024

# Close codes, and the disconnectReason reported with them: as seen in $disconnect events AWS
# sent for the first three; this gateway's own wording for the others.
_NORMAL: Final = (1000, "Connection Closed Normally")  # after a DELETE
_GOING_AWAY: Final = (1001, "Going away")  # after the idle timeout
_NO_STATUS_CODE: Final = 1005
_NO_STATUS_REASON: Final = "Client-side close frame status not set"
_BINARY_REFUSED: Final = (1003, "Binary frames are not supported")
_ABNORMAL: Final = (1006, "Connection closed abnormally")
_SEND_BUFFER_FULL: Final = (1008, "Send buffer full")
_TOO_BIG: Final = (1009, "Message too big")

# A server-initiated close waits this long for the client's close frame (and, after a DELETE,
# for the messages posted before it to be written), then drops the TCP connection.
_CLOSE_GRACE_S = 2.0
# stop(): how long the connections get to close and their $disconnect invocations to run.
_STOP_GRACE_S = 5.0

logger = logging.getLogger(__name__)


class IntegrationTimeout(Exception):
    """The route handler did not return within the integration timeout."""


# -- EVENTS -----------------------------------------------------------------------------------


def new_id() -> str:
    """An id in API Gateway's format (connection, request and message ids): 11 bytes in URL-safe
    base64, 16 characters ending in ``=``, e.g. ``BFaT_fALIAMCKug=``. Random, where AWS's carry
    a time-based prefix."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What API Gateway keeps of a connection and repeats in every event of it."""

    connection_id: str
    source_ip: str
    user_agent: str | None
    connected_at_ms: int
    stage: str
    domain_name: str


def _request_context(
    info: ConnectionInfo,
    route_key: str,
    event_type: str,
    now: float,
    request_id: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    # The request id and the extended one are the same string in the events AWS sends.
    request_id = request_id or new_id()
    identity: dict[str, str] = {"sourceIp": info.source_ip}
    if info.user_agent is not None:
        identity["userAgent"] = info.user_agent
    return {
        "routeKey": route_key,
        **(extra or {}),
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": format_request_time(now),
        "messageDirection": "IN",
        "stage": info.stage,
        "connectedAt": info.connected_at_ms,
        "requestTimeEpoch": int(now * 1000),
        "identity": identity,
        "requestId": request_id,
        "domainName": info.domain_name,
        "connectionId": info.connection_id,
        "apiId": API_ID,
    }


def connect_event(
    info: ConnectionInfo,
    headers: Sequence[tuple[str, str]],
    query: str,
    *,
    now: float | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``$connect`` event: the handshake's ``headers`` (as the client sent them, plus what
    API Gateway adds) and its ``query`` string (percent-encoded, without the ``?``)."""
    single_headers, multi_headers = group_headers(headers)
    event: dict[str, Any] = {"headers": single_headers, "multiValueHeaders": multi_headers}
    single_query, multi_query = query_parameters(query)
    if single_query is not None:
        event["queryStringParameters"] = single_query
        event["multiValueQueryStringParameters"] = multi_query
    event["requestContext"] = _request_context(
        info, "$connect", "CONNECT", time.time() if now is None else now, request_id
    )
    event["isBase64Encoded"] = False
    return event


def message_event(
    info: ConnectionInfo,
    body: str,
    *,
    now: float | None = None,
    request_id: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The ``$default`` event for a text message (API Gateway sends no headers with these)."""
    return {
        "requestContext": _request_context(
            info,
            "$default",
            "MESSAGE",
            time.time() if now is None else now,
            request_id,
            {"messageId": message_id or new_id()},
        ),
        "body": body,
        "isBase64Encoded": False,
    }


def disconnect_event(
    info: ConnectionInfo,
    status_code: int,
    reason: str,
    *,
    now: float | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``$disconnect`` event, with the headers AWS sends with it (not the client's)."""
    headers = {"Host": info.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    return {
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "requestContext": _request_context(
            info,
            "$disconnect",
            "DISCONNECT",
            time.time() if now is None else now,
            request_id,
            {"disconnectStatusCode": status_code, "disconnectReason": reason},
        ),
        "isBase64Encoded": False,
    }


def _gateway_error_frame(message: str, connection_id: str, request_id: str) -> str:
    # The frame API Gateway sends when a route's integration fails, spaced as AWS spaces it.
    return (
        f'{{"message": {json.dumps(message)}, "connectionId":{json.dumps(connection_id)}, '
        f'"requestId":{json.dumps(request_id)}}}'
    )


def _iso_8601(epoch_s: float) -> str:
    t = time.gmtime(epoch_s)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(epoch_s * 1000) % 1000:03d}Z"


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- THE FRAME LIMIT --------------------------------------------------------------------------


class _FrameLimit:
    """Stands in front of aiohttp's WebSocket frame parser to enforce API Gateway's limit on a
    single frame, which aiohttp does not have (its ``max_msg_size`` bounds whole messages).

    It reads the frame headers in the byte stream and skips the payloads, passing every byte on
    to the parser. At a data frame over the limit it passes on what came before, then fails the
    connection's message queue with a 1009 ``WebSocketError``, as aiohttp's parser does with a
    message over its limit: ``receive()`` then sends the client a 1009 close frame."""

    __slots__ = ("_parser", "_data_queue", "_max_frame_bytes", "_header", "_payload_left", "_over")

    def __init__(self, parser: Any, data_queue: Any, max_frame_bytes: int) -> None:
        self._parser = parser
        self._data_queue = data_queue
        self._max_frame_bytes = max_frame_bytes
        self._header = bytearray()  # a frame header that is not complete yet
        self._payload_left = 0  # bytes of the current frame's payload still to come
        self._over = False

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._over:
            return True, b""
        oversized_at = self._find_oversized_frame(data)
        if oversized_at is None:
            result: tuple[bool, bytes] = self._parser.feed_data(data)
            return result
        self._over = True
        if oversized_at > 0:
            self._parser.feed_data(data[:oversized_at])
        self._data_queue.set_exception(
            WebSocketError(
                WSCloseCode.MESSAGE_TOO_BIG,
                f"Frame size exceeds limit {self._max_frame_bytes}",
            )
        )
        return True, b""  # what aiohttp's parser returns after an error: stop reading

    def _find_oversized_frame(self, data: bytes) -> int | None:
        """Where the first data frame over the limit starts in ``data`` (0 if its header began
        in an earlier chunk), or None."""
        header = self._header
        position, size = 0, len(data)
        frame_start = 0
        while position < size:
            if self._payload_left:
                step = min(self._payload_left, size - position)
                self._payload_left -= step
                position += step
                continue
            if not header:
                frame_start = position
            header.append(data[position])
            position += 1
            if len(header) < 2:
                continue
            length = header[1] & 0x7F
            masked = header[1] & 0x80
            needed = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
            if len(header) < needed:
                continue
            if length == 126:
                length = int.from_bytes(header[2:4], "big")
            elif length == 127:
                length = int.from_bytes(header[2:10], "big")
            is_data_frame = (header[0] & 0x0F) < 0x8  # opcodes 0x8 and up: control frames
            header.clear()
            if is_data_frame and length > self._max_frame_bytes:
                return frame_start
            self._payload_left = length
        return None


class _GatewayWebSocket(web.WebSocketResponse):
    """aiohttp's server WebSocket with the frame limit installed in front of its parser."""

    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_frame_bytes = max_frame_bytes

    def _post_start(
        self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        super()._post_start(request, protocol, writer)
        # Private parts of aiohttp (3.14): the request handler's payload parser, which it feeds
        # every byte read after the upgrade, and this response's message queue.
        handler = request.protocol
        parser = getattr(handler, "_payload_parser", None)
        data_queue = getattr(self, "_reader", None)
        if parser is None or data_queue is None or not hasattr(data_queue, "set_exception"):
            logger.warning(
                "aiohttp internals changed: the %d-byte frame limit is not enforced",
                self._max_frame_bytes,
            )
            return
        handler._payload_parser = _FrameLimit(parser, data_queue, self._max_frame_bytes)


# -- CONNECTIONS ------------------------------------------------------------------------------


class _Connection:
    """One open connection: its socket, the queues on both sides, and how it ended."""

    __slots__ = (
        "info",
        "ws",
        "transport",
        "last_active",
        "outbound",
        "queued_bytes",
        "writer_wakeup",
        "draining",
        "writer",
        "inbound",
        "inbound_wakeup",
        "receiving",
        "dispatcher",
        "idle_timer",
        "lifetime_timer",
        "close_code",
        "close_reason",
        "closer",
        "gone",
    )

    def __init__(self, info: ConnectionInfo, ws: _GatewayWebSocket, now: float) -> None:
        self.info = info
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.last_active = now  # loop time of the last data message, either way
        # Frames posted and not yet written to the socket, and their total size.
        self.outbound: deque[tuple[bytes, WSMsgType]] = deque()
        self.queued_bytes = 0
        self.writer_wakeup = asyncio.Event()
        self.draining = False  # the writer ends once the queue is empty
        self.writer: asyncio.Task[None] | None = None
        # Messages received (with the time they came) and not yet handed to $default.
        self.inbound: deque[tuple[str, float]] = deque()
        self.inbound_wakeup = asyncio.Event()
        self.receiving = True
        self.dispatcher: asyncio.Task[None] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.lifetime_timer: asyncio.TimerHandle | None = None
        # Set once, by whoever closes first: the $disconnect event reports them.
        self.close_code: int | None = None
        self.close_reason = ""
        self.closer: asyncio.Task[None] | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def record_close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason


# -- THE GATEWAY ------------------------------------------------------------------------------


class WebSocketGateway(ThreadedServer):
    """An API Gateway WebSocket API (Lambda proxy routes ``$connect``, ``$disconnect`` and
    ``$default``) and its management API, served on one port from a thread of its own.

    ``start()`` returns once it listens (``port=0`` picks a free port); ``stop()`` closes every
    connection with 1001 and runs its ``$disconnect`` (``_STOP_GRACE_S`` in all), stops serving,
    then stops the workers. Usable as a context manager."""

    _thread_name = "ws-gateway"
    _description = "the WebSocket gateway"
    _logger = logger
    _stop_grace_s = _STOP_GRACE_S

    def __init__(
        self,
        connect: LambdaHandler,
        disconnect: LambdaHandler,
        default: LambdaHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 8,
        stage: str = "local",
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_duration_s: float = MAX_DURATION_S,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        send_buffer_bytes: int = SEND_BUFFER_BYTES,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        lambda_workers = LambdaWorkers(workers, name_prefix="lambda-ws", logger=logger)
        for name, value in (
            ("idle_timeout_s", idle_timeout_s),
            ("max_duration_s", max_duration_s),
            ("max_frame_bytes", max_frame_bytes),
            ("max_message_bytes", max_message_bytes),
            ("send_buffer_bytes", send_buffer_bytes),
            ("integration_timeout_s", integration_timeout_s),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, was {value}")
        if not stage or "/" in stage:
            raise ValueError(f"a stage is one path segment, not {stage!r}")
        super().__init__(host=host, port=port, workers=lambda_workers)
        self.connect_handler = connect
        self.disconnect_handler = disconnect
        self.default_handler = default
        self.workers = workers
        self.stage = stage
        self.idle_timeout_s = idle_timeout_s
        self.max_duration_s = max_duration_s
        self.max_frame_bytes = max_frame_bytes
        self.max_message_bytes = max_message_bytes
        self.send_buffer_bytes = send_buffer_bytes
        self.integration_timeout_s = integration_timeout_s
        # Open connections by id: only the server thread's loop touches it (len() excepted).
        self._connections: dict[str, _Connection] = {}
        # Accepted connections whose $disconnect has not returned yet (stop() waits for them).
        self._unfinished: set[_Connection] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._lambda_workers = lambda_workers  # the base class's workers, known to be there

    # -- PROPERTIES ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where WebSocket clients connect: ``ws://host:port/``."""
        return f"ws://{self._authority}/"

    @property
    def management_endpoint(self) -> str:
        """The ``endpoint_url`` of a boto3 ``apigatewaymanagementapi`` client."""
        return f"http://{self._authority}"

    @property
    def connection_count(self) -> int:
        """How many connections are open (accepted, and not closing)."""
        return len(self._connections)

    # -- WORKERS ------------------------------------------------------------------------------

    async def _invoke(
        self, handler: LambdaHandler, function_name: str, event: dict[str, Any]
    ) -> Any:
        """Run ``handler`` on a worker; its result, or what it raised.

        Raises
        ------
        IntegrationTimeout
            If it did not return within the integration timeout (counting its wait for a
            worker); it runs on all the same, as in AWS.
        """

        def invoke(log_stream_name: str) -> Any:  # on a worker
            context = LambdaContext(
                function_name,
                timeout_s=self.integration_timeout_s,
                log_stream_name=log_stream_name,
            )
            return handler(event, context)

        invocation = await self._lambda_workers.invoke(invoke, timeout_s=self.integration_timeout_s)
        if invocation.cancelled():
            raise IntegrationTimeout(f"{function_name} timed out")
        return invocation.result()

    # -- SERVER -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        self._stopping = False  # from an earlier stop(), when started again
        # aiohttp refuses a body over the limit as it reads it; _post answers that with a 413.
        app = web.Application(client_max_size=self.max_message_bytes)
        connection_path = "/@connections/{connection_id}"
        app.router.add_route("*", connection_path, self._manage)
        app.router.add_route("*", f"/{self.stage}{connection_path}", self._manage)
        app.router.add_get("/", self._accept)
        app.router.add_get(f"/{self.stage}", self._accept)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._forbidden)
        await self._serve_app(app, on_stop=self._close_all, shutdown_timeout=_CLOSE_GRACE_S)

    async def _close_all(self) -> None:
        self._stopping = True
        for conn in list(self._connections.values()):
            self._close(conn, *_GOING_AWAY)
        unfinished = [conn.gone for conn in self._unfinished]
        if unfinished:
            _, late = await asyncio.wait(unfinished, timeout=_STOP_GRACE_S)
            if late:
                logger.warning("stopped with %d $disconnect invocations unfinished", len(late))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- CONNECTING ---------------------------------------------------------------------------

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        if not web.WebSocketResponse().can_prepare(request).ok:
            return _json_response(426, {"message": "Upgrade Required"})
        if self._stopping:
            return _json_response(503, {"message": "Service Unavailable"})
        loop = asyncio.get_running_loop()
        now = time.time()
        source_ip = request.remote or "127.0.0.1"
        info = ConnectionInfo(
            connection_id=new_id(),
            source_ip=source_ip,
            user_agent=request.headers.get("User-Agent"),
            connected_at_ms=int(now * 1000),
            stage=self.stage,
            domain_name=self._authority,
        )
        headers = [
            (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
            for name, value in request.raw_headers
        ]
        event = connect_event(
            info,
            self._forwarded(headers, source_ip),
            request.raw_path.partition("?")[2],
            now=now,
        )
        try:
            result = await self._invoke(self.connect_handler, "ws-connect", event)
        except IntegrationTimeout:
            logger.warning("$connect %s timed out", info.connection_id)
            return _json_response(504, {"message": "Endpoint request timed out"})
        except Exception as exc:
            logger.error("$connect %s: the handler raised", info.connection_id, exc_info=exc)
            return _json_response(500, {"message": "Internal server error"})
        try:
            status, subprotocol = _connect_outcome(result)
        except ValueError as exc:
            logger.error(
                "$connect %s: malformed Lambda proxy response: %s", info.connection_id, exc
            )
            return _json_response(500, {"message": "Internal server error"})
        if not 200 <= status <= 299:
            body = result.get("body") if isinstance(result, dict) else None
            return web.Response(status=status, text=body if isinstance(body, str) else None)

        ws = _GatewayWebSocket(
            max_frame_bytes=self.max_frame_bytes,
            max_msg_size=self.max_message_bytes + 1,  # aiohttp refuses a message of exactly this
            protocols=(subprotocol,) if subprotocol else (),
            compress=False,
            autoping=True,
            timeout=_CLOSE_GRACE_S,
        )
        conn = _Connection(info, ws, loop.time())
        self._unfinished.add(conn)
        # The connection exists from here on, before the client gets its 101: whoever learns
        # the id can post to it, and posts wait in its queue until the writer starts.
        self._connections[info.connection_id] = conn
        try:
            await ws.prepare(request)
        except (ConnectionError, RuntimeError) as exc:  # the client left while $connect ran
            logger.debug("connection %s lost before the upgrade: %s", info.connection_id, exc)
            if self._connections.get(info.connection_id) is conn:
                del self._connections[info.connection_id]
            conn.record_close(*_ABNORMAL)
            conn.receiving = False
            self._spawn(self._disconnect(conn))
            return ws
        conn.transport = request.transport
        conn.writer = loop.create_task(self._write(conn))
        conn.dispatcher = loop.create_task(self._dispatch(conn))
        conn.idle_timer = loop.call_at(conn.last_active + self.idle_timeout_s, self._idle, conn)
        conn.lifetime_timer = loop.call_later(self.max_duration_s, self._close, conn, *_GOING_AWAY)
        logger.debug("connection %s open from %s", info.connection_id, source_ip)
        if conn.close_code is not None:  # closed (DELETE, stop()) while the upgrade went out
            conn.closer = loop.create_task(
                self._close_socket(conn, conn.close_code, conn.close_reason, flush=True)
            )
        elif self._stopping:  # stop() began while $connect ran
            self._close(conn, *_GOING_AWAY)
        try:
            await self._receive(conn)
        finally:
            await self._finish(conn)
        return ws

    def _forwarded(self, headers: list[tuple[str, str]], source_ip: str) -> list[tuple[str, str]]:
        # What API Gateway adds to the handshake's headers (the scheme and port are local).
        present = {name.lower() for name, _ in headers}
        dropped = {"x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"}
        out = [(name, value) for name, value in headers if name.lower() not in dropped]
        out.append(("X-Forwarded-For", source_ip))
        out.append(("X-Forwarded-Port", str(self.port)))
        out.append(("X-Forwarded-Proto", "http"))
        if "x-amzn-trace-id" not in present:
            out.append(("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"))
        return out

    # -- RECEIVING ----------------------------------------------------------------------------

    async def _receive(self, conn: _Connection) -> None:
        """Read the client's messages until the connection closes, and note how it closed."""
        ws = conn.ws
        loop = asyncio.get_running_loop()
        while True:
            message = await ws.receive()  # answers PINGs itself, and skips PONGs
            kind = message.type
            if kind is WSMsgType.TEXT:
                conn.last_active = loop.time()
                conn.inbound.append((message.data, time.time()))
                conn.inbound_wakeup.set()
            elif kind is WSMsgType.BINARY:
                self._close(conn, *_BINARY_REFUSED)  # receive() returns CLOSING next
            elif kind is WSMsgType.CLOSE:
                code = int(message.data or 0)
                if code:
                    conn.record_close(code, message.extra or "")
                else:
                    conn.record_close(_NO_STATUS_CODE, _NO_STATUS_REASON)
                return
            elif kind is WSMsgType.ERROR:  # a protocol error: aiohttp has sent its close frame
                error = message.data
                if isinstance(error, WebSocketError) and error.code == _TOO_BIG[0]:
                    conn.record_close(*_TOO_BIG)
                elif isinstance(error, WebSocketError):
                    conn.record_close(error.code, str(error))
                else:
                    conn.record_close(*_ABNORMAL)
                return
            else:  # CLOSING (closed from this side) or CLOSED (the TCP connection went)
                conn.record_close(*_ABNORMAL)
                return

    async def _dispatch(self, conn: _Connection) -> None:
        """Hand the connection's messages to ``$default`` one at a time, in arrival order; what
        arrived before the close is still handled."""
        while True:
            if not conn.inbound:
                if not conn.receiving:
                    return
                conn.inbound_wakeup.clear()
                await conn.inbound_wakeup.wait()
                continue
            text, received_at = conn.inbound.popleft()
            reply = await self._route(conn, text, received_at)
            if reply is not None and self._connections.get(conn.info.connection_id) is conn:
                self._enqueue(conn, reply.encode("utf-8"), WSMsgType.TEXT)

    async def _route(self, conn: _Connection, text: str, received_at: float) -> str | None:
        """Invoke ``$default`` with a message; the frame to send back, if any."""
        event = message_event(conn.info, text, now=received_at)
        request_id = event["requestContext"]["requestId"]
        connection_id = conn.info.connection_id
        try:
            result = await self._invoke(self.default_handler, "ws-default", event)
        except IntegrationTimeout:
            logger.warning("$default %s on %s timed out", request_id, connection_id)
            return _gateway_error_frame("Endpoint request timed out", connection_id, request_id)
        except Exception as exc:
            logger.error(
                "$default %s on %s: the handler raised", request_id, connection_id, exc_info=exc
            )
            return _gateway_error_frame("Internal server error", connection_id, request_id)
        if result is None:
            return None
        body = result.get("body") if isinstance(result, dict) else result
        if body is None or isinstance(body, str):
            return body
        logger.error(
            "$default %s on %s: malformed Lambda proxy response: the %s is a %s, not a string",
            request_id,
            connection_id,
            "body" if isinstance(result, dict) else "result",
            type(body).__name__,
        )
        return _gateway_error_frame("Internal server error", connection_id, request_id)

    # -- SENDING ------------------------------------------------------------------------------

    def _enqueue(self, conn: _Connection, data: bytes, opcode: WSMsgType) -> bool:
        """Queue a frame for the connection's writer; False if that overflowed its buffer, which
        closes it."""
        conn.outbound.append((data, opcode))
        conn.queued_bytes += len(data)
        if conn.queued_bytes > self.send_buffer_bytes:
            self._close(conn, *_SEND_BUFFER_FULL, flush=False)
            return False
        conn.last_active = asyncio.get_running_loop().time()
        conn.writer_wakeup.set()
        return True

    async def _write(self, conn: _Connection) -> None:
        """Write the connection's queued frames in order; the only task that waits for the
        client to take them."""
        ws, outbound, wakeup = conn.ws, conn.outbound, conn.writer_wakeup
        try:
            while True:
                if outbound:
                    data, opcode = outbound[0]
                    await ws.send_frame(data, opcode)
                    outbound.popleft()
                    conn.queued_bytes -= len(data)
                elif conn.draining:
                    return
                else:
                    wakeup.clear()
                    await wakeup.wait()
        except ConnectionError:
            return  # the client went away: _receive notices and finishes the connection

    # -- CLOSING ------------------------------------------------------------------------------

    def _idle(self, conn: _Connection) -> None:
        # Activity only moves last_active; the timer fires at the old deadline and looks again.
        loop = asyncio.get_running_loop()
        due = conn.last_active + self.idle_timeout_s
        if loop.time() >= due:
            self._close(conn, *_GOING_AWAY)
        else:
            conn.idle_timer = loop.call_at(due, self._idle, conn)

    def _close(self, conn: _Connection, code: int, reason: str, *, flush: bool = True) -> None:
        """Close the connection from this side: it is gone at once for the management API;
        ``flush`` writes what was already posted to it before the close frame."""
        if conn.close_code is not None:
            return
        conn.record_close(code, reason)
        if self._connections.get(conn.info.connection_id) is conn:
            del self._connections[conn.info.connection_id]
        if conn.writer is None:
            return  # the upgrade is still going out: _accept closes the socket once it has
        conn.closer = asyncio.get_running_loop().create_task(
            self._close_socket(conn, code, reason, flush)
        )

    async def _close_socket(self, conn: _Connection, code: int, reason: str, flush: bool) -> None:
        writer = conn.writer
        try:
            async with asyncio.timeout(_CLOSE_GRACE_S):
                if writer is not None and not writer.done():
                    if flush:
                        conn.draining = True
                        conn.writer_wakeup.set()
                        await asyncio.wait({writer})
                    else:
                        writer.cancel()
                await conn.ws.close(code=code, message=reason.encode("utf-8"))
        except TimeoutError:  # the client does not read, or does not answer the close
            if writer is not None:
                writer.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        except Exception:
            logger.debug("closing %s", conn.info.connection_id, exc_info=True)
            if conn.transport is not None:
                conn.transport.abort()

    async def _finish(self, conn: _Connection) -> None:
        """The connection is over: forget it, stop its tasks, and run ``$disconnect``."""
        if self._connections.get(conn.info.connection_id) is conn:
            del self._connections[conn.info.connection_id]
        for timer in (conn.idle_timer, conn.lifetime_timer):
            if timer is not None:
                timer.cancel()
        conn.receiving = False
        conn.inbound_wakeup.set()  # the dispatcher handles what is left, then ends
        if conn.closer is not None:
            await asyncio.wait({conn.closer})  # bounded by _CLOSE_GRACE_S
        elif conn.writer is not None:
            conn.writer.cancel()
        logger.debug(
            "connection %s closed: %s %s",
            conn.info.connection_id,
            conn.close_code,
            conn.close_reason,
        )
        self._spawn(self._disconnect(conn))

    async def _disconnect(self, conn: _Connection) -> None:
        code, reason = conn.close_code or _ABNORMAL[0], conn.close_reason
        event = disconnect_event(conn.info, code, reason)
        try:
            await self._invoke(self.disconnect_handler, "ws-disconnect", event)
        except IntegrationTimeout:
            logger.warning("$disconnect of %s timed out", conn.info.connection_id)
        except Exception as exc:
            logger.error(
                "$disconnect of %s: the handler raised", conn.info.connection_id, exc_info=exc
            )
        finally:
            self._unfinished.discard(conn)
            if not conn.gone.done():
                conn.gone.set_result(None)

    # -- MANAGEMENT API -----------------------------------------------------------------------

    async def _manage(self, request: web.Request) -> web.StreamResponse:
        connection_id = request.match_info["connection_id"]
        method = request.method
        if method == "POST":
            return await self._post(request, connection_id)
        conn = self._connections.get(connection_id)
        if method == "GET":
            if conn is None:
                return _gone()
            loop_now, now = asyncio.get_running_loop().time(), time.time()
            return _json_response(
                200,
                {
                    "connectedAt": _iso_8601(conn.info.connected_at_ms / 1000),
                    "identity": {
                        "sourceIp": conn.info.source_ip,
                        "userAgent": conn.info.user_agent or "",
                    },
                    "lastActiveAt": _iso_8601(now - (loop_now - conn.last_active)),
                },
            )
        if method == "DELETE":
            if conn is None:
                return _gone()
            self._close(conn, *_NORMAL)
            return web.Response(status=204, headers={"x-amzn-RequestId": str(uuid.uuid4())})
        return await self._forbidden(request)

    async def _post(self, request: web.Request, connection_id: str) -> web.StreamResponse:
        # The hot path of the fan-out: no logging, no parsing of the data.
        length = request.content_length
        if length is not None and length > self.max_message_bytes:
            return _payload_too_large()
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body, without a Content-Length
            return _payload_too_large()
        conn = self._connections.get(connection_id)
        if conn is None:
            return _gone()
        opcode = WSMsgType.TEXT if _is_utf8(data) else WSMsgType.BINARY
        if not self._enqueue(conn, data, opcode):
            return _gone()
        return web.Response(headers={"x-amzn-RequestId": str(uuid.uuid4())})

    async def _forbidden(self, request: web.Request) -> web.StreamResponse:
        return _json_response(403, {"message": "Forbidden"}, "ForbiddenException")


def _connect_outcome(result: Any) -> tuple[int, str | None]:
    """The status a ``$connect`` result answers the handshake with, and the subprotocol it
    selects; a result without ``statusCode`` (or None) accepts."""
    if result is None:
        return 200, None
    if not isinstance(result, dict):
        raise ValueError(f"the result is a {type(result).__name__}, not an object")
    status = result.get("statusCode", 200)
    if isinstance(status, str) and status.isascii() and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"statusCode is {status!r}")
    headers = result.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers must be an object")
    subprotocol = next(
        (str(value) for name, value in headers.items() if name.lower() == "sec-websocket-protocol"),
        None,
    )
    return status, subprotocol


def _json_response(
    status: int, payload: Mapping[str, Any], error_type: str | None = None
) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if error_type is not None:
        headers["x-amzn-ErrorType"] = error_type
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def _gone() -> web.Response:
    return _json_response(410, {"message": None}, "GoneException")


def _payload_too_large() -> web.Response:
    return _json_response(413, {"message": "Request Too Long"}, "PayloadTooLargeException")


# -- COMMAND LINE -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localgw.websocket",
        description="Serve Lambda handlers as the $connect, $disconnect and $default routes of"
        " an API Gateway WebSocket API, with its management API (@connections) on the same port.",
    )
    parser.add_argument("--connect", required=True, help="e.g. functions.ws_routes.handler:connect")
    parser.add_argument("--disconnect", required=True, help="the $disconnect handler")
    parser.add_argument("--default", required=True, help="the $default handler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=8, help="concurrent invocations")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--idle-timeout-s", type=float, default=IDLE_TIMEOUT_S)
    parser.add_argument("--max-duration-s", type=float, default=MAX_DURATION_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    wait_for_stop_signal = catch_stop_signals()
    gateway = WebSocketGateway(
        import_handler(args.connect),
        import_handler(args.disconnect),
        import_handler(args.default),
        host=args.host,
        port=args.port,
        workers=args.workers,
        stage=args.stage,
        idle_timeout_s=args.idle_timeout_s,
        max_duration_s=args.max_duration_s,
    )
    with gateway:
        print(
            f"listening on {gateway.url} (management API {gateway.management_endpoint})",
            flush=True,
        )
        wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
