"""Exact decimal <-> integer conversion: the only place a decimal string becomes a number.

Every amount inside Cloudex is an ``int`` counted in some increment: prices in ticks, quantities
in lots (steps), balances in asset atoms. An :class:`Increment` is such a unit, written as
``units * 10**-decimals`` (tick ``0.05`` is ``Increment(5, 2)``). Parsing accepts only plain
decimal strings (``"100.5"``, ``"0.010"``): no sign, no exponent, no NaN or infinity, no spaces,
and only values that are a whole number of increments.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["Increment", "MoneyError", "parse_increment", "MAX_DECIMAL_LENGTH"]

# Longer strings are never legitimate amounts; refusing them early bounds the work per field.
MAX_DECIMAL_LENGTH = 40

_PLAIN_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")


class MoneyError(ValueError):
    """A decimal string that is not an exact, positive multiple of its increment."""


class Increment(msgspec.Struct, frozen=True, array_like=True):
    """A money unit ``units * 10**-decimals``: a tick size, a step size or an asset's atom."""

    units: int
    decimals: int

    def __post_init__(self) -> None:
        if self.units <= 0 or self.decimals < 0 or self.decimals > 30:
            raise MoneyError(f"invalid increment {self.units}e-{self.decimals}")

    def __str__(self) -> str:
        return _format_scaled(self.units, self.decimals)

    def atoms(self, asset_decimals: int) -> int:
        """Return how many atoms of an asset with ``asset_decimals`` one increment is worth.

        Raises :class:`MoneyError` if the increment is finer than the asset's atom.
        """
        shift: int = asset_decimals - self.decimals
        if shift >= 0:
            factor: int = 10**shift
            return self.units * factor
        divisor: int = 10 ** (-shift)
        whole, rest = divmod(self.units, divisor)
        if rest:
            raise MoneyError(f"{self} is not a whole number of atoms at {asset_decimals} decimals")
        return whole

    def parse(self, text: str, *, allow_zero: bool = False) -> int:
        """Return ``text`` as a count of this increment.

        Raises :class:`MoneyError` for anything but a plain decimal that is an exact multiple
        of the increment (and positive, unless ``allow_zero``).
        """
        if not isinstance(text, str) or len(text) > MAX_DECIMAL_LENGTH:
            raise MoneyError(f"not a decimal string: {text!r}")
        match = _PLAIN_DECIMAL.fullmatch(text)
        if match is None:
            raise MoneyError(f"not a plain decimal: {text!r}")
        whole, fraction = match.group(1), match.group(2) or ""
        significant = fraction.rstrip("0")
        if len(significant) > self.decimals:
            raise MoneyError(f"{text} has more decimals than {self}")
        scaled = int(whole + significant.ljust(self.decimals, "0"))
        count, rest = divmod(scaled, self.units)
        if rest:
            raise MoneyError(f"{text} is not a multiple of {self}")
        if count == 0 and not allow_zero:
            raise MoneyError(f"{text} must be greater than zero")
        return count

    def format(self, count: int) -> str:
        """Return ``count`` increments as a decimal string with this increment's decimals."""
        return _format_scaled(count * self.units, self.decimals)


def parse_increment(text: str) -> Increment:
    """Return the increment written as ``text`` (``"0.01"`` -> ``Increment(1, 2)``)."""
    match = _PLAIN_DECIMAL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise MoneyError(f"not a plain decimal: {text!r}")
    fraction = (match.group(2) or "").rstrip("0")
    units = int(match.group(1) + fraction)
    return Increment(units, len(fraction))


def _format_scaled(scaled: int, decimals: int) -> str:
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled))
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"
