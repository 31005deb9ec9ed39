"""Export the API's OpenAPI document: ``python -m functions.api.openapi [PATH]``.

``docs/openapi.json`` is this output, committed; a test fails when the two differ, so the
published document is always the API as built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from functions.api.app import create_app
from functions.api.runtime import Runtime
from functions.api.settings import ApiSettings

__all__ = ["DOCUMENT_PATH", "openapi_document", "render"]

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    # Nothing is connected: building the app only needs settings of the right shape.
    settings = ApiSettings(
        orders_queue_url="https://sqs.invalid/orders.fifo",
        redis_url="redis://localhost:6379/0",
        database_url="postgresql://localhost/cloudex",
    )
    document: dict[str, Any] = create_app(Runtime(settings, sqs=object())).openapi()
    return document


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DOCUMENT_PATH
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
