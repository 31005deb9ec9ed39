"""Fixtures for integration tests against the real services: PostgreSQL, Redis, LocalStack SQS.

The services must be running (``./dev services`` starts them; ``.ci/run`` does it in CI). A test
that needs one fails, never skips, when it is missing.

- ``database_url``: a fresh PostgreSQL database with every migration applied, cloned per test
  from a template built once per session; dropped afterwards.
- ``redis_url`` / ``redis_client``: Redis database 9, flushed before each test.
- ``sqs``: a boto3 SQS client on LocalStack; ``make_fifo_queue(name)`` creates a uniquely named
  FIFO queue with a 5 s visibility timeout (deleted after the test) and returns its URL.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import boto3
import psycopg
import pytest
import redis

PG_ADMIN_URL = os.environ.get(
    "CLOUDEX_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("CLOUDEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
LOCALSTACK_URL = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")

# boto3 reads these; LocalStack accepts any credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Every boto3 client, in the tests and in the processes they start, goes to LocalStack.
os.environ.setdefault("AWS_ENDPOINT_URL", LOCALSTACK_URL)


def _database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def database_template() -> Iterator[str]:
    from functions.migrate.runner import apply_migrations

    name = f"cloudex_tpl_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    apply_migrations(_database_url(name))
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(database_template: str) -> Iterator[str]:
    name = f"cloudex_t_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    yield _database_url(name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    client.close()
    return REDIS_TEST_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sqs() -> object:
    return boto3.client("sqs", endpoint_url=LOCALSTACK_URL)


@pytest.fixture
def make_fifo_queue(sqs: object) -> Iterator[Callable[[str], str]]:
    created: list[str] = []

    def make(name: str, visibility_timeout: int = 5) -> str:
        queue = f"t{uuid.uuid4().hex[:10]}-{name}"
        if not queue.endswith(".fifo"):
            queue += ".fifo"
        url = sqs.create_queue(  # type: ignore[attr-defined]
            QueueName=queue,
            Attributes={
                "FifoQueue": "true",
                "VisibilityTimeout": str(visibility_timeout),
                "ContentBasedDeduplication": "false",
            },
        )["QueueUrl"]
        created.append(url)
        return str(url)

    yield make
    for url in created:
        # A leftover test queue is harmless.
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)  # type: ignore[attr-defined]


# -- JOURNAL MESSAGES (appended for the persister tests) ----------------------------------------

from cloudex.journal import EpochStarted, JournalBlock, JournalRecord  # noqa: E402
from cloudex.messages import AnyCommand, Deposit  # noqa: E402
from cloudex.seed import market_seed_commands  # noqa: E402
from engine_service.core import Engine  # noqa: E402
from tests.stubs import START_TS, markets_config  # noqa: E402


class JournalFeed:
    """Real journal messages: commands run through the real engine, sealed into blocks as the
    engine service does. The first block also carries the market seed commands.

    ``feed.marker()`` is the current epoch's marker, ``feed.new_epoch()`` bumps the epoch and
    returns the new marker, ``feed.block(deposits=2, rejected=0)`` seals the next block.
    """

    def __init__(self, epoch: int = 1, engine_id: str = "engine-test") -> None:
        self.engine = Engine()
        self.epoch = epoch
        self.engine_id = engine_id
        self.last_seq = 0
        self.ts = START_TS
        self._seed: list[AnyCommand] = list(market_seed_commands(markets_config(), START_TS))
        self._command_ids = 0

    def marker(self) -> EpochStarted:
        return EpochStarted(self.epoch, self.engine_id, self.ts)

    def new_epoch(self, engine_id: str | None = None) -> EpochStarted:
        self.epoch += 1
        self.engine_id = engine_id or f"{self.engine_id}-{self.epoch}"
        return self.marker()

    def block(self, deposits: int = 2, rejected: int = 0) -> JournalBlock:
        """A block of ``deposits`` accepted deposits and ``rejected`` rejected ones (an unknown
        asset: a record without events)."""
        commands = [*self._seed]
        self._seed = []
        for index in range(deposits + rejected):
            self.ts += 1_000
            self._command_ids += 1
            commands.append(
                Deposit(
                    id=f"dep-{self._command_ids}",
                    ts=self.ts,
                    account=1 + index % 3,
                    asset="USDC" if index < deposits else "NOPE",
                    amount=1_000_000 * (index + 1),
                )
            )
        first_event_seq = self.engine.seq + 1
        records = []
        for command in commands:
            self.last_seq += 1
            records.append(JournalRecord(self.last_seq, command, self.engine.execute(command)))
        return JournalBlock(
            epoch=self.epoch,
            first_seq=records[0].seq,
            last_seq=records[-1].seq,
            first_event_seq=first_event_seq,
            last_event_seq=self.engine.seq,
            state_hash=self.engine.state_hash(),
            sent_at=self.ts,
            records=records,
        )


@pytest.fixture
def journal_feed() -> JournalFeed:
    return JournalFeed()


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A fresh database with no migration applied (for the migration runner's own tests)."""
    name = f"cloudex_e_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    yield _database_url(name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- THE REST API (tests/integration/api_support.py) --------------------------------------------

API_REDIS_URL = os.environ.get("CLOUDEX_TEST_API_REDIS_URL", "redis://127.0.0.1:6379/10")


@pytest.fixture(scope="module")
def api_stack(database_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A whole running API per test module (engine, persister, gateway: ~2 s to start), on its
    own database and Redis database 10. Tests in a module share it: give each its own
    accounts (``api_stack.new_trader``)."""
    from tests.integration.api_support import ApiStack

    name = f"cloudex_api_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    client = redis.Redis.from_url(API_REDIS_URL)
    client.flushdb()
    client.close()
    stack = ApiStack(_database_url(name), API_REDIS_URL, tmp_path_factory.mktemp("api"))
    try:
        yield stack.start()
    finally:
        stack.close()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def ws_stack(database_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``api_stack`` plus the WebSocket API: the local WebSocket gateway (route handlers),
    the ws_fanout function in local Lambda worker processes, and the engine invoking it."""
    from tests.integration.api_support import ApiStack

    name = f"cloudex_ws_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    client = redis.Redis.from_url(API_REDIS_URL)
    client.flushdb()
    client.close()
    stack = ApiStack(
        _database_url(name), API_REDIS_URL, tmp_path_factory.mktemp("ws"), websocket=True
    )
    try:
        yield stack.start()
    finally:
        stack.close()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
