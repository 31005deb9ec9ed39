"""cloudex.money: exact decimal strings <-> integer counts of an increment."""

from __future__ import annotations

import pytest

from cloudex.money import MAX_DECIMAL_LENGTH, Increment, MoneyError, parse_increment

TICK = Increment(1, 2)  # 0.01
NICKEL = Increment(5, 2)  # 0.05
WHOLE = Increment(1, 0)  # 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 100),
        ("100.5", 10050),
        ("0.01", 1),
        ("0.010", 1),  # trailing zeros are not extra precision
        ("12345.67", 1234567),
        ("0.0100000", 1),
    ],
)
def test_parse_plain_decimal_returns_count_of_ticks(text: str, expected: int) -> None:
    # Given a 0.01 tick / When parsing a plain decimal / Then the count of ticks comes back
    assert TICK.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "-inf",
        "1e5",
        "1E5",
        "+1",
        "-1",
        "-0.01",
        " 1",
        "1 ",
        "1.",
        ".5",
        "",
        "1,5",
        "1_000",
        "01",
        "00.5",
        "0x10",
        "\u0661\u0662",  # Arabic-Indic digits 12
        "\uff11",  # fullwidth digit one
        "1.\u0665",  # Arabic-Indic five as a decimal
        "\u0967",  # Devanagari one
        "2\u00b2",  # superscript two
        "1\u00a0",  # no-break space
        "1.0.0",
    ],
)
def test_parse_malformed_string_raises_money_error(text: str) -> None:
    # Given a string that is not a plain ASCII decimal / When parsed / Then MoneyError
    with pytest.raises(MoneyError):
        TICK.parse(text)


@pytest.mark.parametrize("value", [1, 1.5, None, b"1"])
def test_parse_non_string_raises_money_error(value: object) -> None:
    # Given a non-string / When parsed / Then MoneyError
    with pytest.raises(MoneyError):
        TICK.parse(value)  # type: ignore[arg-type]


def test_parse_off_tick_value_raises_money_error() -> None:
    # Given a 0.05 tick / When a value between ticks is parsed / Then it is rejected
    assert NICKEL.parse("0.15") == 3
    with pytest.raises(MoneyError):
        NICKEL.parse("0.12")
    with pytest.raises(MoneyError):
        NICKEL.parse("1.01")


def test_parse_more_decimals_than_increment_raises_money_error() -> None:
    # Given more significant decimals than the increment / When parsed / Then MoneyError
    with pytest.raises(MoneyError):
        TICK.parse("0.011")
    with pytest.raises(MoneyError):
        WHOLE.parse("1.5")
    assert WHOLE.parse("2.000") == 2


@pytest.mark.parametrize("text", ["0", "0.00", "0.000"])
def test_parse_zero_without_allow_zero_raises_money_error(text: str) -> None:
    with pytest.raises(MoneyError):
        TICK.parse(text)
    # When zero is allowed, it parses to 0
    assert TICK.parse(text, allow_zero=True) == 0


def test_parse_too_long_string_raises_money_error() -> None:
    # Given a string at the length limit / Then it parses; one more character is refused
    at_limit = "1" * MAX_DECIMAL_LENGTH
    assert WHOLE.parse(at_limit) == int(at_limit)
    with pytest.raises(MoneyError):
        WHOLE.parse("1" * (MAX_DECIMAL_LENGTH + 1))
    with pytest.raises(MoneyError):
        TICK.parse("0." + "0" * MAX_DECIMAL_LENGTH)


@pytest.mark.parametrize(
    ("increment", "count", "expected"),
    [
        (TICK, 10050, "100.50"),
        (TICK, 1, "0.01"),
        (TICK, 0, "0.00"),
        (NICKEL, 3, "0.15"),
        (WHOLE, 42, "42"),
        (Increment(1, 9), 1, "0.000000001"),
        (TICK, -5, "-0.05"),
    ],
)
def test_format_count_gives_increment_decimals(
    increment: Increment, count: int, expected: str
) -> None:
    # Given a count / When formatted / Then exactly the increment's decimals
    assert increment.format(count) == expected


def test_format_then_parse_round_trips() -> None:
    # Given counts / When formatted and parsed back / Then the same counts
    for count in (1, 7, 99, 100, 12345678):
        assert NICKEL.parse(NICKEL.format(count)) == count
        assert TICK.parse(TICK.format(count)) == count


@pytest.mark.parametrize(("units", "decimals"), [(0, 2), (-1, 2), (1, -1), (1, 31)])
def test_increment_invalid_definition_raises_money_error(units: int, decimals: int) -> None:
    # Given non-positive units or decimals outside 0..30 / Then MoneyError
    with pytest.raises(MoneyError):
        Increment(units, decimals)


def test_increment_str_is_its_decimal_form() -> None:
    # Given increments / When printed / Then their decimal form
    assert str(NICKEL) == "0.05"
    assert str(WHOLE) == "1"
    assert str(Increment(25, 1)) == "2.5"


@pytest.mark.parametrize(
    ("increment", "asset_decimals", "atoms"),
    [
        (Increment(1, 2), 9, 10**7),  # SOL lot 0.01
        (Increment(1, 5), 8, 1_000),  # BTC lot 0.00001
        (Increment(1, 0), 0, 1),
        (Increment(50, 3), 2, 5),  # 0.050 at 2 decimals
    ],
)
def test_atoms_whole_number_returns_atoms(
    increment: Increment, asset_decimals: int, atoms: int
) -> None:
    # Given an increment and an asset's decimals / Then atoms per increment
    assert increment.atoms(asset_decimals) == atoms


def test_atoms_finer_than_asset_atom_raises_money_error() -> None:
    # Given an increment finer than the atom / When converted / Then MoneyError
    with pytest.raises(MoneyError):
        Increment(1, 3).atoms(2)
    with pytest.raises(MoneyError):
        Increment(15, 3).atoms(2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.01", Increment(1, 2)),
        ("0.05", Increment(5, 2)),
        ("1", Increment(1, 0)),
        ("0.10", Increment(1, 1)),
        ("2.5", Increment(25, 1)),
        ("10", Increment(10, 0)),
    ],
)
def test_parse_increment_valid_text_returns_increment(text: str, expected: Increment) -> None:
    # Given an increment's text / When parsed / Then the increment
    assert parse_increment(text) == expected


@pytest.mark.parametrize("text", ["0", "0.00", "-0.01", "1e-2", "abc", ""])
def test_parse_increment_invalid_text_raises_money_error(text: str) -> None:
    # Given zero, negative or malformed text / When parsed / Then MoneyError
    with pytest.raises(MoneyError):
        parse_increment(text)
