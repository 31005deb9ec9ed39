"""FastAPI dependencies: the container's runtime, rate limits, signed callers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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


async def reader(request: Request) -> SignedRequest:
    return await _signed(request, trade=False)


async def trader(request: Request) -> SignedRequest:
    return await _signed(request, trade=True)


Reader = Annotated[SignedRequest, Depends(reader)]
Trader = Annotated[SignedRequest, Depends(trader)]
