"""Public market data (contract §4): live state from the Redis keys the engine writes, history
and klines from the persister's read models in PostgreSQL.

Handlers are ``async`` yet call Redis and PostgreSQL synchronously, on purpose: a Lambda
container serves one request at a time, so there is nothing to overlap, and running them on
the event loop's own thread keeps the per-thread connections of :mod:`functions.api.runtime`
(FastAPI would run a plain ``def`` on a thread pool).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from cloudex import history, names
from cloudex.cache import decode_depth, decode_ticker, decode_trade
from cloudex.messages import Ticker
from cloudex.views import asset_json, depth_json, market_json, public_trade_json, ticker_json
from functions.api.commands import heartbeat_age_ms
from functions.api.deps import RuntimeDep, public
from functions.api.encoding import json_response
from functions.api.orders import market_rules
from functions.api.runtime import Runtime

__all__ = ["router"]

router = APIRouter(tags=["public"], dependencies=[Depends(public)])

Symbol = Annotated[str, Query(max_length=40, description="market symbol, e.g. SOL_USDC")]
Limit = Annotated[int, Query(ge=1, le=history.MAX_LIMIT)]
_NO_TRADES = Ticker(None, None, None, None, 0, 0, 0)
_DEPTH_LIMIT = 1_000  # the engine keeps 1,000 levels a side in Redis


@router.get("/api/v1/assets")
async def assets(runtime: RuntimeDep) -> Any:
    return json_response([asset_json(asset) for asset in runtime.markets().assets.values()])


@router.get("/api/v1/markets")
async def markets(runtime: RuntimeDep) -> Any:
    return json_response([market_json(rules) for rules in runtime.markets().rules.values()])


@router.get("/api/v1/market")
async def market(runtime: RuntimeDep, symbol: Symbol) -> Any:
    return json_response(market_json(market_rules(runtime.markets(), symbol)))


@router.get("/api/v1/securities")
async def securities() -> Any:
    return json_response([])


def _ticker(runtime: Runtime, symbols: list[str]) -> list[Any]:
    markets = runtime.markets()
    values = runtime.redis.mget([names.ticker_key(symbol) for symbol in symbols]) if symbols else []
    return [
        ticker_json(markets.rules[symbol], decode_ticker(value) if value else _NO_TRADES)
        for symbol, value in zip(symbols, values, strict=True)
    ]


@router.get("/api/v1/ticker")
async def ticker(
    runtime: RuntimeDep,
    symbol: Symbol,
    interval: Annotated[str | None, Query(pattern="^1d$")] = None,
) -> Any:
    market_rules(runtime.markets(), symbol)
    return json_response(_ticker(runtime, [symbol])[0])


@router.get("/api/v1/tickers")
async def tickers(
    runtime: RuntimeDep, interval: Annotated[str | None, Query(pattern="^1d$")] = None
) -> Any:
    return json_response(_ticker(runtime, list(runtime.markets().rules)))


@router.get("/api/v1/depth")
async def depth(
    runtime: RuntimeDep,
    symbol: Symbol,
    limit: Annotated[int, Query(ge=1, le=_DEPTH_LIMIT)] = _DEPTH_LIMIT,
) -> Any:
    rules = market_rules(runtime.markets(), symbol)
    data = runtime.redis.get(names.depth_key(symbol))
    if data is None:  # a market the engine has not written yet: an empty book at id 0
        return json_response(depth_json(rules, 0, [], [], runtime.now_ms() * 1_000))
    book = decode_depth(data)
    return json_response(
        depth_json(rules, book.update_id, book.bids[:limit], book.asks[:limit], book.ts)
    )


@router.get("/api/v1/trades")
async def trades(runtime: RuntimeDep, symbol: Symbol, limit: Limit = history.DEFAULT_LIMIT) -> Any:
    rules = market_rules(runtime.markets(), symbol)
    recent = runtime.redis.lrange(names.trades_key(symbol), 0, limit - 1)
    return json_response([public_trade_json(rules, decode_trade(item)) for item in recent])


@router.get("/api/v1/trades/history")
async def trades_history(
    runtime: RuntimeDep,
    symbol: Symbol,
    limit: Limit = history.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=history.MAX_OFFSET)] = 0,
) -> Any:
    rules = market_rules(runtime.markets(), symbol)
    return json_response(history.recent_trades(runtime.db(), rules, limit=limit, offset=offset))


@router.get("/api/v1/klines")
async def klines(
    runtime: RuntimeDep,
    symbol: Symbol,
    interval: Annotated[str, Query(max_length=10)],
    startTime: Annotated[int, Query(ge=0, le=history.MAX_TIME_S)],
    endTime: Annotated[int | None, Query(ge=0, le=history.MAX_TIME_S)] = None,
) -> Any:
    rules = market_rules(runtime.markets(), symbol)
    end = runtime.now_ms() // 1_000 if endTime is None else endTime
    return json_response(
        history.klines(runtime.db(), rules, interval, startTime, max(end, startTime))
    )


@router.get("/api/v1/time")
async def server_time(runtime: RuntimeDep) -> Any:
    # A bare number, as Backpack answers (contract §4.5).
    return json_response(runtime.now_ms())


@router.get("/api/v1/status")
async def status(runtime: RuntimeDep) -> Any:
    age = heartbeat_age_ms(runtime, runtime.redis.get(names.heartbeat_key()))
    if age is None or age > runtime.settings.heartbeat_max_age_ms:
        return json_response(
            {"status": "Maintenance", "message": "The matching engine is not running"}
        )
    return json_response({"status": "Ok", "message": None})


@router.get("/api/v1/ping", response_class=PlainTextResponse)
async def ping() -> Any:
    return PlainTextResponse("pong")
