"""Persister throughput, and the kline history query on a year of candles.

1. Throughput: a realistic journal (deposits for every account, then limit orders around the
   mid that often cross, market orders, cancels, the odd withdrawal and heartbeat, on SOL_USDC
   and TATA_INR interleaved) is made by the pure engine (tests/journal_factory.py), then fed
   through the persister Lambda handler in SQS batches of 10 records, as the FIFO event source
   delivers them. Timed end to end: every raw block written and every read-model projection
   caught up (the handler runs the projections after each batch; any lag left is drained and
   timed too). The figure is journal events (the engine's event count) per second.
2. Klines: a year of 1m candles of BTC_USDC (525,600 rows, a random walk around 94,000 USDC)
   and every coarser interval made from them, loaded with COPY, then ANALYZE. Then random
   one-week 1m queries (10,080 candles each) through ``cloudex.history.klines``, Backpack JSON
   shapes included, on one connection as a warm API function would.

Needs PostgreSQL only (``./dev services``); creates its own database and drops it. Prints
details to stderr and as its LAST stdout line:
{"bench":"persister","events_per_s":N,"kline_1w_1m_query_ms_p99":X, ...}
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The persister logs through Powertools to stdout; only warnings here (stdout's last line is
# the result). Set before the handler module creates its logger.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import psycopg

from bench.engine_service_bench import drop_database, fresh_database
from cloudex import history
from cloudex.klines import INTERVALS, Bar
from cloudex.messages import AnyCommand, Deposit
from cloudex.views import kline_json
from functions.persister import handler as persister
from functions.persister.read_models import fold_bars
from localgw.lambda_context import LambdaContext
from tests.journal_factory import JournalFactory, sqs_events, trading_commands

DATABASE = "cloudex_bench_persister"
KLINE_MARKET = "BTC_USDC"  # not traded by the journal: its candles are the year's alone
YEAR_START_S = 1_735_689_600  # 2025-01-01 00:00:00 UTC
MINUTES_PER_YEAR = 525_600
WEEK_S = 7 * 86_400


# -- 1. THROUGHPUT ----------------------------------------------------------------------------


def interleaved(rng: random.Random, accounts: int, orders: int) -> Iterator[AnyCommand]:
    """Two thirds of the orders on SOL_USDC, a third on TATA_INR, in random interleaving."""
    for account in range(1, accounts + 1):
        for asset, amount in (("TATA", 10**7), ("INR", 10**11)):
            yield Deposit(
                id=f"bench-{asset}-{account}", ts=0, account=account, asset=asset, amount=amount
            )
    sources = [
        trading_commands(rng, accounts=accounts, orders=orders * 2 // 3),
        trading_commands(
            rng, accounts=accounts, orders=orders // 3, market="TATA_INR", deposits=False
        ),
    ]
    weights = [2, 1]
    while sources:
        index = rng.choices(range(len(sources)), weights)[0]
        command = next(sources[index], None)
        if command is None:
            del sources[index], weights[index]
        else:
            yield command


def bench_throughput(
    url: str, accounts: int, orders: int, records_per_block: int, seed: int
) -> dict[str, float]:
    started = time.perf_counter()
    # 20 ms apart: the journal spans a realistic stretch of minutes of candles.
    factory = JournalFactory(step_us=20_000, records_per_block=records_per_block)
    factory.run(interleaved(random.Random(seed), accounts, orders))
    messages = factory.take()
    commands = factory.seq
    events = factory.engine.seq
    print(
        f"journal: {commands:,} commands, {events:,} events, {len(messages):,} SQS messages "
        f"(made in {time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    batches = list(sqs_events(messages))
    del factory, messages
    # The journal's objects stay out of the collector's way: a Lambda would not hold them.
    gc.collect()
    gc.freeze()

    os.environ["DATABASE_URL"] = url
    invocations = 0
    # The metrics' EMF lines go to stdout too: away with them.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        started = time.perf_counter()
        for event in batches:
            response = persister.handler(event, LambdaContext("persister"))
            invocations += 1
            if response["batchItemFailures"]:
                raise RuntimeError(f"batch failed: {response}")
        # Whatever the last invocations left behind (none, normally) counts too.
        while True:
            report = persister.project()
            if report is None or report.failed:
                raise RuntimeError(f"projections failed: {report}")
            if not any(report.lag.values()):
                break
            invocations += 1
        elapsed = time.perf_counter() - started
    gc.unfreeze()
    persister.database.close()

    with psycopg.connect(url) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("journal", "orders", "trades", "fills", "balance_ledger", "klines")
        }
        failures = conn.execute(
            "SELECT count(*) FROM projection_checkpoints WHERE failures > 0"
        ).fetchone()[0]  # type: ignore[index]
    if failures:
        raise RuntimeError("a projection recorded failures")
    rate = events / elapsed
    print(
        f"persister: {events:,} events in {elapsed:.2f} s through {invocations:,} invocations: "
        f"{rate:,.0f} events/s ({commands / elapsed:,.0f} commands/s); rows: "
        + ", ".join(f"{table} {count:,}" for table, count in counts.items()),
        file=sys.stderr,
    )
    return {"events_per_s": rate, "events": events, "commands": commands}


# -- 2. KLINES --------------------------------------------------------------------------------

# Bars as the klines projection folds them (read_models.fold_bars): [start, open, high, low,
# close, volume, quote_volume, trades, first_trade_id, last_trade_id].


def year_of_minutes(rng: random.Random) -> list[Bar]:
    """1m candles of BTC_USDC for 2025: a random walk (0.06 % a minute, some 43 % a year)
    in ticks of 0.1 USDC, volumes in lots of 0.00001 BTC, quote volumes in USDC atoms (one tick
    times one lot is one atom)."""
    price = 940_000.0  # 94,000.0 USDC
    trade_id = 1
    bars: list[Bar] = []
    gauss = rng.gauss
    randint = rng.randint
    for minute in range(MINUTES_PER_YEAR):
        open_ = round(price)
        price *= math.exp(gauss(0.0, 0.0006))
        close = round(price)
        high = max(open_, close) + randint(0, 300)
        low = min(open_, close) - randint(0, 300)
        trades = randint(1, 400)
        volume = trades * randint(100, 20_000)
        quote = volume * randint(low, high)
        bars.append(
            [
                (YEAR_START_S + minute * 60) * 1_000_000,
                open_,
                high,
                low,
                close,
                volume,
                quote,
                trades,
                trade_id,
                trade_id + trades - 1,
            ]
        )
        trade_id += trades
    return bars


# Each interval folded from a finer one whose buckets nest in it (all are aligned to the epoch,
# weeks to a Monday, months to their first day: days nest in all three).
_SOURCE = {
    "3m": "1m",
    "5m": "1m",
    "15m": "5m",
    "30m": "15m",
    "1h": "30m",
    "2h": "1h",
    "4h": "2h",
    "6h": "2h",
    "8h": "4h",
    "12h": "4h",
    "1d": "12h",
    "3d": "1d",
    "1w": "1d",
    "1month": "1d",
}


def load_year(url: str, seed: int) -> int:
    started = time.perf_counter()
    candles = {"1m": year_of_minutes(random.Random(seed))}
    for interval in INTERVALS[1:]:
        candles[interval] = fold_bars(candles[_SOURCE[interval]], interval)
    rows = sum(len(bars) for bars in candles.values())
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY klines (market, interval, start, open, high, low, close, volume, quote_volume, "
            "trades, first_trade_id, last_trade_id) FROM STDIN"
        ) as copy:
            for interval, bars in candles.items():
                for bar in bars:
                    copy.write_row((KLINE_MARKET, interval, *bar))
        conn.execute("ANALYZE klines")
    print(
        f"klines: {rows:,} candles of {KLINE_MARKET} for 2025 "
        f"({len(candles['1m']):,} 1m) made and loaded in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return rows


def bench_klines(url: str, queries: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    last_start = YEAR_START_S + MINUTES_PER_YEAR * 60 - WEEK_S
    with psycopg.connect(url, autocommit=True) as conn:
        rules = history.market_rules(conn)[KLINE_MARKET]
        # The shapes are kline_json's, to the character.
        start = rng.randint(YEAR_START_S, last_start)
        shaped = history.klines(conn, rules, "1m", start, start + WEEK_S)
        candles = history.kline_candles(
            conn, KLINE_MARKET, "1m", start * 1_000_000, (start + WEEK_S) * 1_000_000
        )
        assert shaped == [kline_json(rules, c) for c in candles]
        for _ in range(10):  # warm-up (not timed): the first reads of the table
            start = rng.randint(YEAR_START_S, last_start)
            history.klines(conn, rules, "1m", start, start + WEEK_S)
        times: list[float] = []
        for _ in range(queries):
            start = rng.randint(YEAR_START_S, last_start)
            began = time.perf_counter()
            result = history.klines(conn, rules, "1m", start, start + WEEK_S)
            times.append((time.perf_counter() - began) * 1000)
            if len(result) != 10_080:
                raise RuntimeError(f"a week from {start} gave {len(result)} candles")
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"klines: {queries} one-week 1m queries (10,080 candles, JSON shapes): "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms",
        file=sys.stderr,
    )
    return {"p50": p50, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=40_000, help="trading commands")
    parser.add_argument("--accounts", type=int, default=200, help="accounts trading")
    parser.add_argument("--queries", type=int, default=300, help="one-week 1m kline queries")
    parser.add_argument(
        "--records-per-block",
        type=int,
        default=200,
        help="commands per journal block (the engine service seals one per batch, or at "
        "180 kB; under load they hold hundreds)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    url = fresh_database(DATABASE)
    try:
        throughput = bench_throughput(
            url, args.accounts, args.orders, args.records_per_block, args.seed
        )
        load_year(url, args.seed)
        kline = bench_klines(url, args.queries, args.seed)
    finally:
        persister.database.close()
        drop_database(DATABASE)
    print(
        json.dumps(
            {
                "bench": "persister",
                "events_per_s": round(throughput["events_per_s"]),
                "kline_1w_1m_query_ms_p99": round(kline["p99"], 2),
                "kline_1w_1m_query_ms_p50": round(kline["p50"], 2),
                "events": throughput["events"],
                "commands": throughput["commands"],
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
