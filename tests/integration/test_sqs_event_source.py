"""The local SQS event source through a real LocalStack FIFO queue into the real persister: group
order, batches, partial failures redelivered after the visibility timeout, and a journal that
ends contiguous."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.data_classes import SQSEvent

from cloudex.journal import (
    JOURNAL_GROUP,
    EpochStarted,
    JournalBlock,
    block_dedup_id,
    encode_journal_message,
    marker_dedup_id,
)
from functions.persister import handler as persister
from localgw.sqs_event_source import LambdaHandler, SqsEventSource
from tests.integration.conftest import LOCALSTACK_URL, JournalFeed

ROOT = Path(__file__).resolve().parents[2]
VISIBILITY_TIMEOUT = 2


def send(sqs: Any, queue_url: str, messages: list[JournalBlock | EpochStarted]) -> None:
    for message in messages:
        dedup_id = (
            marker_dedup_id(message.epoch)
            if isinstance(message, EpochStarted)
            else block_dedup_id(message.epoch, message.first_seq)
        )
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=encode_journal_message(message),
            MessageGroupId=JOURNAL_GROUP,
            MessageDeduplicationId=dedup_id,
        )


def journal_seqs(database_url: str) -> list[tuple[int, int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT first_seq, last_seq FROM journal ORDER BY first_seq")
        return [(first, last) for first, last in rows]


def assert_contiguous(database_url: str, blocks: list[JournalBlock]) -> None:
    assert journal_seqs(database_url) == [(b.first_seq, b.last_seq) for b in blocks]


def poll_until(source: SqsEventSource, records: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    processed = 0
    while processed < records:
        assert time.monotonic() < deadline, f"only {processed} of {records} records arrived"
        processed += source.poll_once()


class Recorder:
    """Wraps a handler and keeps every event it was invoked with."""

    def __init__(self, handler: LambdaHandler) -> None:
        self.handler = handler
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        return self.handler(event, context)

    def bodies(self) -> list[str]:
        return [record["body"] for event in self.events for record in event["Records"]]


@pytest.fixture
def queue_url(make_fifo_queue: Callable[..., str]) -> str:
    return make_fifo_queue("events", visibility_timeout=VISIBILITY_TIMEOUT)


@pytest.fixture
def persister_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def test_a_fifo_group_reaches_the_persister_in_order(
    sqs: Any, queue_url: str, persister_env: str, journal_feed: JournalFeed
) -> None:
    marker = journal_feed.marker()
    blocks = [journal_feed.block(deposits=1) for _ in range(12)]
    send(sqs, queue_url, [marker, *blocks])
    send(sqs, queue_url, blocks[:1])  # the engine's retry of a send: SQS drops it (same dedup id)
    recorder = Recorder(persister.handler)
    source = SqsEventSource(queue_url, recorder, sqs_client=sqs)

    poll_until(source, 13)

    assert recorder.bodies() == [encode_journal_message(m) for m in (marker, *blocks)]
    assert all(len(event["Records"]) <= 10 for event in recorder.events)
    assert_contiguous(persister_env, blocks)
    assert source.poll_once() == 0  # everything was deleted

    # The event is what Lambda sends: Powertools' data class reads it.
    record = next(iter(SQSEvent(recorder.events[0]).records))
    queue_name = queue_url.rsplit("/", 1)[1]
    assert record.event_source == "aws:sqs"
    assert record.event_source_arn == f"arn:aws:sqs:us-east-1:000000000000:{queue_name}"
    assert record.aws_region == "us-east-1"
    assert record.attributes.message_group_id == JOURNAL_GROUP
    assert record.attributes.message_deduplication_id == marker_dedup_id(1)
    assert record.attributes.approximate_receive_count == "1"
    assert record.attributes.sequence_number
    assert record.attributes.sent_timestamp
    assert record.md5_of_body
    context = recorder.contexts[0]
    assert (
        context.invoked_function_arn == "arn:aws:lambda:us-east-1:000000000000:function:persister"
    )
    assert 0 < context.get_remaining_time_in_millis() <= 30_000


def test_a_partial_failure_returns_after_the_visibility_timeout(
    sqs: Any,
    queue_url: str,
    persister_env: str,
    journal_feed: JournalFeed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = journal_feed.marker()
    blocks = [journal_feed.block(deposits=1) for _ in range(5)]
    send(sqs, queue_url, [marker, *blocks])

    # The third block fails once (say, the database blinked), then writes.
    failing_seq = blocks[2].first_seq
    write = persister.write_journal_message
    failed: list[int] = []

    def write_failing_once(conn: Any, message: Any, raw: bytes) -> Any:
        if isinstance(message, JournalBlock) and message.first_seq == failing_seq and not failed:
            failed.append(failing_seq)
            raise RuntimeError("the database blinked")
        return write(conn, message, raw)

    monkeypatch.setattr(persister, "write_journal_message", write_failing_once)
    recorder = Recorder(persister.handler)
    source = SqsEventSource(queue_url, recorder, sqs_client=sqs)

    first_delivery = time.monotonic()
    assert source.poll_once() == 6  # LocalStack hands out every visible message of the group
    assert failed == [failing_seq]
    assert_contiguous(persister_env, blocks[:2])
    # The failed block and the rest of the batch are in flight: the group waits for them.
    assert source.poll_once() == 0

    poll_until(source, 3)
    assert time.monotonic() - first_delivery >= VISIBILITY_TIMEOUT - 0.5
    redelivered = recorder.events[-1]["Records"]
    assert [r["body"] for r in redelivered] == [encode_journal_message(b) for b in blocks[2:]]
    assert all(r["attributes"]["ApproximateReceiveCount"] == "2" for r in redelivered)
    assert_contiguous(persister_env, blocks)


def test_a_raising_handler_deletes_nothing(
    sqs: Any, queue_url: str, persister_env: str, journal_feed: JournalFeed
) -> None:
    marker = journal_feed.marker()
    blocks = [journal_feed.block() for _ in range(3)]
    send(sqs, queue_url, [marker, *blocks])
    invocations: list[int] = []

    def crashes_first(event: dict[str, Any], context: Any) -> Any:
        invocations.append(len(event["Records"]))
        if len(invocations) == 1:
            raise MemoryError("the function ran out of memory")
        return persister.handler(event, context)

    source = SqsEventSource(queue_url, crashes_first, sqs_client=sqs)
    stop = threading.Event()
    thread = source.start(stop)
    try:
        deadline = time.monotonic() + 10
        while len(journal_seqs(persister_env)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)

    assert not thread.is_alive()
    assert invocations[:2] == [4, 4]  # the whole batch came back
    assert_contiguous(persister_env, blocks)


def test_an_invalid_batch_response_fails_the_whole_batch(
    sqs: Any, queue_url: str, persister_env: str, journal_feed: JournalFeed
) -> None:
    send(sqs, queue_url, [journal_feed.marker(), journal_feed.block()])

    def unknown_failure(event: dict[str, Any], context: Any) -> Any:
        return {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]}

    source = SqsEventSource(queue_url, unknown_failure, sqs_client=sqs)
    assert source.poll_once() == 2

    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert (
        int(attributes["ApproximateNumberOfMessages"])
        + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        == 2
    )


def test_the_command_line_runs_the_persister(
    sqs: Any, queue_url: str, database_url: str, journal_feed: JournalFeed
) -> None:
    blocks = [journal_feed.block(), journal_feed.block()]
    send(sqs, queue_url, [journal_feed.marker(), *blocks])
    environment = os.environ | {"DATABASE_URL": database_url, "AWS_ENDPOINT_URL": LOCALSTACK_URL}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localgw.sqs_event_source",
            "--queue-url",
            queue_url,
            "--handler",
            "functions.persister.handler.handler",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while len(journal_seqs(database_url)) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.1)
        assert_contiguous(database_url, blocks)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
