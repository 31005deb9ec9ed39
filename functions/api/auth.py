"""Signed requests (contract §2): who is asking, and whether they really are.

Every private request carries ``X-API-Key`` (base64 Ed25519 public key), ``X-Signature``,
``X-Timestamp`` (ms) and ``X-Window`` (ms, at most 60 s). The signature covers the instruction
of the path and method, the request's parameters (query for GET, JSON body otherwise) and the
timestamp and window, so a captured request can neither be changed nor used after its window.
Within its window an identical resend is possible, and harmless: the command id is derived from
the key and the signature, so the engine answers a resent command with its first result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import Request

from cloudex import signing
from cloudex.api_keys import ApiKey
from cloudex.enums import ErrorCode
from functions.api.errors import ApiError
from functions.api.runtime import Runtime

__all__ = ["SignedRequest", "authenticate", "source_ip", "DEFAULT_WINDOW_MS"]

DEFAULT_WINDOW_MS = 5_000  # Backpack's default when X-Window is absent

_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    key: ApiKey
    signature: str
    timestamp_ms: int
    window_ms: int
    params: Any  # the verified query (GET) or JSON body: a dict, or a list for a batch

    @property
    def account(self) -> int:
        return self.key.account

    @property
    def deadline_us(self) -> int:
        """The last engine time at which this request's command may take effect."""
        return (self.timestamp_ms + self.window_ms) * 1_000

    def command_id(self, index: int | None = None) -> str:
        """The same for an identical resend (same key, same deterministic signature)."""
        digest = hashlib.sha256(f"{self.key.public_key}|{self.signature}".encode()).hexdigest()
        return digest[:32] if index is None else f"{digest[:32]}-{index}"


def source_ip(request: Request) -> str:
    event = request.scope.get("aws.event") or {}
    identity = (event.get("requestContext") or {}).get("identity") or {}
    ip = identity.get("sourceIp")
    if ip:
        return str(ip)
    return request.client.host if request.client else "unknown"


def _header_int(request: Request, name: str, default: int | None = None) -> int:
    text = request.headers.get(name)
    if text is None:
        if default is None:
            raise ApiError(ErrorCode.UNAUTHORIZED, f"Missing {name} header")
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, f"{name} must be an integer")
    return int(text)


async def _params(request: Request) -> Any:
    if request.method == "GET":
        params: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name in params:
                raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, f"Repeated parameter {name}")
            params[name] = value
        return params
    body = await request.body()
    if not body.strip():
        return {}
    try:
        params_or_list = _json.decode(body)
    except msgspec.DecodeError:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "Body is not valid JSON") from None
    if not isinstance(params_or_list, dict | list):
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "Body must be a JSON object")
    return params_or_list


def _ambiguous(params: Any) -> bool:
    objects = params if isinstance(params, list) else [params]
    return any(
        any(char in str(text) for char in "&=%")
        for item in objects
        if isinstance(item, dict)
        for pair in item.items()
        for text in pair
    )


async def authenticate(request: Request, runtime: Runtime, *, trade: bool = False) -> SignedRequest:
    """Check the signature, the window and the key; raise :class:`ApiError` on any failure."""
    settings = runtime.settings
    api_key = request.headers.get("X-API-Key")
    signature = request.headers.get("X-Signature")
    if not api_key or not signature:
        raise ApiError(ErrorCode.UNAUTHORIZED, "Missing X-API-Key or X-Signature header")
    timestamp = _header_int(request, "X-Timestamp")
    window = _header_int(request, "X-Window", DEFAULT_WINDOW_MS)
    if not 0 < window <= settings.max_window_ms:
        raise ApiError(
            ErrorCode.INVALID_CLIENT_REQUEST,
            f"X-Window must be between 1 and {settings.max_window_ms} ms",
        )
    now = runtime.now_ms()
    if timestamp + window < now:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "Request has expired")
    if timestamp > now + settings.max_clock_skew_ms:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "X-Timestamp is in the future")
    params = await _params(request)
    instruction = signing.instruction_for(request.method, request.url.path)
    try:
        payloads = signing.request_payloads(instruction, params, timestamp, window)
    except signing.SignatureError as exc:
        raise ApiError(ErrorCode.INVALID_CLIENT_REQUEST, str(exc)) from None
    if len(payloads) > 1 and _ambiguous(params):
        # The plain k=v form cannot tell {"a": "1&b=2"} from {"a": "1", "b": "2"}: only the
        # percent-encoded form is unambiguous, so values that need it must be signed in it.
        payloads = payloads[:1]
    if not signing.verify(api_key, signature, payloads):
        raise ApiError(ErrorCode.INVALID_SIGNATURE, "Invalid signature")
    key = runtime.api_key(api_key)
    if key is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "Unknown or revoked API key")
    if trade and not key.can_trade:
        raise ApiError(ErrorCode.FORBIDDEN, "This API key is read-only")
    return SignedRequest(key, signature, timestamp, window, params)
