"""The local stand-in for AWS Lambda's Invoke API, with worker processes as execution environments.

An HTTP server answering ``POST /2015-03-31/functions/{FunctionName}/invocations`` as Lambda does,
so that ``boto3.client("lambda", endpoint_url=...).invoke(...)`` runs unchanged against it: the
same code in AWS and locally, only the endpoint differs. A function may invoke itself (or another
one) through it from inside a handler.

What it emulates:

- execution environments: each one a worker process (multiprocessing ``spawn``: a fresh
  interpreter, as the parent has threads) that imports the handler once, on the first invocation
  that needs it (cold start), then serves one invocation at a time and stays warm; module state
  persists across one worker's invocations and is never shared between workers, and CPU-bound
  handlers run in parallel; at most ``concurrency`` environments per function (its reserved
  concurrency), started only when no warm one is idle;
- a synchronous invocation (``RequestResponse``, the default) past the reserved concurrency is
  throttled at once: 429 ``TooManyRequestsException``, ``Reason``
  ``ReservedFunctionConcurrentInvocationLimitExceeded``; ``concurrency=0`` throttles everything,
  as in AWS;
- the environment variables: the parent's, the function's ``environment``, then
  ``AWS_LAMBDA_FUNCTION_NAME``, ``_VERSION``, ``_MEMORY_SIZE``, ``AWS_LAMBDA_LOG_GROUP_NAME``,
  ``_LOG_STREAM_NAME``, ``_HANDLER``, and ``AWS_REGION``/``AWS_DEFAULT_REGION`` when unset;
- the Python runtime (``awslambdaric``): the handler setting ``module.function`` (or
  ``module:function``) and its init errors (``Runtime.ImportModuleError``,
  ``Runtime.HandlerNotFound``, ``Runtime.UserCodeSyntaxError``, or the exception the module
  raised at import), after which the environment is discarded; the event decoded from JSON; a
  result returned as JSON (``bytes`` as they are, ``Runtime.MarshalError`` when it does not
  serialise); an exception returned as ``{"errorMessage", "errorType", "requestId",
  "stackTrace"}``; a root logging handler printing ``[LEVEL]\\ttime\\trequest id\\tmessage`` (so a
  handler's ``logging.basicConfig()`` does nothing, as in AWS); stdout flushed at each line;
- every function error as a 200 with ``X-Amz-Function-Error: Unhandled`` (boto3's
  ``response["FunctionError"]``) and the payload AWS sends: the runtime's, or ``Sandbox.Timedout``
  ("RequestId: ... Error: Task timed out after 30.00 seconds", the worker killed and replaced by a
  cold start later), ``Runtime.ExitError`` when the worker process dies ("... Runtime exited with
  error: exit status 3", "signal: segmentation fault"), ``Function.ResponseSizeTooLarge`` for a
  result over 6291556 bytes (the limit AWS's message states);
- the timeout clock: it starts when the handler is imported; an init gets up to 10 s (Lambda's
  init limit) outside the function's timeout, and what it takes past that counts against it;
  the context's ``get_remaining_time_in_millis`` counts down to the same deadline the service
  enforces (``time.monotonic()`` is one clock for every process of the machine);
- ``Event`` invocations: 202 at once, the event queued and run when a slot of the function's
  concurrency frees up, sharing it with synchronous invocations; ``DryRun``: 204 (the function
  and the payload's size checked, nothing run);
- the API's errors, with the ``x-amzn-ErrorType`` header botocore turns into its exceptions:
  404 ``ResourceNotFoundException`` (unknown function), 400 ``InvalidRequestContentException``
  (payload not JSON; an empty payload is the event ``{}``), 400
  ``InvalidParameterValueException`` (unknown invocation type, qualifier mismatch), 413
  ``RequestEntityTooLargeException`` over 6291456 bytes (``RequestResponse``) or 1048576
  (``Event``: 1 MB in the current API reference, 256 KB before AWS raised it in 2025), with
  AWS's message ("N byte payload is too large for the Event invocation type (limit ...)").
  That is the code AWS sends; botocore models it as ``RequestTooLargeException``, so boto3
  raises a plain ``ClientError`` with that code, as it does against AWS;
- a function named by name, full or partial ARN, with or without a qualifier (``name:alias``
  or ``Qualifier=``); every qualifier runs the one version there is (``X-Amz-Executed-Version:
  $LATEST``).

What it does not emulate:

- versions, aliases, layers, SnapStart, provisioned concurrency, the account-level concurrency
  limit and burst scaling, the recycling of idle environments (they live until ``stop()``);
- memory and CPU limits: ``memory_mb`` is only reported (context and environment), and a worker
  may use all cores; no ``Runtime.OutOfMemory``;
- for ``Event`` invocations: retries (AWS retries a failed event twice, then sends it to a
  destination or DLQ), the event age limit, and events surviving a stop; a failure is logged
  (WARNING) and dropped. The queue holds at most ``EVENT_QUEUE_LIMIT`` events per function,
  then answers 429 ``TooManyRequestsException`` (AWS's queue has no such bound);
- ``LogType=Tail`` (no ``X-Amz-Log-Result``), ``ClientContext`` (the context's
  ``client_context`` stays ``None``), X-Ray (no ``_X_AMZN_TRACE_ID``), tenant ids, durable
  executions, response streaming, and the qualified ARN in ``invoked_function_arn``;
- ``LAMBDA_TASK_ROOT``/``AWS_EXECUTION_ENV`` are not set: X-Ray and Powertools' tracer take
  them for the real runtime; environment variables read at interpreter start-up (``PYTHON*``)
  in a function's ``environment`` do not reach the interpreter, which has already started;
- ``Decimal`` results are marshalled as JSON numbers through ``float``/``int`` (the runtime
  writes their exact digits);
- SigV4 (any credentials are accepted), IAM, resource policies, TLS.

Each worker, being spawned, imports the parent's main module (multiprocessing's rule): start the
service from a module whose top level has no side effects (the command line below is one).

Run it from the command line::

    python -m localgw.lambda_api --function ws_fanout=functions.ws_fanout.handler:handler \\
        --concurrency 8 --timeout-s 30 --port 8003
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import decimal
import importlib
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from localgw.lambda_context import ACCOUNT_ID, REGION, LambdaContext
from localgw.server import ThreadedServer, catch_stop_signals

if TYPE_CHECKING:
    # The server's imports happen where it runs, not here: every worker process imports this
    # module (to find its entry point) and should not pay ~0.2 s and ~15 MB for aiohttp.
    from multiprocessing.context import SpawnContext, SpawnProcess

    from aiohttp import web

__all__ = [
    "SYNC_PAYLOAD_LIMIT_BYTES",
    "EVENT_PAYLOAD_LIMIT_BYTES",
    "RESPONSE_LIMIT_BYTES",
    "INIT_LIMIT_S",
    "EVENT_QUEUE_LIMIT",
    "FunctionConfig",
    "LambdaService",
    "main",
]

SYNC_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # a RequestResponse invocation's request
EVENT_PAYLOAD_LIMIT_BYTES = 1024 * 1024  # an Event invocation's request (256 KB until 2025-10)
RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024 + 100  # 6291556: what AWS enforces and names in its error
INIT_LIMIT_S = 10.0  # Lambda's limit on an init, outside the function's timeout
EVENT_QUEUE_LIMIT = 10_000  # queued Event invocations per function (AWS keeps them, for hours)

_INVOKE_PATH = "/2015-03-31/functions/{function}/invocations"
# The FunctionName pattern of the Invoke API: a name, a partial or full ARN, maybe a qualifier.
_FUNCTION_NAME = re.compile(
    r"(?:arn:(?:aws[a-zA-Z-]*)?:lambda:)?(?:[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d:)?"
    r"(?:\d{12}:)?(?:function:)?([a-zA-Z0-9_.-]+)(?::(\$LATEST|[a-zA-Z0-9_-]+))?"
)
_PLAIN_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVOCATION_TYPES = frozenset({"RequestResponse", "Event", "DryRun"})
_STOP_GRACE_S = 2.0
_EXIT_WAIT_S = 2.0  # how long a worker whose socket closed may take to finish exiting

logger = logging.getLogger(__name__)


# -- THE EXECUTION ENVIRONMENT: what runs in a worker process ----------------------------------

# Parent and worker talk through a socket pair, in multiprocessing.Connection's framing (a
# 4-byte big-endian length, then the message): the worker's end is a Connection, the parent's
# an asyncio transport, so that no transfer (up to 6 MB each way) blocks the server's loop.
# Bytes, nothing pickled: the hot path is one write and one read each way.
_FRAME = struct.Struct("!i")
# Parent -> worker: the invocation's deadline (time.monotonic(): one clock for every process of
# the machine) and request id, then the payload as the client sent it.
_INVOKE_HEADER = struct.Struct("<d36s")
# Worker -> parent: one byte saying what follows it.
_READY = b"R"  # init done: the handler is imported
_INIT_FAILED = b"I"  # + the runtime's error JSON; the worker then exits
_RESULT = b"0"  # + the result, as the runtime marshalled it
_FUNCTION_ERROR = b"E"  # + the runtime's error JSON

_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_current_request_id = ""  # for the runtime's log lines


class _InitFault(Exception):
    """An init error the runtime reports with its own error type (``Runtime.*``)."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


def _run_environment(
    connection: Connection[bytes, bytes],
    function_name: str,
    handler_setting: str,
    environment: Mapping[str, str],
    memory_mb: int,
) -> None:
    """A worker process's life: init, then invocations one at a time until the service closes
    its end of the socket. What the Lambda runtime's bootstrap does, on a socket pair instead
    of the Runtime API."""
    global _current_request_id
    # Ctrl-C in a terminal signals the whole process group: the service, not the terminal,
    # decides when an environment ends (and reports the invocation it kills).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log_stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
    os.environ.update(environment)
    os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = log_stream
    _configure_runtime_output()
    try:
        handler = _load_handler(handler_setting)
    except _InitFault as fault:
        error = _error_payload(fault.message, fault.error_type, fault.stack_trace, "")
        _send_or_exit(connection, _INIT_FAILED + error)
        return
    except Exception as exc:  # raised by the module at import: reported as the runtime does
        _send_or_exit(connection, _INIT_FAILED + _exception_payload(exc, ""))
        return
    _send_or_exit(connection, _READY)
    while True:
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):  # the service closed its end: stop, or the parent died
            return
        deadline, raw_request_id = _INVOKE_HEADER.unpack_from(message)
        request_id = raw_request_id.decode("ascii")
        _current_request_id = request_id
        context = LambdaContext(
            function_name,
            deadline=deadline,
            memory_limit_in_mb=memory_mb,
            aws_request_id=request_id,
            log_stream_name=log_stream,
        )
        reply = _invoke(handler, message[_INVOKE_HEADER.size :], context)
        _current_request_id = ""
        _send_or_exit(connection, reply)


def _send_or_exit(connection: Connection[bytes, bytes], message: bytes) -> None:
    try:
        connection.send_bytes(message)
    except OSError:  # the service is gone: nobody wants the reply, nor this environment
        sys.exit(0)


def _load_handler(setting: str) -> Callable[[Any, Any], Any]:
    # awslambdaric's _get_handler, with its error types and messages.
    module_name, _, attribute = setting.replace(":", ".").rpartition(".")
    if not module_name:
        raise _InitFault(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{setting}': not enough values to unpack (expected 2, got 1)",
        )
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise _InitFault(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise _InitFault(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    except SyntaxError as exc:
        raise _InitFault(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {exc}",
            [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}'],
        ) from exc
    try:
        handler = getattr(module, attribute)
    except AttributeError:
        raise _InitFault(
            "Runtime.HandlerNotFound", f"Handler '{attribute}' missing on module '{module_name}'"
        ) from None
    return handler  # type: ignore[no-any-return]


def _invoke(handler: Callable[[Any, Any], Any], payload: bytes, context: LambdaContext) -> bytes:
    try:
        result = handler(json.loads(payload), context)
    except Exception as exc:  # BaseException (sys.exit) ends the process: Runtime.ExitError
        return _FUNCTION_ERROR + _exception_payload(exc, context.aws_request_id)
    if isinstance(result, bytes):
        return _RESULT + result  # the runtime passes bytes through as they are
    try:
        return _RESULT + json.dumps(result, default=_decimal_as_number).encode()
    except Exception as exc:  # the runtime's marshaller turns any failure into this
        message = f"Unable to marshal response: {exc}"
        return _FUNCTION_ERROR + _error_payload(
            message, "Runtime.MarshalError", [], context.aws_request_id
        )


def _decimal_as_number(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _exception_payload(exc: BaseException, request_id: str) -> bytes:
    frames = traceback.extract_tb(exc.__traceback__)
    # The runtime leaves out its own frames (bootstrap.py); these are this module's.
    while frames and frames[0].filename == __file__:
        frames.pop(0)
    return _error_payload(str(exc), type(exc).__name__, traceback.format_list(frames), request_id)


def _error_payload(message: str, error_type: str, stack_trace: list[str], request_id: str) -> bytes:
    error = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack_trace,
    }
    return json.dumps(error).encode()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id
        return True


def _configure_runtime_output() -> None:
    # As the runtime: output reaches the logs line by line (a crash loses no finished line), and
    # the root logger has its handler before the function's code runs.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    formatter = logging.Formatter(_LOG_FORMAT, "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stdout)
    handler.terminator = ""  # the format ends the line
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


# -- THE SERVICE: what runs in the parent -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """One function as deployed.

    Parameters
    ----------
    handler
        The handler setting: ``module.function`` or ``module:function``.
    concurrency
        Reserved concurrency: at most this many environments (worker processes), each running
        one invocation at a time. 0 throttles every invocation, as in AWS.
    timeout_s
        The function's timeout.
    memory_mb
        Reported to the function (context, environment), not enforced.
    environment
        The function's environment variables, over the service's own.
    """

    handler: str
    concurrency: int = 4
    timeout_s: float = 30.0
    memory_mb: int = 1024
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 0:
            raise ValueError(f"concurrency must be 0 or more, was {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, was {self.timeout_s}")
        if self.memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, was {self.memory_mb}")


class _Outcome(NamedTuple):
    payload: bytes  # the response body: the result, or the error's JSON
    failed: bool  # a function error (X-Amz-Function-Error: Unhandled)


class _Worker(asyncio.Protocol):
    """The parent's side of one execution environment: its process, and the protocol on the
    parent's end of its socket, which hands each message to whoever awaits ``reply``."""

    def __init__(
        self,
        process: SpawnProcess,
        on_unawaited: Callable[[_Worker, bytes | None], None],
    ) -> None:
        self.process = process
        self.transport: asyncio.Transport | None = None
        # What the parent awaits from the worker: its next message, None once the socket closed.
        self.reply: asyncio.Future[bytes | None] | None = None
        # Once discarded: the task reaping it, which gives its exit code (one per process).
        self.exit_code: asyncio.Task[int | None] | None = None
        self._on_unawaited = on_unawaited
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, header: bytes, payload: bytes) -> bool:
        """Queue a message (never blocks: the transport buffers what the socket cannot take
        yet); False if the socket is already closing."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(b"".join((_FRAME.pack(len(header) + len(payload)), header, payload)))
        return True

    def data_received(self, data: bytes) -> None:
        whole = len(data) >= _FRAME.size and _FRAME.unpack_from(data)[0] == len(data) - _FRAME.size
        if whole and not self._buffer:
            self._deliver(data[_FRAME.size :])  # the usual case: one message, in one piece
            return
        self._buffer += data
        while len(self._buffer) >= _FRAME.size:
            end = _FRAME.size + _FRAME.unpack_from(self._buffer)[0]
            if len(self._buffer) < end:
                return
            message = bytes(self._buffer[_FRAME.size : end])
            del self._buffer[:end]
            self._deliver(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deliver(None)

    def _deliver(self, message: bytes | None) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_result(message)
        else:
            self._on_unawaited(self, message)


def _function_environment(name: str, config: FunctionConfig) -> dict[str, str]:
    environment = dict(config.environment)
    environment.update(
        AWS_LAMBDA_FUNCTION_NAME=name,
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(config.memory_mb),
        AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{name}",
        _HANDLER=config.handler,
    )
    region = (
        environment.get("AWS_REGION")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or REGION
    )
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if variable not in environment and variable not in os.environ:
            environment[variable] = region
    return environment


def _expire(reply: asyncio.Future[bytes | None]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


def _timed_out(request_id: str, timeout_s: float) -> _Outcome:
    # The text of Lambda's runtime manager (its RIE prints the same).
    message = f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds"
    error = {"errorMessage": message, "errorType": "Sandbox.Timedout"}
    return _Outcome(json.dumps(error).encode(), failed=True)


def _exited(request_id: str, exit_code: int | None) -> _Outcome:
    # The texts of Lambda's Go runtime manager (Go's exec.ExitError).
    if exit_code is None or exit_code == 0:
        reason = "Runtime exited without providing a reason"
    elif exit_code > 0:
        reason = f"Runtime exited with error: exit status {exit_code}"
    else:
        description = (signal.strsignal(-exit_code) or str(-exit_code)).lower()
        reason = f"Runtime exited with error: signal: {description}"
    error = {
        "errorMessage": f"RequestId: {request_id} Error: {reason}",
        "errorType": "Runtime.ExitError",
    }
    return _Outcome(json.dumps(error).encode(), failed=True)


class _FunctionPool:
    """One function's execution environments and Event queue. Lives on the server's loop: no
    locks, every method runs on that thread."""

    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        mp_context: SpawnContext,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.config = config
        self._mp_context = mp_context
        self._loop = loop
        self._environment = _function_environment(name, config)
        self._idle: list[_Worker] = []  # a stack: the warmest on top, as Lambda reuses them
        self._workers: set[_Worker] = set()  # every live one: idle, busy or starting
        self._exiting: set[SpawnProcess] = set()  # discarded, not reaped yet
        self._running = 0  # invocations holding a slot of the reserved concurrency
        self._slot_freed = asyncio.Event()
        self._events: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(EVENT_QUEUE_LIMIT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = 0
        self._track(loop.create_task(self._dispatch_events()))

    # -- SLOTS AND QUEUE ----------------------------------------------------------------------

    def try_reserve(self) -> bool:
        """Take a slot of the function's concurrency for a synchronous invocation."""
        if self._running >= self.config.concurrency:
            return False
        self._running += 1
        return True

    def release(self) -> None:
        self._running -= 1
        self._slot_freed.set()

    def enqueue_event(self, request_id: str, payload: bytes) -> bool:
        try:
            self._events.put_nowait((request_id, payload))
        except asyncio.QueueFull:
            return False
        return True

    async def _dispatch_events(self) -> None:
        while True:
            request_id, payload = await self._events.get()
            while self._running >= self.config.concurrency:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            self._running += 1
            self._track(self._loop.create_task(self._run_event(request_id, payload)))

    async def _run_event(self, request_id: str, payload: bytes) -> None:
        try:
            outcome = await self.invoke(request_id, payload)
        except Exception:
            logger.exception("%s: asynchronous invocation %s failed", self.name, request_id)
            return
        finally:
            self.release()
        if outcome.failed:
            logger.warning(
                "%s: asynchronous invocation %s failed (dropped; AWS would retry it twice): %s",
                self.name,
                request_id,
                outcome.payload[:1000].decode("utf-8", "replace"),
            )

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- INVOCATIONS --------------------------------------------------------------------------

    async def invoke(self, request_id: str, payload: bytes) -> _Outcome:
        """Run one invocation on a warm environment, or a new one. The caller holds a slot."""
        timeout_s = self.config.timeout_s
        if self._idle:
            worker = self._idle.pop()
            deadline = self._loop.time() + timeout_s
        else:
            started = await self._start_worker(request_id)
            if isinstance(started, _Outcome):
                return started
            worker, deadline = started
        reply = worker.reply = self._loop.create_future()
        if not worker.send(_INVOKE_HEADER.pack(deadline, request_id.encode()), payload):
            return await self._exit_outcome(worker, request_id)  # it died while idle
        message = await self._wait_reply(worker, reply, deadline, request_id)
        if message is None:
            return await self._exit_outcome(worker, request_id)
        if isinstance(message, _Outcome):
            return message
        self._idle.append(worker)
        return _Outcome(message[1:], failed=message[:1] != _RESULT)

    async def _start_worker(self, request_id: str) -> tuple[_Worker, float] | _Outcome:
        # A cold start: a new process imports the handler; the invocation's clock starts when
        # it is ready (see INIT_LIMIT_S).
        self._started += 1
        parent_end, worker_socket = socket.socketpair()
        worker_end: Connection[bytes, bytes] = Connection(worker_socket.detach())
        process = self._mp_context.Process(
            target=_run_environment,
            args=(
                worker_end,
                self.name,
                self.config.handler,
                self._environment,
                self.config.memory_mb,
            ),
            name=f"lambda-{self.name}-{self._started}",
        )
        init_started = self._loop.time()
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            worker_end.close()  # the worker has its own copy: EOF on ours means it is gone
        worker = _Worker(process, self._on_unawaited)
        self._workers.add(worker)
        reply = worker.reply = self._loop.create_future()
        try:
            await self._loop.connect_accepted_socket(lambda: worker, parent_end)
        except BaseException:
            parent_end.close()
            self._discard(worker, kill=True)
            raise
        # An init past INIT_LIMIT_S goes on under the function's timeout (AWS re-runs it
        # within the invocation): up to both in all.
        init_deadline = init_started + INIT_LIMIT_S + self.config.timeout_s
        message = await self._wait_reply(worker, reply, init_deadline, request_id)
        if message is None:
            return await self._exit_outcome(worker, request_id)
        if isinstance(message, _Outcome):
            return message
        if message[:1] == _INIT_FAILED:
            self._discard(worker, kill=False)  # it exits by itself
            return _Outcome(message[1:], failed=True)
        ready_at = self._loop.time()
        return worker, min(ready_at, init_started + INIT_LIMIT_S) + self.config.timeout_s

    async def _wait_reply(
        self,
        worker: _Worker,
        reply: asyncio.Future[bytes | None],
        deadline: float,
        request_id: str,
    ) -> bytes | _Outcome | None:
        timer = self._loop.call_at(deadline, _expire, reply)
        try:
            return await reply
        except TimeoutError:
            self._discard(worker, kill=True)
            logger.warning(
                "%s: invocation %s timed out after %.2f s; its environment was killed",
                self.name,
                request_id,
                self.config.timeout_s,
            )
            return _timed_out(request_id, self.config.timeout_s)
        except asyncio.CancelledError:
            # Nobody will take this invocation's outcome (the service is stopping): the
            # environment, mid-invocation, cannot be reused.
            self._discard(worker, kill=True)
            raise
        finally:
            timer.cancel()

    def _on_unawaited(self, worker: _Worker, message: bytes | None) -> None:
        if worker.exit_code is not None:
            return  # already discarded: its socket closing is no news
        if message is None:  # died while idle: forget it, a cold start replaces it
            logger.warning("%s: idle environment %s exited", self.name, worker.process.name)
            self._discard(worker, kill=False)
        else:
            logger.error("%s: unexpected message from %s", self.name, worker.process.name)
            self._discard(worker, kill=True)

    async def _exit_outcome(self, worker: _Worker, request_id: str) -> _Outcome:
        exit_code = await self._discard(worker, kill=False)
        logger.warning(
            "%s: invocation %s: the environment exited (code %s)", self.name, request_id, exit_code
        )
        return _exited(request_id, exit_code)

    def _discard(self, worker: _Worker, *, kill: bool) -> asyncio.Task[int | None]:
        """Forget the worker (killing it first if asked); the task reaps it and gives its exit
        code."""
        if worker.exit_code is not None:
            return worker.exit_code
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if worker.transport is not None:
            worker.transport.abort()
        if kill:
            worker.process.kill()
        self._exiting.add(worker.process)
        worker.exit_code = self._loop.create_task(self._reap(worker.process))
        self._track(worker.exit_code)
        return worker.exit_code

    async def _reap(self, process: SpawnProcess) -> int | None:
        # Polls waitpid(WNOHANG) (``exitcode``) on the loop's thread, which alone reaps (a
        # join() in another thread would race it): a worker whose socket closed is exiting
        # and is a zombie within milliseconds. One that lingers is killed.
        delay, killed = 0.001, False
        deadline = self._loop.time() + _EXIT_WAIT_S
        while process.exitcode is None:
            if self._loop.time() >= deadline:
                if killed:
                    break
                logger.warning("%s: killing %s, which did not exit", self.name, process.name)
                process.kill()
                killed, deadline = True, self._loop.time() + _EXIT_WAIT_S
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.05)
        if process.exitcode is not None:
            self._exiting.discard(process)
        return process.exitcode

    # -- STOP ---------------------------------------------------------------------------------

    def close(self) -> list[SpawnProcess]:
        """Drop queued events, end the running ones, and close every environment's socket (an
        idle worker then exits); return the processes for the caller to join."""
        if not self._events.empty():
            logger.warning(
                "%s: %d queued asynchronous invocations dropped", self.name, self._events.qsize()
            )
        for task in list(self._tasks):
            task.cancel()
        for worker in list(self._workers):
            self._discard(worker, kill=worker.reply is not None)  # busy or starting: killed
        return list(self._exiting)


class LambdaService(ThreadedServer):
    """The Lambda Invoke API for ``functions``, served on its own thread and event loop.

    Parameters
    ----------
    functions
        Function name -> its configuration.
    host, port
        Where to listen; port 0 picks a free one (see ``endpoint_url`` once started).
    """

    _thread_name = "lambda-api"
    _description = "the Lambda service"
    _logger = logger
    _stop_grace_s = _STOP_GRACE_S

    def __init__(
        self,
        functions: Mapping[str, FunctionConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        for name in functions:
            if not _PLAIN_NAME.fullmatch(name):
                raise ValueError(f"a function name is 1-64 of [a-zA-Z0-9_-], was {name!r}")
        super().__init__(host=host, port=port)
        self.functions = dict(functions)
        self._endpoint_url: str | None = None
        self._pools: dict[str, _FunctionPool] = {}
        self._leftover_processes: list[SpawnProcess] = []

    @property
    def endpoint_url(self) -> str:
        """``http://host:port``: what a boto3 Lambda client takes as ``endpoint_url``."""
        if self._endpoint_url is None:
            raise RuntimeError("the Lambda service is not started")
        return self._endpoint_url

    # -- LIFECYCLE ----------------------------------------------------------------------------

    def start(self) -> LambdaService:
        """Start serving; return once it accepts connections. Workers start on demand."""
        super().start()
        self._endpoint_url = f"http://{self._authority}"
        # Before multiprocessing's own exit hook, which would wait for the workers forever.
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop serving, then end every worker. Invocations in flight get ``_STOP_GRACE_S``;
        a worker still running after that is killed."""
        atexit.unregister(self.stop)  # nothing, when not started
        super().stop()
        self._endpoint_url = None
        processes, self._leftover_processes = self._leftover_processes, []
        deadline = time.monotonic() + self._stop_grace_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.exitcode is None:
                logger.warning("killing %s, which did not exit", process.name)
                process.kill()
                process.join(_EXIT_WAIT_S)

    # -- SERVER -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        mp_context = multiprocessing.get_context("spawn")
        self._pools = {
            name: _FunctionPool(name, config, mp_context, loop)
            for name, config in self.functions.items()
        }
        # Read bodies up to twice the limit, to answer 413 rather than reset the connection.
        app = web.Application(client_max_size=2 * SYNC_PAYLOAD_LIMIT_BYTES)
        app.router.add_post(_INVOKE_PATH, self._handle_invoke)
        try:
            await self._serve_app(app, shutdown_timeout=_STOP_GRACE_S)
        finally:
            for pool in self._pools.values():
                self._leftover_processes.extend(pool.close())
            self._pools = {}

    async def _handle_invoke(self, request: web.Request) -> web.Response:
        from aiohttp import web

        request_id = str(uuid.uuid4())
        match = _FUNCTION_NAME.fullmatch(request.match_info["function"])
        pool = self._pools.get(match.group(1)) if match else None
        if match is None or pool is None:
            name = match.group(1) if match else request.match_info["function"]
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
            return _api_error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {arn}",
                request_id,
                "Message",
            )
        qualifier = request.query.get("Qualifier")
        if qualifier is not None and match.group(2) is not None and qualifier != match.group(2):
            return _api_error(
                400,
                "InvalidParameterValueException",
                "The derived qualifier from the function name does not match the specified"
                " qualifier.",
                request_id,
            )
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type not in _INVOCATION_TYPES:
            return _api_error(
                400,
                "InvalidParameterValueException",
                f"Unsupported invocation type: {invocation_type}",
                request_id,
            )

        limit = (
            EVENT_PAYLOAD_LIMIT_BYTES if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT_BYTES
        )
        try:
            payload = await request.read()
            size = len(payload)
        except web.HTTPRequestEntityTooLarge:
            payload, size = b"", request.content_length or 2 * SYNC_PAYLOAD_LIMIT_BYTES + 1
        if size > limit:
            kind = "Event" if invocation_type == "Event" else "RequestResponse"
            return _api_error(
                413,
                "RequestEntityTooLargeException",
                f"{size} byte payload is too large for the {kind} invocation type"
                f" (limit {limit} bytes)",
                request_id,
                "Message",
            )
        if invocation_type == "DryRun":
            return web.Response(status=204, headers={"x-amzn-RequestId": request_id})
        if not payload:
            payload = b"{}"  # the event of an invocation without a payload
        try:
            json.loads(payload)
        except ValueError as exc:  # also UnicodeDecodeError
            return _api_error(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: Could not parse payload into json: {exc}",
                request_id,
            )

        if invocation_type == "Event":
            if not pool.enqueue_event(request_id, payload):
                return _throttled(request_id, "FunctionInvocationRateLimitExceeded")
            return web.Response(status=202, headers={"x-amzn-RequestId": request_id})

        if not pool.try_reserve():
            return _throttled(request_id, "ReservedFunctionConcurrentInvocationLimitExceeded")
        try:
            outcome = await pool.invoke(request_id, payload)
        finally:
            pool.release()
        body, failed = outcome
        if not failed and len(body) > RESPONSE_LIMIT_BYTES:
            error = {
                "errorMessage": "Response payload size exceeded maximum allowed payload size"
                f" ({RESPONSE_LIMIT_BYTES} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            body, failed = json.dumps(error).encode(), True
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Executed-Version": "$LATEST",
            "x-amzn-RequestId": request_id,
        }
        if failed:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return web.Response(body=body, headers=headers)


def _api_error(
    status: int,
    error_type: str,
    message: str,
    request_id: str,
    message_key: str = "message",
    **extra: str,
) -> web.Response:
    # Lambda's error shape; botocore takes the code from x-amzn-ErrorType and reads either
    # casing of the message (Lambda's own varies by exception).
    from aiohttp import web

    body = {"Type": "User", message_key: message, **extra}
    headers = {
        "Content-Type": "application/json",
        "x-amzn-ErrorType": error_type,
        "x-amzn-RequestId": request_id,
    }
    return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)


def _throttled(request_id: str, reason: str) -> web.Response:
    return _api_error(429, "TooManyRequestsException", "Rate Exceeded.", request_id, Reason=reason)


# -- COMMAND LINE -----------------------------------------------------------------------------

_OVERRIDES = {
    "concurrency": ("concurrency", int),
    "timeout": ("timeout_s", float),
    "timeout_s": ("timeout_s", float),
    "memory": ("memory_mb", int),
    "memory_mb": ("memory_mb", int),
}


def _function_option(value: str, defaults: Mapping[str, Any]) -> tuple[str, FunctionConfig]:
    """``name=module:function[,concurrency=N][,timeout=S][,memory=MB]``."""
    first, *overrides = value.split(",")
    name, separator, handler = first.partition("=")
    if not separator or not name or not handler:
        raise ValueError(f"expected name=module:function, was {first!r}")
    settings = dict(defaults)
    for override in overrides:
        key, separator, setting = override.partition("=")
        if not separator or key.strip() not in _OVERRIDES:
            raise ValueError(f"unknown override {override!r} (known: {', '.join(_OVERRIDES)})")
        field_name, convert = _OVERRIDES[key.strip()]
        settings[field_name] = convert(setting)
    return name.strip(), FunctionConfig(handler=handler.strip(), **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localgw.lambda_api",
        description="Serve Lambda functions through the Lambda Invoke API, each execution"
        " environment a worker process.",
    )
    parser.add_argument(
        "--function",
        action="append",
        required=True,
        metavar="NAME=HANDLER[,concurrency=N][,timeout=S][,memory=MB]",
        help="e.g. ws_fanout=functions.ws_fanout.handler:handler (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="default reserved concurrency")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="default function timeout")
    parser.add_argument("--memory-mb", type=int, default=1024, help="default memory (reported)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    defaults = {
        "concurrency": args.concurrency,
        "timeout_s": args.timeout_s,
        "memory_mb": args.memory_mb,
    }
    functions: dict[str, FunctionConfig] = {}
    for option in args.function:
        try:
            name, config = _function_option(option, defaults)
        except ValueError as exc:
            parser.error(f"--function {option}: {exc}")
        functions[name] = config

    wait_for_stop_signal = catch_stop_signals()
    with LambdaService(functions, host=args.host, port=args.port) as service:
        for name, config in functions.items():
            logger.info(
                "%s: %s, concurrency %d, timeout %.1f s, %d MB",
                name,
                config.handler,
                config.concurrency,
                config.timeout_s,
                config.memory_mb,
            )
        logger.info("Lambda API on %s", service.endpoint_url)
        wait_for_stop_signal()
        logger.info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
