"""Private endpoints (contract §5): a signed caller's balances, orders and fills, and its
commands to the engine.

Reads come from the Redis keys the engine writes after every batch (balances, open orders,
recently closed orders and fills), so a client reads its own just-filled order at once;
history pages further back come from the persister's read models, merged with the recent
records the persister may not have projected yet. Handlers are ``async`` and block, on
purpose (see :mod:`functions.api.public`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from cloudex import history, names
from cloudex.cache import (
    Markets,
    decode_balance,
    decode_closed_order,
    decode_open_order,
    decode_trade,
)
from cloudex.enums import ErrorCode
from cloudex.markets import OPEN_ORDER_LIMIT
from cloudex.messages import Command, CommandResult, OrderClosed, OrderView
from cloudex.views import Json, balances_json, fill_json, order_json
from functions.api import orders
from functions.api.auth import SignedRequest
from functions.api.commands import CommandGateway, raise_for_result
from functions.api.deps import Reader, RuntimeDep, Trader
from functions.api.encoding import json_response
from functions.api.errors import ApiError
from functions.api.models import CancelAllRequest, CancelOrderRequest, OrderRequest
from functions.api.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["private"])

OptionalSymbol = Annotated[str | None, Query(max_length=40)]
Limit = Annotated[int, Query(ge=1, le=history.MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=history.MAX_OFFSET)]
OrderIdQuery = Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")]
ClientIdQuery = Annotated[int | None, Query(ge=0, le=4_294_967_295)]

AnyOrder = OrderView | OrderClosed


def _order_json(markets: Markets, order: AnyOrder) -> Json:
    return order_json(markets.rules[order.market], order)


def _open_orders(runtime: Runtime, account: int) -> list[OrderView]:
    values = runtime.redis.hvals(names.open_orders_key(account))
    return sorted((decode_open_order(v) for v in values), key=lambda o: o.order_id)


def _closed_orders(runtime: Runtime, account: int) -> list[OrderClosed]:
    values = runtime.redis.zrange(names.closed_orders_key(account), 0, -1)
    return [decode_closed_order(value) for value in values]


def _check_symbol(markets: Markets, symbol: str | None) -> None:
    if symbol is not None:
        orders.market_rules(markets, symbol)


# -- ACCOUNT ----------------------------------------------------------------------------------


@router.get("/api/v1/account")
async def account(runtime: RuntimeDep, signed: Reader) -> Any:
    """Fee rates (basis points; the highest of any market, each market's under ``fees``) and
    limits. Cloudex is spot only: no borrowing, lending or leverage."""
    rules = runtime.markets().rules.values()
    maker = max((r.spec.maker_fee_bps for r in rules), default=0)
    taker = max((r.spec.taker_fee_bps for r in rules), default=0)
    return json_response(
        {
            "accountId": signed.account,
            "apiKeyScope": signed.key.scope,
            "autoBorrowSettlements": False,
            "autoLend": False,
            "autoRealizePnl": False,
            "autoRepayBorrows": False,
            "borrowLimit": "0",
            "futuresMakerFee": "0",
            "futuresTakerFee": "0",
            "leverageLimit": "1",
            "limitOrders": OPEN_ORDER_LIMIT,
            "liquidating": False,
            "positionLimit": "0",
            "spotMakerFee": str(maker),
            "spotTakerFee": str(taker),
            "triggerOrders": 0,
            "fees": {
                r.symbol: {"makerFeeBps": r.spec.maker_fee_bps, "takerFeeBps": r.spec.taker_fee_bps}
                for r in rules
            },
        }
    )


@router.get("/api/v1/capital")
async def capital(runtime: RuntimeDep, signed: Reader) -> Any:
    assets = runtime.markets().assets
    raw = runtime.redis.hgetall(names.balances_key(signed.account))
    balances = {
        asset.decode(): decode_balance(value)
        for asset, value in raw.items()
        if asset.decode() in assets
    }
    return json_response(balances_json(assets, dict(sorted(balances.items()))))


# -- ORDERS: READS ----------------------------------------------------------------------------


@router.get("/api/v1/orders")
async def open_orders(
    runtime: RuntimeDep,
    signed: Reader,
    symbol: OptionalSymbol = None,
    marketType: Annotated[str | None, Query(pattern="^SPOT$")] = None,
) -> Any:
    markets = runtime.markets()
    _check_symbol(markets, symbol)
    found = _open_orders(runtime, signed.account)
    return json_response(
        [_order_json(markets, o) for o in found if symbol is None or o.market == symbol]
    )


@router.get("/api/v1/order")
async def get_order(
    runtime: RuntimeDep,
    signed: Reader,
    symbol: Annotated[str, Query(max_length=40)],
    orderId: OrderIdQuery = None,
    clientId: ClientIdQuery = None,
) -> Any:
    """An order by id or client id: open, recently closed, or from history (by id)."""
    markets = runtime.markets()
    _check_symbol(markets, symbol)
    if orderId is None and clientId is None:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "orderId or clientId is required")
    order_id = None if orderId is None else int(orderId)

    def matches(order: AnyOrder) -> bool:
        return (
            order.market == symbol
            and (order_id is None or order.order_id == order_id)
            and (clientId is None or order.client_id == clientId)
        )

    for candidate in _open_orders(runtime, signed.account):
        if matches(candidate):
            return json_response(_order_json(markets, candidate))
    for closed in reversed(_closed_orders(runtime, signed.account)):
        if matches(closed):
            return json_response(_order_json(markets, closed))
    if order_id is not None:
        rows = history.order_history(
            runtime.db(), signed.account, markets.rules, market=symbol, order_id=order_id
        )
        if rows and (clientId is None or rows[0]["clientId"] == clientId):
            return json_response(rows[0])
    raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, "Order not found")


def _newest_first(rows: Iterable[Json], key: Any) -> list[Json]:
    return sorted(rows, key=key, reverse=True)


@router.get("/wapi/v1/history/orders")
async def order_history(
    runtime: RuntimeDep,
    signed: Reader,
    symbol: OptionalSymbol = None,
    orderId: OrderIdQuery = None,
    limit: Limit = history.DEFAULT_LIMIT,
    offset: Offset = 0,
    marketType: Annotated[str | None, Query(pattern="^SPOT$")] = None,
) -> Any:
    """Orders newest first. The first page also holds what the engine did in the last moments
    (its Redis records), which the read models may not show yet; later pages are history."""
    markets = runtime.markets()
    _check_symbol(markets, symbol)
    order_id = None if orderId is None else int(orderId)
    stored = history.order_history(
        runtime.db(),
        signed.account,
        markets.rules,
        market=symbol,
        order_id=order_id,
        limit=limit,
        offset=offset,
    )
    if offset:
        return json_response(stored)
    merged = {row["id"]: row for row in stored}
    recent: list[AnyOrder] = [*_open_orders(runtime, signed.account)]
    recent.extend(_closed_orders(runtime, signed.account))  # after: a closed order is final
    for order in recent:
        if (symbol is None or order.market == symbol) and (
            order_id is None or order.order_id == order_id
        ):
            merged[str(order.order_id)] = _order_json(markets, order)
    rows = _newest_first(merged.values(), key=lambda row: int(row["id"]))
    return json_response(rows[:limit])


@router.get("/wapi/v1/history/fills")
async def fill_history(
    runtime: RuntimeDep,
    signed: Reader,
    symbol: OptionalSymbol = None,
    from_ms: Annotated[int | None, Query(alias="from", ge=0)] = None,
    to_ms: Annotated[int | None, Query(alias="to", ge=0)] = None,
    limit: Limit = history.DEFAULT_LIMIT,
    offset: Offset = 0,
    fillType: Annotated[str | None, Query(max_length=40)] = None,
    marketType: Annotated[str | None, Query(pattern="^SPOT$")] = None,
) -> Any:
    """Fills newest first, the first page merged with the engine's recent records."""
    markets = runtime.markets()
    _check_symbol(markets, symbol)
    account = signed.account
    stored = history.fill_history(
        runtime.db(),
        account,
        markets.rules,
        market=symbol,
        from_ms=from_ms,
        to_ms=to_ms,
        limit=limit,
        offset=offset,
    )
    if offset:
        return json_response(stored)
    merged = {(row["tradeId"], row["side"]): row for row in stored}
    client_ids: dict[int, int | None] | None = None
    for value in runtime.redis.zrange(names.fills_key(account), 0, -1):
        trade = decode_trade(value)
        ts_ms = trade.ts // 1_000
        if (
            (symbol is not None and trade.market != symbol)
            or (from_ms is not None and ts_ms < from_ms)
            or (to_ms is not None and ts_ms > to_ms)
            or trade.market not in markets.rules
        ):
            continue
        if client_ids is None:
            known: list[AnyOrder] = [
                *_open_orders(runtime, account),
                *_closed_orders(runtime, account),
            ]
            client_ids = {o.order_id: o.client_id for o in known}
        # The engine prevents self-trades, so the account is exactly one side of the trade.
        row = fill_json(
            markets.rules[trade.market],
            trade,
            account,
            client_ids.get(trade.buy_order_id if trade.buyer == account else trade.sell_order_id),
        )
        merged.setdefault((row["tradeId"], row["side"]), row)
    rows = _newest_first(merged.values(), key=lambda row: (row["timestamp"], row["tradeId"]))
    return json_response(rows[:limit])


# -- ORDERS: COMMANDS -------------------------------------------------------------------------


def _answer(markets: Markets, result: CommandResult) -> Json:
    raise_for_result(result)
    if not result.orders:
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, "Order not found")
    return _order_json(markets, result.orders[0])


def _execute(
    runtime: Runtime, signed: SignedRequest, build: Callable[..., Command], request: Any
) -> tuple[Markets, CommandResult]:
    """Build the signed request's one command against the current markets, and run it."""
    markets = runtime.markets()
    command = build(
        request,
        markets,
        command_id=signed.command_id(),
        account=signed.account,
        deadline_us=signed.deadline_us,
    )
    (result,) = CommandGateway(runtime).execute([command], str(signed.account))
    return markets, result


@router.post("/api/v1/order")
async def create_order(runtime: RuntimeDep, signed: Trader, request: OrderRequest) -> Any:
    markets, result = _execute(runtime, signed, orders.place_order, request)
    return json_response(_answer(markets, result))


@router.post("/api/v1/orders")
async def create_orders(
    runtime: RuntimeDep, signed: Trader, request: Annotated[list[OrderRequest], Body()]
) -> Any:
    """A batch, executed in order; each element is the order or its own ``{code, message}``.
    A batch with any malformed order (unknown market, off-tick price) is refused whole."""
    if not 1 <= len(request) <= runtime.settings.max_batch_orders:
        raise ApiError(
            ErrorCode.INVALID_CLIENT_REQUEST,
            f"A batch holds 1 to {runtime.settings.max_batch_orders} orders",
        )
    markets = runtime.markets()
    commands = []
    for index, order in enumerate(request):
        try:
            commands.append(
                orders.place_order(
                    order,
                    markets,
                    command_id=signed.command_id(index),
                    account=signed.account,
                    deadline_us=signed.deadline_us,
                )
            )
        except ApiError as error:
            error.message = f"order {index}: {error.message}"
            raise
    results = CommandGateway(runtime).execute(commands, str(signed.account))
    answers: list[Json] = []
    for result in results:
        try:
            answers.append(_answer(markets, result))
        except ApiError as error:
            answers.append({"code": error.code.value, "message": error.message})
    return json_response(answers)


@router.delete("/api/v1/order")
async def cancel_order(runtime: RuntimeDep, signed: Trader, request: CancelOrderRequest) -> Any:
    markets, result = _execute(runtime, signed, orders.cancel_order, request)
    return json_response(_answer(markets, result))


@router.delete("/api/v1/orders")
async def cancel_orders(runtime: RuntimeDep, signed: Trader, request: CancelAllRequest) -> Any:
    markets, result = _execute(runtime, signed, orders.cancel_all, request)
    raise_for_result(result)
    return json_response([_order_json(markets, order) for order in result.orders])
