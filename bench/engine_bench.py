"""Engine core throughput and latency on a seeded, exchange-like workload.

5,000 resting orders are prefilled around a mid price; then 1,000,000 operations: 55 % passive
limits near the mid, 5 % marketable limits, 25 % cancels of live orders, 15 % market orders sized
so the book holds ~10-20k resting orders, over 1,000 funded accounts, with full accounting and
event emission. Only ``Engine.execute`` is timed; the workload generator runs outside the timer.
Conservation of every asset is checked at the end.

Prints, as its last line:
{"bench":"engine","ops":N,"ops_per_s":N,"ops_per_s_first_100k":N,"p50_us":X,"p99_us":X,"p999_us":X}
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudex.enums import OrderType, Side
from cloudex.markets import load_markets_config
from cloudex.messages import (
    CancelOrder,
    Deposit,
    OrderClosed,
    PlaceOrder,
)
from cloudex.seed import market_seed_commands
from engine_service.core import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
MARKET = "SOL_USDC"
MID = 10_000  # ticks: 100.00 USDC
ACCOUNTS = 1_000
FUNDS_USDC = 10**15  # atoms: a billion USDC each, so the workload never runs dry
FUNDS_SOL = 10**16


class Workload:
    """Generates the next command from the live book, outside the timed section."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.rng = random.Random(seed)
        self.live: list[int] = []
        self.live_index: dict[int, int] = {}
        self.owner: dict[int, int] = {}
        self.n = 0
        self.ts = 1_700_000_000_000_000

    def _id(self) -> str:
        self.n += 1
        return f"b{self.n}"

    def _tick(self) -> int:
        self.ts += 50  # 20k commands per second of engine time
        return self.ts

    def add_live(self, order_id: int, account: int) -> None:
        self.live_index[order_id] = len(self.live)
        self.live.append(order_id)
        self.owner[order_id] = account

    def drop_live(self, order_id: int) -> None:
        index = self.live_index.pop(order_id, None)
        if index is None:
            return
        last = self.live.pop()
        if last != order_id:
            self.live[index] = last
            self.live_index[last] = index
        del self.owner[order_id]

    def passive(self) -> PlaceOrder:
        rng = self.rng
        bid = rng.random() < 0.5
        offset = rng.randint(1, 60)
        return PlaceOrder(
            id=self._id(),
            ts=self._tick(),
            account=rng.randint(1, ACCOUNTS),
            market=MARKET,
            side=Side.BID if bid else Side.ASK,
            order_type=OrderType.LIMIT,
            price=MID - offset if bid else MID + offset,
            quantity=rng.randint(1, 20) * 10,
        )

    def marketable(self) -> PlaceOrder:
        rng = self.rng
        bid = rng.random() < 0.5
        return PlaceOrder(
            id=self._id(),
            ts=self._tick(),
            account=rng.randint(1, ACCOUNTS),
            market=MARKET,
            side=Side.BID if bid else Side.ASK,
            order_type=OrderType.LIMIT,
            price=MID + 20 if bid else MID - 20,
            quantity=rng.randint(1, 30) * 10,
        )

    def market(self) -> PlaceOrder:
        rng = self.rng
        resting = len(self.live)
        # Feedback keeps the book between ~10k and ~20k resting orders.
        lots = 5 if resting < 10_000 else 15 if resting < 15_000 else 40
        return PlaceOrder(
            id=self._id(),
            ts=self._tick(),
            account=rng.randint(1, ACCOUNTS),
            market=MARKET,
            side=Side.BID if rng.random() < 0.5 else Side.ASK,
            order_type=OrderType.MARKET,
            quantity=rng.randint(1, 20) * lots,
        )

    def cancel(self) -> CancelOrder | PlaceOrder:
        if not self.live:
            return self.passive()
        order_id = self.live[self.rng.randrange(len(self.live))]
        return CancelOrder(
            id=self._id(),
            ts=self._tick(),
            account=self.owner[order_id],
            market=MARKET,
            order_id=order_id,
        )

    def next(self):  # type: ignore[no-untyped-def]
        roll = self.rng.random()
        if roll < 0.55:
            return self.passive()
        if roll < 0.60:
            return self.marketable()
        if roll < 0.85:
            return self.cancel()
        return self.market()

    def observe(self, command, result) -> None:  # type: ignore[no-untyped-def]
        if not result.ok:
            return
        for event in result.events:
            if type(event) is OrderClosed:
                self.drop_live(event.order_id)
        if type(command) is PlaceOrder:
            view = result.orders[0]
            if view.status.value in ("New", "PartiallyFilled"):
                self.add_live(view.order_id, command.account)


def setup(seed: int) -> tuple[Engine, Workload]:
    config = load_markets_config(ROOT / "config" / "markets.toml")
    # ~15 resting orders per account on average; the default cap (500) is for real traders.
    engine = Engine(EngineConfig(order_limit=10_000))
    workload = Workload(engine, seed)
    for command in market_seed_commands(config, workload.ts):
        engine.execute(command)
    for account in range(1, ACCOUNTS + 1):
        for asset, amount in (("USDC", FUNDS_USDC), ("SOL", FUNDS_SOL)):
            result = engine.execute(
                Deposit(
                    id=f"d{account}{asset}",
                    ts=workload.ts,
                    account=account,
                    asset=asset,
                    amount=amount,
                )
            )
            assert result.ok, result
    while len(workload.live) < 5_000:
        command = workload.passive()
        workload.observe(command, engine.execute(command))
    return engine, workload


def check_conservation(engine: Engine) -> None:
    totals: dict[str, int] = {}
    for account in [*engine.accounts()]:
        for asset, (available, locked) in engine.balances(account).items():
            assert available >= 0 and locked >= 0, (account, asset, available, locked)
            totals[asset] = totals.get(asset, 0) + available + locked
    assert totals["USDC"] == ACCOUNTS * FUNDS_USDC, totals
    assert totals["SOL"] == ACCOUNTS * FUNDS_SOL, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    engine, workload = setup(args.seed)
    # As the engine service does: everything built so far is permanent (freeze), and the engine
    # creates no reference cycles (tests/unit/test_engine_gc.py), so the cyclic collector, whose
    # pauses would be the latency tail, stays off.
    gc.collect()
    gc.freeze()
    gc.disable()

    latencies = array("q", bytes(8 * args.ops))
    execute = engine.execute
    clock = time.perf_counter_ns
    next_command = workload.next
    observe = workload.observe
    first_100k_ns = 0
    resting_samples = []
    for i in range(args.ops):
        command = next_command()
        start = clock()
        result = execute(command)
        latencies[i] = clock() - start
        observe(command, result)
        if i == 99_999:
            first_100k_ns = sum(latencies[:100_000])
        if i % 50_000 == 0:
            resting_samples.append(len(workload.live))
    total_ns = sum(latencies)
    check_conservation(engine)

    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 2)

    print(f"resting orders sampled every 50k ops: {resting_samples}", file=sys.stderr)
    print(f"events: last seq {engine.seq}; final resting {len(workload.live)}", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "engine",
                "ops": args.ops,
                "ops_per_s": round(args.ops / (total_ns / 1e9)),
                "ops_per_s_first_100k": round(
                    min(args.ops, 100_000) / ((first_100k_ns or total_ns) / 1e9)
                ),
                "p50_us": pct(0.50),
                "p99_us": pct(0.99),
                "p999_us": pct(0.999),
            }
        )
    )


if __name__ == "__main__":
    main()
