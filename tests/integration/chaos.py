"""Kill the engine service with SIGKILL, again and again, while commands flow; then check that
nothing was lost, nothing applied twice, money is conserved, the journal is gap-free and the
final state is a clean replay's. Used by the crash test and ``bench/chaos_engine.py``."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from cloudex.messages import AnyCommand, encode_command_body
from engine_service.core import Engine
from tests.integration.engine_support import (
    EngineStack,
    assert_conserved,
    journal_verdicts,
    latest_snapshot,
    replay_journal,
)

# The protocol's most delicate moments, forced once each before the random kills.
FAULT_POINTS = ("after_journal", "after_redis")


def send_all(stack: EngineStack, commands: list[AnyCommand], rate_per_s: float) -> None:
    """Send in batches of 10 (any mix of groups), paced to about ``rate_per_s``."""
    started = time.monotonic()
    for start in range(0, len(commands), 10):
        chunk = commands[start : start + 10]
        stack.sqs.send_message_batch(
            QueueUrl=stack.orders_url,
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": encode_command_body(c),
                    "MessageGroupId": str(getattr(c, "account", 0)),
                    "MessageDeduplicationId": c.id,
                }
                for n, c in enumerate(chunk)
            ],
        )
        ahead = (start + len(chunk)) / rate_per_s - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def run_chaos(
    stack: EngineStack,
    commands: list[AnyCommand],
    kills: int,
    rng: random.Random,
    *,
    rate_per_s: float = 400.0,
) -> dict[str, Any]:
    sender = threading.Thread(target=send_all, args=(stack, commands, rate_per_s), daemon=True)
    sender.start()
    forced = 0
    for kill in range(kills):
        if kill < len(FAULT_POINTS):
            engine = stack.start_engine(
                FAULT_KILL_AT=FAULT_POINTS[kill], FAULT_KILL_BATCH=str(rng.randint(2, 6))
            )
            engine.wait_state("running", timeout_s=120)
            assert engine.process is not None
            try:
                engine.process.wait(30)  # it kills itself
                forced += engine.process.returncode == -signal.SIGKILL
            except subprocess.TimeoutExpired:
                engine.kill()  # no messages came to reach the fault point
        else:
            engine = stack.start_engine()
            engine.wait_state("running", timeout_s=120)
            time.sleep(rng.uniform(0.1, 1.5))
            engine.kill()
    final = stack.start_engine()
    final.wait_state("running", timeout_s=120)
    sender.join()
    ids = [c.id for c in commands]
    results = stack.wait_results(ids, timeout_s=300)
    assert final.terminate() == 0

    replay = replay_journal(stack.database_url)  # asserts gap-free, hash after every block
    journaled = Counter(i for i in replay.command_ids)
    lost = sum(1 for i in ids if journaled[i] == 0)
    duplicates = sum(max(0, journaled[i] - 1) for i in ids)
    # Each answer is the journal's verdict for that command.
    verdicts = journal_verdicts(stack.database_url)
    mismatched = sum(1 for i in ids if results[i].error != verdicts.get(i, "missing"))
    try:
        assert_conserved(replay.engine, stack.database_url)
        conserved = True
    except AssertionError:
        conserved = False
    snapshot = latest_snapshot(stack.database_url)
    state_match = (
        snapshot is not None
        and snapshot[0] == replay.last_seq
        and Engine.restore(snapshot[1]).state_hash() == replay.engine.state_hash()
    )
    return {
        "commands": len(commands),
        "kills": kills,
        "forced_faults": forced,
        "lost": lost,
        "duplicates": duplicates,
        "answers_mismatched": mismatched,
        "conserved": conserved,
        "state_match": state_match,
        "journal_records": replay.last_seq,
        "epochs": len(stack.engines),
    }
