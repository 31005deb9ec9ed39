"""The persister's journal writes against a real PostgreSQL, with blocks made by the real engine:
contiguous, idempotent, fenced by epoch, and nothing ever skipped or dropped."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from cloudex.journal import (
    JOURNAL_GROUP,
    EpochStarted,
    JournalBlock,
    decode_journal_message,
    encode_journal_message,
)
from functions.persister import handler as persister
from functions.persister.journal_writer import (
    EpochAhead,
    JournalFork,
    JournalGap,
    MalformedJournalMessage,
    Outcome,
    write_journal_message,
)
from localgw.lambda_context import LambdaContext
from localgw.sqs_event_source import lambda_sqs_event
from tests.integration.conftest import JournalFeed

QUEUE_URL = "http://127.0.0.1:4566/queue/us-east-1/000000000000/events.fifo"


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def persister_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def write(conn: psycopg.Connection, message: JournalBlock | EpochStarted) -> Outcome:
    return write_journal_message(conn, message, msgspec.msgpack.encode(message))


def journal_rows(conn: psycopg.Connection) -> list[tuple[int, int, int]]:
    rows = conn.execute("SELECT first_seq, last_seq, epoch FROM journal ORDER BY first_seq")
    return [(first, last, epoch) for first, last, epoch in rows]


def head(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT epoch, last_seq, last_event_seq FROM journal_head").fetchone()
    assert row is not None
    return (row[0], row[1], row[2])


def sqs_message(body: str, sequence: int) -> dict[str, Any]:
    """A message as SQS ReceiveMessage returns it from events.fifo."""
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": uuid.uuid4().hex,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {
            "SenderId": "000000000000",
            "SentTimestamp": "1764000000000",
            "ApproximateReceiveCount": "1",
            "ApproximateFirstReceiveTimestamp": "1764000000001",
            "SequenceNumber": str(18_000_000_000_000_000_000 + sequence),
            "MessageGroupId": JOURNAL_GROUP,
            "MessageDeduplicationId": f"dedup-{sequence}",
        },
    }


def invoke(bodies: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Invoke the persister with one SQS event; return the message ids and its response."""
    messages = [sqs_message(body, index) for index, body in enumerate(bodies)]
    event = lambda_sqs_event(messages, queue_url=QUEUE_URL)
    response = persister.handler(event, LambdaContext("persister"))
    return [m["MessageId"] for m in messages], dict(response)


# -- THE WRITER ---------------------------------------------------------------------------------


def test_contiguous_blocks_are_written(conn: psycopg.Connection, journal_feed: JournalFeed) -> None:
    marker = journal_feed.marker()
    blocks = [
        journal_feed.block(),
        journal_feed.block(deposits=1, rejected=2),
        journal_feed.block(),
    ]

    assert write(conn, marker) is Outcome.WRITTEN
    assert [write(conn, block) for block in blocks] == [Outcome.WRITTEN] * 3

    assert journal_rows(conn) == [(b.first_seq, b.last_seq, 1) for b in blocks]
    assert head(conn) == (1, blocks[-1].last_seq, blocks[-1].last_event_seq)
    assert conn.execute("SELECT epoch, engine_id, first_seq FROM journal_epochs").fetchall() == [
        (1, "engine-test", 1)
    ]
    # The stored bytes are the block itself: replay decodes exactly what was journaled.
    stored = conn.execute("SELECT block FROM journal ORDER BY first_seq").fetchall()
    assert [msgspec.msgpack.decode(row[0], type=JournalBlock) for row in stored] == blocks


def test_redelivered_messages_are_duplicates(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    marker, first, second = journal_feed.marker(), journal_feed.block(), journal_feed.block()
    assert [write(conn, m) for m in (marker, first, second)] == [Outcome.WRITTEN] * 3

    assert write(conn, marker) is Outcome.DUPLICATE
    assert write(conn, first) is Outcome.DUPLICATE
    assert write(conn, second) is Outcome.DUPLICATE
    assert len(journal_rows(conn)) == 2
    assert head(conn) == (1, second.last_seq, second.last_event_seq)


def test_a_gap_is_retried_until_its_predecessor_is_written(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    write(conn, journal_feed.marker())
    first, second, third = (journal_feed.block() for _ in range(3))
    write(conn, first)

    with pytest.raises(JournalGap):
        write(conn, third)
    assert journal_rows(conn) == [(first.first_seq, first.last_seq, 1)]

    assert write(conn, second) is Outcome.WRITTEN
    assert write(conn, third) is Outcome.WRITTEN
    assert [row[0] for row in journal_rows(conn)] == [1, second.first_seq, third.first_seq]


def test_a_gap_left_by_an_engine_that_lost_the_lease_is_refused(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    # The engine's batch send lost block 2 but delivered block 3; it could not confirm the
    # send, so it exited before any effect. Once a newer engine holds the lease, block 3 is
    # refused instead of blocking the newer engine's marker behind it for ever.
    write(conn, journal_feed.marker())
    first, _lost, orphan = (journal_feed.block() for _ in range(3))
    write(conn, first)
    with pytest.raises(JournalGap):
        write(conn, orphan)
    conn.execute("UPDATE engine_lease SET epoch = 2 WHERE id = 1")
    assert write(conn, orphan) is Outcome.REFUSED
    assert write(conn, journal_feed.new_epoch()) is Outcome.WRITTEN
    assert journal_rows(conn) == [(first.first_seq, first.last_seq, 1)]


def test_an_older_epoch_is_refused_after_a_newer_marker(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    old_marker = journal_feed.marker()
    write(conn, old_marker)
    write(conn, journal_feed.block())
    late_block = journal_feed.block()  # sent by the old engine after it lost the lease

    new_marker = journal_feed.new_epoch()
    assert write(conn, new_marker) is Outcome.WRITTEN
    assert write(conn, late_block) is Outcome.REFUSED
    assert write(conn, old_marker) is Outcome.REFUSED

    assert len(journal_rows(conn)) == 1
    assert head(conn)[:2] == (2, late_block.first_seq - 1)
    epochs = conn.execute("SELECT epoch, first_seq FROM journal_epochs ORDER BY epoch").fetchall()
    assert epochs == [(1, 1), (2, late_block.first_seq)]


def test_a_newer_epoch_without_its_marker_fails(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    write(conn, journal_feed.marker())
    write(conn, journal_feed.block())
    journal_feed.new_epoch()  # its marker is never written

    with pytest.raises(EpochAhead):
        write(conn, journal_feed.block())
    assert len(journal_rows(conn)) == 1


def test_a_different_block_at_a_written_place_is_a_fork(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    marker = journal_feed.marker()
    block = journal_feed.block()
    write(conn, marker)
    write(conn, block)

    with pytest.raises(JournalFork):
        write(conn, msgspec.structs.replace(block, state_hash="0" * 64))
    with pytest.raises(JournalFork):
        write(conn, msgspec.structs.replace(marker, engine_id="another-engine"))


def test_a_block_contradicting_its_records_fails(
    conn: psycopg.Connection, journal_feed: JournalFeed
) -> None:
    write(conn, journal_feed.marker())
    block = journal_feed.block()
    changes: list[dict[str, Any]] = [
        {"first_seq": 2},
        {"last_seq": block.last_seq + 3},
        {"last_event_seq": 1},
        {"epoch": 0},
        {"records": []},
    ]
    for change in changes:
        with pytest.raises(MalformedJournalMessage):
            write(conn, msgspec.structs.replace(block, **change))
    assert journal_rows(conn) == []
    assert write(conn, block) is Outcome.WRITTEN


def test_records_must_be_consecutive(conn: psycopg.Connection, journal_feed: JournalFeed) -> None:
    write(conn, journal_feed.marker())
    block = journal_feed.block(deposits=3)
    records = [*block.records]
    records[1], records[2] = records[2], records[1]
    with pytest.raises(MalformedJournalMessage, match="not consecutive"):
        write(conn, msgspec.structs.replace(block, records=records))


# -- THE HANDLER --------------------------------------------------------------------------------


def test_handler_writes_a_batch(persister_env: str, journal_feed: JournalFeed) -> None:
    marker, first, second = journal_feed.marker(), journal_feed.block(), journal_feed.block()
    bodies = [encode_journal_message(m) for m in (marker, first, second)]

    _, response = invoke(bodies)

    assert response == {"batchItemFailures": []}
    with psycopg.connect(persister_env) as conn:
        assert journal_rows(conn) == [
            (1, first.last_seq, 1),
            (second.first_seq, second.last_seq, 1),
        ]
        # The raw msgpack bytes of the body, as sent.
        assert conn.execute("SELECT block FROM journal WHERE first_seq = 1").fetchone() == (
            base64.b64decode(bodies[1]),
        )


def test_handler_fails_the_rest_of_the_batch_after_the_first_failure(
    persister_env: str, journal_feed: JournalFeed
) -> None:
    marker, first, second, third = (
        journal_feed.marker(),
        journal_feed.block(),
        journal_feed.block(),
        journal_feed.block(),
    )
    # The third block before the second: a gap, and the second, though writable, must wait.
    bodies = [encode_journal_message(m) for m in (marker, first, third, second)]

    ids, response = invoke(bodies)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": ids[2]}, {"itemIdentifier": ids[3]}]
    }
    with psycopg.connect(persister_env) as conn:
        assert journal_rows(conn) == [(1, first.last_seq, 1)]

    # The redelivery, in order this time, completes the journal; the marker is a duplicate.
    _, response = invoke([encode_journal_message(m) for m in (marker, second, third)])
    assert response == {"batchItemFailures": []}
    with psycopg.connect(persister_env) as conn:
        assert [row[0] for row in journal_rows(conn)] == [1, second.first_seq, third.first_seq]


def test_handler_fails_an_undecodable_body(persister_env: str, journal_feed: JournalFeed) -> None:
    marker, block = journal_feed.marker(), journal_feed.block()
    not_base64 = "this is not a journal message"
    not_msgpack = base64.b64encode(b"\xc1 never valid msgpack").decode()

    ids, response = invoke(
        [encode_journal_message(marker), not_base64, encode_journal_message(block)]
    )
    assert response == {
        "batchItemFailures": [{"itemIdentifier": ids[1]}, {"itemIdentifier": ids[2]}]
    }

    # A batch where every record fails is an invocation error: Lambda returns all of it.
    for body in (not_base64, not_msgpack):
        with pytest.raises(BatchProcessingError):
            invoke([body])
    with pytest.raises(ValueError):
        decode_journal_message(not_msgpack)


def test_handler_refuses_stale_epochs_and_deletes_them(
    persister_env: str, journal_feed: JournalFeed
) -> None:
    old_marker = journal_feed.marker()
    late_block = journal_feed.block()
    new_marker = journal_feed.new_epoch()

    _, response = invoke([encode_journal_message(m) for m in (new_marker, old_marker, late_block)])

    # Refused messages succeed: they are deleted, never retried.
    assert response == {"batchItemFailures": []}
    with psycopg.connect(persister_env) as conn:
        assert head(conn) == (2, 0, 0)
        assert journal_rows(conn) == []


def test_handler_reconnects_after_losing_its_connection(
    persister_env: str, journal_feed: JournalFeed
) -> None:
    _, response = invoke([encode_journal_message(journal_feed.marker())])
    assert response == {"batchItemFailures": []}

    # What RDS does to an idle connection, or a failover to every connection.
    with psycopg.connect(persister_env, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    block = journal_feed.block()
    _, response = invoke([encode_journal_message(block)])
    assert response == {"batchItemFailures": []}
    with psycopg.connect(persister_env) as conn:
        assert journal_rows(conn) == [(1, block.last_seq, 1)]
