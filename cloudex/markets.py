"""Market and asset specifications: the decimal form that is configured and shown, and the
integer form (:class:`MarketRules`) that the engine and the API compute with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from cloudex.enums import MarketState
from cloudex.money import Increment, MoneyError, parse_increment

__all__ = [
    "AssetSpec",
    "MarketSpec",
    "MarketRules",
    "MarketSpecError",
    "MarketsConfig",
    "compile_market",
    "load_markets_config",
    "MAX_FEE_BPS",
    "OPEN_ORDER_LIMIT",
]

MAX_FEE_BPS = 1_000  # 10 %: anything higher is a typo, not a fee schedule
OPEN_ORDER_LIMIT = 500  # resting orders per account, all markets together (the engine's default)
_SYMBOL = re.compile(r"[A-Z0-9]{1,16}")
_MARKET_SYMBOL = re.compile(r"[A-Z0-9]{1,16}_[A-Z0-9]{1,16}")


class MarketSpecError(ValueError):
    """A market or asset specification that cannot be traded exactly."""


class AssetSpec(msgspec.Struct, frozen=True):
    symbol: str
    decimals: int
    display_name: str = ""

    @property
    def atom(self) -> Increment:
        return Increment(1, self.decimals)


class MarketSpec(msgspec.Struct, frozen=True):
    """A market as configured: amounts are decimal strings, fees basis points."""

    symbol: str
    base: str
    quote: str
    tick_size: str
    step_size: str
    min_quantity: str
    max_quantity: str
    max_price: str
    min_notional: str
    maker_fee_bps: int
    taker_fee_bps: int
    state: MarketState = MarketState.OPEN


class MarketRules(msgspec.Struct, frozen=True):
    """A market in integers: prices in ticks, quantities in lots, notionals in quote atoms."""

    spec: MarketSpec
    base: AssetSpec
    quote: AssetSpec
    tick: Increment
    step: Increment
    base_atoms_per_lot: int
    quote_atoms_per_tick_lot: int  # one tick of price times one lot of quantity, in quote atoms
    min_lots: int
    max_lots: int
    max_ticks: int
    min_notional_atoms: int

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    def format_price(self, ticks: int) -> str:
        return self.tick.format(ticks)

    def format_quantity(self, lots: int) -> str:
        return self.step.format(lots)

    def parse_price(self, text: str) -> int:
        return self.tick.parse(text)

    def parse_quantity(self, text: str) -> int:
        return self.step.parse(text)

    def parse_quote(self, text: str) -> int:
        return self.quote.atom.parse(text)

    def format_base(self, atoms: int) -> str:
        return self.base.atom.format(atoms)

    def format_quote(self, atoms: int) -> str:
        return self.quote.atom.format(atoms)


def compile_market(spec: MarketSpec, base: AssetSpec, quote: AssetSpec) -> MarketRules:
    """Return ``spec`` in integer form, or raise :class:`MarketSpecError` if it is not exact."""
    if not _MARKET_SYMBOL.fullmatch(spec.symbol):
        raise MarketSpecError(f"market symbol must look like BASE_QUOTE, was {spec.symbol!r}")
    for asset in (base, quote):
        if not _SYMBOL.fullmatch(asset.symbol) or not 0 <= asset.decimals <= 18:
            raise MarketSpecError(f"invalid asset {asset!r}")
    if (spec.base, spec.quote) != (base.symbol, quote.symbol) or base.symbol == quote.symbol:
        raise MarketSpecError(f"{spec.symbol}: assets do not match {base.symbol}/{quote.symbol}")
    if not (0 <= spec.maker_fee_bps <= MAX_FEE_BPS and 0 <= spec.taker_fee_bps <= MAX_FEE_BPS):
        raise MarketSpecError(f"{spec.symbol}: fees must be 0..{MAX_FEE_BPS} bps")
    try:
        tick = parse_increment(spec.tick_size)
        step = parse_increment(spec.step_size)
        base_atoms_per_lot = step.atoms(base.decimals)
        # tick x step = (tick.units * step.units) * 10**-(tick.decimals + step.decimals)
        tick_lot = Increment(tick.units * step.units, tick.decimals + step.decimals)
        quote_atoms_per_tick_lot = tick_lot.atoms(quote.decimals)
        min_lots = step.parse(spec.min_quantity)
        max_lots = step.parse(spec.max_quantity)
        max_ticks = tick.parse(spec.max_price)
        min_notional_atoms = quote.atom.parse(spec.min_notional, allow_zero=True)
    except MoneyError as exc:
        raise MarketSpecError(f"{spec.symbol}: {exc}") from exc
    if min_lots > max_lots:
        raise MarketSpecError(f"{spec.symbol}: min_quantity exceeds max_quantity")
    return MarketRules(
        spec=spec,
        base=base,
        quote=quote,
        tick=tick,
        step=step,
        base_atoms_per_lot=base_atoms_per_lot,
        quote_atoms_per_tick_lot=quote_atoms_per_tick_lot,
        min_lots=min_lots,
        max_lots=max_lots,
        max_ticks=max_ticks,
        min_notional_atoms=min_notional_atoms,
    )


class MarketsConfig(msgspec.Struct, frozen=True):
    assets: dict[str, AssetSpec]
    markets: list[MarketSpec]

    def compiled(self) -> list[MarketRules]:
        return [compile_market(m, self.assets[m.base], self.assets[m.quote]) for m in self.markets]


def load_markets_config(path: str | Path) -> MarketsConfig:
    """Read and validate a markets TOML file (see ``config/markets.toml``)."""
    raw = tomllib.loads(Path(path).read_text())
    try:
        assets = {
            symbol: msgspec.convert({"symbol": symbol, **fields}, AssetSpec)
            for symbol, fields in raw.get("assets", {}).items()
        }
        markets = [
            msgspec.convert({"symbol": symbol, **fields}, MarketSpec)
            for symbol, fields in raw.get("markets", {}).items()
        ]
    except msgspec.ValidationError as exc:
        raise MarketSpecError(f"{path}: {exc}") from exc
    for market in markets:
        missing = {market.base, market.quote} - assets.keys()
        if missing:
            raise MarketSpecError(f"{market.symbol}: unknown assets {sorted(missing)}")
    config = MarketsConfig(assets=assets, markets=markets)
    config.compiled()
    return config
