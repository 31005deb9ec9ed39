"""cloudex.markets: market specs compile to exact integer rules, or are refused."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cloudex.enums import MarketState
from cloudex.markets import (
    AssetSpec,
    MarketSpec,
    MarketSpecError,
    compile_market,
    load_markets_config,
)
from tests.stubs import markets_config

SOL = AssetSpec("SOL", 9)
USDC = AssetSpec("USDC", 6)
CENTS = AssetSpec("USD", 2)
TATA = AssetSpec("TATA", 0)


def spec(**overrides: object) -> MarketSpec:
    fields: dict[str, object] = {
        "symbol": "SOL_USDC",
        "base": "SOL",
        "quote": "USDC",
        "tick_size": "0.01",
        "step_size": "0.01",
        "min_quantity": "0.01",
        "max_quantity": "100000",
        "max_price": "1000000",
        "min_notional": "1",
        "maker_fee_bps": 2,
        "taker_fee_bps": 5,
    }
    fields.update(overrides)
    return MarketSpec(**fields)  # type: ignore[arg-type]


def test_compile_market_sol_usdc_gives_integer_rules() -> None:
    # Given the SOL_USDC spec / When compiled / Then every amount is an exact integer
    rules = compile_market(spec(), SOL, USDC)
    assert rules.symbol == "SOL_USDC"
    assert rules.base_atoms_per_lot == 10**7
    assert rules.quote_atoms_per_tick_lot == 100
    assert rules.min_lots == 1
    assert rules.max_lots == 10**7
    assert rules.max_ticks == 10**8
    assert rules.min_notional_atoms == 10**6
    assert rules.format_price(10_000) == "100.00"
    assert rules.format_quantity(150) == "1.50"
    assert rules.parse_price("100.25") == 10_025
    assert rules.parse_quantity("0.07") == 7
    assert rules.parse_quote("1.5") == 1_500_000
    assert rules.format_base(10**9) == "1.000000000"
    assert rules.format_quote(1_500_000) == "1.500000"


def test_load_markets_config_repository_file_compiles_every_market() -> None:
    # Given config/markets.toml / When loaded / Then the four markets compile as documented
    rules = {r.symbol: r for r in markets_config().compiled()}
    assert set(rules) == {"SOL_USDC", "BTC_USDC", "ETH_USDC", "TATA_INR"}
    btc = rules["BTC_USDC"]
    assert (btc.base_atoms_per_lot, btc.quote_atoms_per_tick_lot) == (1_000, 1)
    eth = rules["ETH_USDC"]
    assert (eth.base_atoms_per_lot, eth.quote_atoms_per_tick_lot) == (10**4, 1)
    tata = rules["TATA_INR"]
    assert (tata.base_atoms_per_lot, tata.quote_atoms_per_tick_lot) == (1, 5)
    assert tata.max_ticks == 2_000_000  # 100000 / 0.05
    assert tata.min_notional_atoms == 1_000  # 10 INR
    assert all(r.spec.state is MarketState.OPEN for r in rules.values())


def test_compile_market_tick_times_step_below_quote_atom_raises() -> None:
    # Given tick 0.01 x step 0.01 = 0.0001, finer than a 2-decimal quote's atom
    # When compiled / Then the market is refused
    with pytest.raises(MarketSpecError):
        compile_market(spec(base="SOL", quote="USD", symbol="SOL_USD"), SOL, CENTS)


def test_compile_market_tick_times_step_whole_quote_atoms_compiles() -> None:
    # Given tick 0.05 x step 1 with a 2-decimal quote: 5 quote atoms per tick x lot
    rules = compile_market(
        spec(
            symbol="TATA_USD",
            base="TATA",
            quote="USD",
            tick_size="0.05",
            step_size="1",
            min_quantity="1",
            min_notional="10",
        ),
        TATA,
        CENTS,
    )
    assert rules.quote_atoms_per_tick_lot == 5
    assert rules.base_atoms_per_lot == 1


def test_compile_market_step_finer_than_base_atom_raises() -> None:
    # Given a 0-decimal base asset and a 0.1 step / When compiled / Then refused
    with pytest.raises(MarketSpecError):
        compile_market(
            spec(symbol="TATA_USDC", base="TATA", step_size="0.1", min_quantity="0.1"),
            TATA,
            USDC,
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"symbol": "SOLUSDC"},
        {"symbol": "sol_usdc"},
        {"base": "BTC"},
        {"maker_fee_bps": -1},
        {"taker_fee_bps": 1_001},
        {"tick_size": "0"},
        {"tick_size": "1e-2"},
        {"step_size": "-0.01"},
        {"min_quantity": "0.015"},
        {"min_quantity": "0"},
        {"max_quantity": "100000.001"},
        {"min_quantity": "10", "max_quantity": "1"},
        {"max_price": "0.001"},
        {"min_notional": "0.0000001"},
        {"min_notional": "-1"},
    ],
)
def test_compile_market_invalid_spec_raises(overrides: dict[str, object]) -> None:
    # Given one invalid field / When compiled / Then MarketSpecError
    with pytest.raises(MarketSpecError):
        compile_market(spec(**overrides), SOL, USDC)


def test_compile_market_zero_min_notional_is_allowed() -> None:
    # Given min_notional 0 / When compiled / Then 0 atoms
    assert compile_market(spec(min_notional="0"), SOL, USDC).min_notional_atoms == 0


def test_compile_market_same_base_and_quote_raises() -> None:
    # Given base == quote / When compiled / Then MarketSpecError
    with pytest.raises(MarketSpecError):
        compile_market(spec(symbol="SOL_SOL", quote="SOL"), SOL, SOL)


def test_compile_market_asset_decimals_out_of_range_raises() -> None:
    # Given an asset with 19 decimals / When compiled / Then MarketSpecError
    with pytest.raises(MarketSpecError):
        compile_market(spec(), AssetSpec("SOL", 19), USDC)


def test_load_markets_config_unknown_asset_raises(tmp_path: Path) -> None:
    # Given a market whose quote asset is not defined / When loaded / Then MarketSpecError
    path = tmp_path / "markets.toml"
    path.write_text(
        "[assets.SOL]\ndecimals = 9\n"
        '[markets.SOL_USDC]\nbase = "SOL"\nquote = "USDC"\ntick_size = "0.01"\n'
        'step_size = "0.01"\nmin_quantity = "0.01"\nmax_quantity = "10"\nmax_price = "100"\n'
        'min_notional = "1"\nmaker_fee_bps = 2\ntaker_fee_bps = 5\n'
    )
    with pytest.raises(MarketSpecError, match="unknown assets"):
        load_markets_config(path)


def test_load_markets_config_inexact_market_raises(tmp_path: Path) -> None:
    # Given a market with tick x step below the quote atom / When loaded / Then MarketSpecError
    path = tmp_path / "markets.toml"
    path.write_text(
        "[assets.SOL]\ndecimals = 9\n[assets.USD]\ndecimals = 2\n"
        '[markets.SOL_USD]\nbase = "SOL"\nquote = "USD"\ntick_size = "0.01"\n'
        'step_size = "0.01"\nmin_quantity = "0.01"\nmax_quantity = "10"\nmax_price = "100"\n'
        'min_notional = "1"\nmaker_fee_bps = 2\ntaker_fee_bps = 5\n'
    )
    with pytest.raises(MarketSpecError):
        load_markets_config(path)


def test_load_markets_config_bad_field_type_raises(tmp_path: Path) -> None:
    # Given a non-integer decimals field / When loaded / Then MarketSpecError
    path = tmp_path / "markets.toml"
    path.write_text('[assets.SOL]\ndecimals = "nine"\n')
    with pytest.raises(MarketSpecError):
        load_markets_config(path)


def test_market_spec_msgpack_round_trip_keeps_state() -> None:
    # Given a PostOnly spec / When encoded and decoded / Then equal
    original = spec(state=MarketState.POST_ONLY)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(original), type=MarketSpec)
    assert decoded == original
