"""``config/mm.toml``: the maker's and the taker's settings, and each market's quoting knobs.

Amounts are decimal strings in the market's own units (prices in quote, sizes and inventory in
base); spacings and spreads are in ticks. ``[defaults]`` applies to every market, each
``[markets.<SYMBOL>]`` table overrides it. The file says how to quote a market; whether the
market exists is the exchange's to say: only markets in both are quoted.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mm.core import LadderParams, MarketRules

__all__ = [
    "ConfigError",
    "MakerSettings",
    "TakerSettings",
    "MarketConfig",
    "MmConfig",
    "DEFAULT_CONFIG_PATH",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "mm.toml"


class ConfigError(ValueError):
    """The configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class MakerSettings:
    interval_s: float = 1.0  # one quoting pass over every market
    reconcile_interval_s: float = 5.0  # GET /api/v1/orders at least this often
    markets_refresh_s: float = 60.0  # GET /api/v1/markets (new markets, state changes)
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 10.0
    shutdown_timeout_s: float = 10.0  # cancelling everything on SIGTERM
    window_ms: int = 5_000  # X-Window of each signed request


@dataclass(frozen=True)
class TakerSettings:
    min_interval_s: float = 2.0  # between two orders, uniform in [min, max]
    max_interval_s: float = 6.0
    markets_refresh_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


@dataclass(frozen=True)
class MarketConfig:
    symbol: str
    reference_price: Decimal  # where the walk starts (quote)
    walk_step_bps: Decimal = Decimal(2)  # largest move per interval, basis points of the start
    walk_bound_pct: Decimal = Decimal(10)  # the walk stays within this % of the start
    levels: int = 12  # per side
    spacing_ticks: int = 5
    half_spread_ticks: int = 5
    size: Decimal = Decimal(1)  # the best level's quantity (base)
    size_increment: Decimal = Decimal(0)  # added per level deeper (base)
    max_inventory: Decimal = Decimal(100)  # largest position either way from the baseline (base)
    target_inventory: Decimal | None = None  # the baseline (base); None: holdings at start
    skew_ticks: int = 0  # how far the ladder moves at a position of max_inventory
    min_notional: Decimal = Decimal(1)  # quote; the exchange enforces it, /markets omits it
    taker_size: Decimal | None = None  # the taker's largest order (base); None: size

    def ladder_params(self, rules: MarketRules) -> LadderParams:
        """The knobs in ticks and lots of the market as the exchange describes it."""
        return LadderParams(
            levels=self.levels,
            spacing_ticks=self.spacing_ticks,
            half_spread_ticks=self.half_spread_ticks,
            size_lots=max(1, rules.lots_floor(self.size)),
            size_increment_lots=rules.lots_floor(self.size_increment),
            max_position_lots=rules.lots_floor(self.max_inventory),
            skew_ticks=self.skew_ticks,
        )


@dataclass(frozen=True)
class MmConfig:
    markets: dict[str, MarketConfig]
    maker: MakerSettings = field(default_factory=MakerSettings)
    taker: TakerSettings = field(default_factory=TakerSettings)


_DECIMALS = {
    "reference_price",
    "walk_step_bps",
    "walk_bound_pct",
    "size",
    "size_increment",
    "max_inventory",
    "target_inventory",
    "min_notional",
    "taker_size",
}
_INTS = {"levels", "spacing_ticks", "half_spread_ticks", "skew_ticks"}
_MARKET_KEYS = _DECIMALS | _INTS


def _decimal(where: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a decimal string, got {value!r}")
    try:
        # A float goes through its shortest repr: 0.1 stays 0.1.
        parsed = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a decimal") from None
    if not parsed.is_finite() or parsed < 0:
        raise ConfigError(f"{where}: {value!r} must be a non-negative number")
    return parsed


def _settings(where: str, cls: Any, table: object) -> Any:
    if table is None:
        return cls()
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"[{where}] unknown key {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"[{where}] {key}: expected a number")
        values[key] = int(value) if known[key].type == "int" else float(value)
        if values[key] <= 0:
            raise ConfigError(f"[{where}] {key}: must be positive")
    return cls(**values)


def _market(
    symbol: str, defaults: Mapping[str, object], table: Mapping[str, object]
) -> MarketConfig:
    merged = {**defaults, **table}
    values: dict[str, Any] = {"symbol": symbol}
    for key, value in merged.items():
        where = f"[markets.{symbol}] {key}"
        if key not in _MARKET_KEYS:
            raise ConfigError(f"{where}: unknown key")
        if key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: expected a non-negative integer")
            values[key] = value
        else:
            values[key] = _decimal(where, value)
    if "reference_price" not in values or values["reference_price"] <= 0:
        raise ConfigError(f"[markets.{symbol}] needs a positive reference_price")
    config = MarketConfig(**values)
    for key in ("levels", "spacing_ticks", "half_spread_ticks"):
        if getattr(config, key) < 1:
            raise ConfigError(f"[markets.{symbol}] {key} must be at least 1")
    if config.size <= 0:
        raise ConfigError(f"[markets.{symbol}] size must be positive")
    return config


def parse_config(data: Mapping[str, object]) -> MmConfig:
    unknown = set(data) - {"maker", "taker", "defaults", "markets"}
    if unknown:
        raise ConfigError(f"unknown tables {sorted(unknown)}")
    defaults = data.get("defaults", {})
    markets = data.get("markets", {})
    if not isinstance(defaults, Mapping) or not isinstance(markets, Mapping):
        raise ConfigError("[defaults] and [markets] must be tables")
    parsed: dict[str, MarketConfig] = {}
    for symbol, table in markets.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[markets.{symbol}] must be a table")
        parsed[symbol] = _market(symbol, defaults, table)
    maker: MakerSettings = _settings("maker", MakerSettings, data.get("maker"))
    taker: TakerSettings = _settings("taker", TakerSettings, data.get("taker"))
    if taker.max_interval_s < taker.min_interval_s:
        raise ConfigError("[taker] max_interval_s is below min_interval_s")
    for name, backoff in (("maker", maker), ("taker", taker)):
        if backoff.backoff_max_s < backoff.backoff_initial_s:
            raise ConfigError(f"[{name}] backoff_max_s is below backoff_initial_s")
    return MmConfig(markets=parsed, maker=maker, taker=taker)


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> MmConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data)


def with_maker(config: MmConfig, **changes: Any) -> MmConfig:
    """A copy with some maker settings changed (the command line's ``--interval``)."""
    return replace(config, maker=replace(config.maker, **changes))
