"""The engine service: the one writer of books and balances, around the pure engine core.

Start-up (fenced): take the lease, bump the epoch, journal an ``EpochStarted`` marker and wait
until the persister has written it (FIFO order then proves every earlier block is in the journal
table and older epochs are refused), restore the latest snapshot, replay the journal after it
checking every block's state hash, seed configured markets, write every Redis key, consume.

Each batch: take what the receivers have, stamp it with the service's clock, execute it (plus a
heartbeat ``Tick`` when due), then, in this order: (1) journal the records in blocks to
``events.fifo``, confirmed, with the lease checked before and after; (2) Redis keys and replies;
(3) delete the inbound messages; (4) hand the events to the market-data publisher. A crash
anywhere leaves commands either journaled (a redelivery is answered from the result cache, or
after a restart from the replayed journal) or not (they are redelivered and executed then).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from cloudex.enums import ErrorCode
from cloudex.journal import (
    EpochStarted,
    JournalBlock,
    JournalBlockBuilder,
    JournalRecord,
    decode_journal_bytes,
    encode_journal_message,
    marker_dedup_id,
)
from cloudex.markets import load_markets_config
from cloudex.messages import AnyCommand, AnyEvent, CommandResult, Tick, decode_command_body
from cloudex.seed import market_seed_commands
from engine_service.core import Engine
from engine_service.health import PhaseTimes
from engine_service.publisher import MarketDataPublisher
from engine_service.settings import Settings
from engine_service.sqs import InboundMessage

__all__ = ["EngineService", "ReplayDiverged", "FatalError", "BATCH_PHASES"]

log = logging.getLogger(__name__)


class FatalError(RuntimeError):
    """The engine must stop at once, without effects (its state can no longer be trusted to be
    the only one, or durable)."""


class ReplayDiverged(FatalError):
    pass


class Inbox(Protocol):
    def start(self) -> None: ...
    def stop_receiving(self) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...
    def take(self, max_messages: int, timeout_s: float) -> list[InboundMessage]: ...
    def ack(self, messages: Sequence[InboundMessage]) -> None: ...


class JournalTransport(Protocol):
    def send(self, messages: Sequence[tuple[str, str]]) -> None: ...


class Database(Protocol):
    def acquire_lease(self, stop: threading.Event, poll_s: float = 0.5) -> bool: ...
    def start_epoch(self) -> int: ...
    def check_lease(self) -> None: ...
    def wait_for_epoch(self, epoch: int, timeout_s: float, stop: threading.Event) -> bool: ...
    def journal_head(self) -> Any: ...
    def journal_blocks(self, after_seq: int) -> Any: ...
    def latest_snapshot(self, max_event_seq: int | None = None) -> Any: ...
    def save_snapshot(
        self,
        seq: int,
        epoch: int,
        event_seq: int,
        state_hash: str,
        taken_at: int,
        data: bytes,
        keep: int = 3,
    ) -> None: ...


class Output(Protocol):
    def send_batch(
        self,
        engine: Engine,
        events: Sequence[AnyEvent],
        replies: Sequence[CommandResult],
        stop: threading.Event,
    ) -> Any: ...
    def finish(self, pending: Any, engine: Engine, stop: threading.Event) -> None: ...
    def rewrite_all(self, engine: Engine) -> None: ...
    def heartbeat(self, engine: Engine, now: int, epoch: int, engine_id: str) -> None: ...
    def delivered_watermark(self) -> int | None: ...
    def record_delivered(self, seq: int) -> None: ...


class PendingBatch(NamedTuple):
    """A batch journaled and sent to Redis, whose Redis writes are not confirmed yet."""

    write: Any
    messages: Sequence[InboundMessage]
    events: list[AnyEvent]
    message_batch: int


# A batch's phases, timed for batches with inbound messages (the health JSON's medians):
# decode and execute (with the journal blocks sealed); the journal send with its two lease
# checks; the previous batch's Redis confirmation, acks and market data; this batch's keys and
# replies encoded and handed to the Redis writer (whose round trip overlaps the next batch);
# and the whole batch.
BATCH_PHASES = ("match", "journal", "confirm", "redis", "batch")


# How long a batch in flight waits for the next one to overlap with before it is confirmed alone.
_PENDING_WAIT_S = 0.001


def wall_clock_us() -> int:
    return time.time_ns() // 1_000


class EngineService:
    def __init__(
        self,
        settings: Settings,
        *,
        inbox: Inbox,
        journal: JournalTransport,
        database: Database,
        output: Output,
        publisher: MarketDataPublisher,
        clock: Callable[[], int] = wall_clock_us,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.inbox = inbox
        self.journal = journal
        self.database = database
        self.output = output
        self.publisher = publisher
        self.clock = clock
        self.on_progress = on_progress
        self.stop_event = threading.Event()
        self.engine = Engine()
        self.state = "starting"
        self.epoch = 0
        self.seq = 0  # the last journal record's sequence number
        self.commands = 0
        self.batches = 0
        self.message_batches = 0  # batches with inbound messages (fault injection counts these)
        self.last_batch_ms = 0.0
        self.phase_times = PhaseTimes(BATCH_PHASES)
        self._ticks = 0
        self._last_tick = 0
        self._last_heartbeat = 0
        self._delivered_mark = 0  # the market-data watermark last written
        self._last_snapshot_at = 0.0
        self._last_snapshot_seq = 0
        self._snapshot_thread: threading.Thread | None = None
        self._pending: PendingBatch | None = None

    # -- STATUS -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "engineId": self.settings.engine_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "eventSeq": self.engine.seq,
            "commands": self.commands,
            "batches": self.batches,
            "lastBatchMs": round(self.last_batch_ms, 3),
            "phaseMedianMs": self.phase_times.medians_ms(),
            "phaseBatches": len(self.phase_times),
            "lastSnapshotSeq": self._last_snapshot_seq,
        }

    def stop(self) -> None:
        self.stop_event.set()

    # -- LIFE -------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, consume until stopped, shut down; return the process exit code."""
        try:
            if not self.start():
                return 0
            self.consume()
        except FatalError as error:
            self.state = "failed"
            log.critical("engine stopping without effects: %s", error)
            return 1
        self.shutdown()
        return 0

    def start(self) -> bool:
        """Fenced start-up; False if stopped while waiting for the lease."""
        self.state = "standby"
        log.info("waiting for the engine lease")
        if not self.database.acquire_lease(self.stop_event, 0.5):
            return False
        self.on_progress()
        self.epoch = self.database.start_epoch()
        log.info("lease taken: epoch %d", self.epoch)
        self.state = "fencing"
        self._send_journal(
            [
                (
                    marker_dedup_id(self.epoch),
                    encode_journal_message(
                        EpochStarted(self.epoch, self.settings.engine_id, self.clock())
                    ),
                )
            ],
            check_before=False,
        )
        if not self.database.wait_for_epoch(
            self.epoch, self.settings.journal_wait_s, self.stop_event
        ):
            if self.stop_event.is_set():
                return False
            raise FatalError(
                f"the persister did not write epoch {self.epoch}'s marker within "
                f"{self.settings.journal_wait_s} s"
            )
        self.state = "replaying"
        self._restore_and_replay()
        self.state = "seeding"
        config = load_markets_config(self.settings.markets_config)
        seeds = market_seed_commands(
            config, self.clock(), existing=[spec.symbol for spec in self.engine.markets()]
        )
        self.output.rewrite_all(self.engine)
        if seeds:
            self._process([], list(seeds))
        # Start-up garbage is done; what remains lives as long as the process, and the engine
        # makes no reference cycles, so the cyclic collector only adds pauses from here on.
        gc.collect()
        gc.freeze()
        gc.disable()
        self._last_snapshot_at = time.monotonic()
        self.inbox.start()
        self.state = "running"
        log.info("consuming: epoch %d, seq %d, event seq %d", self.epoch, self.seq, self.engine.seq)
        return True

    def _record_delivered(self) -> None:
        mark = self.publisher.delivered_through()
        if mark > self._delivered_mark:
            self.output.record_delivered(mark)
            self._delivered_mark = mark

    def _restore_and_replay(self) -> None:
        # The previous engine's market-data watermark: the events replayed past it were
        # journaled but maybe never delivered, so they are published again (a subscriber may
        # see a range twice, never a gap). So replay starts from a snapshot taken before it,
        # when one is kept. No watermark: no market data was ever published.
        catch_up_from = self.output.delivered_watermark()
        self._delivered_mark = catch_up_from or 0
        snapshot = self.database.latest_snapshot(catch_up_from)
        if snapshot is not None:
            try:
                self.engine = Engine.restore(snapshot.data)
            except ValueError as error:
                raise FatalError(f"snapshot {snapshot.seq} is corrupt: {error}") from error
            if self.engine.state_hash() != snapshot.state_hash:
                raise ReplayDiverged(f"snapshot {snapshot.seq} hash differs from its row")
            self.seq = snapshot.seq
            self._last_snapshot_seq = snapshot.seq
            log.info("restored the snapshot at seq %d (epoch %d)", snapshot.seq, snapshot.epoch)
        started = time.monotonic()
        replayed = 0
        engine = self.engine
        if catch_up_from is not None and catch_up_from < engine.seq:
            log.warning(
                "events %d..%d were never delivered and are older than the snapshot",
                catch_up_from + 1,
                engine.seq,
            )
        catching_up = False
        for raw in self.database.journal_blocks(self.seq):
            block = decode_journal_bytes(raw)
            assert isinstance(block, JournalBlock)
            if block.first_seq > self.seq + 1:
                raise ReplayDiverged(f"journal gap: block {block.first_seq} after {self.seq}")
            for record in block.records:
                if record.seq <= self.seq:
                    continue
                if record.seq != self.seq + 1:
                    raise ReplayDiverged(f"journal record {record.seq} after {self.seq}")
                if (
                    not catching_up
                    and catch_up_from is not None
                    and record.result.events
                    and record.result.events[-1].seq > catch_up_from
                ):
                    catching_up = True
                    self.publisher.seed_orders(engine.open_order_views())
                    self.publisher.replaying(catch_up_from)
                result = engine.execute(record.command)
                if result.error != record.result.error or len(result.events) != len(
                    record.result.events
                ):
                    raise ReplayDiverged(f"record {record.seq} replays differently")
                if catching_up:
                    self.publisher.publish(result.events)
                self.seq = record.seq
                replayed += 1
            if engine.state_hash() != block.state_hash:
                raise ReplayDiverged(f"state hash differs after block {block.first_seq}")
            self.on_progress()
        if catching_up:
            self.publisher.replaying(None)
        else:
            self.publisher.seed_orders(engine.open_order_views())
        head = self.database.journal_head()
        if head.last_seq != self.seq:
            raise ReplayDiverged(f"journal head is {head.last_seq}, replay ended at {self.seq}")
        log.info(
            "replayed %d records in %.2f s: seq %d, event seq %d",
            replayed,
            time.monotonic() - started,
            self.seq,
            engine.seq,
        )

    def consume(self) -> None:
        settings = self.settings
        tick_us = settings.tick_interval_ms * 1_000
        while not self.stop_event.is_set():
            wait_s = max(0.0, (self._last_tick + tick_us - self.clock()) / 1e6)
            # A batch whose Redis writes are in flight is confirmed (its messages deleted, its
            # market data sent) by the next batch, or here as soon as none is waiting: its
            # messages keep their accounts' FIFO groups locked until deleted, so an idle wait
            # would hold each account's next command back by as much as the wait.
            wait_s = _PENDING_WAIT_S if self._pending is not None else min(wait_s, 0.25)
            messages = self.inbox.take(settings.max_batch, wait_s)
            internal: list[AnyCommand] = []
            now = self.clock()
            if now - self._last_tick >= tick_us:
                self._ticks += 1
                internal.append(Tick(id=f"tick:{self.epoch}:{self._ticks}", ts=now))
                self._last_tick = now
            if messages or internal:
                self._process(messages, internal)
            else:
                self._finish_pending()
            self._housekeeping()
            self.on_progress()

    def _housekeeping(self) -> None:
        settings = self.settings
        now = self.clock()
        if now - self._last_heartbeat >= settings.heartbeat_interval_ms * 1_000:
            self._last_heartbeat = now
            try:
                self.output.heartbeat(self.engine, now, self.epoch, settings.engine_id)
                self._record_delivered()
            except Exception as error:
                log.error("heartbeat failed: %s", error)
        if self.seq > self._last_snapshot_seq and (
            self.seq - self._last_snapshot_seq >= settings.snapshot_every_records
            or time.monotonic() - self._last_snapshot_at >= settings.snapshot_interval_s
        ):
            self.snapshot(wait=False)

    def shutdown(self) -> None:
        """SIGTERM: the batch in hand is done; stop receiving, snapshot, flush, exit."""
        self.state = "stopping"
        self._finish_pending()
        self.inbox.stop_receiving()
        if self.seq > self._last_snapshot_seq:
            self.snapshot(wait=True)
        elif self._snapshot_thread is not None:
            self._snapshot_thread.join()
        self.publisher.close()
        with contextlib.suppress(Exception):  # the next engine then repeats a little more
            self._record_delivered()
        self.inbox.close()
        self.state = "stopped"
        log.info("stopped at seq %d, event seq %d", self.seq, self.engine.seq)

    # -- ONE BATCH --------------------------------------------------------------------------

    def _process(self, messages: Sequence[InboundMessage], internal: Sequence[AnyCommand]) -> None:
        started = time.perf_counter()
        engine = self.engine
        execute = engine.execute
        now = self.clock()
        builder = JournalBlockBuilder(self.epoch)
        sealed: list[tuple[str, str]] = []
        replies: list[CommandResult] = []
        events: list[AnyEvent] = []
        seq = self.seq
        commands: list[AnyCommand] = list(internal)
        for message in messages:
            command = self._decode(message, replies)
            if command is not None:
                commands.append(command)
        for command in commands:
            # Each command was decoded for this batch alone: stamping it in place is safe.
            command.ts = now
            result = execute(command)
            replies.append(result)
            if result.duplicate:
                continue
            seq += 1
            if result.events:
                events.extend(result.events)
            if builder.add(JournalRecord(seq, command, result), engine.seq):
                sealed.append(builder.seal(engine.state_hash(), now))  # type: ignore[arg-type]
        if len(builder):
            sealed.append(builder.seal(engine.state_hash(), now))  # type: ignore[arg-type]
        matched = time.perf_counter()
        if sealed:
            self._send_journal(sealed)
        journaled = time.perf_counter()
        self.seq = seq
        if messages:
            self.message_batches += 1
            self._fault("after_journal", self.message_batches)
        # The previous batch's Redis writes ran while this batch matched; now they are
        # confirmed, its messages are deleted and its market data goes out.
        self._finish_pending()
        confirmed = time.perf_counter()
        self._pending = PendingBatch(
            self.output.send_batch(engine, events, replies, self.stop_event),
            messages,
            events,
            self.message_batches,
        )
        self.commands += len(commands)
        self.batches += 1
        finished = time.perf_counter()
        self.last_batch_ms = (finished - started) * 1e3
        if messages:
            self.phase_times.add(
                matched - started,
                journaled - matched,
                confirmed - journaled,
                finished - confirmed,
                finished - started,
            )

    def _finish_pending(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self.output.finish(pending.write, self.engine, self.stop_event)
        if pending.messages:
            self._fault("after_redis", pending.message_batch)
        self.inbox.ack(pending.messages)
        if pending.events:
            self.publisher.publish(pending.events)

    def _fault(self, point: str, batch: int) -> None:
        settings = self.settings
        if settings.fault_kill_at == point and batch == settings.fault_kill_batch:
            log.warning("fault injection: SIGKILL %s in batch %d", point, batch)
            os.kill(os.getpid(), signal.SIGKILL)

    def _decode(self, message: InboundMessage, replies: list[CommandResult]) -> AnyCommand | None:
        """Decode a command; a bad one is answered (if it names a reply channel) and dropped."""
        try:
            command = decode_command_body(message.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("bad command %r: %s", message.dedup_id, error)
            if message.dedup_id:
                replies.append(
                    CommandResult(
                        message.dedup_id,
                        ErrorCode.INVALID_CLIENT_REQUEST,
                        f"Malformed command: {error}",
                        [],
                        [],
                    )
                )
            return None
        return command

    def _send_journal(self, messages: Sequence[tuple[str, str]], check_before: bool = True) -> None:
        from engine_service.postgres import LeaseLost
        from engine_service.sqs import JournalSendFailed

        try:
            if check_before:
                self.database.check_lease()
            self.journal.send(messages)
            # Still holding the lease after the send proves no newer engine has sent its marker
            # yet, so these blocks precede it in the FIFO and the persister will accept them.
            self.database.check_lease()
        except (LeaseLost, JournalSendFailed) as error:
            raise FatalError(str(error)) from error

    # -- SNAPSHOTS --------------------------------------------------------------------------

    def snapshot(self, wait: bool) -> None:
        """Encode the state now (consistent: between batches) and store it on a thread."""
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            if not wait:
                return
            self._snapshot_thread.join()
        data = self.engine.snapshot()
        args = (
            self.seq,
            self.epoch,
            self.engine.seq,
            self.engine.state_hash(),
            self.clock(),
            data,
        )
        self._last_snapshot_seq = self.seq
        self._last_snapshot_at = time.monotonic()

        def store() -> None:
            try:
                self.database.save_snapshot(*args, keep=self.settings.snapshot_keep)
                log.info("snapshot at seq %d stored (%d bytes)", args[0], len(data))
            except Exception as error:
                log.error("snapshot at seq %d failed: %s", args[0], error)

        self._snapshot_thread = threading.Thread(target=store, name="snapshot", daemon=True)
        self._snapshot_thread.start()
        if wait:
            self._snapshot_thread.join()
