"""Enumerations shared by every component. Values are the Backpack wire spellings."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BID = "Bid"
    ASK = "Ask"


class OrderType(StrEnum):
    LIMIT = "Limit"
    MARKET = "Market"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class SelfTradePrevention(StrEnum):
    REJECT_TAKER = "RejectTaker"
    REJECT_MAKER = "RejectMaker"
    REJECT_BOTH = "RejectBoth"


class OrderStatus(StrEnum):
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"


class MarketState(StrEnum):
    OPEN = "Open"
    POST_ONLY = "PostOnly"
    CANCEL_ONLY = "CancelOnly"
    CLOSED = "Closed"


class CloseReason(StrEnum):
    """Why an order left the book or stopped taking."""

    FILLED = "Filled"
    USER_CANCEL = "UserCancel"
    IMMEDIATE_OR_CANCEL = "ImmediateOrCancel"
    FILL_OR_KILL = "FillOrKill"
    SELF_TRADE_PREVENTION = "SelfTradePrevention"
    INSUFFICIENT_FUNDS = "InsufficientFunds"
    NO_LIQUIDITY = "NoLiquidity"
    MARKET_CLOSED = "MarketClosed"


class BalanceReason(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    ORDER = "order"  # an order's own settlement as taker, and the lock of what rests
    FILL = "fill"  # a resting order's settlement as maker
    UNLOCK = "unlock"  # cancel or expiry of a resting order
    FEE = "fee"  # the fee account's income


class ErrorCode(StrEnum):
    """Backpack error codes (``{"code": ..., "message": ...}``)."""

    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INVALID_ORDER = "INVALID_ORDER"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_MARKET = "INVALID_MARKET"
    INVALID_ASSET = "INVALID_ASSET"
    INVALID_CLIENT_REQUEST = "INVALID_CLIENT_REQUEST"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    ORDER_LIMIT = "ORDER_LIMIT"
    TRADING_PAUSED = "TRADING_PAUSED"
    FORBIDDEN = "FORBIDDEN"
    # Answered by the API, never by the engine.
    UNAUTHORIZED = "UNAUTHORIZED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    MAINTENANCE = "MAINTENANCE"
    TIMEOUT = "TIMEOUT"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    SERVER_ERROR = "SERVER_ERROR"
