"""Market-data state the engine owns: live candles of every interval and the rolling 24 h ticker.

Trades update the current minute; when a minute closes it is folded into the current candle of
every coarser interval and into the 24 h window. Coarser candles are therefore the closed minutes
of their bucket plus the open minute, computed when asked for.
"""

from __future__ import annotations

from collections import deque

from cloudex.klines import INTERVALS, Bar, bucket_start, merge_bar
from cloudex.messages import Candle, Ticker

__all__ = ["MarketData", "MINUTES_PER_DAY"]

MINUTES_PER_DAY = 1_440
_MINUTE_US = 60_000_000
_COARSE = INTERVALS[1:]


class MarketData:
    __slots__ = ("minute", "day", "coarse", "traded", "day_hash")

    def __init__(self) -> None:
        self.minute: Bar | None = None  # the current (open) minute, if it has trades
        self.day: deque[Bar] = deque()  # closed minutes of the last 24 h, oldest first
        self.coarse: dict[str, Bar] = {}  # interval -> closed minutes of its current bucket
        self.traded = False  # traded since the last MarketStats
        # Sum of the hashes of the bars in ``day``, kept as they come and go, so the state hash
        # need not walk a day of minutes.
        self.day_hash = 0

    def on_trades(
        self,
        ts: int,
        first: int,
        high: int,
        low: int,
        last: int,
        volume: int,
        quote: int,
        count: int,
    ) -> None:
        """Record the trades of one command (all at time ``ts``)."""
        minute = self.minute
        start = ts - ts % _MINUTE_US
        if minute is not None and minute[0] != start:
            self._close_minute()
            minute = None
        if minute is None:
            self.minute = [start, first, high, low, last, volume, quote, count]
        else:
            if high > minute[2]:
                minute[2] = high
            if low < minute[3]:
                minute[3] = low
            minute[4] = last
            minute[5] += volume
            minute[6] += quote
            minute[7] += count
        self.traded = True

    def advance(self, ts: int) -> None:
        """Close the current minute if ``ts`` is past it, and drop minutes older than 24 h."""
        minute = self.minute
        if minute is not None and ts - ts % _MINUTE_US != minute[0]:
            self._close_minute()
        horizon = ts - ts % _MINUTE_US - (MINUTES_PER_DAY - 1) * _MINUTE_US
        day = self.day
        while day and day[0][0] < horizon:
            self.day_hash -= hash(tuple(day.popleft()))

    def _close_minute(self) -> None:
        minute = self.minute
        assert minute is not None
        self.minute = None
        self.day.append(minute)
        self.day_hash += hash(tuple(minute))
        start = minute[0]
        coarse = self.coarse
        for interval in _COARSE:
            bucket = bucket_start(start, interval)
            bar = coarse.get(interval)
            if bar is None or bar[0] != bucket:
                coarse[interval] = [bucket, *minute[1:]]
            else:
                merge_bar(bar, minute)

    def candles(self, ts: int) -> list[Candle]:
        """Return the current candle of every interval that has trades, as of ``ts``.

        A read: it changes nothing (a minute that has ended is counted where it belongs).
        """
        out = []
        minute = self.minute
        if minute is not None and minute[0] == ts - ts % _MINUTE_US:
            out.append(Candle("1m", *minute))
        for interval in _COARSE:
            bucket = bucket_start(ts, interval)
            bar = self.coarse.get(interval)
            current = list(bar) if bar is not None and bar[0] == bucket else None
            if minute is not None and bucket_start(minute[0], interval) == bucket:
                if current is None:
                    current = [bucket, *minute[1:]]
                else:
                    merge_bar(current, minute)
            if current is not None:
                out.append(Candle(interval, *current))
        return out

    def ticker(self, ts: int) -> Ticker:
        """Return the rolling 24 h statistics as of ``ts`` (minute resolution); a read."""
        horizon = ts - ts % _MINUTE_US - (MINUTES_PER_DAY - 1) * _MINUTE_US
        bars = [bar for bar in self.day if bar[0] >= horizon]
        if self.minute is not None and self.minute[0] >= horizon:
            bars.append(self.minute)
        if not bars:
            return Ticker(None, None, None, None, 0, 0, 0)
        return Ticker(
            first_price=bars[0][1],
            last_price=bars[-1][4],
            high=max(bar[2] for bar in bars),
            low=min(bar[3] for bar in bars),
            volume=sum(bar[5] for bar in bars),
            quote_volume=sum(bar[6] for bar in bars),
            trades=sum(bar[7] for bar in bars),
        )

    def state_key(self) -> tuple[Bar | None, int, int, dict[str, Bar], bool]:
        """A small stand-in for the whole state, for the engine's state hash."""
        return (self.minute, len(self.day), self.day_hash & (2**64 - 1), self.coarse, self.traded)

    # -- SNAPSHOT ---------------------------------------------------------------------------

    def dump(self) -> tuple[Bar | None, list[Bar], dict[str, Bar], bool]:
        return (self.minute, list(self.day), dict(self.coarse), self.traded)

    @classmethod
    def load(cls, state: tuple[Bar | None, list[Bar], dict[str, Bar], bool]) -> MarketData:
        md = cls()
        minute, day, coarse, traded = state
        md.minute = list(minute) if minute is not None else None
        md.day = deque(list(bar) for bar in day)
        md.day_hash = sum(hash(tuple(bar)) for bar in md.day)
        md.coarse = {k: list(v) for k, v in coarse.items()}
        md.traded = traded
        return md
