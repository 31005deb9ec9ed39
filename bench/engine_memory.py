"""Engine memory and snapshot cost with 1,000,000 resting orders across markets.

Rests 1,000,000 non-crossing limit orders over the configured markets and 2,500 funded accounts
(through ``Engine.execute``, so the result cache and every structure is as in production), then
measures the process RSS, one full snapshot and one restore (checking the restored state hash).

Prints, as its last line:
{"bench":"engine_memory","resting_orders":N,"rss_mb":X,"snapshot_s":X,"restore_s":X}
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudex.enums import OrderType, Side
from cloudex.markets import load_markets_config
from cloudex.messages import Deposit, PlaceOrder
from cloudex.seed import market_seed_commands
from engine_service.core import Engine

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = 2_500


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    config = load_markets_config(ROOT / "config" / "markets.toml")
    engine = Engine()
    ts = 1_700_000_000_000_000
    for command in market_seed_commands(config, ts):
        engine.execute(command)
    for account in range(1, ACCOUNTS + 1):
        for asset in config.assets:
            engine.execute(
                Deposit(
                    id=f"d-{account}-{asset}", ts=ts, account=account, asset=asset, amount=10**17
                )
            )
    markets = []
    for market in config.markets:
        rules = engine.market_rules(market.symbol)
        assert rules is not None
        # A mid well inside the price range, and a minimum size that meets the minimum notional.
        mid = rules.max_ticks // 1000
        lots = max(
            rules.min_lots,
            -(-rules.min_notional_atoms // (mid // 2 * rules.quote_atoms_per_tick_lot)),
        )
        markets.append((market.symbol, mid, lots))
    per_account = -(-args.orders // ACCOUNTS)
    placed = 0
    for n in range(args.orders):
        symbol, mid, lots = markets[n % len(markets)]
        bid = rng.random() < 0.5
        offset = rng.randint(1, mid // 2 - 1)
        result = engine.execute(
            PlaceOrder(
                id=f"o{n}",
                ts=ts + n,
                account=1 + n // per_account,
                market=symbol,
                side=Side.BID if bid else Side.ASK,
                order_type=OrderType.LIMIT,
                price=mid - offset if bid else mid + offset,
                quantity=lots * rng.randint(1, 5),
            )
        )
        assert result.ok, result
        placed += 1
    del result
    gc.collect()
    rss = rss_mb()
    resting = sum(len(list(engine.resting_orders(symbol))) for symbol, _, _ in markets)
    assert resting == placed, (resting, placed)

    start = time.perf_counter()
    snapshot = engine.snapshot()
    snapshot_s = time.perf_counter() - start
    start = time.perf_counter()
    restored = Engine.restore(snapshot)
    restore_s = time.perf_counter() - start
    assert restored.state_hash() == engine.state_hash()
    print(f"snapshot size: {len(snapshot) / 1e6:.1f} MB", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "engine_memory",
                "resting_orders": resting,
                "rss_mb": round(rss, 1),
                "snapshot_s": round(snapshot_s, 2),
                "restore_s": round(restore_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
