"""The admin client and command line (``cloudex/admin_client.py``) against the whole running API
(local gateway, API function, engine, persister), and their SigV4 signing, checked offline
against an independent implementation of the algorithm."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from cloudex import signing
from cloudex.admin_client import AdminClient, AdminError
from functions.api.runtime import Runtime
from tests.integration.api_support import Trader

REPO = Path(__file__).resolve().parents[2]


class RecordingSession(requests.Session):
    """Sends as usual and keeps every request as it left this process."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)


@pytest.fixture
def announced() -> list[str]:
    return []


@pytest.fixture
def admin(api_stack: Any, announced: list[str]) -> Iterator[AdminClient]:
    session = RecordingSession()
    with AdminClient(
        api_stack.url, token=api_stack.admin_token, session=session, announce=announced.append
    ) as client:
        yield client
    session.close()


def _wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def _trader(admin: AdminClient, scope: str = "trade", funds: str | None = None) -> Trader:
    account = admin.create_account(f"test-{scope}")["accountId"]
    api_key, secret = admin.issue_key(account, scope)
    if funds is not None:
        admin.deposit(account, "USDC", funds, "test funding", idempotency_key=uuid.uuid4().hex)
    return Trader(account, api_key, secret)


def _key() -> str:
    return f"test-{uuid.uuid4().hex}"


# -- ACCOUNTS AND KEYS ------------------------------------------------------------------------


def test_issued_key_signs_private_requests_and_its_secret_never_leaves(
    api_stack: Any, admin: AdminClient
) -> None:
    created = admin.create_account("alice")
    account = created["accountId"]
    assert created["label"] == "alice" and account >= 1
    api_key, secret = admin.issue_key(account, "trade", "alice's bot")
    assert signing.public_key_of(secret) == api_key

    # Only the public half went out: no body, URL or header ever carried the secret.
    sent = admin.session.sent
    assert sent and all(
        secret not in (request.body or b"").decode() + request.url + str(request.headers)
        for request in sent
    )
    shown = admin.account(account)
    assert shown["accountId"] == account and shown["label"] == "alice"
    assert [(k["publicKey"], k["scope"], k["label"], k["revokedAt"]) for k in shown["keys"]] == [
        (api_key, "trade", "alice's bot", None)
    ]

    trader = Trader(account, api_key, secret)
    capital = api_stack.signed(trader, "GET", "/api/v1/capital")
    assert capital.status_code == 200, capital.text
    admin.deposit(account, "USDC", "12.5", "first funding", idempotency_key=_key())
    capital = api_stack.signed(trader, "GET", "/api/v1/capital")
    assert capital.json()["USDC"]["available"] == "12.500000"

    # A read-only key reads, and cannot trade.
    read_key, read_secret = admin.issue_key(account, "read")
    reader = Trader(account, read_key, read_secret)
    who = api_stack.signed(reader, "GET", "/api/v1/account")
    assert who.status_code == 200 and who.json()["apiKeyScope"] == "read"
    order = {
        "symbol": "SOL_USDC",
        "side": "Bid",
        "orderType": "Limit",
        "price": "1",
        "quantity": "1",
    }
    refused = api_stack.signed(reader, "POST", "/api/v1/order", order)
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"


def test_account_and_key_errors(api_stack: Any, admin: AdminClient) -> None:
    with pytest.raises(AdminError) as missing:
        admin.account(2**40)
    assert (missing.value.status, missing.value.code) == (404, "RESOURCE_NOT_FOUND")

    account = admin.create_account()["accountId"]
    api_key, _ = admin.issue_key(account, "read")
    with pytest.raises(AdminError) as again:
        admin.register_key(account, api_key, "trade")
    assert again.value.status == 409

    with pytest.raises(AdminError) as nobody:
        admin.issue_key(2**40, "trade")
    assert nobody.value.code == "RESOURCE_NOT_FOUND"

    # A wrong token never reaches the function: the gateway refuses it, as AWS refuses an
    # unsigned or badly signed request.
    intruder = AdminClient(api_stack.url, token="not-the-token")
    with intruder, pytest.raises(AdminError) as refused:
        intruder.create_account("mallory")
    assert refused.value.status == 403
    assert refused.value.code == "MissingAuthenticationTokenException"


def test_revoked_key_is_refused_within_the_key_cache_ttl(
    api_stack: Any, admin: AdminClient
) -> None:
    trader = _trader(admin)
    assert api_stack.signed(trader, "GET", "/api/v1/capital").status_code == 200

    # Another API container, which looked the key up just before the revocation.
    other = Runtime(api_stack.settings)
    looked_up = time.monotonic()
    assert other.api_key(trader.api_key) is not None

    ttl_s = api_stack.settings.key_cache_ttl_s
    revoked = admin.revoke_key(trader.api_key)
    started = time.monotonic()
    assert revoked["accountId"] == trader.account
    assert revoked["effectiveWithinSeconds"] == ttl_s
    assert other.api_key(trader.api_key) is not None  # still cached there: the bound is real

    def refused() -> bool:
        response = api_stack.signed(trader, "GET", "/api/v1/capital")
        if response.status_code == 200:
            return False
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "UNAUTHORIZED"
        return True

    # The container that served the revocation forgot the key at once...
    _wait_for(refused, ttl_s + 1.0, "revocation")
    assert time.monotonic() - started <= ttl_s + 1.0
    # ...and any other refuses it once its cached lookup is KEY_CACHE_TTL_S old: the bound.
    try:
        _wait_for(lambda: other.api_key(trader.api_key) is None, ttl_s + 1.0, "other container")
        assert time.monotonic() - looked_up <= ttl_s + 0.5
    finally:
        other.close()

    # Revoking again is harmless and keeps the first time; the account shows it.
    assert admin.revoke_key(trader.api_key)["revokedAt"] == revoked["revokedAt"]
    (key,) = admin.account(trader.account)["keys"]
    assert key["revokedAt"] == revoked["revokedAt"]
    # A revoked key stays taken: it cannot come back, for this account or another.
    with pytest.raises(AdminError) as reused:
        admin.register_key(trader.account, trader.api_key, "trade")
    assert reused.value.status == 409
    unknown, _ = signing.generate_keypair()
    with pytest.raises(AdminError) as missing:
        admin.revoke_key(unknown)
    assert missing.value.code == "RESOURCE_NOT_FOUND"


# -- MONEY ------------------------------------------------------------------------------------


def _ledger(api_stack: Any, account: int) -> list[tuple[str, str, str]]:
    with psycopg.connect(api_stack.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT reason, reference, available_delta::text FROM balance_ledger "
            "WHERE account = %s AND asset = 'USDC' ORDER BY seq",
            (account,),
        ).fetchall()
    return [(str(reason), str(reference), str(delta)) for reason, reference, delta in rows]


def test_deposits_are_idempotent_and_withdrawals_carry_their_reason(
    api_stack: Any, admin: AdminClient, announced: list[str]
) -> None:
    trader = _trader(admin, "read")
    account = trader.account
    key = _key()
    first = admin.deposit(account, "USDC", "100.5", "wire 42", idempotency_key=key)
    assert first["duplicate"] is False and first["available"] == "100.500000"
    assert first["reason"] == "wire 42" and first["idempotencyKey"] == key
    second = admin.deposit(account, "USDC", "100.5", "wire 42", idempotency_key=key)
    assert second["duplicate"] is True and second["commandId"] == first["commandId"]
    assert second["available"] == "100.500000"
    capital = api_stack.signed(trader, "GET", "/api/v1/capital").json()
    assert capital["USDC"]["available"] == "100.500000"

    # Without a key, a new one is made and announced before the request goes out.
    assert not announced
    bonus = admin.deposit(account, "USDC", "1", "bonus")
    assert len(announced) == 1 and bonus["idempotencyKey"] in announced[0]
    assert bonus["available"] == "101.500000"

    paid = admin.withdraw(account, "USDC", "30", "payout to bank", idempotency_key=_key())
    assert paid["duplicate"] is False and paid["available"] == "71.500000"
    too_much_key = _key()
    with pytest.raises(AdminError) as refused:
        admin.withdraw(account, "USDC", "1000", "too much", idempotency_key=too_much_key)
    assert (refused.value.status, refused.value.code) == (400, "INSUFFICIENT_FUNDS")
    assert refused.value.idempotency_key == too_much_key
    with pytest.raises(AdminError) as asset:
        admin.deposit(account, "DOGE", "1", "no such asset", idempotency_key=_key())
    assert asset.value.code == "INVALID_ASSET"
    with pytest.raises(AdminError) as precision:
        admin.deposit(account, "USDC", "0.0000001", "below an atom", idempotency_key=_key())
    assert precision.value.code == "INVALID_QUANTITY"
    with pytest.raises(AdminError) as nobody:
        admin.deposit(2**40, "USDC", "1", "nobody", idempotency_key=_key())
    assert nobody.value.code == "RESOURCE_NOT_FOUND"
    with pytest.raises(TypeError):
        admin.deposit(account, "USDC", 0.1, "a float")  # type: ignore[arg-type]

    # The journal keeps every change with its reason, once (the persister projects it).
    expected = [
        ("deposit", "wire 42", "100500000"),
        ("deposit", "bonus", "1000000"),
        ("withdrawal", "payout to bank", "-30000000"),
    ]
    _wait_for(lambda: _ledger(api_stack, account) == expected, 10.0, "ledger")


def test_an_idempotency_key_is_one_operation_for_good(api_stack: Any, admin: AdminClient) -> None:
    trader = _trader(admin, "read")
    key = _key()
    first = admin.deposit(trader.account, "USDC", "5", "first", idempotency_key=key)
    # Long after the engine's caches forgot the command, the key still answers the first time.
    api_stack.engines.redis.delete(f"cx:result:{first['commandId']}")
    again = admin.deposit(trader.account, "USDC", "5", "first", idempotency_key=key)
    assert again["duplicate"] is True and again["available"] == first["available"] == "5.000000"
    # The same key for anything else is refused, and moves nothing.
    for other in (
        lambda: admin.deposit(trader.account, "USDC", "50", "first", idempotency_key=key),
        lambda: admin.withdraw(trader.account, "USDC", "5", "first", idempotency_key=key),
        lambda: admin.set_market_state("SOL_USDC", "Open", idempotency_key=key),
    ):
        with pytest.raises(AdminError) as reused:
            other()
        assert (reused.value.status, reused.value.code) == (409, "INVALID_CLIENT_REQUEST")
    capital = api_stack.signed(trader, "GET", "/api/v1/capital").json()
    assert capital["USDC"]["available"] == "5.000000"


# -- MARKETS ----------------------------------------------------------------------------------


def test_market_state_and_fees(api_stack: Any, admin: AdminClient) -> None:
    symbol = "ETH_USDC"  # no other test here trades it
    trader = _trader(admin, funds="1000")
    order = {"symbol": symbol, "side": "Bid", "orderType": "Limit", "price": "100"}
    resting = api_stack.signed(trader, "POST", "/api/v1/order", {**order, "quantity": "1"})
    assert resting.status_code == 200, resting.text

    closed = admin.set_market_state(symbol, "Closed", idempotency_key=_key())
    assert closed["state"] == "Closed" and closed["duplicate"] is False
    refused = api_stack.signed(trader, "POST", "/api/v1/order", {**order, "quantity": "2"})
    assert refused.status_code == 400 and refused.json()["code"] == "TRADING_PAUSED"
    # Closing expired the resting order and released its funds.
    assert api_stack.signed(trader, "GET", "/api/v1/orders", {"symbol": symbol}).json() == []
    usdc = api_stack.signed(trader, "GET", "/api/v1/capital").json()["USDC"]
    assert (usdc["available"], usdc["locked"]) == ("1000.000000", "0.000000")

    def public_state() -> str:
        response = api_stack.session.get(
            api_stack.url + "/api/v1/market", params={"symbol": symbol}, timeout=10
        )
        return str(response.json()["orderBookState"])

    _wait_for(lambda: public_state() == "Closed", 5.0, "public state")

    key = _key()
    opened = admin.set_market_state(symbol, "Open", idempotency_key=key)
    assert admin.set_market_state(symbol, "Open", idempotency_key=key) == {
        **opened,
        "duplicate": True,
    }
    placed = api_stack.signed(trader, "POST", "/api/v1/order", {**order, "quantity": "3"})
    assert placed.status_code == 200 and placed.json()["status"] == "New", placed.text
    _wait_for(lambda: public_state() == "Open", 5.0, "public state")

    fees = admin.set_market_fees(symbol, 7, 11)
    assert (fees["makerFeeBps"], fees["takerFeeBps"]) == (7, 11)

    def account_fees() -> Any:
        return api_stack.signed(trader, "GET", "/api/v1/account").json()["fees"][symbol]

    _wait_for(lambda: account_fees() == {"makerFeeBps": 7, "takerFeeBps": 11}, 5.0, "fees visible")

    with pytest.raises(AdminError) as unknown:
        admin.set_market_state("NOPE_USDC", "Open")
    assert unknown.value.code == "INVALID_MARKET"
    with pytest.raises(AdminError) as too_high:
        admin.set_market_fees(symbol, 7, 5_000)
    assert (too_high.value.status, too_high.value.code) == (400, "INVALID_CLIENT_REQUEST")


# -- THE COMMAND LINE -------------------------------------------------------------------------


def _cli(api_stack: Any, *args: str, token: bool = True) -> tuple[int, Any, str]:
    env = {**os.environ, "CLOUDEX_API_URL": api_stack.url}
    env.pop("CLOUDEX_ADMIN_TOKEN", None)
    if token:
        env["CLOUDEX_ADMIN_TOKEN"] = api_stack.admin_token
    done = subprocess.run(
        [sys.executable, "-m", "cloudex.admin_client", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, output, done.stderr


def test_command_line(api_stack: Any) -> None:
    code, created, _ = _cli(api_stack, "accounts", "create", "--label", "from the cli")
    assert code == 0 and created["label"] == "from the cli"
    account = str(created["accountId"])

    code, issued, stderr = _cli(api_stack, "keys", "issue", account, "--scope", "trade")
    assert code == 0, stderr
    assert signing.public_key_of(issued["secret"]) == issued["apiKey"]
    assert "shown this once" in stderr
    trader = Trader(int(account), issued["apiKey"], issued["secret"])

    code, deposited, stderr = _cli(api_stack, "deposit", account, "USDC", "25", "--reason", "cli")
    assert code == 0 and deposited["available"] == "25.000000", stderr
    key = deposited["idempotencyKey"]
    assert key in stderr  # printed, so an operator can retry with it
    code, again, _ = _cli(
        api_stack, "deposit", account, "USDC", "25", "--reason", "cli", "--idempotency-key", key
    )
    assert code == 0 and again["duplicate"] is True and again["available"] == "25.000000"
    capital = api_stack.signed(trader, "GET", "/api/v1/capital").json()
    assert capital["USDC"]["available"] == "25.000000"

    code, output, stderr = _cli(api_stack, "withdraw", account, "USDC", "1000", "--reason", "x")
    assert (code, output) == (1, None) and "INSUFFICIENT_FUNDS" in stderr

    code, shown, _ = _cli(api_stack, "accounts", "show", account)
    assert code == 0 and [k["publicKey"] for k in shown["keys"]] == [issued["apiKey"]]

    code, fees, _ = _cli(api_stack, "markets", "fees", "BTC_USDC", "--maker", "2", "--taker", "5")
    assert code == 0 and (fees["makerFeeBps"], fees["takerFeeBps"]) == (2, 5)

    code, revoked, stderr = _cli(api_stack, "keys", "revoke", issued["apiKey"])
    assert code == 0 and revoked["revokedAt"] and "within" in stderr

    # Usage errors: 2, nothing sent.
    assert _cli(api_stack, "keys", "issue", account, "--scope", "admin")[0] == 2
    assert _cli(api_stack, "deposit", account, "USDC", "1e3", "--reason", "x")[0] == 2
    assert _cli(api_stack, "keys", "register", account, "not-a-key", "--scope", "read")[0] == 2
    assert _cli(api_stack)[0] == 2

    # No token: SigV4 mode, which the local gateway does not accept (only IAM could).
    code, output, stderr = _cli(
        api_stack, "--aws-region", "us-east-1", "accounts", "show", account, token=False
    )
    assert (code, output) == (1, None)
    assert "MissingAuthenticationTokenException" in stderr


# -- SIGV4, OFFLINE ---------------------------------------------------------------------------

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-example"


class FakeGateway(requests.adapters.BaseAdapter):
    """Answers every request with ``status`` and ``body``, and keeps what was sent."""

    def __init__(self, status: int = 200, body: Any = None, headers: Any = None) -> None:
        super().__init__()
        self.status = status
        self.body = {"ok": True} if body is None else body
        self.headers = headers or {}
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps(self.body).encode()
        response.headers.update({"Content-Type": "application/json", **self.headers})
        response.request = request
        response.url = str(request.url)
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "CLOUDEX_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _check_sigv4(request: requests.PreparedRequest, region: str) -> None:
    """Recompute the signature from what was sent (SigV4, written out independently)."""
    authorization = request.headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 ")
    fields = dict(
        part.strip().split("=", 1)
        for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
    )
    access_key, scope = fields["Credential"].split("/", 1)
    date, scope_region, service, terminator = scope.split("/")
    assert (access_key, scope_region, service, terminator) == (
        ACCESS_KEY,
        region,
        "execute-api",
        "aws4_request",
    )
    assert fields["Credential"].endswith(f"/{region}/execute-api/aws4_request")
    amz_date = request.headers["X-Amz-Date"]
    assert amz_date.startswith(date)
    assert request.headers["X-Amz-Security-Token"] == SESSION_TOKEN

    url = urlsplit(str(request.url))
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers.setdefault("host", url.netloc)  # urllib3 sends it from the URL
    signed = fields["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token"} <= set(signed)
    body = request.body or b""
    body = body.encode() if isinstance(body, str) else body
    canonical = "\n".join(
        [
            str(request.method),
            url.path,
            url.query,
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            fields["SignedHeaders"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{SECRET_KEY}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    assert hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == fields["Signature"]


@pytest.mark.usefixtures("aws_credentials")
def test_sigv4_signs_for_execute_api_without_a_network() -> None:
    gateway = FakeGateway(body={"symbol": "SOL_USDC", "duplicate": False})
    session = requests.Session()
    session.mount("https://", gateway)
    url = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"
    client = AdminClient(url, session=session)
    assert client.mode == "sigv4"

    answer = client.set_market_fees("SOL_USDC", 3, 9, idempotency_key="fees-1")
    assert answer == {"symbol": "SOL_USDC", "duplicate": False, "idempotencyKey": "fees-1"}
    client.account(7)
    posted, got = gateway.sent
    assert posted.url == url + "/admin/v1/markets/SOL_USDC/fees"
    assert json.loads(posted.body or b"") == {
        "makerFeeBps": 3,
        "takerFeeBps": 9,
        "idempotencyKey": "fees-1",
    }
    _check_sigv4(posted, "eu-west-1")  # the region from the execute-api host name
    assert got.method == "GET" and got.body is None
    _check_sigv4(got, "eu-west-1")

    # A custom domain says no region: it is given (or comes from the environment).
    custom = AdminClient("https://api.example.com", aws_region="ap-south-1", session=session)
    custom.create_account("x")
    _check_sigv4(gateway.sent[-1], "ap-south-1")

    # The bearer token, when there is one, is all that is sent.
    bearer = AdminClient("https://api.example.com", token="t0ken", session=session)
    assert bearer.mode == "bearer"
    bearer.create_account()
    assert gateway.sent[-1].headers["Authorization"] == "Bearer t0ken"
    assert "X-Amz-Date" not in gateway.sent[-1].headers


@pytest.mark.usefixtures("aws_credentials")
def test_gateway_refusals_become_admin_errors() -> None:
    session = requests.Session()
    session.mount(
        "https://",
        FakeGateway(
            403,
            {"message": "User: arn:aws:iam::1:user/x is not authorized"},
            {"x-amzn-ErrorType": "AccessDeniedException:http://internal.amazon.com/"},
        ),
    )
    client = AdminClient("https://a1.execute-api.us-east-2.amazonaws.com/prod", session=session)
    with pytest.raises(AdminError) as refused:
        client.revoke_key("x")
    assert (refused.value.status, refused.value.code) == (403, "AccessDeniedException")
    assert "not authorized" in refused.value.message
