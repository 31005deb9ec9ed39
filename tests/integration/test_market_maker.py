"""The market maker (``mm``) against a real stack: engine process, REST gateway over HTTP,
persister. It must never self-trade, keep its inventory within bounds, recover from an engine
crash with its tracked orders matching the exchange's, and keep every book populated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mm.client import RestClient
from mm.config import MakerSettings, MmConfig, TakerSettings, load_config
from mm.maker import Maker, balance_total
from mm.taker import Taker
from tests.integration.api_support import ApiStack, Trader

ROOT = Path(__file__).resolve().parents[2]
MARKETS = ("SOL_USDC", "BTC_USDC", "ETH_USDC", "TATA_INR")
MAKER_FUNDS = {
    "USDC": "300000",
    "INR": "3000000",
    "SOL": "100",
    "BTC": "2",
    "ETH": "20",
    "TATA": "5000",
}
TAKER_FUNDS = {
    "USDC": "100000",
    "INR": "1000000",
    "SOL": "50",
    "BTC": "1",
    "ETH": "10",
    "TATA": "1000",
}
FAST = MakerSettings(
    interval_s=0.3,
    reconcile_interval_s=2.0,
    backoff_initial_s=0.1,
    backoff_max_s=1.0,
    shutdown_timeout_s=20.0,
)


def fast_config(**maker: Any) -> MmConfig:
    """config/mm.toml as shipped, quoting faster."""
    return replace(load_config(), maker=replace(FAST, **maker))


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(every_s)
    return time.monotonic() - started


def depth(stack: ApiStack, symbol: str) -> dict[str, Any]:
    response = stack.session.get(f"{stack.url}/api/v1/depth", params={"symbol": symbol}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def populated(stack: ApiStack, symbols: tuple[str, ...] = MARKETS, levels: int = 10) -> bool:
    for symbol in symbols:
        book = depth(stack, symbol)
        if len(book["bids"]) < levels or len(book["asks"]) < levels:
            return False
    return True


def open_orders(stack: ApiStack, trader: Trader) -> list[dict[str, Any]]:
    response = stack.signed(trader, "GET", "/api/v1/orders")
    assert response.status_code == 200, response.text
    orders: list[dict[str, Any]] = response.json()
    return orders


def capital(stack: ApiStack, trader: Trader) -> dict[str, dict[str, str]]:
    response = stack.signed(trader, "GET", "/api/v1/capital")
    assert response.status_code == 200, response.text
    balances: dict[str, dict[str, str]] = response.json()
    return balances


def fills(stack: ApiStack, trader: Trader) -> list[dict[str, Any]]:
    response = stack.signed(trader, "GET", "/wapi/v1/history/fills", {"limit": "1000"})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


@contextlib.contextmanager
def running(worker: Maker | Taker) -> Iterator[threading.Thread]:
    """``worker.run`` in a thread until the block ends (a maker then cancels its orders)."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name=type(worker).__name__)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(40)
        assert not thread.is_alive(), "the worker did not stop"


def client(stack: ApiStack, trader: Trader) -> RestClient:
    return RestClient(stack.url, trader.api_key, trader.secret)


@pytest.fixture(scope="module")
def stack(api_stack: ApiStack) -> ApiStack:
    return api_stack


# -- 1. NEVER A SELF-TRADE ----------------------------------------------------------------------


def test_never_self_trades(stack: ApiStack) -> None:
    maker_account = stack.new_trader(MAKER_FUNDS, label="mm maker")
    taker_account = stack.new_trader(TAKER_FUNDS, label="mm taker")
    config = replace(
        fast_config(),
        taker=TakerSettings(
            min_interval_s=0.05, max_interval_s=0.2, backoff_initial_s=0.1, backoff_max_s=1.0
        ),
    )
    maker = Maker(client(stack, maker_account), config, seed=11)
    taker = Taker(client(stack, taker_account), config, seed=12)
    with running(maker):
        wait_for("a populated book", lambda: populated(stack), 20)
        resting = open_orders(stack, maker_account)
        assert len(resting) >= 10 * 2 * len(MARKETS)
        # Every quote is post-only (it never takes, so never from itself) and carries RejectTaker.
        assert all(o["postOnly"] is True for o in resting), resting
        assert all(o["selfTradePrevention"] == "RejectTaker" for o in resting), resting
        assert all(isinstance(o["clientId"], int) for o in resting), resting
        with running(taker):
            # The maker's own account sends marketable orders into its own quotes: the exchange
            # stops them (RejectTaker, the default and what the maker sends), nothing trades.
            own: list[dict[str, Any]] = []
            for symbol, side, book_side in (
                ("SOL_USDC", "Bid", "asks"),
                ("ETH_USDC", "Ask", "bids"),
            ):
                levels = depth(stack, symbol)[book_side]
                best = (
                    min(levels, key=lambda lv: Decimal(lv[0]))
                    if side == "Bid"
                    else max(levels, key=lambda lv: Decimal(lv[0]))
                )
                body = {
                    "symbol": symbol,
                    "side": side,
                    "orderType": "Limit",
                    "price": best[0],
                    "quantity": best[1],
                    "timeInForce": "IOC",
                    "selfTradePrevention": "RejectTaker",
                }
                response = stack.signed(maker_account, "POST", "/api/v1/order", body)
                assert response.status_code == 200, response.text
                own.append(response.json())
            market = stack.signed(
                maker_account,
                "POST",
                "/api/v1/order",
                {"symbol": "SOL_USDC", "side": "Ask", "orderType": "Market", "quantity": "0.5"},
            )
            assert market.status_code == 200, market.text
            own.append(market.json())
            wait_for("the taker's trades", lambda: taker.filled >= 15, 30)
    for answer in own:
        # How the API answers a self-trade refusal: the order, expired at once, nothing done.
        assert answer["status"] == "Expired", answer
        assert answer["executedQuantity"] == "0" or Decimal(answer["executedQuantity"]) == 0
        assert answer["selfTradePrevention"] == "RejectTaker", answer
    assert maker.counts["errors"] == 0, maker.counts

    maker_fills = fills(stack, maker_account)
    taker_fills = fills(stack, taker_account)
    assert len(maker_fills) >= 15
    # The maker only ever makes: it never takes, from anyone, so it cannot take from itself.
    assert all(row["isMaker"] for row in maker_fills), maker_fills
    own_ids = {answer["id"] for answer in own}
    assert not own_ids & {row["orderId"] for row in maker_fills}
    # Each of the maker's trades has the taker on the other side.
    sides = {(row["symbol"], row["tradeId"]): row["side"] for row in taker_fills}
    for row in maker_fills:
        assert sides[(row["symbol"], row["tradeId"])] != row["side"], row

    # The exchange's own records, once the persister has projected them: no trade anywhere has
    # the same account on both sides, and the maker's trades are all with the taker.
    with psycopg.connect(stack.database_url, autocommit=True) as conn:

        def projected() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM fills WHERE account = %s", (maker_account.account,)
            ).fetchone()
            return row is not None and row[0] >= len(maker_fills)

        wait_for("the persister's fills", projected, 20, every_s=0.2)
        (self_trades,) = conn.execute("SELECT count(*) FROM trades WHERE buyer = seller").fetchone()  # type: ignore[misc]
        assert self_trades == 0
        rows = conn.execute(
            "SELECT buyer, seller FROM trades WHERE buyer = %s OR seller = %s",
            (maker_account.account, maker_account.account),
        ).fetchall()
        assert len(rows) >= len(maker_fills)
        assert {frozenset(row) for row in rows} == {
            frozenset((maker_account.account, taker_account.account))
        }
    assert not open_orders(stack, maker_account)  # stopped: everything cancelled


# -- 2. INVENTORY STAYS WITHIN ITS BOUNDS -------------------------------------------------------


def test_inventory_stays_within_bounds(stack: ApiStack) -> None:
    maker_account = stack.new_trader({"USDC": "100000", "SOL": "20"}, label="mm maker")
    seller = stack.new_trader({"SOL": "100"}, label="seller")
    base = load_config()
    market = replace(
        base.markets["SOL_USDC"],
        size=Decimal(1),
        size_increment=Decimal(0),
        max_inventory=Decimal(10),
        skew_ticks=50,
        walk_step_bps=Decimal(0),  # a still reference: only the skew moves the quotes
    )
    config = MmConfig(markets={"SOL_USDC": market}, maker=replace(FAST, interval_s=0.2))
    maker = Maker(client(stack, maker_account), config, seed=21)
    limit = Decimal(20) + market.max_inventory + market.size  # baseline + max + one level
    peak = Decimal(0)
    with running(maker):
        wait_for("a populated book", lambda: populated(stack, ("SOL_USDC",), 10), 20)
        first_ask = Decimal(depth(stack, "SOL_USDC")["asks"][0][0])
        deadline = time.monotonic() + 25
        while True:
            held = balance_total(capital(stack, maker_account), "SOL")
            peak = max(peak, held)
            assert held <= limit, f"inventory {held} above {limit}"
            bids = depth(stack, "SOL_USDC")["bids"]
            if held >= Decimal(29) and not bids:
                break
            assert time.monotonic() < deadline, f"inventory {held}, bids {bids}"
            if bids:
                best = max(Decimal(level[0]) for level in bids)
                stack.signed(
                    seller,
                    "POST",
                    "/api/v1/order",
                    {
                        "symbol": "SOL_USDC",
                        "side": "Ask",
                        "orderType": "Limit",
                        "price": str(best - Decimal("0.20")),  # sweeps up to 5 levels
                        "quantity": "3",
                        "timeInForce": "IOC",
                    },
                )
            time.sleep(0.1)
        # Long by its limit: it has stopped bidding, and its asks moved down (skew).
        time.sleep(1.0)
        book = depth(stack, "SOL_USDC")
        assert not book["bids"], book["bids"]
        assert len(book["asks"]) >= 10
        assert Decimal(book["asks"][0][0]) < first_ask
        held = balance_total(capital(stack, maker_account), "SOL")
        assert held <= limit
    assert peak >= Decimal(29)


# -- 3. RECOVERY FROM AN ENGINE CRASH -----------------------------------------------------------


def assert_tracking_matches(stack: ApiStack, maker: Maker, trader: Trader) -> bool:
    """Between two passes: the maker's tracked orders are exactly the exchange's open orders,
    all confirmed, with no two at one price."""
    with maker.lock:
        tracked = maker.tracked_orders()
        orders = open_orders(stack, trader)
    exchange = {(o["id"], o["clientId"]) for o in orders}
    mine = {(t.order_id, t.client_id) for t in tracked.values()}
    levels = [(o["symbol"], o["side"], o["price"]) for o in orders]
    return (
        exchange == mine
        and all(t.confirmed for t in tracked.values())
        and len(levels) == len(set(levels))
    )


def test_recovers_after_an_engine_crash(stack: ApiStack) -> None:
    maker_account = stack.new_trader(MAKER_FUNDS, label="mm maker")
    maker = Maker(client(stack, maker_account), fast_config(), seed=31)
    with running(maker) as thread:
        wait_for("a populated book", lambda: populated(stack), 20)
        wait_for("tracking", lambda: assert_tracking_matches(stack, maker, maker_account), 10)
        crashed = time.monotonic()
        stack.restart_engine(kill=True)
        restarted = time.monotonic() - crashed
        recovered = wait_for(
            "the books and the tracking after the restart",
            lambda: populated(stack) and assert_tracking_matches(stack, maker, maker_account),
            45,
            every_s=0.3,
        )
        print(f"engine back in {restarted:.1f} s, the maker {recovered:.1f} s later")
        assert thread.is_alive()
        # And it goes on quoting: a few more passes, still consistent.
        passes = maker.passes
        wait_for("more passes", lambda: maker.passes >= passes + 5, 15)
        wait_for("tracking", lambda: assert_tracking_matches(stack, maker, maker_account), 10)
    assert not open_orders(stack, maker_account)


# -- 4. EVERY BOOK STAYS POPULATED (the command line, as localgw/up.py runs it) ------------------


def test_the_command_line_keeps_every_book_populated(stack: ApiStack, tmp_path: Path) -> None:
    maker_account = stack.new_trader(MAKER_FUNDS, label="mm maker")
    credentials = tmp_path / "maker.json"
    credentials.write_text(
        json.dumps(
            {
                "account": maker_account.account,
                "apiKey": maker_account.api_key,
                "secret": maker_account.secret,
            }
        )
    )
    log = tmp_path / "mm.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mm", "--url", stack.url, "--credentials", str(credentials),
             "--seed", "41", "--interval", "0.3"],
            cwd=ROOT,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            wait_for("a populated book on every market", lambda: populated(stack), 25)
            for _ in range(5):
                time.sleep(0.4)
                for symbol in MARKETS:
                    book = depth(stack, symbol)
                    assert len(book["bids"]) >= 10 and len(book["asks"]) >= 10, (symbol, book)
                    assert Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])
            assert len(open_orders(stack, maker_account)) >= 10 * 2 * len(MARKETS)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert "quoting" in text and "stopped; cancelled" in text, text
    assert not open_orders(stack, maker_account), text
