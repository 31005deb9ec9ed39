"""``Server-Timing`` response headers: where a request's time went, measured in the handler.

The benchmark reads them to split a round trip into gateway, handler, queue send and engine
wait; browsers' developer tools show them too. Recording a phase costs two clock reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["phase", "record", "ServerTimingMiddleware"]

_phases: ContextVar[list[tuple[str, float]] | None] = ContextVar("phases", default=None)


def record(name: str, seconds: float) -> None:
    phases = _phases.get()
    if phases is not None:
        phases.append((name, seconds))


@contextmanager
def phase(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, time.perf_counter() - start)


class ServerTimingMiddleware:
    """Pure ASGI (no per-request task or body buffering): adds ``Server-Timing`` with the
    whole app's time (``app``) and each recorded phase, in ms."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        phases: list[tuple[str, float]] = []
        token = _phases.set(phases)

        async def send_with_timing(message: Any) -> None:
            if message["type"] == "http.response.start":
                entries = [("app", time.perf_counter() - start), *phases]
                value = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in entries)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"server-timing", value.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            _phases.reset(token)
