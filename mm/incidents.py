"""One log line per incident: the first failure of a kind is logged, its repeats are not (only at
debug level), and its end is logged once with how long it lasted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Incidents"]


@dataclass
class _Incident:
    started: float
    failures: int


class Incidents:
    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.active: dict[str, _Incident] = {}

    def report(self, key: str, message: str, *, level: int = logging.WARNING) -> bool:
        """Record a failure; log it if it starts an incident. True if it did."""
        incident = self.active.get(key)
        if incident is None:
            self.active[key] = _Incident(self.clock(), 1)
            self.log.log(level, message)
            return True
        incident.failures += 1
        self.log.debug(message)
        return False

    def resolve(self, key: str, message: str = "") -> None:
        """The incident ``key`` (if any) is over."""
        incident = self.active.pop(key, None)
        if incident is not None:
            self.log.info(
                "%s: resolved after %d failure(s) in %.1f s%s",
                key,
                incident.failures,
                self.clock() - incident.started,
                f" ({message})" if message else "",
            )

    def resolve_prefix(self, prefix: str) -> None:
        for key in [key for key in self.active if key.startswith(prefix)]:
            self.resolve(key)
