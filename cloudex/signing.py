"""Backpack-compatible Ed25519 request signing (contract ``backpack-wire.md`` §2 and §7.2).

Private REST calls and private WebSocket subscriptions are authenticated exactly as Backpack
does it, so unmodified Backpack clients (``ccxt``) work against Cloudex: the client signs
``instruction=<name>&<sorted params>&timestamp=<ms>&window=<ms>`` with the Ed25519 key whose
public half is its API key. The same module serves both ends: the API verifies every request
with it, and our own clients (tests, benchmark, market maker, admin CLI) sign with it, so the
two can never drift apart.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "SignatureError",
    "Params",
    "INSTRUCTIONS",
    "instruction_for",
    "format_value",
    "signing_payload",
    "request_payloads",
    "sign",
    "verify",
    "signed_headers",
    "ws_subscribe_signature",
    "generate_keypair",
    "public_key_of",
    "decode_public_key",
]

# What a private request carries: one object, or a list of them (batch order placement).
Params = Mapping[str, object] | Sequence[Mapping[str, object]]

DEFAULT_WINDOW_MS = 5000


class SignatureError(ValueError):
    """A key, secret or parameter value that cannot take part in a Backpack signature."""


INSTRUCTIONS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("GET", "api/v1/capital"): "balanceQuery",
        ("GET", "api/v1/order"): "orderQuery",
        ("POST", "api/v1/order"): "orderExecute",
        ("DELETE", "api/v1/order"): "orderCancel",
        ("GET", "api/v1/orders"): "orderQueryAll",
        ("POST", "api/v1/orders"): "orderExecute",
        ("DELETE", "api/v1/orders"): "orderCancelAll",
        ("GET", "wapi/v1/history/orders"): "orderHistoryQueryAll",
        ("GET", "wapi/v1/history/fills"): "fillHistoryQueryAll",
        ("GET", "api/v1/account"): "accountQuery",
        ("PATCH", "api/v1/account"): "accountUpdate",
        ("GET", "wapi/v1/capital/deposits"): "depositQueryAll",
        ("GET", "wapi/v1/capital/deposit/address"): "depositAddressQuery",
        ("GET", "wapi/v1/capital/withdrawals"): "withdrawalQueryAll",
        ("POST", "wapi/v1/capital/withdrawals"): "withdraw",
        ("GET", "api/v1/position"): "positionQuery",
    }
)


def instruction_for(method: str, path: str) -> str:
    """The instruction signed for ``method path``; ``""`` for unlisted paths, as ccxt signs them."""
    return INSTRUCTIONS.get((method.upper(), path.lstrip("/")), "")


def format_value(value: object) -> str:
    """A parameter value as it appears in the signing string (bool before int: bool is an int)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    # ccxt sends decimals as strings, so a float, null or nested value in a signed request has
    # no canonical text; guessing one would let two different requests share a signature.
    raise SignatureError(f"cannot sign a value of type {type(value).__name__}")


def _query(params: Mapping[str, object], encoded: bool) -> str:
    pairs = sorted((key, format_value(value)) for key, value in params.items())
    if encoded:
        return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in pairs)
    return "&".join(f"{key}={value}" for key, value in pairs)


def signing_payload(
    instruction: str,
    params: Params,
    timestamp: str | int,
    window: str | int,
    *,
    encoded: bool = True,
) -> str:
    """The exact string signed: §2.4 for one object, §2.5 (per-element sorted) for a list."""
    tail = f"timestamp={timestamp}&window={window}"
    if isinstance(params, Mapping):
        query = _query(params, encoded)
        return f"instruction={instruction}&" + (f"{query}&" if query else "") + tail
    if not params:
        # ccxt would sign "" for an empty batch; no request can be authorised by that.
        raise SignatureError("an empty batch cannot be signed")
    if not all(isinstance(order, Mapping) for order in params):
        raise SignatureError("a batch can only hold objects")
    # Unlike the single form, ccxt keeps "&" after an element even when it has no keys.
    parts = (f"instruction={instruction}&{_query(order, encoded)}&" for order in params)
    return "".join(parts) + tail


def request_payloads(
    instruction: str, params: Params, timestamp: str | int, window: str | int
) -> list[str]:
    """Candidate payloads for a server to verify, percent-encoded first (contract §2.4)."""
    encoded = signing_payload(instruction, params, timestamp, window, encoded=True)
    plain = signing_payload(instruction, params, timestamp, window, encoded=False)
    return [encoded] if plain == encoded else [encoded, plain]


def _b64(text: str) -> bytes:
    """Strict standard base64: non-alphabet characters and bad padding are errors."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SignatureError("not valid standard base64") from exc


def _private_key(secret_b64: str) -> Ed25519PrivateKey:
    raw = _b64(secret_b64)
    if len(raw) not in (32, 64):
        raise SignatureError("secret must be base64 of a 32-byte seed or a 64-byte keypair")
    # A 64-byte secret is seed||public (Solana style); ccxt signs with the seed alone.
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def sign(secret_b64: str, payload: str) -> str:
    """Base64 Ed25519 signature of ``payload`` (UTF-8) with the seed in ``secret_b64``."""
    return base64.b64encode(_private_key(secret_b64).sign(payload.encode("utf-8"))).decode()


def decode_public_key(public_key_b64: str) -> bytes:
    """The 32 raw bytes of an API key, which must be canonical standard base64."""
    raw = _b64(public_key_b64)
    if len(raw) != 32:
        raise SignatureError("public key must be base64 of exactly 32 bytes")
    # Keys are looked up by their text, so only one spelling of each key may be accepted.
    if base64.b64encode(raw).decode() != public_key_b64:
        raise SignatureError("public key is not canonical base64")
    return raw


@functools.lru_cache(maxsize=4096)
def _public_key(public_key_b64: str) -> Ed25519PublicKey | None:
    # Parsing a point costs more than the lookup; every API request verifies, mostly for few keys.
    try:
        return Ed25519PublicKey.from_public_bytes(decode_public_key(public_key_b64))
    except (SignatureError, ValueError):
        return None


def verify(public_key_b64: str, signature_b64: str, payloads: Iterable[str]) -> bool:
    """True if the signature is valid for any payload; malformed input is just ``False``."""
    key = _public_key(public_key_b64)
    if key is None:
        return False
    try:
        signature = _b64(signature_b64)
    except SignatureError:
        return False
    if len(signature) != 64:
        return False
    for payload in payloads:
        try:
            key.verify(signature, payload.encode("utf-8"))
        except InvalidSignature:
            continue
        return True
    return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed_headers(
    api_key_b64: str,
    secret_b64: str,
    method: str,
    path: str,
    params: Params | None = None,
    *,
    timestamp_ms: int | None = None,
    window_ms: int = DEFAULT_WINDOW_MS,
) -> dict[str, str]:
    """Auth headers for a private request whose query (GET) or JSON body (other) is ``params``."""
    timestamp = _now_ms() if timestamp_ms is None else timestamp_ms
    payload = signing_payload(
        instruction_for(method, path), {} if params is None else params, timestamp, window_ms
    )
    return {
        "X-API-Key": api_key_b64,
        "X-Signature": sign(secret_b64, payload),
        "X-Timestamp": str(timestamp),
        "X-Window": str(window_ms),
    }


def ws_subscribe_signature(
    api_key_b64: str,
    secret_b64: str,
    *,
    timestamp_ms: int | None = None,
    window_ms: int = DEFAULT_WINDOW_MS,
) -> list[str]:
    """The ``signature`` array of a private SUBSCRIBE/UNSUBSCRIBE frame (contract §7.2)."""
    timestamp = _now_ms() if timestamp_ms is None else timestamp_ms
    payload = signing_payload("subscribe", {}, timestamp, window_ms)
    return [api_key_b64, sign(secret_b64, payload), str(timestamp), str(window_ms)]


def generate_keypair() -> tuple[str, str]:
    """A new random key as ``(public_key_b64, secret_b64)``."""
    key = Ed25519PrivateKey.generate()
    return (
        base64.b64encode(key.public_key().public_bytes_raw()).decode(),
        base64.b64encode(key.private_bytes_raw()).decode(),
    )


def public_key_of(secret_b64: str) -> str:
    """The base64 API key belonging to a secret."""
    return base64.b64encode(_private_key(secret_b64).public_key().public_bytes_raw()).decode()
