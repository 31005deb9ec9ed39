"""HTTP health endpoints for the ECS health check and for operators.

``GET /live``: 200 while the service's main loop makes progress (during replay too: a long
replay is not a hang), 503 once it has stalled. ``GET /ready``: 200 once replay is done and the
engine consumes, with its epoch, sequence numbers and lag; 503 before. Both answer JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

__all__ = ["HealthServer"]

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
