"""The depth stream's update-id sequence: no gap across 10,000 orders and two engine crashes,
and the book a subscriber builds from it equals the REST depth."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import requests

from cloudex import signing
from tests.integration.api_support import ApiStack
from tests.integration.engine_support import trading_workload
from tests.integration.ws_support import BackgroundListener, Frame

ORDERS = 10_000


def rest_depth(stack: ApiStack) -> dict[str, Any]:
    response = requests.get(stack.url + "/api/v1/depth", params={"symbol": "SOL_USDC"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def book_of(levels: list[list[str]]) -> dict[Decimal, Decimal]:
    return {Decimal(price): Decimal(quantity) for price, quantity in levels}


def test_no_gap_in_depth_ids_across_10000_orders_and_engine_crashes(ws_stack: ApiStack) -> None:
    assert ws_stack.engines is not None
    engines = ws_stack.engines
    # Accounts far above the ones the admin API hands out to the module's other tests.
    commands = trading_workload(
        random.Random(6), accounts=20, orders=ORDERS, prefix="seq", first_account=100_000
    )
    with BackgroundListener(ws_stack.ws_url, "depth.SOL_USDC") as listener:
        # Depth before the first order a subscriber could have missed: the REST snapshot, taken
        # after subscribing, is the sync point (contract §7.5).
        time.sleep(0.5)
        snapshot = rest_depth(ws_stack)
        crash_points = {len(commands) // 3, 2 * len(commands) // 3}
        outage_point = len(commands) // 2  # the fan-out down a while, the engine carrying on
        with ThreadPoolExecutor(8) as pool:
            for start in range(0, len(commands), 500):
                chunk = commands[start : start + 500]
                crash = any(start <= point < start + 500 for point in crash_points)
                if crash:
                    # The worst moment to die: the fan-out is unreachable, so the engine has
                    # matched and journaled this chunk but delivered none of its market data.
                    ws_stack.stop_fanout()
                outage = start <= outage_point < start + 500
                if outage:
                    ws_stack.stop_fanout()
                list(pool.map(engines.send, chunk))
                if outage:
                    # Every delivery meanwhile failed and is retried with the very same update.
                    engines.wait_results([c.id for c in chunk], timeout_s=120)
                    ws_stack.start_fanout()
                if crash:
                    engines.wait_results([c.id for c in chunk], timeout_s=120)
                    ws_stack.restart_engine(kill=True)
                    ws_stack.start_fanout()
        engines.wait_results([c.id for c in commands], timeout_s=240)
        time.sleep(1.5)  # the last conflated delivery, and a heartbeat after it
        final = rest_depth(ws_stack)
        time.sleep(1.0)
    frames = listener.frames

    ranges = [
        (f["data"]["U"], f["data"]["u"]) for f in frames if f.get("stream") == "depth.SOL_USDC"
    ]
    assert len(ranges) > 100
    covered = int(snapshot["lastUpdateId"])
    book_bids, book_asks = book_of(snapshot["bids"]), book_of(snapshot["asks"])
    repeats = 0
    for (first, last), frame in zip(ranges, [f for f in frames if f.get("stream")], strict=True):
        assert first <= last
        if last <= covered:
            repeats += 1  # re-published after a crash: already applied
            continue
        # No gap: each update starts at most one past what is covered.
        assert first <= covered + 1, (covered, first, last)
        covered = last
        for side, book in (("b", book_bids), ("a", book_asks)):
            for price, quantity in frame["data"][side]:
                if Decimal(quantity) == 0:
                    book.pop(Decimal(price), None)
                else:
                    book[Decimal(price)] = Decimal(quantity)
    assert covered >= int(final["lastUpdateId"])
    assert book_bids == book_of(final["bids"]) and book_asks == book_of(final["asks"])
    print(f"{len(ranges)} depth updates, {repeats} repeated after crashes, last id {covered}")


def test_private_updates_journaled_but_never_delivered_arrive_after_a_crash(
    ws_stack: ApiStack,
) -> None:
    """Orders placed while the fan-out is unreachable, then the engine dies: the next engine
    replays them and their orderAccepted and balance updates still reach their owner."""
    trader = ws_stack.new_trader({"USDC": "1000"})
    signature = signing.ws_subscribe_signature(trader.api_key, trader.secret)
    private = ("account.orderUpdate", "account.balanceUpdate")
    with BackgroundListener(ws_stack.ws_url, *private, signature=signature) as listener:
        time.sleep(0.5)  # the deposit's balance update, delivered before the outage
        listener.frames.clear()
        ws_stack.stop_fanout()
        placed = []
        for price in ("90.00", "90.10", "90.20"):
            response = ws_stack.signed(
                trader,
                "POST",
                "/api/v1/order",
                {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": price,
                 "quantity": "1"},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            placed.append(response.json()["id"])
        time.sleep(0.5)
        assert not [f for f in listener.frames if f.get("stream")]  # nothing delivered
        ws_stack.restart_engine(kill=True)
        ws_stack.start_fanout()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and accepted(listener.frames) != set(placed):
            time.sleep(0.1)
    assert accepted(listener.frames) == set(placed)
    locked = [
        f["data"]["L"]
        for f in listener.frames
        if f.get("stream") == "account.balanceUpdate" and f["data"]["a"] == "USDC"
    ]
    assert locked[-1] == "270.300000"  # 90.00 + 90.10 + 90.20, in order


def accepted(frames: list[Frame]) -> set[str]:
    return {
        f["data"]["i"]
        for f in frames
        if f.get("stream") == "account.orderUpdate" and f["data"]["e"] == "orderAccepted"
    }
