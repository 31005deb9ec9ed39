"""The engine service runs with the cyclic garbage collector off (its pauses are the latency tail),
which is only safe while the engine creates no reference cycles. This test keeps it so."""

from __future__ import annotations

import gc
import random

from cloudex.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from cloudex.messages import CancelOrder, PlaceOrder
from tests.stubs import Exchange


def test_engine_session_creates_no_cyclic_garbage() -> None:
    # Given a funded exchange and everything collected so far
    ex = Exchange()
    rng = random.Random(5)
    for account in range(1, 6):
        ex.deposit(account, "USDC", 10**13)
        ex.deposit(account, "SOL", 10**14)
    gc.collect()
    gc.disable()
    try:
        # When a varied session runs: rests, crosses, STP, cancels, market orders, ticks
        live: list[tuple[int, int]] = []
        for _ in range(2_000):
            roll = rng.random()
            account = rng.randint(1, 5)
            if roll < 0.5:
                result = ex.run(
                    PlaceOrder,
                    account=account,
                    market="SOL_USDC",
                    side=rng.choice([Side.BID, Side.ASK]),
                    order_type=OrderType.LIMIT,
                    price=10_000 + rng.randint(-5, 5),
                    quantity=rng.randint(1, 50),
                    time_in_force=rng.choice(list(TimeInForce)),
                    self_trade_prevention=rng.choice(list(SelfTradePrevention)),
                )
                if result.ok and result.orders[0].status.value in ("New", "PartiallyFilled"):
                    live.append((account, result.orders[0].order_id))
            elif roll < 0.8 and live:
                owner, order_id = live.pop(rng.randrange(len(live)))
                ex.run(CancelOrder, account=owner, market="SOL_USDC", order_id=order_id)
            elif roll < 0.95:
                ex.market(account, "SOL_USDC", rng.choice([Side.BID, Side.ASK]), quantity=20)
            else:
                ex.tick()
        restored = type(ex.engine).restore(ex.engine.snapshot())
        # Then nothing it dropped is held up by a cycle
        assert gc.collect() == 0
        assert restored.state_hash() == ex.engine.state_hash()
    finally:
        gc.enable()
