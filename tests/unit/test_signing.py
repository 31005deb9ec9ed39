"""cloudex.signing: Backpack Ed25519 signing, byte for byte as in backpack-wire.md §2.7."""

from __future__ import annotations

import base64
import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cloudex.signing import (
    INSTRUCTIONS,
    Params,
    SignatureError,
    decode_public_key,
    format_value,
    generate_keypair,
    instruction_for,
    public_key_of,
    request_payloads,
    sign,
    signed_headers,
    signing_payload,
    verify,
    ws_subscribe_signature,
)

# The contract's key: seed bytes 00..1f.
SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
API_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
TS = 1700000000000
WINDOW = 5000
TAIL = "timestamp=1700000000000&window=5000"

ORDER_A = {
    "clientId": 42,
    "orderType": "Limit",
    "postOnly": True,
    "price": "100.5",
    "quantity": "1.25",
    "side": "Bid",
    "symbol": "SOL_USDC",
}
BATCH_E = [
    {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "99", "quantity": "1"},
    {"symbol": "SOL_USDC", "side": "Ask", "orderType": "Limit", "price": "101", "quantity": "2"},
]

# (method, path, params, payload, signature) for §2.7 (a)-(e).
EXAMPLES: list[tuple[str, str, Params, str, str]] = [
    (
        "POST",
        "api/v1/order",
        ORDER_A,
        "instruction=orderExecute&clientId=42&orderType=Limit&postOnly=true&price=100.5"
        f"&quantity=1.25&side=Bid&symbol=SOL_USDC&{TAIL}",
        "bbStANMoK/rNjC/loenf0dRWHOCRIRcAY9uYdRmyT5/5r7pQs3HxFLGdMCtkFgiHMfhqHiXY0LCe+Q1urkyCDw==",
    ),
    (
        "GET",
        "api/v1/capital",
        {},
        f"instruction=balanceQuery&{TAIL}",
        "ogsyh1c6LnY10GiJaCoAEdHpkK2BT4KgS7NAd1PW2DQndw1OnR0WbY0M753KwW9Mq6Dmw3k+Kdw+wPxzKMCiAg==",
    ),
    (
        "GET",
        "api/v1/orders",
        {"symbol": "SOL_USDC"},
        f"instruction=orderQueryAll&symbol=SOL_USDC&{TAIL}",
        "CX2dM5lT9EDtdIqKNH3ivG8lj5fnflAG/w87CMMRJuY8VXaXS0bhDVTtQcTX3rhexY1QuR2xVBmTaGPU7f+QBg==",
    ),
    (
        "DELETE",
        "api/v1/order",
        {"orderId": "111947544", "symbol": "SOL_USDC"},
        f"instruction=orderCancel&orderId=111947544&symbol=SOL_USDC&{TAIL}",
        "x+cqRMEbPgNbg6lLWPhZN5V/7L+NRswY5loX9v8EzYd2DBBQ8BAwMIdjoI1VNcV1iG5SJH/BQnujDM76AjD5DQ==",
    ),
    (
        "POST",
        "api/v1/orders",
        BATCH_E,
        "instruction=orderExecute&orderType=Limit&price=99&quantity=1&side=Bid&symbol=SOL_USDC"
        "&instruction=orderExecute&orderType=Limit&price=101&quantity=2&side=Ask&symbol=SOL_USDC"
        f"&{TAIL}",
        "Sr+WJsxCNU62bmx4uzzuLROugJBxVZOCTQbHU6v6HzacKP7pAT07GyGn6kjGVMYkRxP+EO6TkfGu8SvGJaDDBg==",
    ),
]
WS_SIGNATURE = (
    "mxIdZT3relFG10SYkdl4nIzm1LhhlW8oC6qF2MO03/JWvhFiRSeHidCVk8UGX+cyLu3UdxatFYnoPs+ngqkdBQ=="
)
EXAMPLE_IDS = ["a-create", "b-balance", "c-open-orders", "d-cancel", "e-batch"]


@pytest.mark.parametrize(
    ("method", "path", "params", "payload", "signature"), EXAMPLES, ids=EXAMPLE_IDS
)
def test_worked_examples_byte_for_byte(
    method: str, path: str, params: Params, payload: str, signature: str
) -> None:
    # Given a §2.7 request / When building its payload and signing / Then both match ccxt's bytes
    built = signing_payload(instruction_for(method, path), params, TS, WINDOW)
    assert built == payload
    assert sign(SECRET, built) == signature
    assert verify(
        API_KEY, signature, request_payloads(instruction_for(method, path), params, TS, WINDOW)
    )


@pytest.mark.parametrize(
    ("method", "path", "params", "payload", "signature"), EXAMPLES, ids=EXAMPLE_IDS
)
def test_signed_headers_reproduce_worked_examples(
    method: str, path: str, params: Params, payload: str, signature: str
) -> None:
    headers = signed_headers(
        API_KEY,
        SECRET,
        method,
        "/" + path,
        params,
        timestamp_ms=TS,
    )
    assert headers == {
        "X-API-Key": API_KEY,
        "X-Signature": signature,
        "X-Timestamp": "1700000000000",
        "X-Window": "5000",
    }


def test_ws_subscribe_signature_matches_example_f() -> None:
    assert signing_payload("subscribe", {}, TS, WINDOW) == f"instruction=subscribe&{TAIL}"
    assert ws_subscribe_signature(API_KEY, SECRET, timestamp_ms=TS) == [
        API_KEY,
        WS_SIGNATURE,
        "1700000000000",
        "5000",
    ]
    assert verify(API_KEY, WS_SIGNATURE, [f"instruction=subscribe&{TAIL}"])


def test_default_timestamp_is_now_in_ms() -> None:
    headers = signed_headers(API_KEY, SECRET, "GET", "api/v1/capital")
    assert len(headers["X-Timestamp"]) == 13 and headers["X-Window"] == "5000"
    payload = signing_payload("balanceQuery", {}, headers["X-Timestamp"], 5000)
    assert verify(API_KEY, headers["X-Signature"], [payload])


def test_matches_ccxt_sign_for_awkward_values() -> None:
    # ccxt is the reference client: cross-check values that need percent-encoding and a batch
    ccxt = pytest.importorskip("ccxt")
    ex = ccxt.backpack({"apiKey": API_KEY, "secret": SECRET})
    ex.nonce = lambda: TS
    cases: list[tuple[str, str, Params]] = [
        ("POST", "api/v1/order", {"symbol": "a b/c:d", "x": True, "n": 5, "é": "ü&="}),
        ("GET", "wapi/v1/history/fills", {"symbol": "SOL_USDC", "limit": 10}),
        ("POST", "api/v1/orders", [{"b": "2", "a": "x y"}, {"c": False}]),
        ("DELETE", "api/v1/strategies", {}),  # unlisted: empty instruction
    ]
    for method, path, params in cases:
        expected = ex.sign(path, ["private"], method, params)["headers"]["X-Signature"]
        assert (
            signed_headers(API_KEY, SECRET, method, path, params, timestamp_ms=TS)["X-Signature"]
            == expected
        )


@pytest.mark.parametrize(
    ("method", "path", "instruction"),
    [
        ("get", "/api/v1/capital", "balanceQuery"),
        ("GET", "api/v1/order", "orderQuery"),
        ("DELETE", "api/v1/orders", "orderCancelAll"),
        ("PATCH", "api/v1/account", "accountUpdate"),
        ("POST", "/wapi/v1/capital/withdrawals", "withdraw"),
        ("GET", "wapi/v1/capital/deposit/address", "depositAddressQuery"),
        ("GET", "api/v1/strategies", ""),  # unlisted: ccxt signs an empty instruction
        ("POST", "api/v1/capital", ""),
    ],
)
def test_instruction_for(method: str, path: str, instruction: str) -> None:
    assert instruction_for(method, path) == instruction


def test_instruction_table_uses_upper_case_methods_and_bare_paths() -> None:
    assert len(INSTRUCTIONS) == 16
    assert all(m.isupper() and not p.startswith("/") for m, p in INSTRUCTIONS)


def test_empty_instruction_payload() -> None:
    assert signing_payload("", {}, TS, WINDOW) == f"instruction=&{TAIL}"


@pytest.mark.parametrize(
    ("value", "text"), [(True, "true"), (False, "false"), (0, "0"), (-7, "-7"), ("1.5", "1.5")]
)
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize("value", [1.5, None, [1], {"a": 1}, b"x"])
def test_format_value_rejects_unsignable_types(value: object) -> None:
    with pytest.raises(SignatureError):
        format_value(value)
    with pytest.raises(SignatureError):
        request_payloads("orderExecute", {"price": value}, TS, WINDOW)


@pytest.mark.parametrize(
    ("value", "encoded"), [("a b", "a%20b"), ("SOL/USDC", "SOL%2FUSDC"), ("x:y", "x%3Ay")]
)
def test_plain_and_encoded_forms(value: str, encoded: str) -> None:
    # Given a value that needs percent-encoding / Then both forms are candidates, encoded first
    candidates = request_payloads("orderQueryAll", {"symbol": value}, TS, WINDOW)
    assert candidates == [
        f"instruction=orderQueryAll&symbol={encoded}&{TAIL}",
        f"instruction=orderQueryAll&symbol={value}&{TAIL}",
    ]
    # And a client that signed either form is accepted
    for payload in candidates:
        assert verify(API_KEY, sign(SECRET, payload), candidates)


def test_identical_forms_give_one_candidate() -> None:
    assert request_payloads("orderQueryAll", {"symbol": "SOL_USDC"}, TS, WINDOW) == [
        f"instruction=orderQueryAll&symbol=SOL_USDC&{TAIL}"
    ]


def test_batch_sorts_each_element_and_keeps_element_order() -> None:
    batch = [{"z": "1", "a": "2"}, {"m": "3"}, {}]
    assert signing_payload("orderExecute", batch, TS, WINDOW) == (
        "instruction=orderExecute&a=2&z=1&instruction=orderExecute&m=3&"
        f"instruction=orderExecute&&{TAIL}"
    )
    swapped = signing_payload("orderExecute", [batch[1], batch[0], batch[2]], TS, WINDOW)
    assert not verify(
        API_KEY, sign(SECRET, swapped), request_payloads("orderExecute", batch, TS, WINDOW)
    )


def test_empty_batch_cannot_be_signed() -> None:
    with pytest.raises(SignatureError):
        signing_payload("orderExecute", [], TS, WINDOW)


def test_verify_rejects_tampering_and_wrong_key() -> None:
    _, _, _, payload, signature = EXAMPLES[0]
    other_key, _ = generate_keypair()
    assert not verify(API_KEY, signature, [payload.replace("100.5", "100.6")])
    assert not verify(other_key, signature, [payload])
    assert not verify(API_KEY, signature, [])


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        ("not base64!", WS_SIGNATURE),
        (API_KEY, "not base64!"),
        (API_KEY[:-1], WS_SIGNATURE),  # bad padding
        (base64.b64encode(bytes(31)).decode(), WS_SIGNATURE),
        (base64.b64encode(bytes(33)).decode(), WS_SIGNATURE),
        (API_KEY, base64.b64encode(base64.b64decode(WS_SIGNATURE)[:63]).decode()),
        (API_KEY, base64.b64encode(base64.b64decode(WS_SIGNATURE) + b"\0").decode()),
        ("", ""),
        ("ключ", WS_SIGNATURE),
    ],
)
def test_verify_never_raises_on_malformed_input(key: str, signature: str) -> None:
    assert verify(key, signature, [f"instruction=subscribe&{TAIL}"]) is False


def test_decode_public_key() -> None:
    assert decode_public_key(API_KEY) == base64.b64decode(API_KEY)
    non_canonical = API_KEY[:-2] + "h="  # same 32 bytes, nonzero padding bits
    assert base64.b64decode(non_canonical) == base64.b64decode(API_KEY)
    for bad in [
        "",
        "not base64!",
        API_KEY[:-1],
        base64.b64encode(bytes(64)).decode(),
        non_canonical,
    ]:
        with pytest.raises(SignatureError):
            decode_public_key(bad)


def test_keypair_round_trip() -> None:
    public, secret = generate_keypair()
    assert len(decode_public_key(public)) == 32 and len(base64.b64decode(secret)) == 32
    assert public_key_of(secret) == public
    assert public_key_of(SECRET) == API_KEY
    assert verify(public, sign(secret, "hello"), ["hello"])


def test_64_byte_keypair_secret_uses_the_seed() -> None:
    keypair = base64.b64encode(base64.b64decode(SECRET) + base64.b64decode(API_KEY)).decode()
    assert sign(keypair, f"instruction=subscribe&{TAIL}") == WS_SIGNATURE
    assert public_key_of(keypair) == API_KEY


@pytest.mark.parametrize("secret", ["", "not base64!", base64.b64encode(bytes(31)).decode()])
def test_bad_secret_raises(secret: str) -> None:
    with pytest.raises(SignatureError):
        sign(secret, "x")


VALUES = st.one_of(st.text(alphabet=string.printable), st.integers(), st.booleans())


@given(
    params=st.dictionaries(st.text(alphabet=string.printable), VALUES, min_size=1, max_size=8),
    data=st.data(),
)
def test_property_sign_then_verify_and_any_changed_value_fails(
    params: dict[str, object], data: st.DataObject
) -> None:
    signature = sign(SECRET, signing_payload("orderExecute", params, TS, WINDOW))
    assert verify(API_KEY, signature, request_payloads("orderExecute", params, TS, WINDOW))

    key = data.draw(st.sampled_from(sorted(params)))
    new = data.draw(VALUES)
    old_text = format_value(params[key])
    # A change must change the signed text (True and "true" sign alike), and must not make the
    # plain form spell the old encoded one: the §2.4 fallback accepts "a%20b" signed as "a b".
    assume(format_value(new) not in (old_text, quote(old_text, safe="")))
    changed = {**params, key: new}
    assert not verify(API_KEY, signature, request_payloads("orderExecute", changed, TS, WINDOW))
