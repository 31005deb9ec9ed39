"""A thin client of Cloudex's public REST API, signed as every trader signs (``cloudex.signing``).

It knows the paths and the error contract (``{code, message}``), nothing about quoting. Every
failure is an :class:`ApiError`, which says whether it is worth waiting for (the engine is down
or restarting, the API is busy) and whether the request may still have taken effect (no answer
came: a timeout, a dropped connection), so the caller knows when to look before acting again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import requests

from cloudex import signing

__all__ = ["ApiError", "Api", "RestClient", "TRANSIENT_CODES", "UNKNOWN_OUTCOME_CODES"]

# Codes that say "try again later": nothing was done, or it is not known yet.
TRANSIENT_CODES = frozenset(
    {"MAINTENANCE", "TIMEOUT", "SERVER_ERROR", "TOO_MANY_REQUESTS", "CONNECTION", "BAD_RESPONSE"}
)
# Codes after which a command may still take effect (the API says so for TIMEOUT and for a
# queue send it could not confirm; no answer at all says nothing).
UNKNOWN_OUTCOME_CODES = frozenset({"TIMEOUT", "SERVER_ERROR", "CONNECTION", "BAD_RESPONSE"})


class ApiError(Exception):
    """A refused or failed request: the API's ``code`` and ``message`` and the HTTP status
    (``0`` when no answer came; ``code`` is then ``CONNECTION``)."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """Worth retrying after a pause: the exchange is unavailable or busy."""
        return self.code in TRANSIENT_CODES or self.status >= 500 or self.status == 429

    @property
    def outcome_unknown(self) -> bool:
        """The request may have been carried out: look before assuming either way."""
        if self.code in UNKNOWN_OUTCOME_CODES:
            return True
        # An answer from something in front of the API (a gateway) rather than from it.
        return self.status >= 500 and self.code.startswith("HTTP_")


class Api(Protocol):
    """What the market maker and the taker need from the exchange (the REST client, or a fake
    in unit tests)."""

    def markets(self) -> list[dict[str, Any]]: ...

    def depth(self, symbol: str, limit: int = 20) -> dict[str, Any]: ...

    def capital(self) -> dict[str, dict[str, str]]: ...

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]: ...

    def place_order(self, order: Mapping[str, object]) -> dict[str, Any]: ...

    def place_orders(self, orders: Sequence[Mapping[str, object]]) -> list[dict[str, Any]]: ...

    def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_id: int | None = None
    ) -> dict[str, Any]: ...

    def cancel_all(self, symbol: str) -> list[dict[str, Any]]: ...


class RestClient:
    """Signed REST calls to ``url`` (the API's base, no trailing slash)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        secret: str,
        *,
        window_ms: int = signing.DEFAULT_WINDOW_MS,
        timeout_s: tuple[float, float] = (3.05, 20.0),
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._secret = secret
        self.window_ms = window_ms
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def close(self) -> None:
        self.session.close()

    # -- TRANSPORT ----------------------------------------------------------------------------

    def request(self, method: str, path: str, params: Any = None, *, signed: bool = True) -> Any:
        """One request; the decoded JSON answer, or :class:`ApiError`."""
        headers: dict[str, str] = {}
        if signed:
            headers = signing.signed_headers(
                self.api_key,
                self._secret,
                method,
                path,
                params if params is not None else {},
                window_ms=self.window_ms,
            )
        try:
            if method == "GET":
                response = self.session.get(
                    self.url + path, params=params, headers=headers, timeout=self.timeout_s
                )
            else:
                response = self.session.request(
                    method,
                    self.url + path,
                    json=params if params is not None else {},
                    headers=headers,
                    timeout=self.timeout_s,
                )
        except requests.RequestException as exc:
            raise ApiError(0, "CONNECTION", type(exc).__name__) from None
        return self._decode(response)

    @staticmethod
    def _decode(response: requests.Response) -> Any:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            retry_after: float | None = None
            header = response.headers.get("Retry-After")
            if header is not None:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
            message = body.get("message")
            raise ApiError(
                response.status_code,
                body["code"],
                message if isinstance(message, str) else "",
                retry_after_s=retry_after,
            )
        if response.status_code >= 400:
            raise ApiError(response.status_code, f"HTTP_{response.status_code}", response.reason)
        if body is None:
            raise ApiError(response.status_code, "BAD_RESPONSE", "the answer is not JSON")
        return body

    @staticmethod
    def _list(body: Any, what: str) -> list[dict[str, Any]]:
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise ApiError(200, "BAD_RESPONSE", f"{what}: expected a list of objects")
        return body

    @staticmethod
    def _object(body: Any, what: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(200, "BAD_RESPONSE", f"{what}: expected an object")
        return body

    # -- PUBLIC -------------------------------------------------------------------------------

    def markets(self) -> list[dict[str, Any]]:
        return self._list(self.request("GET", "/api/v1/markets", signed=False), "markets")

    def depth(self, symbol: str, limit: int = 20) -> dict[str, Any]:
        body = self.request(
            "GET", "/api/v1/depth", {"symbol": symbol, "limit": str(limit)}, signed=False
        )
        return self._object(body, "depth")

    # -- PRIVATE ------------------------------------------------------------------------------

    def capital(self) -> dict[str, dict[str, str]]:
        body = self._object(self.request("GET", "/api/v1/capital"), "capital")
        return {asset: value for asset, value in body.items() if isinstance(value, dict)}

    def open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        params = None if symbol is None else {"symbol": symbol}
        return self._list(self.request("GET", "/api/v1/orders", params), "open orders")

    def place_order(self, order: Mapping[str, object]) -> dict[str, Any]:
        return self._object(self.request("POST", "/api/v1/order", dict(order)), "order")

    def place_orders(self, orders: Sequence[Mapping[str, object]]) -> list[dict[str, Any]]:
        body = self.request("POST", "/api/v1/orders", [dict(order) for order in orders])
        return self._list(body, "orders")

    def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_id: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, object] = {"symbol": symbol}
        if order_id is not None:
            params["orderId"] = order_id
        if client_id is not None:
            params["clientId"] = client_id
        return self._object(self.request("DELETE", "/api/v1/order", params), "cancel")

    def cancel_all(self, symbol: str) -> list[dict[str, Any]]:
        body = self.request("DELETE", "/api/v1/orders", {"symbol": symbol})
        return self._list(body, "cancel all")
