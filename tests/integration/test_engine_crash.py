"""Crash test: 5,000 commands, the engine SIGKILLed 5 times (twice at forced points of the
batch protocol, three times at random) and restarted each time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chaos import run_chaos
from tests.integration.engine_support import EngineStack, trading_workload


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
