"""``python -m engine_service.audit``: an operator's audit of every account's balances.

The engine's balances exist in three independent forms, and each can go wrong on its own: the
balance ledger (a read model, projected from the journal's recorded events by the persister),
the journal itself (commands that, replayed through the pure engine, must give the same state,
which every block's state hash vouches for), and the engine's snapshots (what a restart restores).
A bug in the projection, a lost or tampered row, or a snapshot that does not match its journal
would each leave the others intact; comparing them is what finds it.

Sources, as ``(available, locked)`` per ``(account, asset)``:

- ``ledger_deltas``: the sum of the ledger's deltas, and ``ledger_last``: the last row's
  ``available``/``locked``. The two must agree (the last row *is* the balance, the deltas add up
  to it); the ledger is also checked row by row (each row's "after" is the previous one's plus
  its delta), for no duplicate event and for whole-atom amounts.
- ``replay``: the journal replayed from seq 1 through a fresh :class:`Engine`, gap-free, each
  record's result checked against the journaled one and each block's state hash checked.
- ``snapshot``: the latest snapshot the journal reaches, restored with :meth:`Engine.restore`.

Two comparisons: at the snapshot's point (ledger rows up to its ``event_seq``, replay up to its
``seq``) and at the ledger projection's checkpoint (normally the journal head; the report says
when the projection is behind and by how much). Everything is read in one ``REPEATABLE READ``
transaction, so a persister writing meanwhile cannot make the sources disagree; the journal is
streamed through a server-side cursor, so memory is the engine's state plus a few blocks.

The ledger is assumed whole: once old monthly partitions of ``balance_ledger`` are detached and
archived, its sums no longer start from zero and this audit would need their closing balances.
Replay uses the default :class:`EngineConfig`, as the engine service does.

Output: a human-readable report on stderr and one JSON object as the last line of stdout. Exit
code 0 when every source agrees and the journal, snapshot and ledger checks pass, 1 otherwise,
2 on a usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
from psycopg.pq import TransactionStatus

from cloudex import aws_connect
from cloudex.env_settings import SettingsError
from cloudex.journal import JournalBlock, decode_journal_bytes
from engine_service.core import Engine

__all__ = [
    "AT_SNAPSHOT",
    "AT_LEDGER",
    "Balance",
    "Balances",
    "Difference",
    "AssetSummary",
    "Comparison",
    "SnapshotInfo",
    "ReplayResult",
    "AuditReport",
    "audit",
    "replay_journal",
    "ledger_balances",
    "engine_balances",
    "compare",
    "main",
]

Balance = tuple[int, int]  # (available, locked), in atoms
Balances = dict[tuple[int, str], Balance]  # (account, asset) -> balance

# Sources, in the order they are shown.
LEDGER_DELTAS = "ledger_deltas"
LEDGER_LAST = "ledger_last"
REPLAY = "replay"
SNAPSHOT = "snapshot"

# Points of comparison.
AT_SNAPSHOT = "snapshot"
AT_LEDGER = "ledger"

_ZERO: Balance = (0, 0)
_encoder = msgspec.msgpack.Encoder()

Connection = psycopg.Connection[Any]


# -- REPORT -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Difference:
    """One (account, asset) on which the sources disagree at one point. A source without any
    row or entry for it shows ``None`` (it counts as zero in the comparison)."""

    point: str
    account: int
    asset: str
    values: dict[str, Balance | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "account": self.account,
            "asset": self.asset,
            **{source: None if v is None else list(v) for source, v in self.values.items()},
        }

    def describe(self) -> str:
        shown = ", ".join(
            f"{source} {'absent' if v is None else f'{v[0]}/{v[1]}'}"
            for source, v in self.values.items()
        )
        return f"at {self.point}: account {self.account} {self.asset}: {shown}"


@dataclass(slots=True)
class AssetSummary:
    accounts: int = 0  # accounts any source has a balance of this asset for
    differences: int = 0
    totals: dict[str, Balance] = field(default_factory=dict)  # source -> (available, locked)


@dataclass(slots=True)
class Comparison:
    """The sources at one point of the journal: ``seq`` (journal record) and ``event_seq``."""

    point: str
    seq: int
    event_seq: int
    sources: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why it is not compared
    assets: dict[str, AssetSummary] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)


@dataclass(slots=True)
class SnapshotInfo:
    seq: int
    epoch: int
    event_seq: int
    state_hash: str


@dataclass(slots=True)
class ReplayResult:
    """What a replay of the journal found. ``seq``/``event_seq`` is where it got to (the head,
    unless it stopped at the first problem: after one, its state cannot be trusted)."""

    seq: int = 0
    event_seq: int = 0
    blocks: int = 0
    records: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    balances: dict[int, Balances] = field(default_factory=dict)  # at each requested seq
    event_seqs: dict[int, int] = field(default_factory=dict)
    state_hashes: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class AuditReport:
    journal_seq: int = 0
    journal_event_seq: int = 0
    ledger_seq: int = 0  # the balance_ledger projection's checkpoint (a journal seq)
    ledger_event_seq: int = 0
    snapshot: SnapshotInfo | None = None
    replay: ReplayResult = field(default_factory=ReplayResult)
    comparisons: list[Comparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed checks: they fail the audit
    notes: list[str] = field(default_factory=list)  # worth knowing, not failures

    @property
    def ledger_behind(self) -> int:
        """Journal records the ledger projection has yet to apply."""
        return max(0, self.journal_seq - self.ledger_seq)

    @property
    def differences(self) -> int:
        return sum(len(c.differences) for c in self.comparisons)

    @property
    def ok(self) -> bool:
        return self.differences == 0 and not self.problems

    def to_json(self, max_listed: int = 100) -> dict[str, Any]:
        """The summary as one JSON-able object (differences listed up to ``max_listed``)."""
        listed = [d for c in self.comparisons for d in c.differences][:max_listed]
        return {
            "audit": "balances",
            "ok": self.ok,
            "differences": self.differences,
            "problems": len(self.problems),
            "journal_seq": self.journal_seq,
            "journal_event_seq": self.journal_event_seq,
            "replayed_seq": self.replay.seq,
            "replayed_blocks": self.replay.blocks,
            "replayed_records": self.replay.records,
            "replay_seconds": round(self.replay.seconds, 3),
            "ledger_seq": self.ledger_seq,
            "ledger_event_seq": self.ledger_event_seq,
            "ledger_behind": self.ledger_behind,
            "snapshot_seq": None if self.snapshot is None else self.snapshot.seq,
            "snapshot_event_seq": None if self.snapshot is None else self.snapshot.event_seq,
            "snapshot_epoch": None if self.snapshot is None else self.snapshot.epoch,
            "points": [
                {
                    "point": c.point,
                    "seq": c.seq,
                    "event_seq": c.event_seq,
                    "sources": c.sources,
                    "skipped": c.skipped,
                    "differences": len(c.differences),
                    "assets": {
                        asset: {
                            "accounts": s.accounts,
                            "differences": s.differences,
                            "totals": {
                                source: {"available": t[0], "locked": t[1]}
                                for source, t in s.totals.items()
                            },
                        }
                        for asset, s in c.assets.items()
                    },
                }
                for c in self.comparisons
            ],
            "difference_list": [d.to_json() for d in listed],
            "problem_list": self.problems,
            "notes": self.notes,
        }

    def to_text(self, max_listed: int = 100) -> str:
        """The report for a person to read."""
        lines = ["Balance audit"]
        replay = self.replay
        lines.append(
            f"  journal: head seq {self.journal_seq} (event seq {self.journal_event_seq}); "
            f"replayed {replay.records} records in {replay.blocks} blocks in "
            f"{replay.seconds:.2f} s, up to seq {replay.seq}"
        )
        behind = (
            "up to date with the journal head"
            if self.ledger_behind == 0
            else f"BEHIND the journal head by {self.ledger_behind} records"
        )
        lines.append(
            f"  ledger projection: checkpoint seq {self.ledger_seq} "
            f"(event seq {self.ledger_event_seq}), {behind}"
        )
        if self.snapshot is None:
            lines.append("  snapshot: none")
        else:
            s = self.snapshot
            lines.append(f"  snapshot: seq {s.seq} (epoch {s.epoch}, event seq {s.event_seq})")
        for c in self.comparisons:
            where = "the snapshot" if c.point == AT_SNAPSHOT else "the ledger checkpoint"
            lines.append(
                f"At {where} (seq {c.seq}, event seq {c.event_seq}): "
                + (" vs ".join(c.sources) if c.sources else "nothing to compare")
            )
            for source, why in c.skipped.items():
                lines.append(f"  {source} not compared: {why}")
            for asset, summary in c.assets.items():
                totals = "; ".join(
                    f"{source} {t[0]}/{t[1]}" for source, t in summary.totals.items()
                )
                lines.append(
                    f"  {asset}: {summary.accounts} accounts, {summary.differences} differences;"
                    f" totals available/locked: {totals}"
                )
        if self.differences:
            lines.append(f"Differences ({self.differences}, up to {max_listed} listed):")
            listed = [d for c in self.comparisons for d in c.differences][:max_listed]
            lines.extend(f"  {d.describe()}" for d in listed)
        if self.problems:
            lines.append(f"Problems ({len(self.problems)}):")
            lines.extend(f"  {p}" for p in self.problems)
        if self.notes:
            lines.append("Notes:")
            lines.extend(f"  {n}" for n in self.notes)
        lines.append(
            "Result: OK, every source agrees"
            if self.ok
            else f"Result: FAILED, {self.differences} differences, {len(self.problems)} problems"
        )
        return "\n".join(lines)


# -- SOURCES ----------------------------------------------------------------------------------


def engine_balances(engine: Engine) -> Balances:
    """Every (account, asset) balance the engine holds (zeros included)."""
    return {
        (account, asset): balance
        for account in engine.accounts()
        for asset, balance in engine.balances(account).items()
    }


def replay_journal(conn: Connection, at: Iterable[int] = (), *, itersize: int = 50) -> ReplayResult:
    """Replay the whole journal through a fresh engine, checking it as it goes; capture the
    balances after each journal seq in ``at``. Runs inside the caller's transaction (a
    server-side cursor needs one) and streams the blocks, ``itersize`` at a time.

    Checked: blocks and records follow each other without gap or overlap; each table row's
    columns match its block's header; event seqs continue; each record replays to exactly the
    result that was journaled; each block's state hash is the replaying engine's. The replay
    stops at the first failure, which it reports: after it, its state proves nothing."""
    result = ReplayResult()
    wanted = set(at)
    engine = Engine()
    started = time.perf_counter()
    seq = 0

    def capture() -> None:
        if seq in wanted:
            result.balances[seq] = engine_balances(engine)
            result.event_seqs[seq] = engine.seq
            result.state_hashes[seq] = engine.state_hash()

    capture()
    with conn.cursor(name="audit_journal") as cursor:
        cursor.itersize = itersize
        cursor.execute(
            "SELECT first_seq, last_seq, first_event_seq, last_event_seq, state_hash, block "
            "FROM journal ORDER BY first_seq"
        )
        for first_seq, last_seq, first_event_seq, last_event_seq, state_hash, raw in cursor:
            problem = _check_row(seq, engine.seq, first_seq, last_seq, first_event_seq)
            block = None
            if problem is None:
                try:
                    decoded = decode_journal_bytes(bytes(raw))
                except (msgspec.DecodeError, msgspec.ValidationError) as error:
                    problem = f"journal row {first_seq}: undecodable block ({error})"
                else:
                    if not isinstance(decoded, JournalBlock):
                        problem = f"journal row {first_seq}: holds {type(decoded).__name__}"
                    elif (
                        decoded.first_seq,
                        decoded.last_seq,
                        decoded.first_event_seq,
                        decoded.last_event_seq,
                        decoded.state_hash,
                    ) != (first_seq, last_seq, first_event_seq, last_event_seq, state_hash):
                        problem = f"journal row {first_seq}: columns differ from its block"
                    else:
                        block = decoded
            if block is not None:
                for record in block.records:
                    if record.seq != seq + 1:
                        problem = f"journal record {record.seq} follows {seq}"
                        break
                    replayed = engine.execute(record.command)
                    seq = record.seq
                    if replayed.duplicate or _encoder.encode(replayed) != _encoder.encode(
                        record.result
                    ):
                        problem = f"journal record {seq} replays to a different result"
                        break
                    result.records += 1
                    capture()
                else:
                    if seq != block.last_seq:
                        problem = f"journal block {block.first_seq} ends at {seq}, not {last_seq}"
                    elif engine.seq != block.last_event_seq:
                        problem = (
                            f"journal block {block.first_seq}: event seq {engine.seq} after "
                            f"replay, {block.last_event_seq} journaled"
                        )
                    elif engine.state_hash() != block.state_hash:
                        problem = f"journal block {block.first_seq}: state hash differs on replay"
                    else:
                        result.blocks += 1
            if problem is not None:
                result.problems.append(problem + "; the replay stops there")
                break
    result.seq = seq
    result.event_seq = engine.seq
    result.seconds = time.perf_counter() - started
    return result


def _check_row(
    seq: int, event_seq: int, first_seq: int, last_seq: int, first_event_seq: int
) -> str | None:
    if first_seq != seq + 1:
        return f"journal gap or overlap: block {first_seq} after seq {seq}"
    if first_event_seq != event_seq + 1:
        return f"journal block {first_seq}: first event seq {first_event_seq} after {event_seq}"
    if last_seq < first_seq:
        return f"journal block {first_seq}: ends at {last_seq}"
    return None


def ledger_balances(conn: Connection, event_seq: int) -> tuple[Balances, Balances]:
    """The ledger's balances after event ``event_seq``: ``(sum of deltas, last row)``."""
    deltas: Balances = {}
    for account, asset, available, locked in conn.execute(
        "SELECT account, asset, sum(available_delta), sum(locked_delta) FROM balance_ledger "
        "WHERE seq <= %s GROUP BY account, asset",
        (event_seq,),
    ):
        deltas[(int(account), str(asset))] = (_atoms(available), _atoms(locked))
    last: Balances = {}
    for account, asset, available, locked in conn.execute(
        "SELECT DISTINCT ON (account, asset) account, asset, available, locked "
        "FROM balance_ledger WHERE seq <= %s ORDER BY account, asset, seq DESC",
        (event_seq,),
    ):
        last[(int(account), str(asset))] = (_atoms(available), _atoms(locked))
    return deltas, last


def _atoms(value: Decimal | int) -> int:
    # Fractions of an atom are reported by the ledger checks; here they are truncated.
    return int(value)


def ledger_problems(conn: Connection, event_seq: int, max_listed: int = 20) -> list[str]:
    """Row-level checks of the ledger up to ``event_seq``: each row's balance is the previous
    row's (of its account and asset) plus its deltas, amounts are whole atoms, and no event has
    two rows. The sums and last rows alone miss a row changed in the middle."""
    problems: list[str] = []
    rows = conn.execute(
        """
        SELECT seq, account, asset, available, locked, available_delta, locked_delta,
               prev_available, prev_locked, count(*) OVER ()
        FROM (
            SELECT seq, account, asset, available, locked, available_delta, locked_delta,
                   lag(available, 1, 0) OVER w AS prev_available,
                   lag(locked, 1, 0) OVER w AS prev_locked
            FROM balance_ledger WHERE seq <= %s
            WINDOW w AS (PARTITION BY account, asset ORDER BY seq)
        ) r
        WHERE available - available_delta <> prev_available
           OR locked - locked_delta <> prev_locked
           OR available <> trunc(available) OR locked <> trunc(locked)
           OR available_delta <> trunc(available_delta) OR locked_delta <> trunc(locked_delta)
        ORDER BY seq LIMIT %s
        """,
        (event_seq, max_listed),
    ).fetchall()
    if rows:
        problems.append(f"ledger: {rows[0][9]} rows do not follow from the row before them")
        for seq, account, asset, available, locked, da, dl, pa, pl, _ in rows:
            problems.append(
                f"ledger row {seq} (account {account} {asset}): {available}/{locked} after "
                f"{da}/{dl} from {pa}/{pl}"
            )
    row = conn.execute(
        "SELECT count(*) - count(DISTINCT seq) FROM balance_ledger WHERE seq <= %s", (event_seq,)
    ).fetchone()
    if row is not None and row[0]:
        problems.append(f"ledger: {row[0]} rows repeat an event seq")
    return problems


# -- COMPARING --------------------------------------------------------------------------------


def compare(point: Comparison, sources: dict[str, Balances]) -> None:
    """Fill ``point`` with the per-asset summary and the differences between ``sources``; an
    (account, asset) a source does not have counts as zero there (the engine keeps zeros, the
    ledger has no row for what never changed)."""
    point.sources = list(sources)
    keys = sorted({key for balances in sources.values() for key in balances})
    assets: dict[str, AssetSummary] = {}
    for asset in sorted({asset for _, asset in keys}):
        assets[asset] = AssetSummary(totals=dict.fromkeys(sources, _ZERO))
    for key in keys:
        account, asset = key
        summary = assets[asset]
        summary.accounts += 1
        values = {source: balances.get(key) for source, balances in sources.items()}
        seen = set()
        for source, value in values.items():
            balance = value or _ZERO
            seen.add(balance)
            total = summary.totals[source]
            summary.totals[source] = (total[0] + balance[0], total[1] + balance[1])
        if len(seen) > 1:
            summary.differences += 1
            point.differences.append(Difference(point.point, account, asset, values))
    point.assets = assets


# -- THE AUDIT --------------------------------------------------------------------------------


def audit(conn: Connection, *, max_listed: int = 20) -> AuditReport:
    """Audit every balance (see the module's docstring). ``conn`` must be idle (no transaction
    open); the audit reads everything in one read-only ``REPEATABLE READ`` transaction of its
    own, so the journal, the ledger and the snapshots it compares are one consistent picture even
    while the persister writes. ``max_listed`` bounds the ledger rows listed as problems."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("audit() needs an idle connection: it runs its own transaction")
    report = AuditReport()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        _read_positions(conn, report)
        snapshot_data = _read_snapshot(conn, report)
        ledger_point = min(report.ledger_seq, report.journal_seq)
        stops = {ledger_point}
        if report.snapshot is not None:
            stops.add(report.snapshot.seq)
        report.replay = replay = replay_journal(conn, stops)
        report.problems.extend(replay.problems)
        if not replay.problems and replay.seq != report.journal_seq:
            report.problems.append(
                f"journal replay ended at seq {replay.seq}, the journal head is "
                f"{report.journal_seq}"
            )
        if report.snapshot is not None and snapshot_data is not None:
            report.comparisons.append(
                _compare_at_snapshot(conn, report, report.snapshot, snapshot_data)
            )
        report.comparisons.append(_compare_at_ledger(conn, report, ledger_point, max_listed))
    return report


def _read_positions(conn: Connection, report: AuditReport) -> None:
    """Where the journal and the ledger projection stand."""
    head = conn.execute("SELECT last_seq, last_event_seq FROM journal_head WHERE id = 1").fetchone()
    table = conn.execute(
        "SELECT coalesce(max(last_seq), 0), coalesce(max(last_event_seq), 0) FROM journal"
    ).fetchone()
    assert table is not None
    report.journal_seq, report.journal_event_seq = int(table[0]), int(table[1])
    if head is None or (int(head[0]), int(head[1])) != (
        report.journal_seq,
        report.journal_event_seq,
    ):
        report.problems.append(
            f"journal_head says {None if head is None else tuple(head)}, the journal table "
            f"ends at seq {report.journal_seq} (event seq {report.journal_event_seq})"
        )
    checkpoint = conn.execute(
        "SELECT last_seq FROM projection_checkpoints WHERE name = 'balance_ledger'"
    ).fetchone()
    if checkpoint is None:
        report.problems.append("projection_checkpoints has no 'balance_ledger' row")
        report.ledger_seq = 0
    else:
        report.ledger_seq = int(checkpoint[0])
    if report.ledger_seq > report.journal_seq:
        report.problems.append(
            f"the ledger checkpoint {report.ledger_seq} is past the journal head "
            f"{report.journal_seq}"
        )
    if report.ledger_seq > 0:
        row = conn.execute(
            "SELECT last_event_seq FROM journal WHERE last_seq = %s", (report.ledger_seq,)
        ).fetchone()
        if row is None:
            report.problems.append(
                f"the ledger checkpoint {report.ledger_seq} is not the end of a journal block"
            )
        else:
            report.ledger_event_seq = int(row[0])
    if report.ledger_behind:
        report.notes.append(
            f"the ledger projection is {report.ledger_behind} journal records behind the head: "
            f"it is compared at its checkpoint, seq {report.ledger_seq}"
        )


def _read_snapshot(conn: Connection, report: AuditReport) -> bytes | None:
    """The latest snapshot the journal reaches. The engine stores a snapshot as soon as it has
    *sent* the blocks before it, so a newer one can be ahead of a persister that lags: it is
    noted, and the one before it is audited."""
    newer = conn.execute(
        "SELECT count(*), max(seq) FROM snapshots WHERE seq > %s", (report.journal_seq,)
    ).fetchone()
    if newer is not None and newer[0]:
        report.notes.append(
            f"{newer[0]} snapshot(s) past the journal head (up to seq {newer[1]}): the "
            "persister has not written their blocks yet; the latest one before is audited"
        )
    row = conn.execute(
        "SELECT seq, epoch, event_seq, state_hash, data FROM snapshots WHERE seq <= %s "
        "ORDER BY seq DESC LIMIT 1",
        (report.journal_seq,),
    ).fetchone()
    if row is None:
        report.notes.append("no snapshot to audit")
        return None
    seq, epoch, event_seq, state_hash, data = row
    report.snapshot = SnapshotInfo(int(seq), int(epoch), int(event_seq), str(state_hash))
    return bytes(data)


def _compare_at_snapshot(
    conn: Connection, report: AuditReport, snapshot: SnapshotInfo, data: bytes
) -> Comparison:
    point = Comparison(AT_SNAPSHOT, snapshot.seq, snapshot.event_seq, [])
    sources: dict[str, Balances] = {}
    replay = report.replay
    try:
        engine: Engine | None = Engine.restore(data)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as error:
        engine = None
        report.problems.append(f"snapshot {snapshot.seq} does not restore: {error}")
        point.skipped[SNAPSHOT] = "it does not restore"
    if engine is not None:
        restored_hash = engine.state_hash()
        if restored_hash != snapshot.state_hash:
            report.problems.append(f"snapshot {snapshot.seq}: state hash differs from its row")
        if engine.seq != snapshot.event_seq:
            report.problems.append(
                f"snapshot {snapshot.seq}: restores to event seq {engine.seq}, its row says "
                f"{snapshot.event_seq}"
            )
        if snapshot.seq in replay.state_hashes and replay.state_hashes[snapshot.seq] != (
            restored_hash
        ):
            report.problems.append(
                f"snapshot {snapshot.seq}: state hash differs from the replay's at its seq"
            )
        sources[SNAPSHOT] = engine_balances(engine)
    if snapshot.seq in replay.balances:
        sources[REPLAY] = replay.balances[snapshot.seq]
        if replay.event_seqs[snapshot.seq] != snapshot.event_seq:
            report.problems.append(
                f"snapshot {snapshot.seq}: event seq {snapshot.event_seq}, the replay's is "
                f"{replay.event_seqs[snapshot.seq]}"
            )
    else:
        point.skipped[REPLAY] = f"the replay stopped at seq {replay.seq}"
    if report.ledger_seq >= snapshot.seq:
        sources[LEDGER_DELTAS], sources[LEDGER_LAST] = ledger_balances(conn, snapshot.event_seq)
    else:
        why = f"the ledger projection is at seq {report.ledger_seq}, before the snapshot"
        point.skipped[LEDGER_DELTAS] = point.skipped[LEDGER_LAST] = why
    compare(point, sources)
    return point


def _compare_at_ledger(
    conn: Connection, report: AuditReport, seq: int, max_listed: int
) -> Comparison:
    event_seq = report.ledger_event_seq if seq == report.ledger_seq else report.journal_event_seq
    point = Comparison(AT_LEDGER, seq, event_seq, [])
    sources: dict[str, Balances] = {}
    replay = report.replay
    if seq in replay.balances:
        sources[REPLAY] = replay.balances[seq]
        if replay.event_seqs[seq] != event_seq:
            report.problems.append(
                f"at the ledger checkpoint {seq}: the journal says event seq {event_seq}, "
                f"the replay {replay.event_seqs[seq]}"
            )
    else:
        point.skipped[REPLAY] = f"the replay stopped at seq {replay.seq}"
    sources[LEDGER_DELTAS], sources[LEDGER_LAST] = ledger_balances(conn, event_seq)
    report.problems.extend(ledger_problems(conn, event_seq, max_listed))
    beyond = conn.execute(
        "SELECT count(*) FROM balance_ledger WHERE seq > %s", (event_seq,)
    ).fetchone()
    if beyond is not None and beyond[0]:
        report.problems.append(
            f"ledger: {beyond[0]} rows after its checkpoint's event seq {event_seq}"
        )
    compare(point, sources)
    return point


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine_service.audit",
        description="Recompute every balance from the ledger, a journal replay and the latest "
        "snapshot, and report where they differ.",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: $DATABASE_URL, or in AWS the variables of "
        "cloudex/aws_connect.py: DATABASE_SECRET_ARN, or RDS IAM authentication)",
    )
    parser.add_argument(
        "--max-listed",
        type=int,
        default=100,
        help="differences (and ledger rows) listed at most (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        database_url = args.database_url or aws_connect.database_url()
    except SettingsError as error:
        parser.print_usage(sys.stderr)
        print(
            f"audit: no database: pass --database-url or set DATABASE_URL ({error})",
            file=sys.stderr,
        )
        return 2
    try:
        with aws_connect.connect(database_url, connect_timeout=10) as conn:
            report = audit(conn, max_listed=args.max_listed)
    except psycopg.Error as error:
        print(f"audit: database error: {error}", file=sys.stderr)
        return 2
    print(report.to_text(args.max_listed), file=sys.stderr)
    print(json.dumps(report.to_json(args.max_listed), separators=(",", ":")))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
