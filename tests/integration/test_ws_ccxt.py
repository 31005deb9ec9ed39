"""ccxt.pro's own ``backpack`` class against the local WebSocket gateway, with only the URLs
changed (contract §0, §7): every watch method a Backpack trader's bot uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tests.integration.api_support import ApiStack, Trader


def funded(stack: ApiStack) -> Trader:
    return stack.new_trader({"SOL": "100", "BTC": "1", "ETH": "10", "USDC": "100000"})


@contextlib.asynccontextmanager
async def pro_exchanges(stack: ApiStack, *traders: Trader | None) -> AsyncIterator[list[Any]]:
    """ccxt.pro clients (``None``: unsigned) with their markets loaded; closed after."""
    exchanges = [stack.ccxt_pro(trader) for trader in traders]
    try:
        await asyncio.gather(*(exchange.load_markets() for exchange in exchanges))
        yield exchanges
    finally:
        await asyncio.gather(*(exchange.close() for exchange in exchanges))


async def watch_while(
    watch: Awaitable[Any], action: Callable[[], Any], timeout_s: float = 20.0
) -> Any:
    """Start ``watch`` (subscribing), give it a moment, do ``action``, await the result."""
    task = asyncio.ensure_future(watch)
    await asyncio.sleep(0.5)
    await action()
    return await asyncio.wait_for(task, timeout_s)


async def watch_until(
    watch: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    action: Callable[[], Any],
    timeout_s: float = 20.0,
) -> Any:
    """Like :func:`watch_while`, then watch again until ``done(result)``: a stream may first
    deliver what happened before ``action`` (a ticker sent on the next engine tick)."""
    result = await watch_while(watch(), action, timeout_s)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done(result):
        result = await asyncio.wait_for(watch(), deadline - asyncio.get_running_loop().time())
    return result


async def cross(exchange: Any, maker: Any, price: float, amount: float = 1.0) -> None:
    """A trade of ``amount`` ETH at ``price`` (ETH/USDC: the other tests leave it alone)."""
    await maker.create_order("ETH/USDC", "limit", "sell", amount, price)
    await exchange.create_order("ETH/USDC", "limit", "buy", amount, price)


def test_watch_order_book_syncs_to_the_rest_depth_after_a_burst(ws_stack: ApiStack) -> None:
    maker, taker = funded(ws_stack), funded(ws_stack)

    async def run() -> None:
        async with pro_exchanges(ws_stack, None, maker, taker) as (watcher, maker_ex, taker_ex):
            first = asyncio.ensure_future(watcher.watch_order_book("SOL/USDC"))
            await asyncio.sleep(0.5)
            # A burst: resting orders on both sides, some crossing (default snapshotDelay 10:
            # the book syncs on the 11th delta).
            for n in range(30):
                price = 99.0 + (n % 10) / 10
                await maker_ex.create_order("SOL/USDC", "limit", "sell", 1, price + 1.5)
                await taker_ex.create_order("SOL/USDC", "limit", "buy", 0.5, price)
            await asyncio.wait_for(first, 30)
            # The burst is over (every order answered): only heartbeat deltas follow, which
            # take ids but change no level, so the synced book must equal the REST depth.
            rest = await taker_ex.fetch_order_book("SOL/USDC")
            book = await asyncio.wait_for(watcher.watch_order_book("SOL/USDC"), 10)
            while book["nonce"] < rest["nonce"]:
                book = await asyncio.wait_for(watcher.watch_order_book("SOL/USDC"), 10)
            assert book["bids"] == rest["bids"] and book["asks"] == rest["asks"]
            assert len(book["bids"]) >= 10 and len(book["asks"]) >= 10

    asyncio.run(run())


def test_watch_trades_ticker_and_ohlcv(ws_stack: ApiStack) -> None:
    maker, taker = funded(ws_stack), funded(ws_stack)

    async def run() -> None:
        async with pro_exchanges(ws_stack, None, maker, taker) as (watcher, maker_ex, taker_ex):
            trades = await watch_while(
                watcher.watch_trades("ETH/USDC"), lambda: cross(taker_ex, maker_ex, 3001.5)
            )
            assert trades[-1]["price"] == 3001.5 and trades[-1]["amount"] == 1.0
            assert trades[-1]["symbol"] == "ETH/USDC" and trades[-1]["side"] == "buy"
            ticker = await watch_until(
                lambda: watcher.watch_ticker("ETH/USDC"),
                lambda t: t["last"] == 3001.6,
                lambda: cross(taker_ex, maker_ex, 3001.6),
            )
            assert ticker["symbol"] == "ETH/USDC" and ticker["last"] == 3001.6
            candles = await watch_until(
                lambda: watcher.watch_ohlcv("ETH/USDC", "1m"),
                lambda c: c[-1][4] == 3001.7,
                lambda: cross(taker_ex, maker_ex, 3001.7),
            )
            timestamp, _open, high, low, close, volume = candles[-1]
            assert close == 3001.7 and high >= 3001.7 and low <= 3001.7 and volume >= 1
            assert timestamp % 60_000 == 0

    asyncio.run(run())


def test_watch_orders_and_balance_for_a_signed_account(ws_stack: ApiStack) -> None:
    trader, other = funded(ws_stack), funded(ws_stack)

    async def run() -> None:
        async with pro_exchanges(ws_stack, trader, other) as (exchange, other_ex):
            placed: dict[str, Any] = {}

            async def place() -> None:
                placed.update(
                    await exchange.create_order("BTC/USDC", "limit", "buy", 0.01, 60_000.0)
                )

            orders = await watch_while(exchange.watch_orders("BTC/USDC"), place)
            assert [o["id"] for o in orders] == [placed["id"]]
            assert orders[0]["status"] == "open" and orders[0]["price"] == 60_000.0
            second: dict[str, Any] = {}

            async def place_second() -> None:
                second.update(
                    await exchange.create_order("BTC/USDC", "limit", "buy", 0.01, 59_000.0)
                )

            balance = await watch_while(exchange.watch_balance(), place_second)
            # 100000 USDC, 600 + 590 locked by the two bids.
            assert balance["USDC"]["used"] == 1_190.0 and balance["USDC"]["free"] == 98_810.0

            async def fill() -> None:
                await other_ex.create_order("BTC/USDC", "limit", "sell", 0.01, 60_000.0)

            orders = await watch_while(exchange.watch_orders("BTC/USDC"), fill)
            mine = [o for o in orders if o["id"] == placed["id"]][-1]
            assert mine["status"] == "closed" and mine["filled"] == 0.01
            # Only this account's own two orders ever reached it.
            assert {o["id"] for o in orders} <= {placed["id"], second["id"]}

    asyncio.run(run())
