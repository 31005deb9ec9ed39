"""HTTP health endpoints for the ECS health check and for operators.

``GET /live``: 200 while the service's main loop makes progress (during replay too: a long
replay is not a hang), 503 once it has stalled. ``GET /ready``: 200 once replay is done and the
engine consumes, with its epoch, sequence numbers and lag; 503 before. Both answer JSON.

:class:`PhaseTimes` keeps the last batches' phase durations for that JSON (their medians), so
an operator or a benchmark sees where a batch's time goes without a profiler.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

__all__ = ["HealthServer", "PhaseTimes"]

_json = msgspec.json.Encoder()


class HealthServer:
    def __init__(
        self,
        port: int,
        status: Callable[[], dict[str, Any]],
        *,
        stall_after_s: float = 30.0,
    ) -> None:
        self._status = status
        self._stall_after_s = stall_after_s
        self._beat = time.monotonic()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/live":
                    code, body = server._live()
                elif self.path == "/ready":
                    code, body = server._ready()
                else:
                    code, body = 404, {"error": "not found"}
                data = _json.encode(body)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # health checks every few seconds would drown the log

        # All interfaces: the ECS health check probes the task from outside the container.
        self._server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        """Called by the main loop (and by replay) whenever it makes progress."""
        self._beat = time.monotonic()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _live(self) -> tuple[int, dict[str, Any]]:
        idle = time.monotonic() - self._beat
        status = {"idleSeconds": round(idle, 3), **self._status()}
        return (200 if idle < self._stall_after_s else 503), status

    def _ready(self) -> tuple[int, dict[str, Any]]:
        status = self._status()
        return (200 if status.get("state") == "running" else 503), status


class PhaseTimes:
    """The durations of a batch's phases over the last ``size`` batches, in a ring buffer.

    :meth:`add` is one tuple stored in a list slot (the matcher calls it once a batch, so it
    must cost next to nothing); :meth:`medians_ms` copies the ring (one list copy, atomic under
    the GIL, so the health thread needs no lock) and sorts each phase's column.
    """

    def __init__(self, phases: Sequence[str], size: int = 2_048) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, was {size}")
        self.phases = tuple(phases)
        self._size = size
        self._ring: list[tuple[float, ...]] = []
        self._next = 0

    def add(self, *seconds: float) -> None:
        """One batch: a duration (seconds) for each phase, in the order of ``phases``."""
        ring = self._ring
        if len(ring) < self._size:
            ring.append(seconds)
        else:
            ring[self._next] = seconds
            self._next = (self._next + 1) % self._size

    def __len__(self) -> int:
        return len(self._ring)

    def medians_ms(self) -> dict[str, float]:
        """Each phase's median over the batches in the ring, in ms (3 decimals); {} if none."""
        ring = self._ring[:]
        if not ring:
            return {}
        middle = len(ring) // 2
        medians: dict[str, float] = {}
        for index, phase in enumerate(self.phases):
            column = sorted(sample[index] for sample in ring)
            value = column[middle] if len(column) % 2 else (column[middle - 1] + column[middle]) / 2
            medians[phase] = round(value * 1e3, 3)
        return medians
