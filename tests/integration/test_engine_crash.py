"""Crash test: 5,000 commands, the engine SIGKILLed 5 times (twice at forced points of the
batch protocol, three times at random) and restarted each time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine_service.audit import audit
from tests.integration.chaos import run_chaos
from tests.integration.engine_support import EngineStack, trading_workload, wait_for_projections


@pytest.fixture
def stack(sqs: Any, database_url: str, redis_url: str, tmp_path: Path) -> Iterator[EngineStack]:
    stack = EngineStack(sqs, database_url, redis_url, tmp_path)
    stack.start_persister()
    yield stack
    stack.close()


def test_five_kills_lose_nothing_and_apply_nothing_twice(stack: EngineStack) -> None:
    rng = random.Random(2026)
    commands = trading_workload(rng, accounts=40, orders=4_920)
    assert len(commands) == 5_000
    report = run_chaos(stack, commands, kills=5, rng=rng)
    print(report)
    assert report["forced_faults"] == 2
    assert report["lost"] == 0
    assert report["duplicates"] == 0
    assert report["answers_mismatched"] == 0
    assert report["conserved"]
    assert report["state_match"]

    # The read models caught up with the whole journal, through the persister's own runs, and
    # the balance ledger, a replay and the final snapshot all agree, account by account.
    head = wait_for_projections(stack.database_url)
    assert head == report["journal_records"]
    with psycopg.connect(stack.database_url) as conn:
        audited = audit(conn)
    print(audited.to_text())
    assert audited.ok, audited.to_text()
    assert audited.differences == 0 and audited.problems == []
    assert audited.replay.seq == audited.ledger_seq == head
    assert audited.snapshot is not None and audited.snapshot.seq == head
