"""Pieces of a local Cloudex: queues, the persister's event source, engine processes.

Used by the integration tests, the benchmarks and the local runner: the same wiring everywhere,
so what the tests prove is what runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from cloudex.messages import Command, encode_command_body

__all__ = [
    "ROOT",
    "create_fifo_queue",
    "send_command",
    "free_port",
    "PersisterRunner",
    "EngineProcess",
]

ROOT = Path(__file__).resolve().parents[1]


def create_fifo_queue(
    sqs: Any, name: str, *, visibility_timeout: int = 30, dlq_arn: str | None = None
) -> str:
    attributes = {
        "FifoQueue": "true",
        "ContentBasedDeduplication": "false",
        "VisibilityTimeout": str(visibility_timeout),
    }
    if dlq_arn:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
        )
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def send_command(
    sqs: Any, queue_url: str, command: Command, group: str, dedup_id: str | None = None
) -> None:
    """Send a command as the API does: group = account, dedup id = command id."""
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=encode_command_body(command),
        MessageGroupId=group,
        MessageDeduplicationId=dedup_id or command.id,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PersisterRunner:
    """The persister Lambda handler on ``events.fifo`` through the local SQS event source."""

    def __init__(self, events_queue_url: str, database_url: str, sqs: Any = None) -> None:
        from functions.persister import handler as persister
        from localgw.sqs_event_source import SqsEventSource

        os.environ["DATABASE_URL"] = database_url
        self.source = SqsEventSource(
            events_queue_url,
            persister.handler,
            wait_seconds=1,
            sqs_client=sqs or boto3.client("sqs"),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PersisterRunner:
        self._thread = self.source.start(self._stop)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class EngineProcess:
    """``python -m engine_service`` as a child process, with its health endpoint."""

    def __init__(self, env: Mapping[str, str], log_path: Path | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "HEALTH_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine_service"],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
        )
        return self

    def status(self) -> dict[str, Any] | None:
        """The ``/live`` JSON (includes ``state``), or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/live", timeout=2) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as error:
            return json.loads(error.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def wait_state(self, state: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"engine exited with {self.process.returncode}")
            status = self.status()
            if status is not None and status.get("state") == state:
                return status
            time.sleep(0.05)
        raise TimeoutError(f"engine not {state!r} within {timeout_s} s: {self.status()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, and wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None
