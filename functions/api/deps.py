"""FastAPI dependencies: the container's runtime, rate limits, signed callers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from functions.api.auth import SignedRequest, authenticate, source_ip
from functions.api.errors import ApiError
from functions.api.ratelimit import RateLimiter
from functions.api.runtime import Runtime

__all__ = ["runtime_of", "RuntimeDep", "public", "reader", "trader", "Reader", "Trader"]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain-def dependency on a thread pool (see functions.api.public)
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


async def public(request: Request) -> None:
    """Every public request takes a token from its source IP's bucket."""
    _limiter(request).take(runtime_of(request).now_ms(), ip=source_ip(request))


async def _signed(request: Request, *, trade: bool) -> SignedRequest:
    runtime = runtime_of(request)
    ip = source_ip(request)
    try:
        signed = await authenticate(request, runtime, trade=trade)
    except ApiError:
        # Failed attempts count against the IP, so guessing costs the guesser.
        _limiter(request).take(runtime.now_ms(), ip=ip)
        raise
    _limiter(request).take(runtime.now_ms(), ip=ip, api_key=signed.key.public_key)
    return signed


_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="X-API-Key",
    auto_error=False,
    description="base64 Ed25519 public key",
)
_SIGNATURE = APIKeyHeader(
    name="X-Signature",
    scheme_name="X-Signature",
    auto_error=False,
    description="base64 Ed25519 signature of the request (Backpack's signing string)",
)
_TIMESTAMP = APIKeyHeader(
    name="X-Timestamp", scheme_name="X-Timestamp", auto_error=False, description="ms since epoch"
)
_WINDOW = APIKeyHeader(
    name="X-Window", scheme_name="X-Window", auto_error=False, description="ms, at most 60000"
)


def _signed_dependency(*, trade: bool) -> Callable[..., Awaitable[SignedRequest]]:
    # The four headers are declared so the OpenAPI document shows how private endpoints are
    # signed; checking them is authenticate()'s (auto_error=False: a missing header is its
    # UNAUTHORIZED, not FastAPI's 403).
    async def signed(
        request: Request,
        _key: str | None = Security(_KEY),
        _signature: str | None = Security(_SIGNATURE),
        _timestamp: str | None = Security(_TIMESTAMP),
        _window: str | None = Security(_WINDOW),
    ) -> SignedRequest:
        return await _signed(request, trade=trade)

    return signed


reader = _signed_dependency(trade=False)
trader = _signed_dependency(trade=True)
Reader = Annotated[SignedRequest, Depends(reader)]
Trader = Annotated[SignedRequest, Depends(trader)]
