"""mm.config (config/mm.toml), the command line's credentials, and the REST client's errors."""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from cloudex import signing
from mm.__main__ import CredentialsError, _with_interval, load_credentials, main
from mm.client import ApiError, RestClient
from mm.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_quotes_every_seeded_market() -> None:
    config = load_config()
    assert DEFAULT_CONFIG_PATH == ROOT / "config" / "mm.toml"
    with open(ROOT / "config" / "markets.toml", "rb") as handle:
        seeded = tomllib.load(handle)["markets"]
    assert set(seeded) <= set(config.markets)
    references = {s: m.reference_price for s, m in config.markets.items()}
    assert references["SOL_USDC"] == 150
    assert references["BTC_USDC"] == 95_000
    assert references["ETH_USDC"] == 3_500
    for symbol, market in config.markets.items():
        assert market.levels >= 12, symbol
        assert market.max_inventory > 0 and market.size > 0
        spec = seeded[symbol]
        # Sizes and notional fit the market's steps and minimums.
        assert market.size % Decimal(spec["step_size"]) == 0, symbol
        assert market.size * market.reference_price >= Decimal(spec["min_notional"]), symbol
        assert market.min_notional == Decimal(spec["min_notional"]), symbol
    assert config.maker.interval_s == 1.0


def test_defaults_apply_and_markets_override_them() -> None:
    config = parse_config(
        {
            "defaults": {"levels": 15, "size": "2"},
            "markets": {
                "A_B": {"reference_price": "10", "size": "0.5"},
                "C_D": {"reference_price": 3},
            },
            "maker": {"interval_s": 0.5},
        }
    )
    assert config.markets["A_B"].levels == 15 and config.markets["A_B"].size == Decimal("0.5")
    assert config.markets["C_D"].size == 2 and config.markets["C_D"].reference_price == 3
    assert config.maker.interval_s == 0.5 and config.maker.reconcile_interval_s == 5.0


@pytest.mark.parametrize(
    "data",
    [
        {"markets": {"A_B": {}}},  # no reference price
        {"markets": {"A_B": {"reference_price": "1", "levels": 0}}},
        {"markets": {"A_B": {"reference_price": "1", "colour": "red"}}},
        {"markets": {"A_B": {"reference_price": "x"}}},
        {"markets": {"A_B": {"reference_price": "-1"}}},
        {"markets": {"A_B": {"reference_price": "1", "spacing_ticks": 1.5}}},
        {"maker": {"interval_s": 0}},
        {"maker": {"nope": 1}},
        {"taker": {"min_interval_s": 5, "max_interval_s": 1}},
        {"maker": {"backoff_initial_s": 5, "backoff_max_s": 1}},
        {"extra": {}},
    ],
)
def test_bad_configurations_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config(data)


def test_a_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[markets\n")
    with pytest.raises(ConfigError):
        load_config(broken)


def test_interval_override() -> None:
    config = load_config()
    assert _with_interval(config, "maker", 0.2).maker.interval_s == 0.2
    taker = _with_interval(config, "taker", 2.0).taker
    assert (taker.min_interval_s, taker.max_interval_s) == (1.0, 3.0)
    assert _with_interval(config, "maker", None) is config


# -- CREDENTIALS --------------------------------------------------------------------------------


def test_credentials_from_a_file_or_the_environment(tmp_path: Path) -> None:
    api_key, secret = signing.generate_keypair()
    path = tmp_path / "maker.json"
    path.write_text(json.dumps({"account": 3, "apiKey": api_key, "secret": secret}))
    assert load_credentials(path, {}) == (api_key, secret)
    assert load_credentials(None, {"MM_API_KEY": api_key, "MM_SECRET": secret}) == (
        api_key,
        secret,
    )
    other, _ = signing.generate_keypair()
    with pytest.raises(CredentialsError, match="not the secret's public key"):
        load_credentials(None, {"MM_API_KEY": other, "MM_SECRET": secret})
    with pytest.raises(CredentialsError):
        load_credentials(None, {})
    with pytest.raises(CredentialsError):
        load_credentials(tmp_path / "missing.json", {})
    path.write_text("[1]")
    with pytest.raises(CredentialsError):
        load_credentials(path, {})


def test_main_exits_2_on_bad_credentials_or_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MM_API_KEY", raising=False)
    monkeypatch.delenv("MM_SECRET", raising=False)
    assert main(["--url", "http://127.0.0.1:9"]) == 2
    api_key, secret = signing.generate_keypair()
    monkeypatch.setenv("MM_API_KEY", api_key)
    monkeypatch.setenv("MM_SECRET", secret)
    assert main(["--url", "http://127.0.0.1:9", "--config", str(tmp_path / "none.toml")]) == 2


# -- THE CLIENT'S ERRORS ------------------------------------------------------------------------


class FakeSession(requests.Session):
    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.headers_out = headers or {}
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((str(method), str(url), kwargs))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers.update(self.headers_out)
        return response


def client_for(status: int, body: object, headers: dict[str, str] | None = None) -> RestClient:
    api_key, secret = signing.generate_keypair()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RestClient("http://x/", api_key, secret, session=FakeSession(status, raw, headers))


def test_error_bodies_become_api_errors() -> None:
    with pytest.raises(ApiError) as caught:
        client_for(503, {"code": "MAINTENANCE", "message": "down"}).capital()
    assert caught.value.transient and not caught.value.outcome_unknown
    with pytest.raises(ApiError) as caught:
        client_for(504, {"code": "TIMEOUT", "message": "slow", "commandIds": ["x"]}).capital()
    assert caught.value.transient and caught.value.outcome_unknown
    with pytest.raises(ApiError) as caught:
        busy = {"code": "TOO_MANY_REQUESTS", "message": "x"}
        client_for(429, busy, {"Retry-After": "2"}).capital()
    assert caught.value.transient and caught.value.retry_after_s == 2.0
    with pytest.raises(ApiError) as caught:
        client_for(400, {"code": "INVALID_ORDER", "message": "post only"}).capital()
    assert not caught.value.transient and not caught.value.outcome_unknown
    with pytest.raises(ApiError) as caught:
        client_for(502, b"<html>bad gateway</html>").capital()
    assert caught.value.code == "HTTP_502" and caught.value.outcome_unknown
    with pytest.raises(ApiError) as caught:
        client_for(200, {"code": "X", "message": "a success body never has a code"}).capital()
    assert caught.value.code == "X"


def test_connection_failures_are_transient_with_unknown_outcome() -> None:
    api_key, secret = signing.generate_keypair()
    client = RestClient("http://127.0.0.1:9", api_key, secret, timeout_s=(0.2, 0.2))
    with pytest.raises(ApiError) as caught:
        client.open_orders()
    assert caught.value.code == "CONNECTION"
    assert caught.value.transient and caught.value.outcome_unknown


def test_requests_are_signed_as_traders_sign_them() -> None:
    client = client_for(200, [])
    session = client.session
    assert isinstance(session, FakeSession)
    client.place_orders([{"symbol": "SOL_USDC", "side": "Bid", "clientId": 1}])
    client.open_orders("SOL_USDC")
    (method, url, kwargs), (get_method, get_url, get_kwargs) = session.sent
    assert (method, url) == ("POST", "http://x/api/v1/orders")
    assert kwargs["json"] == [{"symbol": "SOL_USDC", "side": "Bid", "clientId": 1}]
    headers = kwargs["headers"]
    payload = signing.signing_payload(
        "orderExecute", kwargs["json"], headers["X-Timestamp"], headers["X-Window"]
    )
    assert signing.verify(client.api_key, headers["X-Signature"], [payload])
    assert (get_method, get_url) == ("GET", "http://x/api/v1/orders")
    assert get_kwargs["params"] == {"symbol": "SOL_USDC"}
