"""The admin API (``/admin/v1``): accounts, API keys, deposits and withdrawals, markets.

In AWS these routes are authorised by IAM (API Gateway checks the caller's SigV4 signature
and puts the caller's ARN in the event); locally the gateway checks its configured admin
credential and does the same. The function refuses any admin request whose event carries no
caller, so a route wired without IAM fails closed. Money moves only as engine commands, with
exactly-once ids from the caller's ``idempotencyKey``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Request
from psycopg.types.json import Jsonb

from cloudex import names, signing
from cloudex.cache import decode_balance
from cloudex.enums import ErrorCode, MarketState
from cloudex.messages import (
    Command,
    Deposit,
    SetMarketFees,
    SetMarketState,
    Withdraw,
)
from cloudex.money import MoneyError
from functions.api.commands import CommandGateway, raise_for_result
from functions.api.deps import RuntimeDep
from functions.api.encoding import json_response
from functions.api.errors import ApiError
from functions.api.models import (
    CreateAccountRequest,
    MarketFeesRequest,
    MarketStateRequest,
    RegisterKeyRequest,
    RevokeKeyRequest,
    TransferRequest,
)
from functions.api.orders import MAX_AMOUNT, market_rules
from functions.api.runtime import Runtime, logger

__all__ = ["router", "caller_arn"]


def caller_arn(request: Request) -> str | None:
    event = request.scope.get("aws.event") or {}
    identity = (event.get("requestContext") or {}).get("identity") or {}
    arn = identity.get("userArn")
    return str(arn) if arn else None


async def _admin(request: Request) -> str:
    arn = caller_arn(request)
    if arn is None:
        raise ApiError(ErrorCode.FORBIDDEN, "Admin routes need an IAM-authorised caller")
    return arn


Admin = Annotated[str, Depends(_admin)]
router = APIRouter(prefix="/admin/v1", tags=["admin"])
AccountId = Annotated[int, Path(ge=1, le=2**62)]


def _command_id(idempotency_key: str) -> str:
    return "admin-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _once(
    runtime: Runtime,
    caller: str,
    idempotency_key: str,
    kind: str,
    request: dict[str, Any],
    command: Command,
    group: str,
    answer: Callable[[], dict[str, Any]],
) -> Any:
    """Run ``command`` once per idempotency key: record the key with the request first; a
    retry (same key, same request) gets the recorded answer, or, when the first attempt never
    got one, sends the same command again (same id: the engine answers a repeat from its result
    cache); the key reused for another request is refused."""
    conn = runtime.db()
    created = conn.execute(
        "INSERT INTO admin_operations (idempotency_key, kind, request, command_id, caller) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1",
        (idempotency_key, kind, Jsonb(request), command.id, caller),
    ).fetchone()
    if created is None:
        row = conn.execute(
            "SELECT kind, request, response FROM admin_operations WHERE idempotency_key = %s",
            (idempotency_key,),
        ).fetchone()
        assert row is not None  # operations are never deleted
        if (row[0], row[1]) != (kind, request):
            raise ApiError(
                ErrorCode.INVALID_CLIENT_REQUEST,
                "This idempotencyKey was used for a different request",
                status=409,
            )
        if row[2] is not None:
            return json_response({**row[2], "duplicate": True})
    (result,) = CommandGateway(runtime).execute([command], group)
    raise_for_result(result)
    body = {"commandId": command.id, **answer()}
    conn.execute(
        "UPDATE admin_operations SET response = %s WHERE idempotency_key = %s",
        (Jsonb(body), idempotency_key),
    )
    logger.info(kind, extra={"caller": caller, **request})
    return json_response({**body, "duplicate": created is None or result.duplicate})


def _account_exists(runtime: Runtime, account: int) -> bool:
    row = (
        runtime.db().execute("SELECT 1 FROM accounts WHERE account_id = %s", (account,)).fetchone()
    )
    return row is not None


# -- ACCOUNTS AND KEYS ------------------------------------------------------------------------


@router.post("/accounts", status_code=201)
async def create_account(runtime: RuntimeDep, caller: Admin, body: CreateAccountRequest) -> Any:
    row = (
        runtime.db()
        .execute(
            "INSERT INTO accounts (label) VALUES (%s) RETURNING account_id, created_at",
            (body.label,),
        )
        .fetchone()
    )
    assert row is not None
    logger.info("account created", extra={"account": row[0], "caller": caller})
    return json_response(
        {"accountId": int(row[0]), "label": body.label, "createdAt": row[1].isoformat()},
        status=201,
    )


@router.get("/accounts/{account}")
async def get_account(runtime: RuntimeDep, caller: Admin, account: AccountId) -> Any:
    conn = runtime.db()
    row = conn.execute(
        "SELECT label, created_at FROM accounts WHERE account_id = %s", (account,)
    ).fetchone()
    if row is None:
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, f"No account {account}")
    keys = conn.execute(
        "SELECT public_key, scope, label, created_at, revoked_at FROM api_keys "
        "WHERE account_id = %s ORDER BY created_at",
        (account,),
    ).fetchall()
    return json_response(
        {
            "accountId": account,
            "label": row[0],
            "createdAt": row[1].isoformat(),
            "keys": [
                {
                    "publicKey": key,
                    "scope": scope,
                    "label": label,
                    "createdAt": created.isoformat(),
                    "revokedAt": None if revoked is None else revoked.isoformat(),
                }
                for key, scope, label, created, revoked in keys
            ],
        }
    )


@router.post("/accounts/{account}/keys", status_code=201)
async def register_key(
    runtime: RuntimeDep, caller: Admin, account: AccountId, body: RegisterKeyRequest
) -> Any:
    """Register a public key (its owner keeps the secret; Cloudex never sees it)."""
    try:
        signing.decode_public_key(body.publicKey)
    except signing.SignatureError as exc:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, str(exc)) from None
    if not _account_exists(runtime, account):
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, f"No account {account}")
    try:
        runtime.db().execute(
            "INSERT INTO api_keys (public_key, account_id, scope, label) VALUES (%s, %s, %s, %s)",
            (body.publicKey, account, body.scope, body.label),
        )
    except psycopg.errors.UniqueViolation:
        raise ApiError(
            ErrorCode.INVALID_CLIENT_REQUEST, "This key is already registered", status=409
        ) from None
    runtime.forget_key(body.publicKey)
    logger.info("key registered", extra={"account": account, "scope": body.scope, "caller": caller})
    return json_response(
        {"publicKey": body.publicKey, "accountId": account, "scope": body.scope}, status=201
    )


@router.post("/keys/revoke")
async def revoke_key(runtime: RuntimeDep, caller: Admin, body: RevokeKeyRequest) -> Any:
    """Revoke a key. Takes effect at once in this container and within ``KEY_CACHE_TTL_S``
    (5 s by default) everywhere: the bound of every container's key cache."""
    public_key = body.publicKey
    row = (
        runtime.db()
        .execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE public_key = %s "
            "RETURNING account_id, revoked_at",
            (public_key,),
        )
        .fetchone()
    )
    if row is None:
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, "No such key")
    runtime.forget_key(public_key)
    logger.info("key revoked", extra={"account": row[0], "caller": caller})
    return json_response(
        {
            "publicKey": public_key,
            "accountId": int(row[0]),
            "revokedAt": row[1].isoformat(),
            "effectiveWithinSeconds": runtime.settings.key_cache_ttl_s,
        }
    )


# -- MONEY ------------------------------------------------------------------------------------


def _transfer(runtime: Runtime, caller: str, body: TransferRequest, kind: str) -> Any:
    if not _account_exists(runtime, body.account):
        raise ApiError(ErrorCode.RESOURCE_NOT_FOUND, f"No account {body.account}")
    asset = runtime.markets().assets.get(body.asset)
    if asset is None:
        raise ApiError(ErrorCode.INVALID_ASSET, f"Unknown asset {body.asset}")
    try:
        amount = asset.atom.parse(body.amount)
    except MoneyError as exc:
        raise ApiError(ErrorCode.INVALID_QUANTITY, f"Invalid amount: {exc}") from None
    if amount > MAX_AMOUNT:
        raise ApiError(ErrorCode.INVALID_QUANTITY, f"Invalid amount: {body.amount} is out of range")
    command_type = Deposit if kind == "deposit" else Withdraw
    command = command_type(
        id=_command_id(body.idempotencyKey),
        ts=0,
        deadline=(runtime.now_ms() + runtime.settings.max_window_ms) * 1_000,
        account=body.account,
        asset=body.asset,
        amount=amount,
        reference=body.reason,
    )
    request = body.model_dump(exclude={"idempotencyKey"})

    def answer() -> dict[str, Any]:
        available, locked = 0, 0
        balance = runtime.redis.hget(names.balances_key(body.account), body.asset)
        if balance is not None:
            available, locked = decode_balance(balance)
        return {
            "accountId": body.account,
            "asset": body.asset,
            "amount": asset.atom.format(amount),
            "reason": body.reason,
            "available": asset.atom.format(available),
            "locked": asset.atom.format(locked),
        }

    return _once(
        runtime, caller, body.idempotencyKey, kind, request, command, str(body.account), answer
    )


@router.post("/deposits")
async def deposit(runtime: RuntimeDep, caller: Admin, body: TransferRequest) -> Any:
    return _transfer(runtime, caller, body, "deposit")


@router.post("/withdrawals")
async def withdraw(runtime: RuntimeDep, caller: Admin, body: TransferRequest) -> Any:
    return _transfer(runtime, caller, body, "withdrawal")


# -- MARKETS ----------------------------------------------------------------------------------

Symbol = Annotated[str, Path(max_length=40)]


@router.post("/markets/{symbol}/state")
async def market_state(
    runtime: RuntimeDep, caller: Admin, symbol: Symbol, body: MarketStateRequest
) -> Any:
    market_rules(runtime.markets(), symbol)
    command = SetMarketState(
        id=_command_id(body.idempotencyKey), ts=0, market=symbol, state=MarketState(body.state)
    )
    request = {"symbol": symbol, "state": body.state}
    return _once(
        runtime, caller, body.idempotencyKey, "market_state", request, command, "admin",
        lambda: dict(request),
    )  # fmt: skip


@router.post("/markets/{symbol}/fees")
async def market_fees(
    runtime: RuntimeDep, caller: Admin, symbol: Symbol, body: MarketFeesRequest
) -> Any:
    market_rules(runtime.markets(), symbol)
    command = SetMarketFees(
        id=_command_id(body.idempotencyKey),
        ts=0,
        market=symbol,
        maker_fee_bps=body.makerFeeBps,
        taker_fee_bps=body.takerFeeBps,
    )
    request = {"symbol": symbol, "makerFeeBps": body.makerFeeBps, "takerFeeBps": body.takerFeeBps}
    return _once(
        runtime, caller, body.idempotencyKey, "market_fees", request, command, "admin",
        lambda: dict(request),
    )  # fmt: skip
