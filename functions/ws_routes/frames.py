"""Client frames (contract §7.2): ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...],
"id": n, "signature": [key, sig, ts, window]}``, and the one reply frame each may get.

A frame's valid topics take effect even when another topic of the same frame is refused; the
reply then is one error frame naming the first refused topic. No ack is needed by ccxt (it
ignores frames with neither ``data`` nor ``error``), so a frame with an ``id`` gets
``{"id": n, "result": null}`` on success and one without gets nothing. An error frame has a
non-null ``error.code``, which makes ccxt reject every watcher on the connection: it is sent
only for a real failure (an unknown stream, a bad signature), never for ``account.rfqUpdate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from cloudex import signing
from cloudex.streams import Stream, StreamError, WsErrorCode, parse_stream
from cloudex.subscriptions import TooManySubscriptions
from functions.ws_routes.runtime import WsRuntime

__all__ = ["FrameError", "handle_frame", "error_frame"]

MAX_PARAMS = 50

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class FrameError(Exception):
    def __init__(self, code: WsErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id: Any = None  # the frame's id, when the frame had a valid one


def error_frame(request_id: Any, code: int, message: str) -> str:
    return _encoder.encode({"id": request_id, "error": {"code": code, "message": message}}).decode()


@dataclass(frozen=True, slots=True)
class _Frame:
    method: str
    params: list[Any]
    request_id: Any
    signature: Any


def _parse(body: str | None) -> _Frame:
    try:
        frame = _decoder.decode(body or "")
    except msgspec.DecodeError:
        raise FrameError(WsErrorCode.INVALID_FRAME, "Frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError(WsErrorCode.INVALID_FRAME, "Frame must be a JSON object")
    request_id = frame.get("id")
    if not (request_id is None or type(request_id) is int or isinstance(request_id, str)):
        request_id = None
    method = frame.get("method")
    params = frame.get("params")
    error = None
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        error = FrameError(WsErrorCode.INVALID_METHOD, "method must be SUBSCRIBE or UNSUBSCRIBE")
    elif not isinstance(params, list) or not params:
        error = FrameError(WsErrorCode.INVALID_FRAME, "params must be a non-empty array of streams")
    elif len(params) > MAX_PARAMS:
        error = FrameError(WsErrorCode.INVALID_FRAME, f"At most {MAX_PARAMS} streams per frame")
    if error is not None:
        error.request_id = request_id
        raise error
    assert isinstance(method, str) and isinstance(params, list)
    return _Frame(method, params, request_id, frame.get("signature"))


def _signer(runtime: WsRuntime, signature: Any) -> int:
    """The account whose key signed ``instruction=subscribe&timestamp=..&window=..``."""
    if not (
        isinstance(signature, list)
        and len(signature) == 4
        and all(isinstance(part, str) for part in signature)
    ):
        raise FrameError(
            WsErrorCode.UNAUTHORIZED,
            "Private streams need signature: [apiKey, signature, timestamp, window]",
        )
    api_key, signed, timestamp_text, window_text = signature
    if not (timestamp_text.isascii() and timestamp_text.isdigit() and len(timestamp_text) <= 15):
        raise FrameError(WsErrorCode.INVALID_SIGNATURE, "The timestamp must be an integer (ms)")
    if not (window_text.isascii() and window_text.isdigit() and len(window_text) <= 15):
        raise FrameError(WsErrorCode.INVALID_SIGNATURE, "The window must be an integer (ms)")
    timestamp, window = int(timestamp_text), int(window_text)
    settings = runtime.settings
    if not 0 < window <= settings.max_window_ms:
        raise FrameError(
            WsErrorCode.INVALID_SIGNATURE, f"The window must be 1 to {settings.max_window_ms} ms"
        )
    now = runtime.now_ms()
    if timestamp + window < now:
        raise FrameError(WsErrorCode.EXPIRED, "The signature has expired")
    if timestamp > now + settings.max_clock_skew_ms:
        raise FrameError(WsErrorCode.EXPIRED, "The timestamp is in the future")
    payload = signing.signing_payload("subscribe", {}, timestamp_text, window_text)
    if not signing.verify(api_key, signed, [payload]):
        raise FrameError(WsErrorCode.INVALID_SIGNATURE, "Invalid signature")
    key = runtime.api_key(api_key)
    if key is None:
        raise FrameError(WsErrorCode.UNAUTHORIZED, "Unknown or revoked API key")
    return key.account


def handle_frame(runtime: WsRuntime, connection_id: str, body: str | None) -> str | None:
    """Apply one client frame; the reply frame to send back, if any."""
    request_id = None
    try:
        frame = _parse(body)
        request_id = frame.request_id
        if frame.method == "UNSUBSCRIBE":
            # Only the connection's own topics can go, so no signature is needed to drop one.
            for topic in frame.params:
                if isinstance(topic, str):
                    runtime.registry.unsubscribe(connection_id, topic)
        else:
            _subscribe(runtime, connection_id, frame)
    except FrameError as error:
        return error_frame(request_id or error.request_id, error.code, error.message)
    if request_id is None:
        return None
    return _encoder.encode({"id": request_id, "result": None}).decode()


def _subscribe(runtime: WsRuntime, connection_id: str, frame: _Frame) -> None:
    markets = runtime.markets().rules
    accepted: list[tuple[str, Stream]] = []
    refused: FrameError | None = None
    for topic in frame.params:
        try:
            stream = parse_stream(topic, markets)
        except StreamError as error:
            refused = refused or FrameError(WsErrorCode.INVALID_STREAM, str(error))
            continue
        if stream is not None:
            accepted.append((topic, stream))
    account = None
    if any(stream.private for _, stream in accepted):
        try:
            account = _signer(runtime, frame.signature)
        except FrameError as error:
            accepted = [(topic, stream) for topic, stream in accepted if not stream.private]
            refused = refused or error
    for topic, stream in accepted:
        try:
            if not runtime.registry.subscribe(connection_id, topic, stream, account):
                raise FrameError(WsErrorCode.SERVER_ERROR, "The connection is closed")
        except TooManySubscriptions as error:
            raise FrameError(WsErrorCode.TOO_MANY_SUBSCRIPTIONS, str(error)) from None
    if refused is not None:
        raise refused
