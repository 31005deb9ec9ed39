"""Snapshot round trip, replay determinism and exactly-once resends over random sequences.

The runner's engine executes the whole sequence. At a random point its snapshot is restored into
a second engine, which must have the same state hash and, fed the rest of the sequence, give
byte-identical results. A third, fresh engine fed the whole sequence must give byte-identical
results and state hashes after every command. Finally, resending an earlier command id returns
its stored result and changes nothing.
"""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cloudex.messages import decode_result, encode
from engine_service.core import Engine
from tests.property.harness import CONFIG, Op, Runner, property_settings, scenarios
from tests.stubs import Exchange


@property_settings()
@given(ops=scenarios(), cut=st.floats(0, 1), resend=st.floats(0, 1))
def test_snapshot_round_trip_and_replay_determinism(
    ops: list[Op], cut: float, resend: float
) -> None:
    runner = Runner(check=False)
    split = int(cut * len(ops))
    runner.run(ops[:split])
    at = len(runner.commands)  # an operation may be more than one command
    original = runner.engine
    snapshot = original.snapshot()
    restored = Engine.restore(snapshot, CONFIG)
    assert restored.state_hash() == original.state_hash()
    assert restored.snapshot() == snapshot
    assert restored.hash_sums() == original.hash_sums()
    runner.run(ops[split:])

    # The restored engine continues exactly like the original.
    for command, expected, state_hash in zip(
        runner.commands[at:], runner.encoded[at:], runner.hashes[at:], strict=True
    ):
        assert encode(restored.execute(command)) == expected, command
        assert restored.state_hash() == state_hash, command
    assert restored.snapshot() == original.snapshot()

    # A fresh engine replaying everything gives the same bytes and the same state after each.
    replayed = Exchange(CONFIG).engine
    for command, expected, state_hash in zip(
        runner.commands, runner.encoded, runner.hashes, strict=True
    ):
        assert encode(replayed.execute(command)) == expected, command
        assert replayed.state_hash() == state_hash, command
    assert replayed.snapshot() == original.snapshot()

    # A resent command id gets its stored result back (no events) and changes nothing.
    index = min(int(resend * len(runner.commands)), len(runner.commands) - 1)
    stored = decode_result(runner.encoded[index])
    for engine in (original, restored, replayed):
        state_hash, seq = engine.state_hash(), engine.seq
        again = engine.execute(runner.commands[index])
        assert again.duplicate and again.events == []
        assert encode(again) == encode(msgspec.structs.replace(stored, events=[], duplicate=True))
        assert engine.state_hash() == state_hash and engine.seq == seq
