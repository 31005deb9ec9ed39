"""What the local gateways share: an aiohttp server on a thread of its own, and Lambda workers.

Each local stand-in (the REST gateway, the WebSocket gateway, the Lambda Invoke API) serves
from a daemon thread with its own asyncio event loop, so that tests and benches can start it in
their own process, next to a client that blocks. :class:`ThreadedServer` owns that thread and
its lifecycle; :class:`LambdaWorkers` is the pool of threads the two gateways run their Lambda
handlers on, each standing for one warm container.

Nothing here imports aiohttp at module level: the Lambda Invoke API's worker processes import
``localgw.lambda_api``, and with it this module, and should not pay for aiohttp.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["close_loop", "Invocation", "LambdaWorkers", "ThreadedServer", "catch_stop_signals"]

_logger = logging.getLogger(__name__)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop`` (a thread's own loop, once it is done with it), then
    close it and unset it as the thread's current loop."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:
        _logger.debug("closing an event loop", exc_info=True)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# -- LAMBDA WORKERS ---------------------------------------------------------------------------

Invocation = Callable[[str], Any]
"""One invocation of a handler, given the log stream name of the worker (container) that runs
it: builds the handler's context, calls it and returns its result."""

_Job = tuple["concurrent.futures.Future[Any]", Invocation]


class LambdaWorkers:
    """``count`` threads standing for that many warm Lambda containers: each runs one invocation
    at a time, with its own asyncio event loop set as the thread's current loop (Mangum calls
    ``asyncio.get_event_loop()``, which in a thread without one raises ``RuntimeError``), and
    its own log stream. When all are busy, invocations wait in a queue. The threads are named
    ``{name_prefix}-{index}``; ``logger`` reports the ones still busy when stopped."""

    def __init__(self, count: int, *, name_prefix: str, logger: logging.Logger) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, was {count}")
        self._count = count
        self._name_prefix = name_prefix
        self._logger = logger
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._jobs = queue.SimpleQueue()  # a worker left busy by an earlier stop() keeps its own
        for index in range(self._count):
            thread = threading.Thread(
                target=_work,
                args=(self._jobs,),
                name=f"{self._name_prefix}-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float) -> None:
        """Cancel the queued invocations, then give the running ones ``grace_s`` in all; a
        worker still busy after that is left to finish on its daemon thread."""
        while True:  # invocations still queued will never run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            self._logger.warning("stopped with invocations still running on %s", ", ".join(busy))
        self._threads = []

    async def invoke(self, invocation: Invocation, *, timeout_s: float) -> asyncio.Future[Any]:
        """Run ``invocation`` on a worker and wait at most ``timeout_s`` for it (its wait for a
        worker counts); its outcome, done, or cancelled if it did not return in time (the
        caller's timeout, or the gateway is stopping). A cancelled invocation that was still
        queued never starts; one that was running runs on, as a Lambda function does after API
        Gateway gave up on it."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, invocation))
        outcome = asyncio.wrap_future(future)
        try:
            await asyncio.wait({outcome}, timeout=timeout_s)
        finally:
            if not outcome.done():  # timed out, or the gateway is stopping
                outcome.cancel()  # a queued invocation never starts; a running one runs on
        return outcome


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    # One warm container: its own event loop, current for this thread, before the first
    # invocation (Mangum's asyncio.get_event_loop() raises in a thread without one).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    log_stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
    try:
        while (job := jobs.get()) is not None:
            future, invocation = job
            if not future.set_running_or_notify_cancel():
                continue  # API Gateway gave up while it was queued
            try:
                result = invocation(log_stream)
            except BaseException as exc:  # what the runtime reports as a function error
                future.set_exception(exc)
            else:
                future.set_result(result)
    finally:
        close_loop(loop)


# -- THE SERVER THREAD ------------------------------------------------------------------------


class ThreadedServer:
    """An aiohttp server on a daemon thread with its own event loop, started and stopped from
    any other thread; a base for the local gateways.

    A subclass names its thread, itself in messages and their logger (class attributes below),
    and implements :meth:`_serve`, which builds its application and serves it with
    :meth:`_serve_app`. ``workers``, when given, start before the server and stop after it.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; after ``start()``,
    ``port`` is the one it listens on (``port=0`` picks a free port).
    """

    _thread_name: ClassVar[str]  # "rest-gateway"
    _description: ClassVar[str]  # "the REST gateway", in messages
    _logger: ClassVar[logging.Logger]  # the subclass's module logger, so its records keep it
    # What stop() gives the invocations still running (on the workers, or the subclass's own).
    _stop_grace_s: ClassVar[float]

    def __init__(self, *, host: str, port: int, workers: LambdaWorkers | None = None) -> None:
        self.host = host
        self.port = port
        self._workers = workers
        self._server_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Both made anew by each start(): set once the server listens (start() waits for it),
        # and once stop() asks the server to end (set on the server's loop).
        self._listening = threading.Event()
        self._shutdown = asyncio.Event()

    @property
    def _authority(self) -> str:
        """``host:port``, an IPv6 host in brackets, for URLs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- LIFECYCLE ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the workers and the server; return once it accepts connections."""
        if self._server_thread is not None:
            raise RuntimeError(f"{self._description} is already started")
        if self._workers is not None:
            self._workers.start()
        # The event binds to the loop that first waits on it: the server's, made below.
        self._listening, self._shutdown = threading.Event(), asyncio.Event()
        failure: list[BaseException] = []
        self._server_thread = threading.Thread(
            target=self._serve_forever, args=(failure,), name=self._thread_name, daemon=True
        )
        self._server_thread.start()
        self._listening.wait()
        if failure:  # it never listened: undo the start, and raise what stopped it
            self._server_thread.join()
            self._server_thread = None
            if self._workers is not None:
                self._workers.stop(grace_s=0.0)
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving, then the workers; nothing if not started."""
        thread, loop = self._server_thread, self._loop
        if thread is None:
            return
        if loop is not None:
            loop.call_soon_threadsafe(self._shutdown.set)
        thread.join()
        self._server_thread = None
        if self._workers is not None:
            self._workers.stop(self._stop_grace_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- SERVING ------------------------------------------------------------------------------

    def _serve_forever(self, failure: list[BaseException]) -> None:
        # The server thread: a failure before the server listens goes back to start(), which
        # raises it; one after is only logged, as nobody waits for this thread but stop().
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if self._listening.is_set():
                self._logger.exception("%s failed", self._description)
            else:
                failure.append(exc)
        finally:
            self._listening.set()
            self._loop = None
            close_loop(loop)

    async def _serve(self) -> None:
        """Build the application and serve it with :meth:`_serve_app`; return once it ends."""
        raise NotImplementedError

    async def _serve_app(
        self,
        app: web.Application,
        *,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        **runner_options: Any,
    ) -> None:
        """Serve ``app`` on ``host:port`` until stop() is called (``port`` becomes the one the
        system picked, when it was 0), then await ``on_stop``, still listening, and close the
        server. ``runner_options`` go to aiohttp's ``AppRunner`` (``shutdown_timeout``...)."""
        from aiohttp import web

        # No signal handlers (only the main thread may install them) and no access log.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._listening.set()
            await self._shutdown.wait()
            if on_stop is not None:
                await on_stop()
        finally:
            await runner.cleanup()


# -- COMMAND LINES ----------------------------------------------------------------------------


def catch_stop_signals() -> Callable[[], None]:
    """Catch SIGINT and SIGTERM from now on; return what blocks until one of them came.

    A command line calls it before it starts its server, so that a signal during the start
    still ends it cleanly (stop() runs once the start is done), then serves until it returns.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def wait_for_stop_signal() -> None:
        # Wakes up twice a second: handlers run on the main thread, between its waits.
        while not stop.wait(0.5):
            pass

    return wait_for_stop_signal
