"""Orders from the wire to engine commands: decimals parsed against their market's tick and
step, exactly (an off-tick price is refused here, before anything is queued). Everything else
about an order (its combination of fields, limits, funds, the market's state) is the engine's
to judge, so the rules exist once."""

from __future__ import annotations

from cloudex.cache import Markets
from cloudex.enums import ErrorCode, OrderType, SelfTradePrevention, Side, TimeInForce
from cloudex.markets import MarketRules
from cloudex.messages import CancelAllOrders, CancelOrder, PlaceOrder
from cloudex.money import MoneyError
from functions.api.errors import ApiError
from functions.api.models import CancelAllRequest, CancelOrderRequest, OrderRequest

__all__ = ["MAX_AMOUNT", "market_rules", "place_order", "cancel_order", "cancel_all"]

# Every amount travels as a signed 64-bit integer (journal, Redis); a larger one, however
# well formed, is refused here: the engine could not even journal the command carrying it.
MAX_AMOUNT = 2**63 - 1


def market_rules(markets: Markets, symbol: str) -> MarketRules:
    rules = markets.rules.get(symbol)
    if rules is None:
        raise ApiError(ErrorCode.INVALID_MARKET, f"Unknown market {symbol}")
    return rules


def _parse(kind: str, parse: object, text: str | None) -> int | None:
    if text is None:
        return None
    code = ErrorCode.INVALID_PRICE if kind == "price" else ErrorCode.INVALID_QUANTITY
    try:
        value: int = parse(text)  # type: ignore[operator]
    except MoneyError as exc:
        raise ApiError(code, f"Invalid {kind}: {exc}") from None
    if value > MAX_AMOUNT:
        raise ApiError(code, f"Invalid {kind}: {text} is out of range")
    return value


def place_order(
    request: OrderRequest,
    markets: Markets,
    *,
    command_id: str,
    account: int,
    deadline_us: int,
) -> PlaceOrder:
    rules = market_rules(markets, request.symbol)
    if request.reduceOnly:
        raise ApiError(ErrorCode.INVALID_ORDER, "reduceOnly is not supported on spot markets")
    return PlaceOrder(
        id=command_id,
        ts=0,
        deadline=deadline_us,
        account=account,
        market=request.symbol,
        side=Side(request.side),
        order_type=OrderType(request.orderType),
        price=_parse("price", rules.parse_price, request.price),
        quantity=_parse("quantity", rules.parse_quantity, request.quantity),
        quote_quantity=_parse("quoteQuantity", rules.parse_quote, request.quoteQuantity),
        time_in_force=TimeInForce(request.timeInForce or "GTC"),
        post_only=bool(request.postOnly),
        client_id=request.clientId,
        self_trade_prevention=SelfTradePrevention(request.selfTradePrevention or "RejectTaker"),
    )


def cancel_order(
    request: CancelOrderRequest,
    markets: Markets,
    *,
    command_id: str,
    account: int,
    deadline_us: int,
) -> CancelOrder:
    market_rules(markets, request.symbol)
    if request.orderId is None and request.clientId is None:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "orderId or clientId is required")
    if request.orderId is not None and int(request.orderId) > MAX_AMOUNT:
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, "Order not found")  # no such id is issued
    return CancelOrder(
        id=command_id,
        ts=0,
        deadline=deadline_us,
        account=account,
        market=request.symbol,
        order_id=None if request.orderId is None else int(request.orderId),
        client_id=request.clientId,
    )


def cancel_all(
    request: CancelAllRequest,
    markets: Markets,
    *,
    command_id: str,
    account: int,
    deadline_us: int,
) -> CancelAllOrders:
    market_rules(markets, request.symbol)
    return CancelAllOrders(
        id=command_id, ts=0, deadline=deadline_us, account=account, market=request.symbol
    )
