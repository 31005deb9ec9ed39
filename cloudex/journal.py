"""The journal: what the engine makes durable in ``events.fifo`` before any effect leaves it.

The journal is the ordered list of every command that changed the engine (accepted or rejected:
a rejection is remembered for exactly-once replies, so it is state too), each with its result
and events. Each record has a *journal sequence number* (``seq``), gap-free from 1. Events keep
their own global *event* sequence numbers (``Event.seq``), assigned by the engine; a rejected
command has none, which is why blocks are numbered by records, not events.

One ``events.fifo`` message carries one message: a :class:`JournalBlock` of many records (group
commit) or an :class:`EpochStarted` marker. Blocks are deduplicated by ``epoch:first_seq``; the
persister writes them to the ``journal`` table only contiguously, and refuses blocks of an epoch
older than the newest marker it has written (see ``docs/architecture.md``, "Journal").

Replaying the commands of every record after a snapshot, in order, gives the same state: each
block carries the engine's ``state_hash()`` after its last record, and replay checks it.
"""

from __future__ import annotations

import base64
from typing import Union

import msgspec

from cloudex.messages import AnyCommand, CommandResult

__all__ = [
    "JOURNAL_GROUP",
    "MAX_BLOCK_BYTES",
    "JournalRecord",
    "JournalBlock",
    "EpochStarted",
    "JournalMessage",
    "encode_journal_message",
    "decode_journal_message",
    "decode_journal_bytes",
    "JournalBlockBuilder",
    "block_dedup_id",
    "marker_dedup_id",
]

# Every journal message shares one message group: the journal is one ordered stream.
JOURNAL_GROUP = "journal"

# An SQS message is at most 256 KiB; the body is base64 (4/3) of the msgpack bytes.
MAX_BLOCK_BYTES = 180_000


class JournalRecord(msgspec.Struct, array_like=True, gc=False):
    """One command as the engine executed it (``command.ts`` is the service's stamp)."""

    seq: int
    command: AnyCommand
    result: CommandResult


class JournalBlock(msgspec.Struct, tag=True, array_like=True, gc=False):
    """Consecutive records ``first_seq..last_seq`` of one epoch, and the state hash after them.

    ``first_event_seq..last_event_seq`` is the range of event sequence numbers inside
    (``first_event_seq == last_event_seq + 1`` when the records emitted no event).
    """

    epoch: int
    first_seq: int
    last_seq: int
    first_event_seq: int
    last_event_seq: int
    state_hash: str
    sent_at: int  # µs, the service's clock when the block was sealed
    records: list[JournalRecord]


class EpochStarted(msgspec.Struct, tag=True, array_like=True, gc=False):
    """A new engine holds the lease. Once the persister has written it, FIFO order proves that
    every block sent before it is in the journal table, and blocks of older epochs are refused."""

    epoch: int
    engine_id: str
    sent_at: int


JournalMessage = Union[JournalBlock, EpochStarted]  # noqa: UP007 (a runtime value, for msgspec)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[JournalMessage] = msgspec.msgpack.Decoder(JournalMessage)


def encode_journal_message(message: JournalBlock | EpochStarted) -> str:
    """The SQS message body: base64 of the msgpack bytes (SQS bodies are text)."""
    return base64.b64encode(_encoder.encode(message)).decode("ascii")


def decode_journal_message(body: str) -> JournalBlock | EpochStarted:
    """Decode an SQS body; raise ``ValueError`` (or ``msgspec.DecodeError``) if it is not one."""
    return _decoder.decode(base64.b64decode(body, validate=True))


def decode_journal_bytes(data: bytes) -> JournalBlock | EpochStarted:
    """Decode the msgpack bytes the ``journal`` table keeps."""
    return _decoder.decode(data)


class _EncodedBlock(msgspec.Struct, tag="JournalBlock", array_like=True, gc=False):
    """A :class:`JournalBlock` whose records are already encoded: the same bytes on the wire."""

    epoch: int
    first_seq: int
    last_seq: int
    first_event_seq: int
    last_event_seq: int
    state_hash: str
    sent_at: int
    records: list[msgspec.Raw]


class JournalBlockBuilder:
    """Group commit: records go in one at a time; a block is sealed when it is full or on
    :meth:`seal`. Records are encoded as they arrive, so a block's size is known exactly."""

    def __init__(self, epoch: int, max_bytes: int = MAX_BLOCK_BYTES) -> None:
        self.epoch = epoch
        self.max_bytes = max_bytes
        self._records: list[msgspec.Raw] = []
        self._size = 0
        self._first_seq = 0
        self._last_seq = 0
        self._first_event_seq = 0
        self._last_event_seq = 0

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: JournalRecord, last_event_seq: int) -> bool:
        """Add a record; ``last_event_seq`` is the engine's event sequence after it. Return
        whether the block is now full (the caller seals it with the state hash of this moment)."""
        data = _encoder.encode(record)
        if not self._records:
            self._first_seq = record.seq
            events = record.result.events
            self._first_event_seq = events[0].seq if events else last_event_seq + 1
        self._records.append(msgspec.Raw(data))
        self._size += len(data)
        self._last_seq = record.seq
        self._last_event_seq = last_event_seq
        return self._size >= self.max_bytes

    def seal(self, state_hash: str, sent_at: int) -> tuple[str, str] | None:
        """Return ``(dedup_id, body)`` of the block so far and start a new one (None if empty)."""
        if not self._records:
            return None
        block = _EncodedBlock(
            self.epoch,
            self._first_seq,
            self._last_seq,
            self._first_event_seq,
            self._last_event_seq,
            state_hash,
            sent_at,
            self._records,
        )
        body = base64.b64encode(_encoder.encode(block)).decode("ascii")
        self._records = []
        self._size = 0
        return block_dedup_id(self.epoch, block.first_seq), body


def block_dedup_id(epoch: int, first_seq: int) -> str:
    return f"{epoch}:{first_seq}"


def marker_dedup_id(epoch: int) -> str:
    return f"{epoch}:start"
