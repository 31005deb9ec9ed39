"""A running engine service for tests: real queues, persister, PostgreSQL, Redis, engine
processes; and the checks every engine test ends with (journal, replay, conservation)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import redis

from cloudex import names
from cloudex.enums import OrderType, Side
from cloudex.journal import JournalBlock, decode_journal_bytes
from cloudex.messages import (
    AnyCommand,
    CommandResult,
    Deposit,
    PlaceOrder,
    Withdraw,
    decode_result,
)
from engine_service.core import Engine
from functions.persister.projection import run_projections
from functions.persister.read_models import ALL_PROJECTIONS
from localgw.stack import EngineProcess, PersisterRunner, create_fifo_queue, send_command


@dataclass
class EngineStack:
    sqs: Any
    database_url: str
    redis_url: str
    log_dir: Path
    visibility_timeout: int = 5
    orders_url: str = ""
    events_url: str = ""
    dlq_url: str = ""
    persister: PersisterRunner | None = None
    engines: list[EngineProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        dlq = self.dlq_url = create_fifo_queue(self.sqs, f"{prefix}-orders-dlq.fifo")
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.orders_url = create_fifo_queue(
            self.sqs,
            f"{prefix}-orders.fifo",
            visibility_timeout=self.visibility_timeout,
            dlq_arn=dlq_arn,
        )
        self.events_url = create_fifo_queue(
            self.sqs, f"{prefix}-events.fifo", visibility_timeout=self.visibility_timeout
        )
        self.redis = redis.Redis.from_url(self.redis_url)

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "ORDERS_QUEUE_URL": self.orders_url,
            "EVENTS_QUEUE_URL": self.events_url,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "TICK_INTERVAL_MS": "200",
            # Snapshots often, so restarts restore one and replay the journal after it.
            "SNAPSHOT_EVERY_RECORDS": "300",
            "SNAPSHOT_KEEP": "10",
            "HEARTBEAT_INTERVAL_MS": "200",
            "RECEIVE_WAIT_S": "1",
            "LOG_LEVEL": "INFO",
            **overrides,
        }

    def start_persister(self) -> None:
        self.persister = PersisterRunner(self.events_url, self.database_url, self.sqs).start()

    def start_engine(self, **overrides: str) -> EngineProcess:
        engine = EngineProcess(
            self.env(ENGINE_ID=f"engine-{len(self.engines)}", **overrides),
            log_path=self.log_dir / f"engine-{len(self.engines)}.log",
        ).start()
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        self.close_quietly()
        # Shown by pytest when the test failed.
        for log in sorted(self.log_dir.glob("engine-*.log")):
            print(f"---- {log.name} ----\n{log.read_text()[-6000:]}")

    def close_quietly(self) -> None:
        for engine in self.engines:
            engine.kill()
        if self.persister is not None:
            self.persister.stop()
        self.redis.close()
        # LocalStack's background work grows with every queue it holds (hundreds of leftover
        # test queues cost it half a core when idle), so each stack removes its own.
        for url in (self.orders_url, self.events_url, self.dlq_url):
            with contextlib.suppress(Exception):
                self.sqs.delete_queue(QueueUrl=url)

    # -- TALKING TO IT ----------------------------------------------------------------------

    def send(self, command: AnyCommand, dedup_id: str | None = None) -> None:
        account = getattr(command, "account", 0)
        send_command(self.sqs, self.orders_url, command, str(account), dedup_id)

    def result(self, command_id: str) -> CommandResult | None:
        data = self.redis.get(names.result_key(command_id))
        return None if data is None else decode_result(data)

    def wait_results(self, command_ids: list[str], timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until every command has a stored result; return them by id."""
        deadline = time.monotonic() + timeout_s
        pending = list(command_ids)
        results: dict[str, CommandResult] = {}
        while pending:
            values = self.redis.mget([names.result_key(i) for i in pending])
            still = []
            for command_id, value in zip(pending, values, strict=True):
                if value is None:
                    still.append(command_id)
                else:
                    results[command_id] = decode_result(value)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} commands unanswered, e.g. {pending[:3]}")
                time.sleep(0.1)
        return results


class ReplyCollector:
    """Every reply published on ``cx:reply:*`` while it runs, in arrival order, and every
    market-data update the engine's Redis sink published on ``cx:md:*``."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("cx:reply:*", "cx:md:*")
        self.replies: list[CommandResult] = []
        self.market_data: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                if message["channel"].startswith(b"cx:md:"):
                    self.market_data.append(msgspec.msgpack.decode(message["data"]))
                else:
                    self.replies.append(decode_result(message["data"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()
        self.client.close()


# -- WORKLOADS ------------------------------------------------------------------------------


def trading_workload(
    rng: random.Random, accounts: int, orders: int, prefix: str = "c", first_account: int = 1
) -> list[AnyCommand]:
    """Deposits for every account (``first_account`` on), then limit orders around 100.00 that
    cross often, a few withdrawals; ids are unique. The service stamps times, so ``ts`` is 0
    here."""
    commands: list[AnyCommand] = []
    last_account = first_account + accounts - 1
    for account in range(first_account, last_account + 1):
        commands.append(
            Deposit(
                id=f"{prefix}-dep-usdc-{account}",
                ts=0,
                account=account,
                asset="USDC",
                amount=1_000_000 * 10**6,
            )
        )
        commands.append(
            Deposit(
                id=f"{prefix}-dep-sol-{account}",
                ts=0,
                account=account,
                asset="SOL",
                amount=10_000 * 10**9,
            )
        )
    for n in range(orders):
        account = rng.randint(first_account, last_account)
        if n % 50 == 49:
            commands.append(
                Withdraw(
                    id=f"{prefix}-wd-{n}",
                    ts=0,
                    account=account,
                    asset="USDC",
                    amount=rng.randint(1, 100) * 10**6,
                )
            )
            continue
        side = rng.choice([Side.BID, Side.ASK])
        commands.append(
            PlaceOrder(
                id=f"{prefix}-o-{n}",
                ts=0,
                account=account,
                market="SOL_USDC",
                side=side,
                order_type=OrderType.LIMIT,
                price=rng.randint(9_990, 10_010),
                quantity=rng.randint(1, 50),
            )
        )
    return commands


# -- CHECKS ---------------------------------------------------------------------------------


def journal_head(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT epoch, last_seq, last_event_seq FROM journal_head WHERE id = 1"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def latest_snapshot(database_url: str) -> tuple[int, bytes] | None:
    """The newest stored snapshot: (journal seq, data)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT seq, data FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


def journal_verdicts(database_url: str) -> dict[str, Any]:
    """Each journaled command's verdict: its error code, or None."""
    return {
        record.command.id: record.result.error
        for block in journal_blocks(database_url)
        for record in block.records
    }


def journal_blocks(database_url: str) -> Iterator[JournalBlock]:
    with psycopg.connect(database_url) as conn:
        for (raw,) in conn.execute("SELECT block FROM journal ORDER BY first_seq"):
            block = decode_journal_bytes(bytes(raw))
            assert isinstance(block, JournalBlock)
            yield block


@dataclass
class Replay:
    engine: Engine
    command_ids: list[str]  # in journal order
    last_seq: int
    last_event_seq: int


def replay_journal(database_url: str) -> Replay:
    """Check the journal is gap-free and consistent, replay it into a fresh engine checking
    every block's hash, and return the engine with the ids of the commands in journal order."""
    engine = Engine()
    seq = 0
    event_seq = 0
    ids: list[str] = []
    for block in journal_blocks(database_url):
        assert block.first_seq == seq + 1, f"gap or overlap at {block.first_seq} after {seq}"
        assert block.first_event_seq == event_seq + 1
        for record in block.records:
            assert record.seq == seq + 1
            seq = record.seq
            result = engine.execute(record.command)
            assert not result.duplicate
            assert msgspec.msgpack.encode(result) == msgspec.msgpack.encode(record.result)
            ids.append(record.command.id)
            event_seq = engine.seq
        assert block.last_seq == seq
        assert block.last_event_seq == event_seq
        assert engine.state_hash() == block.state_hash, f"hash differs after {block.last_seq}"
    return Replay(engine, ids, seq, event_seq)


def external_flows(database_url: str) -> dict[str, int]:
    """Deposits minus withdrawals per asset, from the journal's accepted commands."""
    flows: dict[str, int] = {}
    for block in journal_blocks(database_url):
        for record in block.records:
            command = record.command
            if record.result.error is None and isinstance(command, Deposit | Withdraw):
                sign = 1 if isinstance(command, Deposit) else -1
                flows[command.asset] = flows.get(command.asset, 0) + sign * command.amount
    return flows


def balance_totals(engine: Engine) -> dict[str, int]:
    totals: dict[str, int] = {}
    for account in engine.accounts():
        for asset, (available, locked) in engine.balances(account).items():
            assert available >= 0 and locked >= 0
            totals[asset] = totals.get(asset, 0) + available + locked
    return totals


def assert_conserved(engine: Engine, database_url: str) -> None:
    """For every asset, all balances (fee account included) add up to deposits minus
    withdrawals."""
    flows = external_flows(database_url)
    totals = balance_totals(engine)
    for asset in set(flows) | set(totals):
        assert totals.get(asset, 0) == flows.get(asset, 0), asset


def wait_for_projections(database_url: str, timeout_s: float = 60.0) -> int:
    """Wait until every projection's checkpoint is the journal head; return the head. The
    persister projects after each batch; if the queue has gone quiet first, a run on a
    connection of our own (overlapping runs are safe: checkpoints are locked SKIP LOCKED)
    finishes the job."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT last_seq FROM journal_head WHERE id = 1").fetchone()
            assert row is not None
            head = int(row[0])
            checkpoints = dict(
                conn.execute("SELECT name, last_seq FROM projection_checkpoints").fetchall()
            )
            failing = conn.execute(
                "SELECT name, last_error FROM projection_checkpoints WHERE failures > 0"
            ).fetchall()
            assert not failing, failing
            if all(seq == head for seq in checkpoints.values()):
                return head
            assert time.monotonic() < deadline, f"projections {checkpoints}, head {head}"
            now = time.monotonic()
            quiet_since = quiet_since or now
            if now - quiet_since > 5:
                print(f"projections {checkpoints} behind head {head}: running them")
                run_projections(conn, ALL_PROJECTIONS)
            time.sleep(0.2)
