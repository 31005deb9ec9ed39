"""Random command sequences over two markets and four accounts: after every command the engine
must satisfy its invariants (conservation, locks, book shape, rejections, event sequence, hash
sums) and agree exactly with the reference matcher (verdicts, trades, balances, resting orders).
See ``harness.Runner`` for the properties themselves."""

from __future__ import annotations

from hypothesis import given, note

from tests.property.harness import Op, Runner, property_settings, scenarios


def run_checked(ops: list[Op]) -> None:
    runner = Runner(check=True)
    try:
        runner.run(ops)
    except BaseException:
        # The concrete commands of the (shrunk) failing example, ids and prices resolved.
        note("commands executed:\n" + "\n".join(repr(c) for c in runner.commands))
        raise


@property_settings()
@given(ops=scenarios())
def test_engine_matches_reference_and_invariants_hold(ops: list[Op]) -> None:
    run_checked(ops)


@property_settings(scale=0.5)
@given(ops=scenarios(max_ops=120))
def test_long_sequences(ops: list[Op]) -> None:
    """Fewer but longer sequences: deeper books, order-limit and client-id collisions."""
    run_checked(ops)
