"""Write one journal message to the ``journal`` tables: contiguously, fenced by epoch, idempotently.

Each message is written in its own transaction, holding the ``journal_head`` row lock, so the
checks and the write are one atomic step. What comes back tells the caller whether the message
may be deleted:

- an :class:`Outcome` (written, duplicate of what is already there, or refused as stale): yes;
- a :class:`JournalWriteError`: no, it must be retried. The journal never skips a message: a
  block arriving before its predecessor waits for it, and anything that cannot ever be written
  (a fork, a malformed block) stays on the queue, where its age raises the alarm.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import psycopg
from psycopg import pq

from cloudex.journal import EpochStarted, JournalBlock

__all__ = [
    "Outcome",
    "JournalWriteError",
    "MalformedJournalMessage",
    "JournalGap",
    "EpochAhead",
    "JournalFork",
    "write_journal_message",
]


class Outcome(enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"  # a redelivery of what is already written
    REFUSED = "refused"  # from an epoch older than the newest marker: a fenced-out engine


class JournalWriteError(Exception):
    """The message was not written and must be retried, never dropped."""


class MalformedJournalMessage(JournalWriteError):
    """The message contradicts itself (its header does not match its records)."""


class JournalGap(JournalWriteError):
    """The block does not start right after the journal's last record: its predecessor is due."""


class EpochAhead(JournalWriteError):
    """A block of an epoch whose marker has not been written, which the engine never sends."""


class JournalFork(JournalWriteError):
    """The message claims a place in the journal that holds something else."""


class _Head(NamedTuple):
    epoch: int
    last_seq: int
    last_event_seq: int


def write_journal_message(
    conn: psycopg.Connection, message: JournalBlock | EpochStarted, raw: bytes
) -> Outcome:
    """Write ``message`` (whose msgpack bytes are ``raw``) in one transaction on ``conn``.

    ``conn`` must be idle and in autocommit mode, so that the transaction here really commits
    before this returns: the caller deletes the message from the queue on the strength of it.
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE or not conn.autocommit:
        raise ValueError("write_journal_message needs an idle connection in autocommit mode")
    if isinstance(message, JournalBlock):
        _check_block(message)
    elif message.epoch < 1:
        raise MalformedJournalMessage(f"epoch marker with epoch {message.epoch}: epochs start at 1")
    with conn.transaction():
        row = conn.execute(
            "SELECT epoch, last_seq, last_event_seq FROM journal_head WHERE id = 1 FOR UPDATE"
        ).fetchone()
        if row is None:
            raise RuntimeError("journal_head has no row: the migrations have not been applied")
        head = _Head(*row)
        if isinstance(message, EpochStarted):
            return _write_marker(conn, head, message)
        return _write_block(conn, head, message, raw)


def _write_marker(conn: psycopg.Connection, head: _Head, marker: EpochStarted) -> Outcome:
    if marker.epoch < head.epoch:
        return Outcome.REFUSED
    if marker.epoch == head.epoch:
        row = conn.execute(
            "SELECT engine_id FROM journal_epochs WHERE epoch = %s", (marker.epoch,)
        ).fetchone()
        if row is None:
            raise JournalFork(f"epoch {marker.epoch} is the journal's epoch but has no marker row")
        if row[0] != marker.engine_id:
            raise JournalFork(
                f"epoch {marker.epoch} was started by engine {row[0]!r}, "
                f"and again by {marker.engine_id!r}: the lease did not fence them"
            )
        return Outcome.DUPLICATE
    conn.execute(
        "INSERT INTO journal_epochs (epoch, engine_id, first_seq, sent_at) VALUES (%s, %s, %s, %s)",
        (marker.epoch, marker.engine_id, head.last_seq + 1, marker.sent_at),
    )
    conn.execute(
        "UPDATE journal_head SET epoch = %s, updated_at = now() WHERE id = 1", (marker.epoch,)
    )
    return Outcome.WRITTEN


def _write_block(conn: psycopg.Connection, head: _Head, block: JournalBlock, raw: bytes) -> Outcome:
    if block.epoch < head.epoch:
        return Outcome.REFUSED
    if block.epoch > head.epoch:
        raise EpochAhead(
            f"block {block.first_seq}..{block.last_seq} is of epoch {block.epoch}, "
            f"but the newest marker written is epoch {head.epoch}"
        )
    if block.last_seq <= head.last_seq:
        row = conn.execute(
            "SELECT last_seq, state_hash FROM journal WHERE first_seq = %s AND epoch = %s",
            (block.first_seq, block.epoch),
        ).fetchone()
        if row is None or tuple(row) != (block.last_seq, block.state_hash):
            raise JournalFork(
                f"block {block.first_seq}..{block.last_seq} of epoch {block.epoch} is behind the "
                f"journal (at {head.last_seq}), and the journal holds a different block there"
            )
        return Outcome.DUPLICATE
    if block.first_seq != head.last_seq + 1 and _fenced_out(conn, block.epoch):
        # The engine that sent it could not confirm the send of the block before (it exits on
        # that, before any effect) and a newer engine has taken the lease since: the records of
        # this block were never answered and are being redelivered to the newer engine. Waiting
        # for the missing block would hold the newer engine's marker behind it for ever.
        return Outcome.REFUSED
    if block.first_seq != head.last_seq + 1:
        raise JournalGap(
            f"block {block.first_seq}..{block.last_seq} does not follow the journal's last "
            f"record {head.last_seq}"
        )
    if block.first_event_seq != head.last_event_seq + 1:
        raise JournalGap(
            f"block {block.first_seq}..{block.last_seq} starts at event {block.first_event_seq}, "
            f"but the journal's last event is {head.last_event_seq}"
        )
    conn.execute(
        """
        INSERT INTO journal (first_seq, last_seq, epoch, first_event_seq, last_event_seq,
                             state_hash, sent_at, block)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            block.first_seq,
            block.last_seq,
            block.epoch,
            block.first_event_seq,
            block.last_event_seq,
            block.state_hash,
            block.sent_at,
            raw,
        ),
    )
    conn.execute(
        """
        UPDATE journal_head SET last_seq = %s, last_event_seq = %s, updated_at = now()
        WHERE id = 1
        """,
        (block.last_seq, block.last_event_seq),
    )
    return Outcome.WRITTEN


def _fenced_out(conn: psycopg.Connection, epoch: int) -> bool:
    """Whether a newer engine than ``epoch``'s has taken the lease (it bumps the epoch first)."""
    row = conn.execute("SELECT epoch FROM engine_lease WHERE id = 1").fetchone()
    return row is not None and int(row[0]) > epoch


def _check_block(block: JournalBlock) -> None:
    """Raise unless the block's header describes its records: the header is what gets indexed
    and checked for contiguity, so it must not disagree with what replay will read."""
    where = f"block {block.first_seq}..{block.last_seq} of epoch {block.epoch}"
    if block.epoch < 1:
        raise MalformedJournalMessage(f"{where}: epochs start at 1")
    if not block.records:
        raise MalformedJournalMessage(f"{where}: no records")
    seqs = [record.seq for record in block.records]
    if seqs[0] != block.first_seq or seqs[-1] != block.last_seq:
        raise MalformedJournalMessage(f"{where}: records run {seqs[0]}..{seqs[-1]}")
    if seqs != list(range(block.first_seq, block.last_seq + 1)):
        raise MalformedJournalMessage(f"{where}: record seqs are not consecutive")
    event_seqs = [event.seq for record in block.records for event in record.result.events]
    if event_seqs != list(range(block.first_event_seq, block.last_event_seq + 1)):
        raise MalformedJournalMessage(
            f"{where}: events do not run {block.first_event_seq}..{block.last_event_seq}"
        )
