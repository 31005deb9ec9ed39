"""Backpack JSON shapes: the one place the engine's integers become wire values.

The engine counts prices in ticks, quantities in lots, balances, notionals and fees in asset
atoms, and times in µs (see :mod:`cloudex.markets`, :mod:`cloudex.messages`). Every function
here turns such data into the JSON a Backpack client expects (the wire contract,
``backpack-wire.md``): plain dicts and lists of ``str``, ``int``, ``bool`` and ``None``, ready for
``msgspec.json.encode``. Used by the engine service (which stores these shapes in Redis), the REST
API and the WebSocket fan-out.

Conventions (one rule for every function):

* Amounts are decimal strings at the precision of their unit, trailing zeros kept (Backpack
  does the same): prices at the tick's decimals (tick 0.01: ``10050`` -> ``"100.50"``),
  quantities at the step's decimals, notionals, balances and fees at the asset's decimals.
  Never a float. Two constants are written ``"0"``: a removed level in a WebSocket depth update
  and the ``staked`` balance (Cloudex has no staking).
* Times follow the contract's §1: REST depth ``timestamp`` µs, REST trades ``timestamp`` ms,
  REST order ``createdAt`` ms, REST fills ``timestamp`` ISO (UTC, ms, no zone), REST klines
  ``start``/``end`` ``"YYYY-MM-DD HH:MM:SS"`` (UTC), WebSocket ``E``/``T`` µs, WebSocket kline
  ``t``/``T`` ISO.
* Enum values are the enum members, which are ``str`` (``StrEnum``) with the Backpack spelling.
* Functions are pure (no I/O, no clock) and avoid ``Decimal``: they run per event in the engine
  service's hot loop.

WebSocket functions return the ``data`` object of a frame; :func:`ws_frame` wraps it with its
``stream`` (the fan-out knows which topic string each subscriber used).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import msgspec

from cloudex.enums import MarketState, OrderStatus, OrderType
from cloudex.klines import bucket_end
from cloudex.markets import AssetSpec, MarketRules
from cloudex.messages import (
    BalanceChanged,
    Candle,
    DepthChanged,
    OrderAccepted,
    OrderClosed,
    OrderView,
    Ticker,
    TradeExecuted,
)

__all__ = [
    "Json",
    "Level",
    # public REST
    "asset_json",
    "market_json",
    "depth_json",
    "ticker_json",
    "public_trade_json",
    "kline_json",
    # private REST
    "balance_json",
    "balances_json",
    "order_json",
    "fill_json",
    # order state from events
    "order_view_from_accepted",
    "order_view_after_fill",
    # WebSocket
    "ws_frame",
    "ws_depth_json",
    "ws_depth_event_json",
    "ws_trade_json",
    "ws_ticker_json",
    "ws_book_ticker_json",
    "ws_kline_json",
    "ws_order_accepted_json",
    "ws_order_fill_json",
    "ws_order_closed_json",
    "ws_order_update_json",
    "ws_balance_update_json",
    # times
    "iso_ms",
]

Json = dict[str, Any]
Level = tuple[int, int]  # (price in ticks, quantity in lots)


# -- FORMATTING -------------------------------------------------------------------------------

_POW10: tuple[int, ...] = tuple(10**d for d in range(31))
_FRACTION: tuple[str, ...] = ("%d", *(f"%d.%0{d}d" for d in range(1, 31)))
_PERCENT_DECIMALS = 6  # priceChangePercent is a fraction with 6 decimals ("0.057894")


def _scaled(scaled: int, decimals: int) -> str:
    """Return ``scaled * 10**-decimals`` as a decimal string with exactly ``decimals`` decimals."""
    if not decimals:
        return str(scaled)
    if scaled >= _POW10[decimals]:  # the common case: at least 1, slice the digits
        text = str(scaled)
        return text[:-decimals] + "." + text[-decimals:]
    if scaled < 0:
        return "-" + _scaled(-scaled, decimals)
    return _FRACTION[decimals] % divmod(scaled, _POW10[decimals])  # "0.xx"


def _price(rules: MarketRules, ticks: int) -> str:
    tick = rules.tick
    return _scaled(ticks * tick.units, tick.decimals)


def _quantity(rules: MarketRules, lots: int) -> str:
    step = rules.step
    return _scaled(lots * step.units, step.decimals)


def _opt_price(rules: MarketRules, ticks: int | None) -> str | None:
    return None if ticks is None else _price(rules, ticks)


def _opt_quantity(rules: MarketRules, lots: int | None) -> str | None:
    return None if lots is None else _quantity(rules, lots)


def _opt_quote(rules: MarketRules, atoms: int | None) -> str | None:
    return None if atoms is None else _scaled(atoms, rules.quote.decimals)


def _levels(rules: MarketRules, levels: Iterable[Level]) -> list[list[str]]:
    tick = rules.tick
    step = rules.step
    tu, td, su, sd = tick.units, tick.decimals, step.units, step.decimals
    return [[_scaled(p * tu, td), _scaled(q * su, sd)] for p, q in levels]


def _delta_levels(rules: MarketRules, levels: Iterable[Level]) -> list[list[str]]:
    """Levels of a depth update: a level whose total is ``0`` is gone, written ``"0"``."""
    tick = rules.tick
    step = rules.step
    tu, td, su, sd = tick.units, tick.decimals, step.units, step.decimals
    return [[_scaled(p * tu, td), _scaled(q * su, sd) if q else "0"] for p, q in levels]


# -- TIMES ------------------------------------------------------------------------------------


# Events of one command share their time, and commands come in time order: caching the
# seconds formatted makes most conversions a lookup and a concatenation.
@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    """``"2025-11-24T16:00:00"`` for ``seconds`` since the epoch (UTC)."""
    t = time.gmtime(seconds)
    return f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}"


def iso_ms(ts_us: int) -> str:
    """Return µs since the epoch as ISO 8601 UTC with milliseconds and no zone.

    ``"2025-11-24T16:00:00.123"``: what Backpack sends for fills (``parse8601`` reads no zone as
    UTC).
    """
    seconds, us = divmod(ts_us, 1_000_000)
    return f"{_second_text(seconds)}.{us // 1000:03d}"


def _iso_seconds(ts_us: int) -> str:
    """``"2025-11-24T16:00:00"`` (WebSocket kline ``t``/``T``)."""
    return _second_text(ts_us // 1_000_000)


def _kline_time(ts_us: int) -> str:
    """``"2025-11-24 16:00:00"`` (REST kline ``start``/``end``)."""
    return _second_text(ts_us // 1_000_000).replace("T", " ")


# -- PUBLIC REST ------------------------------------------------------------------------------


def asset_json(asset: AssetSpec) -> Json:
    """One element of ``GET /api/v1/assets`` (contract §4.2).

    Gap: Cloudex knows no blockchains, so ``tokens`` is empty; ccxt then marks the currency
    inactive for deposits and withdrawals, which does not affect trading.
    """
    return {
        "symbol": asset.symbol,
        "displayName": asset.display_name or asset.symbol,
        "coingeckoId": None,
        "tokens": [],
    }


def market_json(
    rules: MarketRules, state: MarketState | None = None, *, created_at_us: int | None = None
) -> Json:
    """One element of ``GET /api/v1/markets`` (contract §4.3, quirk §8.2).

    ``state`` is the market's current state (``rules.spec`` holds the one it was added with;
    ``SetMarketState`` changes it). ``minPrice`` is one tick (the engine accepts any price above
    zero); ``maxPrice``, ``minQuantity``, ``maxQuantity`` come from the market's limits. Backpack
    has no field for the minimum notional, which the engine also enforces (``INVALID_ORDER``).
    ``createdAt`` (ISO) is ``null`` unless given: a market spec carries no creation time.
    """
    tick = rules.tick
    step = rules.step
    tick_size = _scaled(tick.units, tick.decimals)
    return {
        "symbol": rules.spec.symbol,
        "baseSymbol": rules.base.symbol,
        "quoteSymbol": rules.quote.symbol,
        "marketType": "SPOT",
        "orderBookState": rules.spec.state if state is None else state,
        "createdAt": None if created_at_us is None else iso_ms(created_at_us),
        "filters": {
            "price": {
                "minPrice": tick_size,
                "maxPrice": _price(rules, rules.max_ticks),
                "tickSize": tick_size,
            },
            "quantity": {
                "minQuantity": _quantity(rules, rules.min_lots),
                "maxQuantity": _quantity(rules, rules.max_lots),
                "stepSize": _scaled(step.units, step.decimals),
            },
        },
    }


def depth_json(
    rules: MarketRules,
    update_id: int,
    bids: Sequence[Level],
    asks: Sequence[Level],
    ts_us: int,
) -> Json:
    """``GET /api/v1/depth`` (contract §4.8, quirk §8.3).

    ``bids`` and ``asks`` are best first, as ``Engine.depth`` returns them (trim them to the
    request's ``limit`` before). Like Backpack, both sides come out in ascending price order:
    asks best first, bids best last (ccxt sorts them anyway). ``lastUpdateId`` is a string,
    the same sequence as the WebSocket ``U``/``u``; ``timestamp`` is in µs (required by ccxt).
    """
    return {
        "asks": _levels(rules, asks),
        "bids": _levels(rules, reversed(bids)),
        "lastUpdateId": str(update_id),
        "timestamp": ts_us,
    }


def ticker_json(rules: MarketRules, ticker: Ticker) -> Json:
    """``GET /api/v1/ticker`` and one element of ``GET /api/v1/tickers`` (contract §4.7).

    Rolling 24 h. ``priceChangePercent`` is a fraction (ccxt multiplies it by 100) with 6
    decimals, truncated toward zero. With no trade in the window, the prices, ``priceChange`` and
    ``priceChangePercent`` are ``null`` and the volumes zero.
    """
    first = ticker.first_price
    last = ticker.last_price
    change: str | None = None
    percent: str | None = None
    if first is not None and last is not None:
        diff = last - first
        change = _price(rules, diff)
        if first:
            scaled = abs(diff) * _POW10[_PERCENT_DECIMALS] // first
            percent = _scaled(-scaled if diff < 0 else scaled, _PERCENT_DECIMALS)
    return {
        "symbol": rules.spec.symbol,
        "firstPrice": _opt_price(rules, first),
        "lastPrice": _opt_price(rules, last),
        "high": _opt_price(rules, ticker.high),
        "low": _opt_price(rules, ticker.low),
        "priceChange": change,
        "priceChangePercent": percent,
        "volume": _quantity(rules, ticker.volume),
        "quoteVolume": _scaled(ticker.quote_volume, rules.quote.decimals),
        "trades": str(ticker.trades),
    }


def public_trade_json(rules: MarketRules, trade: TradeExecuted) -> Json:
    """One element of ``GET /api/v1/trades`` and ``/api/v1/trades/history`` (contract §4.9).

    ``timestamp`` is an integer in ms, and there is no ``fee`` key (its presence would make ccxt
    parse the timestamp as ISO, quirk §8.5).
    """
    return {
        "id": trade.trade_id,
        "isBuyerMaker": trade.is_buyer_maker,
        "price": _price(rules, trade.price),
        "quantity": _quantity(rules, trade.quantity),
        "quoteQuantity": _scaled(trade.quote_quantity, rules.quote.decimals),
        "timestamp": trade.ts // 1000,
    }


def kline_json(rules: MarketRules, candle: Candle) -> Json:
    """One element of ``GET /api/v1/klines`` (contract §4.10).

    ``start`` and ``end`` (exclusive: the next candle's start) are UTC ``"YYYY-MM-DD HH:MM:SS"``.
    """
    return {
        "start": _kline_time(candle.start),
        "end": _kline_time(bucket_end(candle.start, candle.interval)),
        "open": _price(rules, candle.open),
        "high": _price(rules, candle.high),
        "low": _price(rules, candle.low),
        "close": _price(rules, candle.close),
        "volume": _quantity(rules, candle.volume),
        "quoteVolume": _scaled(candle.quote_volume, rules.quote.decimals),
        "trades": str(candle.trades),
    }


# -- PRIVATE REST -----------------------------------------------------------------------------


def balance_json(asset: AssetSpec, available: int, locked: int) -> Json:
    """One asset's entry of ``GET /api/v1/capital``: ``{available, locked, staked}``."""
    decimals = asset.decimals
    return {
        "available": _scaled(available, decimals),
        "locked": _scaled(locked, decimals),
        "staked": "0",
    }


def balances_json(assets: Mapping[str, AssetSpec], balances: Mapping[str, tuple[int, int]]) -> Json:
    """``GET /api/v1/capital`` (contract §5.1): ``{asset: {available, locked, staked}}``.

    ``balances`` is ``{asset: (available, locked)}`` in atoms, as ``Engine.balances`` returns
    it; every asset given is listed (zero balances included), each at its own decimals.
    """
    return {
        symbol: balance_json(assets[symbol], available, locked)
        for symbol, (available, locked) in balances.items()
    }


def order_json(rules: MarketRules, order: OrderView | OrderClosed) -> Json:
    """The order object (contract §6) of ``POST/GET/DELETE /api/v1/order``, ``GET/DELETE
    /api/v1/orders``, ``POST /api/v1/orders`` and ``GET /wapi/v1/history/orders``.

    ``order`` is an order as it stands (:class:`OrderView`) or as it closed
    (:class:`OrderClosed` carries the order's terms and final amounts).
    ``createdAt`` is in ms. ``quoteQuantity`` is set for market orders sized in quote,
    ``price`` is ``null`` for market orders. Cloudex has no trigger or reduce-only orders:
    ``reduceOnly``, ``triggerPrice`` and ``triggerQuantity`` are ``null``.
    """
    return {
        "id": str(order.order_id),
        "clientId": order.client_id,
        "symbol": order.market,
        "side": order.side,
        "orderType": order.order_type,
        "timeInForce": order.time_in_force,
        "price": _opt_price(rules, order.price),
        "quantity": _opt_quantity(rules, order.quantity),
        "quoteQuantity": _opt_quote(rules, order.quote_quantity),
        "executedQuantity": _quantity(rules, order.executed_quantity),
        "executedQuoteQuantity": _scaled(order.executed_quote_quantity, rules.quote.decimals),
        "status": order.status,
        "postOnly": order.post_only,
        "reduceOnly": None,
        "selfTradePrevention": order.self_trade_prevention,
        "triggerPrice": None,
        "triggerQuantity": None,
        "createdAt": order.created_at // 1000,
    }


def fill_json(
    rules: MarketRules, trade: TradeExecuted, account: int, client_id: int | None = None
) -> Json:
    """One element of ``GET /wapi/v1/history/fills`` (contract §5.9, quirk §8.5): ``trade``
    as seen by ``account``, its buyer or its seller.

    The buyer pays its fee in base, the seller in quote (docs/engine.md). ``timestamp`` is an
    ISO string, since ccxt parses it as ISO when ``fee`` is present.

    Gap: a trade does not carry the orders' client ids; pass the account's order's
    ``client_id`` if known (``clientId`` is ``null`` otherwise).
    """
    if account == trade.buyer:
        is_buyer = True
    elif account == trade.seller:
        is_buyer = False
    else:
        raise ValueError(f"account {account} is not a party to trade {trade.trade_id}")
    if is_buyer:
        order_id = trade.buy_order_id
        fee = _scaled(trade.buyer_fee, rules.base.decimals)
        fee_symbol = rules.base.symbol
        side = "Bid"
    else:
        order_id = trade.sell_order_id
        fee = _scaled(trade.seller_fee, rules.quote.decimals)
        fee_symbol = rules.quote.symbol
        side = "Ask"
    return {
        "tradeId": trade.trade_id,
        "orderId": str(order_id),
        "clientId": client_id,
        "symbol": trade.market,
        "side": side,
        "price": _price(rules, trade.price),
        "quantity": _quantity(rules, trade.quantity),
        "quoteQuantity": _scaled(trade.quote_quantity, rules.quote.decimals),
        "fee": fee,
        "feeSymbol": fee_symbol,
        "isMaker": trade.is_buyer_maker == is_buyer,
        "systemOrderType": None,
        "timestamp": iso_ms(trade.ts),
    }


# -- ORDER STATE FROM EVENTS ------------------------------------------------------------------
#
# A fill says what changed, not how its orders stand: it carries neither their terms (client
# id, type, limit, quantity) nor their cumulative amounts. A consumer that describes an order
# after each fill (the WebSocket ``orderFill``, stored open orders) steps an OrderView from the
# order's OrderAccepted (the taker's is in the same command) or from ``Engine.open_order`` /
# the stored open order (a maker). OrderClosed carries everything itself.


def order_view_from_accepted(event: OrderAccepted) -> OrderView:
    """The order as it stands when accepted: ``New``, nothing executed."""
    return OrderView(
        event.order_id,
        event.account,
        event.market,
        event.client_id,
        event.side,
        event.order_type,
        event.time_in_force,
        event.price,
        event.quantity,
        event.quote_quantity,
        0,
        0,
        OrderStatus.NEW,
        event.post_only,
        event.self_trade_prevention,
        event.ts,
    )


def order_view_after_fill(order: OrderView, trade: TradeExecuted) -> OrderView:
    """``order`` after its part in ``trade``: ``Filled`` once a quantity-sized order has
    executed its whole quantity, ``PartiallyFilled`` otherwise.

    An order sized in quote (market, ``quantity`` null) cannot tell its last fill: it stays
    ``PartiallyFilled`` until its :class:`OrderClosed`.
    """
    executed = order.executed_quantity + trade.quantity
    quantity = order.quantity
    status = (
        OrderStatus.FILLED
        if quantity is not None and executed >= quantity
        else OrderStatus.PARTIALLY_FILLED
    )
    return msgspec.structs.replace(
        order,
        executed_quantity=executed,
        executed_quote_quantity=order.executed_quote_quantity + trade.quote_quantity,
        status=status,
    )


# -- WEBSOCKET --------------------------------------------------------------------------------


def ws_frame(stream: str, data: Json) -> Json:
    """The frame envelope (contract §7.3): ``stream`` must be the exact topic subscribed."""
    return {"stream": stream, "data": data}


def ws_depth_json(
    rules: MarketRules,
    first_update_id: int,
    last_update_id: int,
    bids: Iterable[Level],
    asks: Iterable[Level],
    ts_us: int,
) -> Json:
    """``depth.<SYM>`` (contract §7.4, §7.5): absolute level quantities, ``"0"`` removes a level.

    The update covers ids ``U = first_update_id`` .. ``u = last_update_id`` of the sequence
    REST ``lastUpdateId`` shares; the next update starts at ``u + 1``. No levels is a heartbeat.
    """
    return {
        "e": "depth",
        "E": ts_us,
        "T": ts_us,
        "s": rules.spec.symbol,
        "U": first_update_id,
        "u": last_update_id,
        "b": _delta_levels(rules, bids),
        "a": _delta_levels(rules, asks),
    }


def ws_depth_event_json(rules: MarketRules, event: DepthChanged) -> Json:
    """``depth.<SYM>`` for one :class:`DepthChanged` (``U == u == event.update_id``)."""
    return ws_depth_json(rules, event.update_id, event.update_id, event.bids, event.asks, event.ts)


def ws_trade_json(rules: MarketRules, trade: TradeExecuted) -> Json:
    """``trade.<SYM>`` (contract §7.4). ``E``/``T`` in µs, ``b``/``a`` the buy and sell order
    ids, ``m`` true when the buyer is the maker."""
    return {
        "e": "trade",
        "E": trade.ts,
        "T": trade.ts,
        "s": trade.market,
        "p": _price(rules, trade.price),
        "q": _quantity(rules, trade.quantity),
        "b": str(trade.buy_order_id),
        "a": str(trade.sell_order_id),
        "t": trade.trade_id,
        "m": trade.is_buyer_maker,
    }


def ws_ticker_json(rules: MarketRules, ticker: Ticker, ts_us: int) -> Json:
    """``ticker.<SYM>`` (contract §7.4): rolling 24 h, from :class:`MarketStats` (``ts_us`` is
    its ``ts``). With no trade in the window, ``o``/``c``/``h``/``l`` are ``null``."""
    return {
        "e": "ticker",
        "E": ts_us,
        "s": rules.spec.symbol,
        "o": _opt_price(rules, ticker.first_price),
        "c": _opt_price(rules, ticker.last_price),
        "h": _opt_price(rules, ticker.high),
        "l": _opt_price(rules, ticker.low),
        "v": _quantity(rules, ticker.volume),
        "V": _scaled(ticker.quote_volume, rules.quote.decimals),
        "n": ticker.trades,
    }


def ws_book_ticker_json(
    rules: MarketRules,
    best_bid: Level | None,
    best_ask: Level | None,
    ts_us: int,
    update_id: int | None = None,
) -> Json:
    """``bookTicker.<SYM>`` (contract §7.4): best bid and ask with their quantities; an empty
    side is ``null``.

    Gap: the engine reports the best prices only in :class:`MarketStats` (on ticks, for
    markets that traded), which carries no depth update id, so ``u`` is sent only if
    ``update_id`` is given (ccxt ignores it). To follow every change of the top of the book as
    Backpack does, the caller must read ``Engine.book_ticker`` after each command that emits a
    :class:`DepthChanged`.
    """
    data: Json = {
        "e": "bookTicker",
        "E": ts_us,
        "T": ts_us,
        "s": rules.spec.symbol,
        "a": None if best_ask is None else _price(rules, best_ask[0]),
        "A": None if best_ask is None else _quantity(rules, best_ask[1]),
        "b": None if best_bid is None else _price(rules, best_bid[0]),
        "B": None if best_bid is None else _quantity(rules, best_bid[1]),
    }
    if update_id is not None:
        data["u"] = update_id
    return data


def ws_kline_json(rules: MarketRules, candle: Candle, ts_us: int) -> Json:
    """``kline.<interval>.<SYM>`` (contract §7.4, quirk §8.10).

    ``t`` is the candle's start, ``T`` its end (ISO, UTC): constant per candle, since ccxt keys
    candles on ``T``. ``X`` (closed) is true once ``ts_us`` reached the end; the candles of
    :class:`MarketStats` are the current ones, so normally false.
    """
    end = bucket_end(candle.start, candle.interval)
    return {
        "e": "kline",
        "E": ts_us,
        "s": rules.spec.symbol,
        "t": _iso_seconds(candle.start),
        "T": _iso_seconds(end),
        "o": _price(rules, candle.open),
        "c": _price(rules, candle.close),
        "h": _price(rules, candle.high),
        "l": _price(rules, candle.low),
        "v": _quantity(rules, candle.volume),
        "n": candle.trades,
        "X": ts_us >= end,
    }


def _ws_order(
    rules: MarketRules,
    event_type: str,
    ts_us: int,
    order: OrderView | OrderAccepted | OrderClosed,
    status: OrderStatus,
    executed_quantity: int,
    executed_quote_quantity: int,
) -> Json:
    """The fields of an ``account.orderUpdate`` message every event type carries; optional
    values (client id, price, quantity, quote quantity) are left out when absent."""
    data: Json = {
        "e": event_type,
        "E": ts_us,
        "s": order.market,
        "i": str(order.order_id),
        "S": order.side,
        "o": "LIMIT" if order.order_type is OrderType.LIMIT else "MARKET",
        "f": order.time_in_force,
        "X": status,
        "z": _quantity(rules, executed_quantity),
        "Z": _scaled(executed_quote_quantity, rules.quote.decimals),
        "V": order.self_trade_prevention,
        "y": order.post_only,
        "r": False,
        "T": ts_us,
        "O": "USER",
    }
    if order.client_id is not None:
        data["c"] = order.client_id
    if order.price is not None:
        data["p"] = _price(rules, order.price)
    if order.quantity is not None:
        data["q"] = _quantity(rules, order.quantity)
    if order.quote_quantity is not None:
        data["Q"] = _scaled(order.quote_quantity, rules.quote.decimals)
    return data


def ws_order_accepted_json(rules: MarketRules, event: OrderAccepted) -> Json:
    """``account.orderUpdate[.<SYM>]`` ``orderAccepted`` (contract §7.6), status ``New``.

    Send it to ``event.account``.
    """
    return _ws_order(rules, "orderAccepted", event.ts, event, OrderStatus.NEW, 0, 0)


def ws_order_fill_json(rules: MarketRules, order: OrderView, trade: TradeExecuted) -> Json:
    """``account.orderUpdate[.<SYM>]`` ``orderFill`` (contract §7.6): ``order``'s part in
    ``trade``, for ``order.account``.

    ``order`` is the order *after* this fill (:func:`order_view_after_fill`): its status and
    cumulative amounts give ``X``, ``z`` and ``Z``. The trade gives ``l``/``L`` (this fill's
    quantity and price, ccxt's ``filled``), ``t``, ``m`` (maker) and the fee ``n``/``N`` (the
    buyer pays in base, the seller in quote).

    Gap: the trade carries none of the order's own fields (client id, type, limit, quantity),
    hence ``order``.
    """
    is_buyer = order.order_id == trade.buy_order_id
    if not is_buyer and order.order_id != trade.sell_order_id:
        raise ValueError(f"order {order.order_id} is not in trade {trade.trade_id}")
    data = _ws_order(
        rules,
        "orderFill",
        trade.ts,
        order,
        order.status,
        order.executed_quantity,
        order.executed_quote_quantity,
    )
    data["l"] = _quantity(rules, trade.quantity)
    data["L"] = _price(rules, trade.price)
    data["t"] = trade.trade_id
    data["m"] = trade.is_buyer_maker == is_buyer
    if is_buyer:
        data["n"] = _scaled(trade.buyer_fee, rules.base.decimals)
        data["N"] = rules.base.symbol
    else:
        data["n"] = _scaled(trade.seller_fee, rules.quote.decimals)
        data["N"] = rules.quote.symbol
    return data


def ws_order_closed_json(rules: MarketRules, event: OrderClosed) -> Json | None:
    """``account.orderUpdate[.<SYM>]`` for an order that closed (contract §7.6), for
    ``event.account``: ``orderCancelled``, or ``orderExpired`` with the reason in ``R``.

    A ``Filled`` close: Backpack sends nothing more, since the last ``orderFill`` already said
    ``Filled``. That holds for orders sized in quantity, so the result is ``None`` (nothing to
    send). An order sized in quote cannot tell its last fill (see
    :func:`order_view_after_fill`), so its close is sent as ``orderUpdate`` with ``X``
    ``Filled`` (ccxt handles it like any order update).
    """
    status = event.status
    if status is OrderStatus.CANCELLED:
        event_type = "orderCancelled"
    elif status is OrderStatus.EXPIRED:
        event_type = "orderExpired"
    elif event.quantity is not None:
        return None
    else:
        event_type = "orderUpdate"
    data = _ws_order(
        rules,
        event_type,
        event.ts,
        event,
        status,
        event.executed_quantity,
        event.executed_quote_quantity,
    )
    if status is OrderStatus.EXPIRED:
        data["R"] = event.reason
    return data


def ws_order_update_json(
    rules: MarketRules,
    event: OrderAccepted | TradeExecuted | OrderClosed,
    order: OrderView | None = None,
) -> Json | None:
    """``account.orderUpdate[.<SYM>]`` for any order event: dispatches to
    :func:`ws_order_accepted_json`, :func:`ws_order_fill_json` or :func:`ws_order_closed_json`.

    ``order`` (the order after the fill) is needed for a :class:`TradeExecuted` only; a trade
    concerns two accounts, so call once per side, with each side's order. ``None``: nothing
    to send.
    """
    if isinstance(event, OrderAccepted):
        return ws_order_accepted_json(rules, event)
    if isinstance(event, OrderClosed):
        return ws_order_closed_json(rules, event)
    if order is None:
        raise ValueError(f"trade {event.trade_id} needs the view of the order it filled")
    return ws_order_fill_json(rules, order, event)


def ws_balance_update_json(asset: AssetSpec, event: BalanceChanged) -> Json:
    """``account.balanceUpdate`` (contract §7.6, a ccxt-side convention): the account's new
    ``A`` available and ``L`` locked balance of asset ``a``, ``S`` staked always ``"0"``.

    Send it to ``event.account``; ``asset`` is the spec of ``event.asset`` (its decimals).
    """
    decimals = asset.decimals
    return {
        "e": "balanceUpdate",
        "E": event.ts,
        "a": event.asset,
        "A": _scaled(event.available, decimals),
        "L": _scaled(event.locked, decimals),
        "S": "0",
    }
