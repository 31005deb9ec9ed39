"""The local stand-in for API Gateway's REST API (v1) with a Lambda proxy integration.

An HTTP server that turns each request into the event API Gateway sends a Lambda function
(proxy integration, payload format 1.0), invokes a handler ``handler(event, context) -> dict``
with it, and turns the proxy response it returns into the HTTP response, as API Gateway does.
The events parse with Powertools (``APIGatewayProxyEvent``, ``APIGatewayProxyEventModel``) and
with Mangum, which recognises them by their ``resource`` and ``requestContext`` keys (an event
with a ``version`` key would be taken for an HTTP API one).

What it emulates:

- one ``ANY /{proxy+}`` resource and ``ANY /`` at the root, as ``LambdaRestApi(proxy=True)``
  deploys them; the stage is not part of the client URL (as behind a custom domain), but
  ``requestContext.path`` carries it, as on the ``execute-api`` domain;
- ``path`` as the client sent it (still percent-encoded), ``pathParameters.proxy`` decoded;
  query parameters decoded (``+`` is a space), both the single form (the last value) and the
  multi-value form; headers with the client's casing, the last value in ``headers`` and all in
  ``multiValueHeaders``; ``X-Forwarded-For``/``-Port``/``-Proto`` and ``X-Amzn-Trace-Id`` added;
  a compressed body passed on as sent (content encoding is not enabled on the API); a method
  other than the seven ``ANY`` covers answered 403 ``Missing Authentication Token``;
- the request limit (10 MB: 413 ``Request Too Long``), the 29 s integration timeout (504
  ``Endpoint request timed out``), and 502 ``Internal server error`` when the handler raises or
  returns a malformed proxy response or one that is not JSON (logged with the reason or the
  traceback), or when the event or the response is over Lambda's 6 MB payload limit (AWS fails
  such invocations; the exact status it then returns was not checked);
- response headers and multi-value headers merged (multi-value wins for a name in both),
  ``Content-Type: application/json`` when the handler sets none, ``x-amzn-RequestId`` added;
- IAM authorisation of ``/admin/...``: in AWS a SigV4 signature, here ``Authorization: Bearer
  <admin_token>``; an authorised request's ``requestContext.identity`` names the local admin
  user and its ``Authorization`` header is not passed on (AWS passes the SigV4 one; dropping
  the bearer token keeps it out of handler logs); any other gets 403 ``Missing Authentication
  Token`` without an invocation (always, when no token is configured);
- Lambda's concurrency: ``workers`` threads, each one warm container running one invocation at
  a time with its own asyncio event loop set as the thread's current loop (Mangum calls
  ``asyncio.get_event_loop()``, which in a thread without one raises ``RuntimeError``).

What it does not emulate:

- more containers on demand: when every worker is busy, requests wait in a queue (their wait
  counts against the 29 s); AWS would start another container, up to the account's concurrency
  limit, and throttle (429/502) past it;
- process isolation: the workers are threads of one process, so module-level state (clients,
  caches) is shared between concurrent invocations and must be thread-safe, and no asyncio
  object bound to one worker's loop may be used from another; CPU-bound work does not run in
  parallel (one GIL);
- Lambda's own timeout: after a 504 the handler runs on and its worker stays busy until it
  returns, as in AWS until the function's timeout; nothing kills it here;
- binary media types: a request body that is not UTF-8 goes base64-encoded, any other as text
  (as with ``binaryMediaTypes`` matching exactly the binary ones), and a response with
  ``isBase64Encoded`` is always decoded (AWS does so only when ``binaryMediaTypes`` matches the
  client's ``Accept``);
- SigV4, API keys and usage plans, throttling, WAF, CORS (the application answers preflights),
  custom authorizers, request validation, mapping templates, caching, stage variables (always
  null), header size limits, TLS, HTTP/2, and the ``_X_AMZN_TRACE_ID`` environment variable.

Run it from the command line (the admin token comes from ``CLOUDEX_ADMIN_TOKEN``, never from an
argument, so it stays out of ``ps``)::

    python -m localgw.rest --handler functions.api.handler:handler --port 8000 --workers 8
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import posixpath
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from multidict import CIMultiDict

from localgw.handlers import import_handler
from localgw.lambda_context import ACCOUNT_ID, LambdaContext
from localgw.server import (
    LambdaWorkers,
    ThreadedServer,
    catch_stop_signals,
    close_loop,  # re-exported: it was defined here
)

__all__ = [
    "LambdaHandler",
    "MAX_REQUEST_BYTES",
    "INTEGRATION_TIMEOUT_S",
    "LAMBDA_PAYLOAD_BYTES",
    "ADMIN_IDENTITY",
    "LambdaContext",
    "proxy_event",
    "HttpResponse",
    "MalformedProxyResponse",
    "http_response",
    "is_admin_path",
    "RestGateway",
    "main",
    "close_loop",
    "group_headers",
    "query_parameters",
    "format_request_time",
]

LambdaHandler = Callable[[dict[str, Any], Any], Any]

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway's default (and, without a quota raise, maximum)
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024  # synchronous invocation: request and response each

API_ID = "cloudexlcl"
_ROOT_RESOURCE_ID = "c1oudexr00"
_PROXY_RESOURCE_ID = "pr0xy1"

# What API Gateway's IAM authorisation fills in for a caller; here, the local admin user.
ADMIN_IDENTITY: Mapping[str, str] = {
    "accountId": ACCOUNT_ID,
    "caller": "AIDACLOUDEXLOCALADMIN",
    "user": "AIDACLOUDEXLOCALADMIN",
    "accessKey": "AKIACLOUDEXLOCAL0001",
    "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/cloudex-local-admin",
}

# ANY covers these; API Gateway answers anything else as an undefined method.
_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
# Framing headers of the handler's response: the server sets its own.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_STOP_GRACE_S = 2.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

logger = logging.getLogger(__name__)


# -- EVENTS -----------------------------------------------------------------------------------


def format_request_time(epoch_s: float) -> str:
    t = time.gmtime(epoch_s)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def group_headers(
    headers: Iterable[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    # One entry per name whatever its casing (the first one the client used); the last value
    # in the single form, all of them in order in the multi-value form.
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    casing: dict[str, str] = {}
    for name, value in headers:
        key = casing.setdefault(name.lower(), name)
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def query_parameters(query: str) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        single[name] = value
        multi.setdefault(name, []).append(value)
    if not multi:
        return None, None
    return single, multi


def proxy_event(
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str,
    identity: Mapping[str, str | None] | None = None,
    stage: str = "local",
    protocol: str = "HTTP/1.1",
    domain_name: str | None = None,
    request_id: str | None = None,
    request_time: float | None = None,
) -> dict[str, Any]:
    """Build the REST API proxy event (payload format 1.0) API Gateway sends for a request.

    Parameters
    ----------
    method, path, query
        The request line: ``path`` as sent (percent-encoded), ``query`` without the ``?``.
    headers
        The request headers in the order and casing the client sent them.
    body
        The request body; ``b""`` when there is none.
    source_ip
        The client's address (the peer of the connection).
    identity
        What IAM authorisation fills in (``userArn``, ``caller``, ``accessKey``...), or
        ``None`` for an unauthenticated route.
    domain_name
        Default: the ``Host`` header.
    request_id, request_time
        Default: a new UUID, and now (epoch seconds).
    """
    now = time.time() if request_time is None else request_time
    single_headers, multi_headers = group_headers(headers)
    lower = {name.lower(): value for name, value in single_headers.items()}
    single_query, multi_query = query_parameters(query)
    domain = domain_name if domain_name is not None else lower.get("host", "localhost")

    if path in ("", "/"):
        resource, resource_id, path_parameters = "/", _ROOT_RESOURCE_ID, None
    else:
        resource, resource_id = "/{proxy+}", _PROXY_RESOURCE_ID
        path_parameters = {"proxy": unquote(path[1:] if path.startswith("/") else path)}

    if not body:
        event_body, is_base64 = None, False
    else:
        try:
            event_body, is_base64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            event_body, is_base64 = base64.b64encode(body).decode("ascii"), True

    caller: dict[str, str | None] = {
        "cognitoIdentityPoolId": None,
        "accountId": None,
        "cognitoIdentityId": None,
        "caller": None,
        "sourceIp": source_ip,
        "principalOrgId": None,
        "accessKey": None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "userArn": None,
        "userAgent": lower.get("user-agent"),
        "user": None,
    }
    if identity:
        caller.update(identity)

    return {
        "resource": resource,
        "path": path or "/",
        "httpMethod": method,
        "headers": single_headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": single_query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": resource_id,
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": base64.urlsafe_b64encode(os.urandom(11)).decode("ascii"),
            "requestTime": format_request_time(now),
            "path": f"/{stage}{path or '/'}",
            "accountId": ACCOUNT_ID,
            "protocol": protocol,
            "stage": stage,
            "domainPrefix": domain.split(":", 1)[0].split(".", 1)[0],
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id or str(uuid.uuid4()),
            "identity": caller,
            "domainName": domain,
            "apiId": API_ID,
        },
        "body": event_body,
        "isBase64Encoded": is_base64,
    }


def is_admin_path(path: str) -> bool:
    """Whether ``path`` (as sent, percent-encoded) is ``/admin`` or under ``/admin/``, in any
    spelling the application could route there (Mangum decodes the path)."""
    decoded = unquote(path)
    rooted = "/" + decoded.lstrip("/")
    for candidate in (decoded, rooted, posixpath.normpath(rooted)):
        if candidate == "/admin" or candidate.startswith("/admin/"):
            return True
    return False


# -- RESPONSES --------------------------------------------------------------------------------


class MalformedProxyResponse(ValueError):
    """The handler's result is not a proxy response API Gateway accepts (it answers 502)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _header_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise MalformedProxyResponse(f"header {name!r} has a {type(value).__name__} value")


def http_response(result: Any) -> HttpResponse:
    """The HTTP response API Gateway makes of a Lambda proxy response.

    Raises
    ------
    MalformedProxyResponse
        If API Gateway would reject ``result`` (and answer 502 ``Internal server error``).
    """
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"the result is a {type(result).__name__}, not an object")
    status = result.get("statusCode")
    if isinstance(status, str) and status.isascii() and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedProxyResponse(f"statusCode is {status!r}")

    headers = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(headers, dict) or not isinstance(multi, dict):
        raise MalformedProxyResponse("headers and multiValueHeaders must be objects")
    merged: list[tuple[str, str]] = []
    multi_names = {str(name).lower() for name in multi}
    for name, value in headers.items():
        if str(name).lower() not in multi_names:
            merged.append((str(name), _header_value(name, value)))
    for name, values in multi.items():
        if not isinstance(values, list):
            raise MalformedProxyResponse(f"multiValueHeaders[{name!r}] is not a list")
        merged.extend((str(name), _header_value(name, value)) for value in values)
    merged = [(name, value) for name, value in merged if name.lower() not in _HOP_BY_HOP]
    if not any(name.lower() == "content-type" for name, _ in merged):
        merged.append(("Content-Type", "application/json"))

    body = result.get("body")
    is_base64 = result.get("isBase64Encoded", False)
    if not isinstance(is_base64, bool):
        raise MalformedProxyResponse(f"isBase64Encoded is {is_base64!r}")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise MalformedProxyResponse(f"body is a {type(body).__name__}, not a string")
    elif is_base64:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedProxyResponse(f"body is not valid base64: {exc}") from None
    else:
        data = body.encode("utf-8")
    return HttpResponse(status, merged, data)


def _gateway_response(
    status: int, message: str, request_id: str, error_type: str | None = None
) -> web.Response:
    # API Gateway's own answers (gateway responses): JSON, with the request id.
    headers = {"x-amzn-RequestId": request_id}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return web.Response(
        status=status,
        body=json.dumps({"message": message}, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


# -- THE GATEWAY ------------------------------------------------------------------------------


class RestGateway(ThreadedServer):
    """Serve ``handler`` as API Gateway's REST API with a Lambda proxy integration would.

    ``workers`` threads stand for that many warm Lambda containers: each runs one invocation at
    a time, with its own asyncio event loop as its current loop. When all are busy, requests
    wait in a queue (in AWS they would get more containers). The HTTP server runs on a
    background thread with its own event loop. ``timeout_s`` is the integration timeout and
    ``max_body_bytes`` the request limit; ``admin_token`` authorises ``/admin/...`` (no token:
    every admin request is refused).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; after ``start()``,
    ``port`` and ``url`` say where it listens (``port=0`` picks a free port). ``stop()`` stops
    serving, then the workers: requests in flight and running invocations get
    ``_STOP_GRACE_S`` each; a handler still running after that is left to finish on its daemon
    thread.
    """

    _thread_name = "rest-gateway"
    _description = "the REST gateway"
    _logger = logger
    _stop_grace_s = _STOP_GRACE_S

    def __init__(
        self,
        handler: LambdaHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 8,
        timeout_s: float = INTEGRATION_TIMEOUT_S,
        admin_token: str | None = None,
        stage: str = "local",
        max_body_bytes: int = MAX_REQUEST_BYTES,
        function_name: str = "api",
    ) -> None:
        lambda_workers = LambdaWorkers(
            workers, name_prefix=f"lambda-{function_name}", logger=logger
        )
        super().__init__(host=host, port=port, workers=lambda_workers)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, was {timeout_s}")
        self.handler = handler
        self.workers = workers
        self.timeout_s = timeout_s
        self.stage = stage
        self.max_body_bytes = max_body_bytes
        self.function_name = function_name
        self.url = ""
        self._admin_token = admin_token.encode() if admin_token else None
        self._lambda_workers = lambda_workers  # the base class's workers, known to be there

    def start(self) -> RestGateway:
        """Start the workers and the server; return once it accepts connections."""
        super().start()
        self.url = f"http://{self._authority}"
        return self

    # -- SERVER -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        # The body limit is checked by this app, which answers API Gateway's 413.
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle)
        # API Gateway (without content encoding enabled) passes a compressed body on as it is.
        await self._serve_app(app, shutdown_timeout=_STOP_GRACE_S, auto_decompress=False)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return _gateway_response(413, "Request Too Long", request_id)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _gateway_response(413, "Request Too Long", request_id)
        deadline = time.monotonic() + self.timeout_s

        path, _, query = request.raw_path.partition("?")
        headers = [
            (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
            for name, value in request.raw_headers
        ]
        identity: Mapping[str, str] | None = None
        if request.method not in _METHODS:
            return _missing_token(request_id)
        if is_admin_path(path):
            if not self._admin_authorised(headers):
                return _missing_token(request_id)
            headers = [(name, value) for name, value in headers if name.lower() != "authorization"]
            identity = ADMIN_IDENTITY

        source_ip = request.remote or "127.0.0.1"
        event = proxy_event(
            request.method,
            path,
            query,
            self._forwarded(headers, source_ip),
            body,
            source_ip=source_ip,
            identity=identity,
            stage=self.stage,
            protocol=f"HTTP/{request.version.major}.{request.version.minor}",
            request_id=request_id,
        )
        if len(body) > LAMBDA_PAYLOAD_BYTES * 3 // 4 and _json_size(event) > LAMBDA_PAYLOAD_BYTES:
            logger.error("request %s: the event is over Lambda's 6 MB payload limit", request_id)
            return _internal_error(request_id)

        def invoke(log_stream_name: str) -> Any:  # on a worker
            context = LambdaContext(
                self.function_name, deadline=deadline, log_stream_name=log_stream_name
            )
            try:
                return self.handler(event, context)
            finally:
                if time.monotonic() > deadline:
                    logger.warning(
                        "request %s: the handler returned %.1f s after the integration timeout;"
                        " its response was discarded",
                        request_id,
                        time.monotonic() - deadline,
                    )

        invocation = await self._lambda_workers.invoke(
            invoke, timeout_s=max(0.0, deadline - time.monotonic())
        )
        if invocation.cancelled():
            logger.warning(
                "request %s: %s %s timed out after %.1f s",
                request_id,
                request.method,
                path,
                self.timeout_s,
            )
            return _gateway_response(504, "Endpoint request timed out", request_id)
        error = invocation.exception()
        if error is not None:  # a function error, whatever the handler raised
            logger.error("request %s: the handler raised", request_id, exc_info=error)
            return _internal_error(request_id)
        result = invocation.result()

        try:
            # Lambda returns the result as JSON: what does not serialise is a function error.
            size = _json_size(result)
        except (TypeError, ValueError) as exc:
            logger.error("request %s: the result is not JSON: %s", request_id, exc)
            return _internal_error(request_id)
        if size > LAMBDA_PAYLOAD_BYTES:
            logger.error("request %s: the response is over Lambda's 6 MB limit", request_id)
            return _internal_error(request_id)
        try:
            response = http_response(result)
        except MalformedProxyResponse as exc:
            logger.error("request %s: malformed Lambda proxy response: %s", request_id, exc)
            return _internal_error(request_id)
        out_headers: CIMultiDict[str] = CIMultiDict(response.headers)
        out_headers["x-amzn-RequestId"] = request_id
        return web.Response(status=response.status, body=response.body, headers=out_headers)

    def _admin_authorised(self, headers: Sequence[tuple[str, str]]) -> bool:
        if self._admin_token is None:
            return False
        values = [value for name, value in headers if name.lower() == "authorization"]
        if len(values) != 1:
            return False
        scheme, _, token = values[0].strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8"), self._admin_token
        )

    def _forwarded(self, headers: list[tuple[str, str]], source_ip: str) -> list[tuple[str, str]]:
        # What API Gateway adds (it appends the client to X-Forwarded-For); the scheme is the
        # local one, so that URLs the application builds work.
        present = {name.lower(): index for index, (name, _) in enumerate(headers)}
        out = list(headers)
        if "x-forwarded-for" in present:
            index = present["x-forwarded-for"]
            out[index] = (out[index][0], f"{out[index][1]}, {source_ip}")
        else:
            out.append(("X-Forwarded-For", source_ip))
        out = [(n, v) for n, v in out if n.lower() not in ("x-forwarded-port", "x-forwarded-proto")]
        out.append(("X-Forwarded-Port", str(self.port)))
        out.append(("X-Forwarded-Proto", "http"))
        if "x-amzn-trace-id" not in present:
            out.append(("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"))
        return out


def _missing_token(request_id: str) -> web.Response:
    return _gateway_response(
        403, "Missing Authentication Token", request_id, "MissingAuthenticationTokenException"
    )


def _internal_error(request_id: str) -> web.Response:
    return _gateway_response(
        502, "Internal server error", request_id, "InternalServerErrorException"
    )


def _json_size(payload: Any) -> int:
    return len(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())


# -- COMMAND LINE -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localgw.rest",
        description="Serve a Lambda handler as API Gateway's REST API (proxy integration) would."
        " /admin/... needs 'Authorization: Bearer $CLOUDEX_ADMIN_TOKEN' (unset: refused).",
    )
    parser.add_argument("--handler", required=True, help="e.g. functions.api.handler:handler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=8, help="concurrent invocations")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--function-name", help="default: the handler's package name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    handler = import_handler(args.handler)
    # functions.api.handler:handler -> api, as the function is named in infra/.
    handler_path = args.handler.replace(":", ".").split(".")
    function_name = args.function_name or handler_path[max(0, len(handler_path) - 3)]
    wait_for_stop_signal = catch_stop_signals()
    gateway = RestGateway(
        handler,
        host=args.host,
        port=args.port,
        workers=args.workers,
        admin_token=os.environ.get("CLOUDEX_ADMIN_TOKEN") or None,
        stage=args.stage,
        function_name=function_name,
    )
    with gateway:
        print(f"listening on {gateway.url}", flush=True)
        wait_for_stop_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
