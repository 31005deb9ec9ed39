"""SQS adapters: the inbox (``orders.fifo``) and the journal transport (``events.fifo``).

The inbox runs several long-polling receive calls in flight, each on its own thread, feeding one
in-memory queue the matcher drains. FIFO group locking keeps each account's commands in order
across receivers: SQS hands out no message of a group while another of that group is in flight.
Deletes happen on their own thread, after the journal and Redis, off the matcher's path.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import boto3
from botocore.config import Config

from cloudex.journal import JOURNAL_GROUP

__all__ = [
    "InboundMessage",
    "SqsInbox",
    "MemoryInbox",
    "JournalSendFailed",
    "SqsJournalTransport",
    "MemoryJournalTransport",
    "sqs_client",
]

log = logging.getLogger(__name__)

# SQS limits: 10 entries and 256 KiB per batch call.
_BATCH_ENTRIES = 10
_BATCH_BYTES = 250_000


def sqs_client(**overrides: Any) -> Any:
    """A boto3 SQS client; its endpoint comes from ``AWS_ENDPOINT_URL(_SQS)`` when set."""
    config = Config(retries={"mode": "standard", "max_attempts": 3}, **overrides)
    return boto3.session.Session().client("sqs", config=config)


class InboundMessage(NamedTuple):
    body: str
    receipt_handle: str
    dedup_id: str  # the command id, by the API's contract: where to reply to a bad message
    receive_count: int


class SqsInbox:
    def __init__(
        self,
        queue_url: str,
        receivers: int = 4,
        wait_s: int = 1,
        max_inflight: int = 20_000,
    ) -> None:
        self.queue_url = queue_url
        self._wait_s = wait_s
        self._received: queue.Queue[list[InboundMessage]] = queue.Queue()
        self._deletes: queue.Queue[list[str] | None] = queue.Queue()
        self._inflight = threading.Semaphore(max_inflight // _BATCH_ENTRIES)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._receive_loop, name=f"receiver-{n}", daemon=True)
            for n in range(receivers)
        ]
        self._threads.append(
            threading.Thread(target=self._delete_loop, name="deleter", daemon=True)
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop_receiving(self) -> None:
        self._stop.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop receiving and finish the pending deletes."""
        self._stop.set()
        self._deletes.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def take(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        """What has arrived, up to about ``max_messages``; wait at most ``timeout_s`` for any."""
        try:
            first = self._received.get(timeout=timeout_s)
        except queue.Empty:
            return []
        taken = list(first)
        batches = 1
        while len(taken) < max_messages:
            try:
                taken.extend(self._received.get_nowait())
            except queue.Empty:
                break
            batches += 1
        for _ in range(batches):
            self._inflight.release()
        return taken

    def ack(self, messages: Sequence[InboundMessage]) -> None:
        """Delete messages whose effects are out (asynchronously: a lost delete only means a
        redelivery, which the engine answers with the stored result)."""
        if messages:
            self._deletes.put([m.receipt_handle for m in messages])

    def _receive_loop(self) -> None:
        client = sqs_client(max_pool_connections=2)
        while not self._stop.is_set():
            # Back-pressure: at most max_inflight messages received and not yet matched.
            if not self._inflight.acquire(timeout=0.5):
                continue
            try:
                response = client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=_BATCH_ENTRIES,
                    WaitTimeSeconds=self._wait_s,
                    MessageSystemAttributeNames=[
                        "MessageDeduplicationId",
                        "ApproximateReceiveCount",
                    ],
                )
            except Exception as error:
                self._inflight.release()
                log.warning("receive_message failed: %s", error)
                self._stop.wait(1.0)
                continue
            messages = response.get("Messages") or []
            if not messages:
                self._inflight.release()
                continue
            self._received.put(
                [
                    InboundMessage(
                        m["Body"],
                        m["ReceiptHandle"],
                        m.get("Attributes", {}).get("MessageDeduplicationId", ""),
                        int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                    )
                    for m in messages
                ]
            )

    def _delete_loop(self) -> None:
        client = sqs_client(max_pool_connections=2)
        while True:
            handles = self._deletes.get()
            if handles is None:
                return
            for start in range(0, len(handles), _BATCH_ENTRIES):
                chunk = handles[start : start + _BATCH_ENTRIES]
                try:
                    response = client.delete_message_batch(
                        QueueUrl=self.queue_url,
                        Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
                    )
                    failed = response.get("Failed") or []
                except Exception as error:
                    failed = chunk
                    log.warning("delete_message_batch failed: %s", error)
                if failed:
                    # Harmless: the messages come back after the visibility timeout and are
                    # answered from the result cache; many would mean the deletes come too late.
                    log.warning("%d inbound messages not deleted", len(failed))


class MemoryInbox:
    """An in-process inbox for the benchmark and tests of the loop: same interface, no SQS."""

    def __init__(self) -> None:
        self._received: collections.deque[InboundMessage] = collections.deque()
        self._arrived = threading.Event()
        self.acked: list[InboundMessage] = []

    def start(self) -> None:
        pass

    def stop_receiving(self) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass

    def put(self, body: str, dedup_id: str) -> None:
        self._received.append(InboundMessage(body, dedup_id, dedup_id, 1))
        self._arrived.set()

    def take(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        received = self._received
        if not received:
            self._arrived.clear()
            if not received and not self._arrived.wait(timeout_s):
                return []
        taken: list[InboundMessage] = []
        popleft = received.popleft
        while received and len(taken) < max_messages:
            taken.append(popleft())
        return taken

    def ack(self, messages: Sequence[InboundMessage]) -> None:
        self.acked.extend(messages)


class JournalSendFailed(RuntimeError):
    """SQS did not confirm a journal message: the engine cannot know it is durable."""


class SqsJournalTransport:
    """Sends journal messages to ``events.fifo`` in order, in batch calls, and returns only once
    SQS has confirmed every one (boto3 retries transient errors; the dedup id makes a retried
    send harmless)."""

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self._client = sqs_client(max_pool_connections=2)

    def send(self, messages: Sequence[tuple[str, str]]) -> None:
        """Send ``(dedup_id, body)`` messages, in order."""
        entries: list[dict[str, str]] = []
        size = 0
        for dedup_id, body in messages:
            if entries and (len(entries) == _BATCH_ENTRIES or size + len(body) > _BATCH_BYTES):
                self._send_batch(entries)
                entries, size = [], 0
            entries.append(
                {
                    "Id": str(len(entries)),
                    "MessageBody": body,
                    "MessageGroupId": JOURNAL_GROUP,
                    "MessageDeduplicationId": dedup_id,
                }
            )
            size += len(body)
        if entries:
            self._send_batch(entries)

    def _send_batch(self, entries: list[dict[str, str]]) -> None:
        try:
            response = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as error:
            raise JournalSendFailed(f"send_message_batch failed: {error}") from error
        failed = response.get("Failed") or []
        if failed or len(response.get("Successful") or []) != len(entries):
            raise JournalSendFailed(f"journal messages not confirmed: {failed}")


class MemoryJournalTransport:
    """Keeps journal messages in memory (the benchmark's in-process journal)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def send(self, messages: Sequence[tuple[str, str]]) -> None:
        self.messages.extend(messages)
