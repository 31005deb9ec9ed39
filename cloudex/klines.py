"""Kline (candle) intervals and bucketing, shared by the engine's live candles and the
persister's stored ones so the two always agree on where a candle starts and ends.

Times are integer microseconds since the Unix epoch (UTC). Fixed intervals are aligned to the
epoch, weeks start on Monday 00:00 UTC, months on the first day of the calendar month.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "INTERVALS",
    "INTERVAL_SECONDS",
    "SECOND",
    "Bar",
    "bucket_start",
    "bucket_end",
    "is_interval",
    "merge_bar",
]

_MINUTE = 60
_HOUR = 3_600
_DAY = 86_400
_US = 1_000_000
_MONDAY_OFFSET_US = 4 * _DAY * _US  # 1970-01-01 was a Thursday; 1970-01-05 a Monday

# Backpack's interval names, finest first. "1month" has no fixed length.
INTERVAL_SECONDS: dict[str, int] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": _HOUR,
    "2h": 2 * _HOUR,
    "4h": 4 * _HOUR,
    "6h": 6 * _HOUR,
    "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY,
    "3d": 3 * _DAY,
    "1w": 7 * _DAY,
}
INTERVALS: tuple[str, ...] = (*INTERVAL_SECONDS, "1month")
# Served (folded from trades on request, cloudex.history) but neither kept live by the engine
# nor stored by the persister: a candle a second per market would cost more than it serves.
SECOND = "1s"


# A candle being built: [start, open, high, low, close, volume, quote_volume, trades, ...]; the
# engine's live candles and the persister's stored ones both use this layout (the persister
# appends the first and last trade ids).
Bar = list[int]


def merge_bar(into: Bar, bar: Bar) -> None:
    """Fold ``bar``, which comes after ``into`` in time, into ``into`` (fields 1..7)."""
    if bar[2] > into[2]:
        into[2] = bar[2]
    if bar[3] < into[3]:
        into[3] = bar[3]
    into[4] = bar[4]
    into[5] += bar[5]
    into[6] += bar[6]
    into[7] += bar[7]


def is_interval(name: str) -> bool:
    return name in INTERVAL_SECONDS or name == "1month"


def bucket_start(ts_us: int, interval: str) -> int:
    """Return the start (µs) of the ``interval`` candle that contains ``ts_us``."""
    if interval == "1month":
        moment = datetime.fromtimestamp(ts_us // _US, UTC)
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        return int(first.timestamp()) * _US
    length = _US if interval == SECOND else INTERVAL_SECONDS[interval] * _US
    if interval == "1w":
        return ts_us - (ts_us - _MONDAY_OFFSET_US) % length
    return ts_us - ts_us % length


def bucket_end(start_us: int, interval: str) -> int:
    """Return the end (µs, exclusive) of the ``interval`` candle starting at ``start_us``."""
    if interval == "1month":
        moment = datetime.fromtimestamp(start_us // _US, UTC)
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * _US
    return start_us + (_US if interval == SECOND else INTERVAL_SECONDS[interval] * _US)
