"""Running the read-model projections over the ``journal`` table, each from its own checkpoint.

A projection turns journal events into rows of its read model. The runner reads the blocks after
the projections' checkpoints, decodes each block once, sorts its events by type once, and hands
every projection the events after its own checkpoint. One *round* is one transaction:

- the checkpoint rows are locked (``FOR UPDATE SKIP LOCKED``), so overlapping persister
  invocations never apply the same block twice: the second one skips what the first holds;
- each projection applies its events and moves its checkpoint inside a savepoint. If it raises,
  the savepoint is rolled back (its checkpoint stays where it was), the failure is recorded on
  its checkpoint row, logged and counted (``ProjectionFailures``: the alarm), and the other
  projections go on. A failed projection is not retried in the same invocation; the next one
  starts again from its checkpoint, so nothing is ever skipped or applied twice.

Projections only read the ``journal`` table, which the raw writer has already committed: a
failing projection cannot hold back the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from cloudex.journal import JournalBlock, decode_journal_bytes
from cloudex.messages import (
    BalanceChanged,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
)

__all__ = [
    "ProjectedEvents",
    "Projection",
    "ProjectionError",
    "RoundReport",
    "RunReport",
    "run_projections",
    "run_round",
]

logger = logging.getLogger(__name__)

MarketEvent = MarketAdded | MarketFeesChanged | MarketStateChanged
OrderEvent = OrderAccepted | TradeExecuted | OrderClosed

# Blocks read per round: up to ~3.6 MB of journal, a few thousand commands.
DEFAULT_BLOCKS_PER_ROUND = 20


class ProjectionError(RuntimeError):
    """The journal contradicts the read model: the projection must stop at its checkpoint."""


@dataclass(slots=True)
class ProjectedEvents:
    """The events of consecutive journal blocks that read models are made of, in journal order,
    sorted by kind. ``balance_commands[i]`` is the id of the command of ``balances[i]``."""

    first_seq: int
    last_seq: int
    markets: list[MarketEvent] = field(default_factory=list)
    orders: list[OrderEvent] = field(default_factory=list)
    trades: list[TradeExecuted] = field(default_factory=list)
    balances: list[BalanceChanged] = field(default_factory=list)
    balance_commands: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.markets) + len(self.orders) + len(self.balances)

    def extend(self, other: ProjectedEvents) -> None:
        self.last_seq = other.last_seq
        self.markets += other.markets
        self.orders += other.orders
        self.trades += other.trades
        self.balances += other.balances
        self.balance_commands += other.balance_commands


def sort_block(block: JournalBlock) -> ProjectedEvents:
    """The events of one block, by kind (depth, stats and rejected commands make no rows)."""
    events = ProjectedEvents(block.first_seq, block.last_seq)
    markets = events.markets
    orders = events.orders
    trades = events.trades
    balances = events.balances
    commands = events.balance_commands
    for record in block.records:
        for event in record.result.events:
            kind = type(event)
            if kind is BalanceChanged:
                balances.append(event)  # type: ignore[arg-type]
                commands.append(record.command.id)
            elif kind is TradeExecuted:
                trades.append(event)  # type: ignore[arg-type]
                orders.append(event)  # type: ignore[arg-type]
            elif kind is OrderAccepted or kind is OrderClosed:
                orders.append(event)  # type: ignore[arg-type]
            elif kind is MarketAdded or kind is MarketFeesChanged or kind is MarketStateChanged:
                markets.append(event)  # type: ignore[arg-type]
    return events


class Projection(Protocol):
    """One read model, the table called ``name``. ``apply`` runs inside a transaction and must
    raise on anything it cannot apply exactly: the runner then rolls it back and keeps the
    checkpoint."""

    name: str

    def apply(self, conn: psycopg.Connection, events: ProjectedEvents) -> None: ...


@dataclass(slots=True)
class RoundReport:
    blocks: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # projection -> events applied
    failed: dict[str, str] = field(default_factory=dict)  # projection -> error
    skipped: list[str] = field(default_factory=list)  # locked by another invocation


@dataclass(slots=True)
class RunReport:
    rounds: int = 0
    events: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)  # journal records not yet applied


def run_round(
    conn: psycopg.Connection,
    projections: Sequence[Projection],
    *,
    exclude: frozenset[str] = frozenset(),
    max_blocks: int = DEFAULT_BLOCKS_PER_ROUND,
) -> RoundReport:
    """Apply the next blocks (at most ``max_blocks``) to every projection not in ``exclude``, in
    one transaction on ``conn`` (idle, autocommit). Return what happened; raise only if the
    database connection itself failed (then nothing of the round was committed)."""
    report = RoundReport()
    wanted = [p for p in projections if p.name not in exclude]
    if not wanted:
        return report
    with conn.transaction():
        rows = conn.execute(
            "SELECT name, last_seq FROM projection_checkpoints WHERE name = ANY(%s) "
            "ORDER BY name FOR UPDATE SKIP LOCKED",
            ([p.name for p in wanted],),
        ).fetchall()
        checkpoints = {str(name): int(seq) for name, seq in rows}
        report.skipped = [p.name for p in wanted if p.name not in checkpoints]
        if not checkpoints:
            return report
        start = min(checkpoints.values())
        blocks = [
            (int(first_seq), decode_journal_bytes(bytes(raw)))
            for first_seq, raw in conn.execute(
                "SELECT first_seq, block FROM journal WHERE last_seq > %s "
                "ORDER BY first_seq LIMIT %s",
                (start, max_blocks),
            )
        ]
        report.blocks = len(blocks)
        if not blocks:
            return report
        sorted_blocks: list[ProjectedEvents] = []
        for first_seq, block in blocks:
            if not isinstance(block, JournalBlock) or block.first_seq != first_seq:
                raise ProjectionError(f"journal row {first_seq} does not hold its block")
            sorted_blocks.append(sort_block(block))

        for projection in wanted:
            checkpoint = checkpoints.get(projection.name)
            if checkpoint is None:
                continue
            try:
                events = _events_after(sorted_blocks, checkpoint)
                if events is None:
                    continue
                with conn.transaction():
                    projection.apply(conn, events)
                    conn.execute(
                        "UPDATE projection_checkpoints SET last_seq = %s, updated_at = now(), "
                        "failures = 0, last_error = NULL WHERE name = %s",
                        (events.last_seq, projection.name),
                    )
                report.applied[projection.name] = events.count
            except psycopg.OperationalError:
                raise  # the connection is gone: the whole round is lost, and retried
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                report.failed[projection.name] = error
                logger.error(
                    "projection %s failed after journal seq %s; it stays there",
                    projection.name,
                    checkpoint,
                    exc_info=True,
                )
                conn.execute(
                    "UPDATE projection_checkpoints SET failures = failures + 1, "
                    "last_error = %s, failed_at = now() WHERE name = %s",
                    (error, projection.name),
                )
    return report


def _events_after(blocks: list[ProjectedEvents], checkpoint: int) -> ProjectedEvents | None:
    """The events of the blocks after ``checkpoint``, which must end a block."""
    todo = [block for block in blocks if block.last_seq > checkpoint]
    if not todo:
        return None
    if todo[0].first_seq != checkpoint + 1:
        raise ProjectionError(
            f"checkpoint {checkpoint} is not the end of a journal block "
            f"(the next block starts at {todo[0].first_seq})"
        )
    if len(todo) == 1:
        return todo[0]
    events = ProjectedEvents(todo[0].first_seq, todo[0].first_seq - 1)
    for block in todo:
        events.extend(block)
    return events


def run_projections(
    conn: psycopg.Connection,
    projections: Sequence[Projection],
    *,
    time_left_ms: Callable[[], int] | None = None,
    reserve_ms: int = 3_000,
    max_rounds: int = 1_000,
    max_blocks: int = DEFAULT_BLOCKS_PER_ROUND,
) -> RunReport:
    """Catch every projection up with the journal, round after round, until nothing is left,
    ``time_left_ms()`` falls under ``reserve_ms`` (the Lambda's remaining time) or
    ``max_rounds`` ran. A projection that fails is left at its checkpoint for the next run."""
    report = RunReport()
    failed: set[str] = set()
    started = time.monotonic()
    while report.rounds < max_rounds:
        if time_left_ms is not None and time_left_ms() < reserve_ms:
            break
        round_report = run_round(
            conn, projections, exclude=frozenset(failed), max_blocks=max_blocks
        )
        report.rounds += 1
        report.events += sum(round_report.applied.values())
        failed.update(round_report.failed)
        report.failed.update(round_report.failed)
        if round_report.blocks < max_blocks:
            break  # caught up
        if not round_report.applied and not round_report.failed:
            break  # nothing movable (locked elsewhere, or every projection failed before)
        # A projection that failed this round is excluded from the next, which then starts at
        # the lowest checkpoint of the others: one stuck projection far behind must not starve
        # them of blocks.
    report.lag = projection_lag(conn)
    logger.debug("projections: %s in %.3f s", report, time.monotonic() - started)
    return report


def projection_lag(conn: psycopg.Connection) -> dict[str, int]:
    """Journal records each projection has yet to apply."""
    rows = conn.execute(
        "SELECT c.name, h.last_seq - c.last_seq FROM projection_checkpoints c, journal_head h "
        "WHERE h.id = 1"
    ).fetchall()
    return {str(name): int(lag) for name, lag in rows}
