"""PostgreSQL adapter of the engine service: the lease, the epoch, the journal and snapshots.

The lease is a session-level advisory lock held on one dedicated connection for the engine's
whole life: PostgreSQL releases it when that session ends, whatever killed the process. A query
that succeeds on that connection proves the session, and so the lock, is still ours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import psycopg

from cloudex.aws_connect import connect
from cloudex.names import ENGINE_LEASE_LOCK

__all__ = ["LeaseLost", "JournalHead", "StoredSnapshot", "EngineDatabase"]


class LeaseLost(RuntimeError):
    """The lease connection is gone or no longer holds the lock: another engine may run."""


class JournalHead(NamedTuple):
    epoch: int
    last_seq: int
    last_event_seq: int


class StoredSnapshot(NamedTuple):
    seq: int
    epoch: int
    event_seq: int
    state_hash: str
    data: bytes


_CONNECT_OPTIONS: dict[str, Any] = {
    # Notice a dead peer within ~30 s rather than the kernel's two hours.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "connect_timeout": 10,
}


class EngineDatabase:
    def __init__(self, database_url: str, engine_id: str) -> None:
        self.database_url = database_url
        self.engine_id = engine_id
        self._lease: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()  # the store connection is shared with the snapshot writer
        self._store = self._connect()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return connect(self.database_url, autocommit=True, **_CONNECT_OPTIONS)

    def close(self) -> None:
        for conn in (self._lease, self._store):
            if conn is not None:
                conn.close()

    # -- THE LEASE --------------------------------------------------------------------------

    def acquire_lease(self, stop: threading.Event, poll_s: float = 0.5) -> bool:
        """Wait until this engine holds the lease (True), or ``stop`` is set (False)."""
        conn = self._connect()
        while not stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ENGINE_LEASE_LOCK,)).fetchone()
            if row and row[0]:
                self._lease = conn
                return True
            stop.wait(poll_s)
        conn.close()
        return False

    def start_epoch(self) -> int:
        """Bump the epoch (under the lease) and return it."""
        row = (
            self._lease_connection()
            .execute(
                "UPDATE engine_lease SET epoch = epoch + 1, engine_id = %s, acquired_at = now() "
                "WHERE id = 1 RETURNING epoch",
                (self.engine_id,),
            )
            .fetchone()
        )
        assert row is not None, "engine_lease has its one row from the first migration"
        return int(row[0])  # type: ignore[call-overload,no-any-return]

    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` unless this session still holds the advisory lock."""
        try:
            row = (
                self._lease_connection()
                .execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = %s",
                    (ENGINE_LEASE_LOCK,),
                )
                .fetchone()
            )
        except psycopg.Error as error:
            raise LeaseLost(f"lease connection failed: {error}") from error
        if not row or row[0] != 1:
            raise LeaseLost("the advisory lock is no longer held")

    def _lease_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._lease is None:
            raise LeaseLost("the lease was never taken")
        return self._lease

    # -- THE JOURNAL ------------------------------------------------------------------------

    def journal_head(self) -> JournalHead:
        with self._lock:
            row = self._store.execute(
                "SELECT epoch, last_seq, last_event_seq FROM journal_head WHERE id = 1"
            ).fetchone()
        assert row is not None
        return JournalHead(int(row[0]), int(row[1]), int(row[2]))  # type: ignore[call-overload,no-any-return]

    def wait_for_epoch(self, epoch: int, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until the persister has written the marker of ``epoch``."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            if self.journal_head().epoch >= epoch:
                return True
            if time.monotonic() > deadline:
                return False
            stop.wait(0.05)
        return False

    def journal_blocks(self, after_seq: int) -> Iterator[bytes]:
        """The raw blocks holding records after ``after_seq``, in order (a server-side cursor,
        so a long journal is streamed, not loaded)."""
        with (
            connect(self.database_url, **_CONNECT_OPTIONS) as conn,
            conn.cursor(name="replay") as cursor,
        ):
            cursor.itersize = 200
            cursor.execute(
                "SELECT block FROM journal WHERE last_seq > %s ORDER BY first_seq", (after_seq,)
            )
            for (block,) in cursor:
                yield bytes(block)

    # -- SNAPSHOTS --------------------------------------------------------------------------

    def latest_snapshot(self, max_event_seq: int | None = None) -> StoredSnapshot | None:
        """The newest snapshot; with ``max_event_seq``, the newest taken at or before that
        event, if one is kept (else the newest)."""
        with self._lock:
            row = None
            if max_event_seq is not None:
                row = self._store.execute(
                    "SELECT seq, epoch, event_seq, state_hash, data FROM snapshots "
                    "WHERE event_seq <= %s ORDER BY seq DESC LIMIT 1",
                    (max_event_seq,),
                ).fetchone()
            if row is None:
                row = self._store.execute(
                    "SELECT seq, epoch, event_seq, state_hash, data FROM snapshots "
                    "ORDER BY seq DESC LIMIT 1"
                ).fetchone()
        if row is None:
            return None
        seq, epoch, event_seq, state_hash, data = row
        return StoredSnapshot(int(seq), int(epoch), int(event_seq), str(state_hash), bytes(data))  # type: ignore[call-overload,no-any-return]

    def save_snapshot(
        self,
        seq: int,
        epoch: int,
        event_seq: int,
        state_hash: str,
        taken_at: int,
        data: bytes,
        keep: int = 3,
    ) -> None:
        """Store a snapshot taken after journal record ``seq``; keep the newest ``keep``."""
        with self._lock, self._store.transaction():
            self._store.execute(
                "INSERT INTO snapshots (seq, epoch, event_seq, state_hash, taken_at, data) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (seq) DO NOTHING",
                (seq, epoch, event_seq, state_hash, taken_at, data),
            )
            self._store.execute(
                "DELETE FROM snapshots WHERE seq < ("
                "SELECT min(seq) FROM (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT %s) s)",
                (keep,),
            )
