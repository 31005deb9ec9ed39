"""cloudex.klines: candle buckets for every interval, boundaries exact."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from cloudex.klines import INTERVAL_SECONDS, INTERVALS, bucket_end, bucket_start, is_interval

US = 1_000_000


def us(*args: int) -> int:
    """Microseconds since the epoch of a UTC datetime."""
    return int(datetime(*args, tzinfo=UTC).timestamp()) * US


def test_intervals_listed_finest_first_are_valid() -> None:
    # Given Backpack's interval names / Then listed finest first and recognised
    assert INTERVALS == (
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
        "1month",
    )
    assert all(is_interval(name) for name in INTERVALS)
    assert not is_interval("2m")
    assert not is_interval("1M")


@pytest.mark.parametrize("interval", list(INTERVAL_SECONDS))
def test_bucket_start_fixed_interval_contains_timestamp_and_is_aligned(interval: str) -> None:
    # Given timestamps around a bucket boundary / Then each lies in [start, end)
    length = INTERVAL_SECONDS[interval] * US
    for ts in (us(2025, 11, 24, 13, 37, 5) + 123, us(2024, 2, 29), 0, 17):
        start = bucket_start(ts, interval)
        end = bucket_end(start, interval)
        assert start <= ts < end
        assert end - start == length
        # The start is its own bucket; one microsecond before belongs to the previous one
        assert bucket_start(start, interval) == start
        assert bucket_start(start - 1, interval) == start - length
        assert bucket_start(end - 1, interval) == start
        assert bucket_start(end, interval) == end


@pytest.mark.parametrize(
    ("interval", "ts", "expected"),
    [
        ("1m", us(2025, 11, 24, 13, 37, 59) + 999_999, us(2025, 11, 24, 13, 37)),
        ("3m", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 13, 36)),
        ("5m", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 13, 35)),
        ("15m", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 13, 30)),
        ("30m", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 13, 30)),
        ("1h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 13)),
        ("2h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 12)),
        ("4h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 12)),
        ("6h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 12)),
        ("8h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 8)),
        ("12h", us(2025, 11, 24, 13, 37, 5), us(2025, 11, 24, 12)),
        ("1d", us(2025, 11, 24, 23, 59, 59), us(2025, 11, 24)),
        ("3d", us(1970, 1, 3, 23, 59, 59), us(1970, 1, 1)),
        ("3d", us(1970, 1, 4), us(1970, 1, 4)),
    ],
)
def test_bucket_start_known_dates_gives_expected_utc_start(
    interval: str, ts: int, expected: int
) -> None:
    # Given a known UTC time / When bucketed / Then the expected start
    assert bucket_start(ts, interval) == expected


@pytest.mark.parametrize(
    ("ts", "monday"),
    [
        (us(2025, 11, 24), us(2025, 11, 24)),  # a Monday 00:00 is its own start
        (us(2025, 11, 23, 23, 59, 59) + 999_999, us(2025, 11, 17)),  # Sunday's last µs
        (us(2025, 11, 26, 12), us(2025, 11, 24)),  # Wednesday
        (us(2025, 1, 1), us(2024, 12, 30)),  # a week spanning the new year
        (0, us(1969, 12, 29)),  # the epoch was a Thursday
        (us(1970, 1, 5), us(1970, 1, 5)),
    ],
)
def test_bucket_start_week_starts_monday_midnight_utc(ts: int, monday: int) -> None:
    # Given a time / When bucketed by week / Then the Monday 00:00 UTC before it, 7 days long
    start = bucket_start(ts, "1w")
    assert start == monday
    assert datetime.fromtimestamp(start // US, UTC).weekday() == 0
    assert bucket_end(start, "1w") == monday + 7 * 86_400 * US


@pytest.mark.parametrize(
    ("ts", "start", "end"),
    [
        (us(2025, 11, 24, 13), us(2025, 11, 1), us(2025, 12, 1)),
        (us(2025, 12, 31, 23, 59, 59) + 999_999, us(2025, 12, 1), us(2026, 1, 1)),
        (us(2026, 1, 1), us(2026, 1, 1), us(2026, 2, 1)),
        (us(2024, 2, 29, 12), us(2024, 2, 1), us(2024, 3, 1)),  # leap February: 29 days
        (us(2025, 2, 28, 23, 59, 59), us(2025, 2, 1), us(2025, 3, 1)),  # 28 days
        (us(2025, 4, 30, 23), us(2025, 4, 1), us(2025, 5, 1)),  # 30 days
        (us(2025, 3, 1), us(2025, 3, 1), us(2025, 4, 1)),
    ],
)
def test_bucket_month_is_calendar_month(ts: int, start: int, end: int) -> None:
    # Given a time / When bucketed by month / Then the calendar month, boundaries exact
    assert bucket_start(ts, "1month") == start
    assert bucket_end(start, "1month") == end
    # The last microsecond of the month still belongs to it; the end starts the next one
    assert bucket_start(end - 1, "1month") == start
    assert bucket_start(end, "1month") == end


def test_bucket_month_lengths_over_a_year_sum_to_the_year() -> None:
    # Given 2025 / When stepping month by month / Then the calendar's month lengths
    start = us(2025, 1, 1)
    boundaries = [start]
    for _ in range(12):
        boundaries.append(bucket_end(boundaries[-1], "1month"))
    assert boundaries[-1] == us(2026, 1, 1)
    days = [(b - a) // (86_400 * US) for a, b in itertools.pairwise(boundaries)]
    assert days == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def test_bucket_coarse_interval_starts_are_fine_interval_starts() -> None:
    # Given a time / Then every interval's start is a minute start
    # Every coarse candle start is also a start of the finer candles (minutes fold upward)
    ts = us(2025, 11, 26, 17, 42, 13)
    for interval in INTERVALS:
        start = bucket_start(ts, interval)
        assert bucket_start(start, "1m") == start
