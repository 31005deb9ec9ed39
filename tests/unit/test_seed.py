"""Seeding markets from the config file: once, and never over what the engine already has."""

from __future__ import annotations

import msgspec

from cloudex.messages import SetMarketFees
from cloudex.seed import market_seed_commands
from engine_service.core import Engine
from tests.stubs import START_TS, markets_config


def test_seed_fresh_engine_adds_every_configured_market() -> None:
    # Given the config and an empty engine / When the seed commands run
    config = markets_config()
    engine = Engine()
    results = [engine.execute(c) for c in market_seed_commands(config, START_TS)]
    # Then every market exists, with the configured rules
    assert all(r.ok for r in results)
    assert [m.symbol for m in engine.markets()] == [m.symbol for m in config.markets]
    assert {m.symbol for m in engine.markets()} >= {"SOL_USDC", "BTC_USDC", "ETH_USDC", "TATA_INR"}


def test_seed_existing_market_is_left_as_the_engine_has_it() -> None:
    # Given an engine seeded once, whose SOL_USDC fees then changed by command
    config = markets_config()
    engine = Engine()
    for command in market_seed_commands(config, START_TS):
        engine.execute(command)
    engine.execute(
        SetMarketFees(
            id="fees", ts=START_TS + 1, market="SOL_USDC", maker_fee_bps=0, taker_fee_bps=1
        )
    )
    # When the file changes the market and the service seeds again
    edited = msgspec.structs.replace(
        config,
        markets=[msgspec.structs.replace(m, taker_fee_bps=99) for m in config.markets],
    )
    again = market_seed_commands(edited, START_TS + 2, (m.symbol for m in engine.markets()))
    # Then nothing is re-added and the fees are those set by command
    assert again == []
    [sol] = [m for m in engine.markets() if m.symbol == "SOL_USDC"]
    assert (sol.maker_fee_bps, sol.taker_fee_bps) == (0, 1)


def test_seed_delivered_twice_applies_once() -> None:
    # Given the same seed command executed twice / Then the second is a duplicate, no events
    engine = Engine()
    [first, *_] = market_seed_commands(markets_config(), START_TS)
    assert engine.execute(first).ok
    repeat = engine.execute(first)
    assert repeat.duplicate and repeat.events == []
