"""Request bodies, as the OpenAPI document shows them and as FastAPI checks them.

Strict: decimals are strings (never floats, which cannot say ``0.1``), ``clientId`` is an
integer, unknown fields are refused rather than ignored (a ``triggerPrice`` silently dropped
would turn a stop order into a live one). Amounts are only parsed against their market in
:mod:`functions.api.orders`, where the tick and step are known.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "OrderRequest",
    "CancelOrderRequest",
    "CancelAllRequest",
    "CreateAccountRequest",
    "RegisterKeyRequest",
    "RevokeKeyRequest",
    "TransferRequest",
    "MarketStateRequest",
    "MarketFeesRequest",
]

Decimal = str  # a plain decimal string, "100.5"
_DECIMAL = Field(default=None, min_length=1, max_length=40, pattern=r"^[0-9]+(\.[0-9]+)?$")
U32 = Field(default=None, ge=0, le=4_294_967_295)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL: a label would fail its INSERT, a deposit's reason
        # would stop the ledger projection at that record.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class OrderRequest(_Strict):
    symbol: str = Field(max_length=40)
    side: Literal["Bid", "Ask"]
    orderType: Literal["Limit", "Market"]
    price: Decimal | None = _DECIMAL
    quantity: Decimal | None = _DECIMAL
    quoteQuantity: Decimal | None = _DECIMAL
    timeInForce: Literal["GTC", "IOC", "FOK"] | None = None
    postOnly: bool | None = None
    clientId: int | None = U32
    selfTradePrevention: Literal["RejectTaker", "RejectMaker", "RejectBoth"] | None = None
    # Spot has no positions to reduce: accepted so clients that always send it work, but only
    # as false.
    reduceOnly: bool | None = None


class CancelOrderRequest(_Strict):
    symbol: str = Field(max_length=40)
    orderId: str | None = Field(default=None, pattern=r"^[0-9]{1,19}$")
    clientId: int | None = U32


class CancelAllRequest(_Strict):
    symbol: str = Field(max_length=40)
    orderType: Literal["RestingLimitOrder"] | None = None


# -- ADMIN ------------------------------------------------------------------------------------


class CreateAccountRequest(_Strict):
    label: str = Field(default="", max_length=200)


class RegisterKeyRequest(_Strict):
    publicKey: str = Field(max_length=64, description="base64 of a 32-byte Ed25519 public key")
    scope: Literal["read", "trade"]
    label: str = Field(default="", max_length=200)


class RevokeKeyRequest(_Strict):
    publicKey: str = Field(max_length=64)


class TransferRequest(_Strict):
    """A deposit or a withdrawal, carried out by the engine as a command."""

    account: int = Field(ge=1)
    asset: str = Field(max_length=16)
    amount: Decimal = Field(min_length=1, max_length=40, pattern=r"^[0-9]+(\.[0-9]+)?$")
    reason: str = Field(min_length=1, max_length=200)
    # The same key gives the same command: a retried call never deposits twice.
    idempotencyKey: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class MarketStateRequest(_Strict):
    state: Literal["Open", "PostOnly", "CancelOnly", "Closed"]
    idempotencyKey: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class MarketFeesRequest(_Strict):
    makerFeeBps: int = Field(ge=0, le=1_000)
    takerFeeBps: int = Field(ge=0, le=1_000)
    idempotencyKey: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
