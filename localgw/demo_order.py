"""Try the local exchange with the demo account ``./dev up`` made: a signed order, or a stream.

::

    .venv/bin/python -m localgw.demo_order --symbol SOL_USDC --side Bid --price 120 --quantity 0.5
    .venv/bin/python -m localgw.demo_order --watch depth.SOL_USDC [--watch account.orderUpdate]

The order is signed exactly as any Backpack client signs it (``cloudex/signing.py``; docs/api.md
works through one by hand); the answer is printed as the API gave it. ``--watch`` subscribes
over the WebSocket API (private streams signed with the same key) and prints each frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import requests

from cloudex import signing
from localgw.up import Config

__all__ = ["main"]


def _session() -> tuple[dict[str, Any], dict[str, Any]]:
    config = Config.from_env()
    if not config.state_file.exists():
        raise SystemExit("Cloudex is not running here: start it with ./dev up")
    state = json.loads(config.state_file.read_text())
    demo = json.loads(config.accounts_file.read_text())["demo"]
    return state, demo


def place_order(args: argparse.Namespace) -> int:
    state, demo = _session()
    order = {
        "symbol": args.symbol,
        "side": args.side,
        "orderType": "Limit",
        "price": args.price,
        "quantity": args.quantity,
        "timeInForce": "GTC",
    }
    headers = signing.signed_headers(demo["apiKey"], demo["secret"], "POST", "/api/v1/order", order)
    response = requests.post(
        state["restUrl"] + "/api/v1/order", json=order, headers=headers, timeout=15
    )
    print(f"HTTP {response.status_code}")
    print(json.dumps(response.json(), indent=2))
    return 0 if response.ok else 1


async def _watch(streams: list[str], seconds: float) -> None:
    import aiohttp

    state, demo = _session()
    public = [s for s in streams if not s.startswith("account.")]
    private = [s for s in streams if s.startswith("account.")]
    async with aiohttp.ClientSession() as session, session.ws_connect(state["wsUrl"]) as ws:
        if public:
            await ws.send_json({"method": "SUBSCRIBE", "params": public, "id": 1})
        if private:
            signature = signing.ws_subscribe_signature(demo["apiKey"], demo["secret"])
            await ws.send_json(
                {"method": "SUBSCRIBE", "params": private, "signature": signature, "id": 2}
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            print(message.data, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localgw.demo_order", description=__doc__)
    parser.add_argument("--symbol", default="SOL_USDC")
    parser.add_argument("--side", choices=["Bid", "Ask"], default="Bid")
    parser.add_argument("--price", default="120")
    parser.add_argument("--quantity", default="0.5")
    parser.add_argument("--watch", action="append", metavar="STREAM", help="subscribe instead")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long --watch prints")
    args = parser.parse_args(argv)
    if args.watch:
        asyncio.run(_watch(args.watch, args.seconds))
        return 0
    return place_order(args)


if __name__ == "__main__":
    sys.exit(main())
