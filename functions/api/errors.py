"""Domain errors and their HTTP answers: one place maps every failure to Backpack's
``{"code", "message"}`` body (contract §3) with a proper status.

Handlers raise :class:`ApiError` (or let a :class:`~cloudex.history.HistoryQueryError` or an
engine rejection through); :func:`install` registers the handlers that turn them, FastAPI's own
validation errors, unknown routes and anything unexpected into that body. A success body never
has a top-level ``code`` (ccxt would read it as an error).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudex.enums import ErrorCode
from cloudex.history import HistoryQueryError

__all__ = ["ApiError", "STATUS", "error_response", "install"]

# The HTTP status of each code; Backpack answers client errors 400 unless a better one exists.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RESOURCE_NOT_FOUND: 404,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.MAINTENANCE: 503,
    ErrorCode.TRADING_PAUSED: 400,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.SERVER_ERROR: 500,
}


class ApiError(Exception):
    """A request that cannot be served, with the Backpack code and a message for the client."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 400) if status is None else status
        self.headers = headers
        self.extra = extra or {}


def error_response(error: ApiError) -> Response:
    from functions.api.encoding import json_response

    body = {"code": error.code.value, "message": error.message, **error.extra}
    return json_response(body, status=error.status, headers=error.headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid request"
    first = errors[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid"))
    return f"{location}: {message}" if location else message


def install(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def history_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HistoryQueryError)
        return error_response(ApiError(ErrorCode(exc.code), str(exc)))

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(ApiError(ErrorCode.INVALID_CLIENT_REQUEST, _validation_message(exc)))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = ApiError(ErrorCode.RESOURCE_NOT_FOUND, "Not found")
        elif exc.status_code == 405:
            error = ApiError(ErrorCode.INVALID_CLIENT_REQUEST, "Method not allowed", status=405)
        else:
            error = ApiError(
                ErrorCode.INVALID_CLIENT_REQUEST, str(exc.detail), status=exc.status_code
            )
        return error_response(error)

    async def unexpected(_: Request, exc: Exception) -> Response:
        # Logged with its traceback by the handler's logger; the client learns nothing inside.
        from functions.api.runtime import logger

        logger.exception("unhandled error")
        return error_response(ApiError(ErrorCode.SERVER_ERROR, "Internal error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HistoryQueryError, history_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
