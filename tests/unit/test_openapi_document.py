"""docs/openapi.json is the API as built: regenerate with ``python -m functions.api.openapi``."""

from __future__ import annotations

from functions.api.openapi import DOCUMENT_PATH, openapi_document, render


def test_published_document_is_current() -> None:
    assert DOCUMENT_PATH.read_text() == render(), "run: python -m functions.api.openapi"


def test_every_contract_endpoint_is_documented() -> None:
    paths = openapi_document()["paths"]
    expected = {
        ("get", "/api/v1/assets"),
        ("get", "/api/v1/markets"),
        ("get", "/api/v1/market"),
        ("get", "/api/v1/securities"),
        ("get", "/api/v1/ticker"),
        ("get", "/api/v1/tickers"),
        ("get", "/api/v1/depth"),
        ("get", "/api/v1/trades"),
        ("get", "/api/v1/trades/history"),
        ("get", "/api/v1/klines"),
        ("get", "/api/v1/time"),
        ("get", "/api/v1/status"),
        ("get", "/api/v1/ping"),
        ("get", "/api/v1/account"),
        ("get", "/api/v1/capital"),
        ("post", "/api/v1/order"),
        ("get", "/api/v1/order"),
        ("delete", "/api/v1/order"),
        ("get", "/api/v1/orders"),
        ("post", "/api/v1/orders"),
        ("delete", "/api/v1/orders"),
        ("get", "/wapi/v1/history/orders"),
        ("get", "/wapi/v1/history/fills"),
    }
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert expected <= documented
    private = paths["/api/v1/order"]["post"]
    assert {"X-API-Key", "X-Signature", "X-Timestamp", "X-Window"} <= {
        name for requirement in private["security"] for name in requirement
    }
