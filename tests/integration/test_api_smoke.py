"""The API end to end in one pass: admin-funded account, signed order, ccxt reads it."""

from __future__ import annotations

from typing import Any


def test_signed_order_round_trip(api_stack: Any) -> None:
    trader = api_stack.new_trader({"USDC": "1000"})
    placed = api_stack.signed(
        trader,
        "POST",
        "/api/v1/order",
        {
            "symbol": "SOL_USDC",
            "side": "Bid",
            "orderType": "Limit",
            "price": "99.5",
            "quantity": "2",
        },
    )
    assert placed.status_code == 200, placed.text
    order = placed.json()
    assert order["status"] == "New" and order["price"] == "99.50"
    assert "engine;dur=" in placed.headers["Server-Timing"]
    exchange = api_stack.ccxt(trader)
    exchange.load_markets()
    assert exchange.fetch_balance()["USDC"] == {"free": 801.0, "used": 199.0, "total": 1000.0}
    assert [o["id"] for o in exchange.fetch_open_orders("SOL/USDC")] == [order["id"]]
