"""JSON responses encoded with msgspec: several times faster than ``json.dumps`` on the lists of
orders and candles the API returns, and exact for the ints and strings they hold."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi.responses import Response

__all__ = ["JsonResponse", "json_response"]

_encoder = msgspec.json.Encoder()


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def json_response(
    content: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JsonResponse(content, status_code=status, headers=headers)
