"""Fuzzing the running API over HTTP: no input gets a 5xx, and every refusal is Backpack's
``{"code", "message"}``.

1. Schemathesis generates requests for every operation of the app's own OpenAPI document
   (valid and invalid ones), sent to the real stack (gateway, Lambda handler, Redis,
   PostgreSQL, engine); private ones half the time signed with a funded key, admin ones with
   the admin credential.
2. Hypothesis generates order placements, batches and cancels whose fields are anything JSON
   can hold (mostly plausible values, sometimes anything), correctly signed, so they reach
   validation and the engine.

Afterwards the engine must still run, the persister's projections must not be stuck, and the
balance audit (journal replay against the ledger and the snapshot) must find nothing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cloudex import signing
from engine_service.audit import audit
from functions.api.openapi import openapi_document
from tests.integration.api_support import ApiStack, Trader
from tests.integration.engine_support import wait_for_projections

SCHEMA_EXAMPLES = 25  # per operation: 31 operations
ORDER_EXAMPLES = 300
ERROR_KEYS = {"code", "message"}
EXTRA_ERROR_KEYS = {"commandIds"}  # TIMEOUT and an unconfirmed send (contract: documented)


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
# Admin last: it may close markets and change fees, which the other operations do not need.
LABELS = sorted(OPERATIONS, key=lambda label: ("/admin/" in label, label))


@pytest.fixture(scope="module")
def fuzz_trader(api_stack: ApiStack) -> Trader:
    return api_stack.new_trader(
        {"USDC": "1000000", "SOL": "10000", "BTC": "100", "ETH": "1000", "INR": "1000000"}
    )


# -- CHECKS -------------------------------------------------------------------------------------


def check_response(response: requests.Response, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what}: {status} {response.text[:500]}"
    content_type = response.headers.get("Content-Type", "")
    if status >= 400:
        assert content_type.startswith("application/json"), f"{what}: {content_type}"
        body = response.json()
        assert isinstance(body, dict), f"{what}: {body!r}"
        assert ERROR_KEYS <= set(body) <= ERROR_KEYS | EXTRA_ERROR_KEYS, f"{what}: {body}"
        assert isinstance(body["code"], str) and body["code"].isupper(), f"{what}: {body}"
        assert isinstance(body["message"], str) and body["message"], f"{what}: {body}"
    elif content_type.startswith("application/json"):
        body = response.json()
        # A success object never has a top-level "code": ccxt would take it for an error.
        assert not (isinstance(body, dict) and "code" in body), f"{what}: {body}"


def _signed_params(method: str, prepared: requests.PreparedRequest) -> Any:
    """What the server verifies: the query (GET) or the JSON body, if it can be signed."""
    if method == "GET":
        return dict(parse_qsl(urlsplit(prepared.url or "").query, keep_blank_values=True))
    body = prepared.body
    if not body:
        return {}
    try:
        params = json.loads(body)
        signing.signing_payload("x", params, 0, 0)
    except (ValueError, RecursionError, TypeError, AttributeError, signing.SignatureError):
        return {}
    return params


def sign_prepared(prepared: requests.PreparedRequest, trader: Trader) -> None:
    method = prepared.method or "GET"
    path = urlsplit(prepared.url or "").path
    headers = signing.signed_headers(
        trader.api_key, trader.secret, method, path, _signed_params(method, prepared)
    )
    for name in list(prepared.headers):
        if name.lower().startswith("x-") and name.lower() != "x-schemathesis-testcaseid":
            del prepared.headers[name]
    prepared.headers.update(headers)


def send_prepared(stack: ApiStack, prepared: requests.PreparedRequest) -> requests.Response:
    try:
        return stack.session.send(prepared, timeout=30, allow_redirects=False)
    except (requests.exceptions.InvalidHeader, UnicodeEncodeError, ValueError):
        reject()  # a request no HTTP client can send (a header with a newline, say)
        raise AssertionError("unreachable") from None


# -- SCHEMATHESIS -------------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_every_operation_survives_generated_requests(
    api_stack: ApiStack, fuzz_trader: Trader, label: str
) -> None:
    operation = OPERATIONS[label]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    private = not label.startswith("GET /api/v1/") or label in {
        "GET /api/v1/account",
        "GET /api/v1/capital",
        "GET /api/v1/orders",
        "GET /api/v1/order",
    }

    @fuzz_settings(SCHEMA_EXAMPLES)
    @given(case=cases, sign=st.booleans())
    def run(case: Any, sign: bool) -> None:
        kwargs = case.as_transport_kwargs(base_url=api_stack.url)
        kwargs.pop("cookies", None)
        try:
            prepared = requests.Request(**kwargs).prepare()
        except (requests.exceptions.RequestException, ValueError, UnicodeError):
            reject()
        if "/admin/" in label:
            prepared.headers["Authorization"] = f"Bearer {api_stack.admin_token}"
        elif private and sign:
            sign_prepared(prepared, fuzz_trader)
        response = send_prepared(api_stack, prepared)
        check_response(response, f"{label} {prepared.url} {prepared.body!r:.300}")

    run()


# -- SIGNED ORDERS ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
PRICES = st.decimals(min_value="0.01", max_value=200, places=2).map(lambda d: format(d, "f"))
QUANTITIES = st.decimals(min_value="0.01", max_value=20, places=2).map(lambda d: format(d, "f"))
DECIMALS = st.one_of(
    PRICES,
    st.integers(min_value=0, max_value=10**7).map(str),
    st.from_regex(r"[0-9]{1,8}\.[0-9]{1,12}", fullmatch=True),
    # Beyond any 64-bit amount, and around its edge, in a plain decimal of at most 40 chars.
    st.from_regex(r"[1-9][0-9]{16,39}", fullmatch=True),
    st.sampled_from(["92233720368547758.07", "92233720368547758.08", "184467440737095516.16"]),
    st.sampled_from(["0", "0.00", "0.00001", "1e3", "-1", "", " 1", "1.", ".5", "0x10"]),
)
CLIENT_IDS = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=-(2**64), max_value=2**64),
)
SYMBOLS = st.sampled_from(["SOL_USDC", "SOL_USDC", "BTC_USDC", "ETH_USDC", "TATA_INR", "NOPE_USDC"])
ORDER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "price": DECIMALS,
    "quantity": DECIMALS,
    "quoteQuantity": DECIMALS,
    "timeInForce": st.sampled_from(["GTC", "IOC", "FOK", "GTX"]),
    "postOnly": st.booleans(),
    "clientId": CLIENT_IDS,
    "selfTradePrevention": st.sampled_from(["RejectTaker", "RejectMaker", "RejectBoth", "Allow"]),
    "reduceOnly": st.booleans(),
}
# Keys a mutation may touch: every field, and ones the API does not know.
MUTABLE = [*ORDER_FIELDS, "symbol", "side", "orderType", "triggerPrice", "extra"]


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible order (often one the engine accepts), then up to two fields set to anything
    JSON can hold, or left out."""
    order_type = draw(st.sampled_from(["Limit", "Limit", "Market"]))
    order: dict[str, Any] = {
        "symbol": draw(SYMBOLS),
        "side": draw(st.sampled_from(["Bid", "Ask"])),
        "orderType": order_type,
    }
    if order_type == "Limit":
        order["price"] = draw(st.one_of(PRICES, PRICES, DECIMALS))
        order["quantity"] = draw(st.one_of(QUANTITIES, QUANTITIES, DECIMALS))
    else:
        order[draw(st.sampled_from(["quantity", "quoteQuantity"]))] = draw(DECIMALS)
    for name in draw(st.lists(st.sampled_from(list(ORDER_FIELDS)), max_size=3, unique=True)):
        order[name] = draw(ORDER_FIELDS[name])
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        name = draw(st.sampled_from(MUTABLE))
        if draw(st.booleans()):
            order.pop(name, None)
        else:
            order[name] = draw(JSON_VALUES)
    return order


@st.composite
def cancels(draw: st.DrawFn) -> dict[str, Any]:
    cancel: dict[str, Any] = {"symbol": draw(SYMBOLS)}
    if draw(st.booleans()):
        cancel["orderId"] = draw(st.integers(min_value=0, max_value=10**20).map(str))
    if draw(st.booleans()):
        cancel["clientId"] = draw(CLIENT_IDS)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        name = draw(st.sampled_from(["symbol", "orderId", "clientId", "orderType", "extra"]))
        cancel[name] = draw(JSON_VALUES)
    return cancel


REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/api/v1/order"), orders()),
    st.tuples(st.just("POST"), st.just("/api/v1/order"), JSON_VALUES),
    st.tuples(
        st.just("POST"),
        st.just("/api/v1/orders"),
        st.lists(orders(), max_size=4) | st.lists(JSON_VALUES, max_size=3),
    ),
    st.tuples(st.just("DELETE"), st.just("/api/v1/order"), cancels()),
    st.tuples(st.just("DELETE"), st.just("/api/v1/orders"), cancels()),
)


def test_signed_order_commands_survive_any_json(api_stack: ApiStack, fuzz_trader: Trader) -> None:
    @fuzz_settings(ORDER_EXAMPLES)
    @given(request=REQUESTS)
    def run(request: tuple[str, str, Any]) -> None:
        method, path, body = request
        try:
            headers = signing.signed_headers(
                fuzz_trader.api_key, fuzz_trader.secret, method, path, body
            )
        except (signing.SignatureError, TypeError, AttributeError):
            # No canonical signing string (a float, a null, a nested value): the server must
            # refuse it whatever it is signed with.
            headers = signing.signed_headers(
                fuzz_trader.api_key, fuzz_trader.secret, method, path, {}
            )
        data = json.dumps(body, separators=(",", ":")).encode()
        response = api_stack.session.request(
            method,
            api_stack.url + path,
            data=data,
            headers={"Content-Type": "application/json", **headers},
            timeout=30,
        )
        what = f"{method} {path} {data[:300]!r}"
        check_response(response, what)
        if response.status_code == 200 and path == "/api/v1/order":
            assert "id" in response.json(), what
        if response.status_code == 200 and path == "/api/v1/orders" and method == "POST":
            for element in response.json():
                assert "id" in element or set(element) == ERROR_KEYS, what

    run()


# -- AFTERWARDS ---------------------------------------------------------------------------------


def test_the_stack_is_healthy_after_the_fuzzing(api_stack: ApiStack, fuzz_trader: Trader) -> None:
    assert api_stack.engines is not None
    assert all(engine.alive for engine in api_stack.engines.engines)
    status = api_stack.session.get(api_stack.url + "/api/v1/status", timeout=30).json()
    assert status["status"] == "Ok"
    capital = api_stack.signed(fuzz_trader, "GET", "/api/v1/capital")
    assert capital.status_code == 200
    wait_for_projections(api_stack.database_url)  # and none of them failing
    with psycopg.connect(api_stack.database_url, autocommit=True) as conn:
        report = audit(conn)
    assert report.ok, report.to_json()
