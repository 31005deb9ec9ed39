"""The admin API's client (:class:`AdminClient`) and its command line::

    python -m cloudex.admin_client --url https://... accounts create --label alice

Two ways to be authorised, as the two gateways want it (``docs/api-admin.md``):

- **AWS**: API Gateway authorises ``/admin/...`` with IAM, so every request is signed with
  SigV4 for the service ``execute-api``, with credentials from botocore's usual chain
  (environment, profile, SSO, instance or task role). The caller needs
  ``execute-api:Invoke`` on the admin resource paths.
- **Local gateway** (``localgw.rest``): ``Authorization: Bearer <CLOUDEX_ADMIN_TOKEN>``. The
  command line reads the token from that environment variable only, never from an argument,
  so it stays out of ``ps`` and shell history.

API keys are Ed25519 key pairs made here, on the operator's machine: only the public key is
sent; the secret is handed to the caller once and exists nowhere else. Money and market
changes are engine commands whose id derives from an idempotency key: the same key never
deposits twice, so a call whose outcome is unknown (a timeout, a dropped connection) is retried
with the key it used. When none is given a fresh one is made and written to stderr before the
request is sent, so the operator has it whatever happens next.
"""

from __future__ import annotations

import argparse
import decimal
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from cloudex import signing

__all__ = [
    "AdminError",
    "AdminConfigError",
    "AdminClient",
    "SCOPES",
    "MARKET_STATES",
    "new_idempotency_key",
    "build_parser",
    "main",
]

# API Gateway cuts an integration at 29 s; the API itself answers TIMEOUT before that.
DEFAULT_TIMEOUT_S = 35.0
SCOPES = ("read", "trade")
MARKET_STATES = ("Open", "PostOnly", "CancelOnly", "Closed")
SIGV4_SERVICE = "execute-api"
# What the API accepts as an idempotency key (functions/api/models.py).
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
# https://{api-id}.execute-api.{region}.amazonaws.com[.cn]/{stage}
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")

Amount = str | int | decimal.Decimal


class AdminError(Exception):
    """The API (or the gateway in front of it) refused a request.

    ``code`` is the API's error code (``INSUFFICIENT_FUNDS``, ``RESOURCE_NOT_FOUND``...); for
    a refusal by API Gateway itself, which has no code, its ``x-amzn-ErrorType``
    (``MissingAuthenticationTokenException``, ``AccessDeniedException``...), else
    ``HTTP_<status>``. ``idempotency_key`` is the key a money or market call used: retry
    with it.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.idempotency_key = idempotency_key


class AdminConfigError(ValueError):
    """The client cannot be set up: no region or no credentials for SigV4, a bad URL."""


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _amount(value: Amount) -> str:
    # The API takes decimal strings: a float cannot say 0.1, so it is refused here too.
    if isinstance(value, bool) or not isinstance(value, str | int | decimal.Decimal):
        raise TypeError(f"an amount is a decimal string, an int or a Decimal, not {value!r}")
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


class _SigV4:
    """Signs requests for API Gateway's IAM authorisation (botocore does the signing)."""

    def __init__(self, credentials: Any, region: str) -> None:
        self.credentials = credentials
        self.region = region

    @classmethod
    def resolve(cls, base_url: str, region: str | None) -> _SigV4:
        import botocore.session  # here: the bearer-token mode does without botocore

        session = botocore.session.Session()
        if not region:
            match = _EXECUTE_API_HOST.match(urlsplit(base_url).hostname or "")
            region = (
                (match.group(1) if match else None)
                or os.environ.get("AWS_REGION")
                or session.get_config_variable("region")
            )
        if not region:
            raise AdminConfigError(
                "SigV4 needs the API's region: --aws-region, an execute-api URL, AWS_REGION "
                "or a profile's region (or set CLOUDEX_ADMIN_TOKEN for a local gateway)"
            )
        credentials = session.get_credentials()
        if credentials is None:
            raise AdminConfigError(
                "No AWS credentials found for SigV4 (and CLOUDEX_ADMIN_TOKEN is not set)"
            )
        return cls(credentials, str(region))

    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``Authorization`` and, for temporary credentials,
        ``X-Amz-Security-Token``: to be sent with exactly this method, URL and body."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        # Frozen: refreshable credentials (SSO, roles) must not change halfway through.
        frozen = self.credentials.get_frozen_credentials()
        SigV4Auth(frozen, SIGV4_SERVICE, self.region).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


class AdminClient:
    """The admin API at ``base_url`` (the gateway's URL, with its stage path if it has one).

    With ``token``, requests carry ``Authorization: Bearer <token>`` (the local gateway);
    without, they are SigV4-signed for ``execute-api`` in ``aws_region`` (default: from an
    ``execute-api`` URL, ``AWS_REGION`` or the profile). ``session`` is the
    :class:`requests.Session` to send with (default: one of its own, closed by
    :meth:`close`). ``announce`` receives the line naming a generated idempotency key
    (default: stderr).

    Every method returns the API's JSON answer, or raises :class:`AdminError`; network
    failures are ``requests`` exceptions (the outcome is then unknown: retry money and market
    calls with the same idempotency key).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        aws_region: str | None = None,
        session: Any = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AdminConfigError(f"Not an http(s) URL: {base_url!r}")
        if parts.query or parts.fragment:
            raise AdminConfigError(f"The API URL takes no query or fragment: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token or None
        self._signer = None if self._token else _SigV4.resolve(self.base_url, aws_region)
        self._own_session = session is None
        self.session: Any = requests.Session() if session is None else session
        self._announce = announce or _stderr

    @property
    def mode(self) -> str:
        """``"bearer"`` or ``"sigv4"``."""
        return "bearer" if self._token else "sigv4"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- ACCOUNTS AND KEYS --------------------------------------------------------------------

    def create_account(self, label: str = "") -> dict[str, Any]:
        """A new account: ``{accountId, label, createdAt}``. Not idempotent: a retry after an
        unknown outcome may make a second account (look for the label first)."""
        return self._request("POST", "/admin/v1/accounts", {"label": label})

    def account(self, account: int) -> dict[str, Any]:
        """The account with its keys (public halves, scopes, revocation times)."""
        return self._request("GET", f"/admin/v1/accounts/{_account_id(account)}")

    def register_key(
        self, account: int, public_key: str, scope: str, label: str = ""
    ) -> dict[str, Any]:
        """Register a public key made elsewhere (its owner keeps the secret)."""
        signing.decode_public_key(public_key)  # SignatureError before anything is sent
        return self._request(
            "POST",
            f"/admin/v1/accounts/{_account_id(account)}/keys",
            {"publicKey": public_key, "scope": _scope(scope), "label": label},
        )

    def issue_key(self, account: int, scope: str, label: str = "") -> tuple[str, str]:
        """Make an Ed25519 key pair here and register its public half: ``(api_key, secret)``.

        The secret is never sent and never stored: it exists only in the returned tuple.
        """
        api_key, secret = signing.generate_keypair()
        self.register_key(account, api_key, scope, label)
        return api_key, secret

    def revoke_key(self, public_key: str) -> dict[str, Any]:
        """Revoke a key: refused everywhere within ``effectiveWithinSeconds`` of the answer.
        Revoking a revoked key is harmless (it keeps its first ``revokedAt``)."""
        return self._request("POST", "/admin/v1/keys/revoke", {"publicKey": public_key})

    # -- MONEY --------------------------------------------------------------------------------

    def deposit(
        self,
        account: int,
        asset: str,
        amount: Amount,
        reason: str,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Credit ``amount`` of ``asset`` (a decimal string, ``"100.5"``) with ``reason``."""
        return self._transfer("/admin/v1/deposits", account, asset, amount, reason, idempotency_key)

    def withdraw(
        self,
        account: int,
        asset: str,
        amount: Amount,
        reason: str,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Debit ``amount`` of ``asset`` from the available balance (``INSUFFICIENT_FUNDS``
        when it holds less: funds locked in open orders cannot be withdrawn)."""
        return self._transfer(
            "/admin/v1/withdrawals", account, asset, amount, reason, idempotency_key
        )

    def _transfer(
        self,
        path: str,
        account: int,
        asset: str,
        amount: Amount,
        reason: str,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        body = {
            "account": _account_id(account),
            "asset": asset,
            "amount": _amount(amount),
            "reason": reason,
        }
        what = "deposit" if path.endswith("deposits") else "withdrawal"
        return self._idempotent(path, body, idempotency_key, what)

    # -- MARKETS ------------------------------------------------------------------------------

    def set_market_state(
        self, symbol: str, state: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``Open``, ``PostOnly``, ``CancelOnly`` or ``Closed`` (closing expires every
        resting order of the market)."""
        if state not in MARKET_STATES:
            raise ValueError(f"state must be one of {', '.join(MARKET_STATES)}")
        return self._idempotent(
            f"/admin/v1/markets/{_segment(symbol)}/state",
            {"state": state},
            idempotency_key,
            f"{symbol} state",
        )

    def set_market_fees(
        self, symbol: str, maker_bps: int, taker_bps: int, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Maker and taker fees in basis points (0 to 1000), for orders matched from now on."""
        return self._idempotent(
            f"/admin/v1/markets/{_segment(symbol)}/fees",
            {"makerFeeBps": maker_bps, "takerFeeBps": taker_bps},
            idempotency_key,
            f"{symbol} fees",
        )

    # -- HTTP ---------------------------------------------------------------------------------

    def _idempotent(
        self, path: str, body: dict[str, Any], idempotency_key: str | None, what: str
    ) -> dict[str, Any]:
        if idempotency_key is None:
            idempotency_key = new_idempotency_key()
            # Before sending: if the answer never comes, this is how to retry safely.
            self._announce(
                f"{what}: idempotency key {idempotency_key} (to retry, pass the same key)"
            )
        elif not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise ValueError("an idempotency key is 1 to 100 of A-Z a-z 0-9 _ . : -")
        try:
            answer = self._request("POST", path, {**body, "idempotencyKey": idempotency_key})
        except AdminError as error:
            error.idempotency_key = idempotency_key
            raise
        return {**answer, "idempotencyKey": idempotency_key}

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.base_url + path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._signer is None:
            headers["Authorization"] = f"Bearer {self._token}"
        else:
            headers = self._signer.headers(method, url, data or b"", headers)
        response = self.session.request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=self.timeout_s,
            # A redirect would resend the credential elsewhere, or break the signature.
            allow_redirects=False,
        )
        return _answer(response)


def _answer(response: Any) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    status = int(response.status_code)
    if 200 <= status < 300 and isinstance(payload, dict):
        return payload
    fields = payload if isinstance(payload, dict) else {}
    code = fields.get("code")
    if not isinstance(code, str) or not code:
        # API Gateway's own refusals have no code: its error type says what happened.
        error_type = str(response.headers.get("x-amzn-ErrorType") or "").partition(":")[0]
        code = error_type or ("INVALID_RESPONSE" if 200 <= status < 300 else f"HTTP_{status}")
    message = fields.get("message") or fields.get("Message")
    if not isinstance(message, str) or not message:
        message = (response.text or "").strip()[:500] or str(response.reason or "no body")
    raise AdminError(status, code, message, body=payload)


def _account_id(account: int) -> int:
    if isinstance(account, bool) or not isinstance(account, int) or account < 1:
        raise ValueError(f"an account id is a positive integer, not {account!r}")
    return account


def _scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    return scope


def _segment(text: str) -> str:
    return quote(text, safe="")


# -- COMMAND LINE -----------------------------------------------------------------------------

_EPILOG = """\
authorisation: with CLOUDEX_ADMIN_TOKEN set (local gateway), 'Authorization: Bearer <token>';
otherwise SigV4 for execute-api with your AWS credentials (API Gateway's IAM authorisation).
The token is read from the environment only, never from an argument.

exit status: 0 done (JSON on stdout), 1 refused by the API or not answered (reason on
stderr), 2 usage or configuration error.
"""

Runner = Callable[[AdminClient, argparse.Namespace], Any]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _bps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 1_000:
        raise argparse.ArgumentTypeError(f"basis points are 0 to 1000: {text!r}")
    return value


def _idempotency_key(text: str) -> str:
    if not _IDEMPOTENCY_KEY.match(text):
        raise argparse.ArgumentTypeError("1 to 100 of A-Z a-z 0-9 _ . : -")
    return text


def _decimal(text: str) -> str:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"not a plain decimal: {text!r}")
    return text


def _issue(client: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    api_key, secret = client.issue_key(args.account, args.scope, args.label)
    _stderr(
        "warning: the secret is shown this once and kept nowhere else (Cloudex stores only the "
        "public key): save it now; if it is lost, issue a new key and revoke this one"
    )
    return {
        "accountId": args.account,
        "apiKey": api_key,
        "secret": secret,
        "scope": args.scope,
        "label": args.label,
    }


def _revoke(client: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    answer = client.revoke_key(args.public_key)
    _stderr(
        f"revoked: refused everywhere within {answer.get('effectiveWithinSeconds')} s "
        "(each API container's key cache)"
    )
    return answer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloudex.admin_client",
        description="Cloudex admin: accounts, API keys, deposits and withdrawals, markets.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CLOUDEX_API_URL"),
        help="the API's base URL, with its stage if any (default: $CLOUDEX_API_URL)",
    )
    parser.add_argument(
        "--aws-region",
        help="SigV4 mode (no CLOUDEX_ADMIN_TOKEN): the API's region (default: from an "
        "execute-api URL, $AWS_REGION or the profile)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for an answer"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, run: Runner, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    def idempotent(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--idempotency-key",
            type=_idempotency_key,
            help="retry a call whose outcome is unknown with the key it used (default: a new "
            "one, printed on stderr)",
        )

    # accounts
    accounts = commands.add_parser("accounts", help="create and show accounts")
    account_commands = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = command(
        account_commands,
        "create",
        lambda c, a: c.create_account(a.label),
        "create an account (not idempotent: a retry may create a second one)",
    )
    sub.add_argument("--label", default="", help="a name for people (up to 200 characters)")
    sub = command(
        account_commands, "show", lambda c, a: c.account(a.account), "an account and its keys"
    )
    sub.add_argument("account", type=_positive_int, metavar="ID")

    # keys
    keys = commands.add_parser("keys", help="issue, register and revoke API keys")
    key_commands = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = command(
        key_commands,
        "issue",
        _issue,
        "make an Ed25519 key pair here, register its public key, print both (the secret once)",
    )
    sub.add_argument("account", type=_positive_int, metavar="ACCOUNT")
    sub.add_argument("--scope", choices=SCOPES, required=True)
    sub.add_argument("--label", default="")
    sub = command(
        key_commands,
        "register",
        lambda c, a: c.register_key(a.account, a.public_key, a.scope, a.label),
        "register a public key whose secret its owner made and keeps",
    )
    sub.add_argument("account", type=_positive_int, metavar="ACCOUNT")
    sub.add_argument("public_key", metavar="PUBLIC_KEY", help="base64 Ed25519 public key")
    sub.add_argument("--scope", choices=SCOPES, required=True)
    sub.add_argument("--label", default="")
    sub = command(key_commands, "revoke", _revoke, "revoke a key")
    sub.add_argument("public_key", metavar="PUBLIC_KEY")

    # money
    def deposit(client: AdminClient, args: argparse.Namespace) -> Any:
        return client.deposit(
            args.account, args.asset, args.amount, args.reason, args.idempotency_key
        )

    def withdraw(client: AdminClient, args: argparse.Namespace) -> Any:
        return client.withdraw(
            args.account, args.asset, args.amount, args.reason, args.idempotency_key
        )

    for name, run, help in (
        ("deposit", deposit, "credit an account (an engine command)"),
        ("withdraw", withdraw, "debit an account's available balance"),
    ):
        sub = command(commands, name, run, help)
        sub.add_argument("account", type=_positive_int, metavar="ACCOUNT")
        sub.add_argument("asset", metavar="ASSET", help="e.g. USDC")
        sub.add_argument("amount", type=_decimal, metavar="AMOUNT", help='e.g. "100.5"')
        sub.add_argument("--reason", required=True, help="why (kept in the ledger)")
        idempotent(sub)

    # markets
    markets = commands.add_parser("markets", help="market state and fees")
    market_commands = markets.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub = command(
        market_commands,
        "state",
        lambda c, a: c.set_market_state(a.symbol, a.state, a.idempotency_key),
        "open, restrict or close a market (Closed expires its resting orders)",
    )
    sub.add_argument("symbol", metavar="SYMBOL", help="e.g. SOL_USDC")
    sub.add_argument("state", choices=MARKET_STATES, metavar="STATE", help="|".join(MARKET_STATES))
    idempotent(sub)
    sub = command(
        market_commands,
        "fees",
        lambda c, a: c.set_market_fees(a.symbol, a.maker, a.taker, a.idempotency_key),
        "set a market's maker and taker fees",
    )
    sub.add_argument("symbol", metavar="SYMBOL")
    sub.add_argument("--maker", type=_bps, required=True, metavar="BPS")
    sub.add_argument("--taker", type=_bps, required=True, metavar="BPS")
    idempotent(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if not args.url:
        parser.error("the API URL is required: --url or CLOUDEX_API_URL")
    try:
        client = AdminClient(
            args.url,
            token=os.environ.get("CLOUDEX_ADMIN_TOKEN") or None,
            aws_region=args.aws_region,
            timeout_s=args.timeout,
        )
    except AdminConfigError as exc:
        parser.error(str(exc))
    with client:
        try:
            result = args.run(client, args)
        except AdminError as error:
            _stderr(f"error: {error.code} (HTTP {error.status}): {error.message}")
            if error.idempotency_key and (error.status >= 500 or error.code == "TIMEOUT"):
                _stderr(
                    "the outcome may be unknown: retry with "
                    f"--idempotency-key {error.idempotency_key}"
                )
            return 1
        except requests.RequestException as exc:
            _stderr(f"error: no answer from {args.url}: {exc}")
            key = getattr(args, "idempotency_key", None)
            if key:
                _stderr(f"the outcome is unknown: retry with --idempotency-key {key}")
            return 1
        except (ValueError, signing.SignatureError) as exc:
            # Checked here before sending (a public key that is not one, say).
            _stderr(f"error: {exc}")
            return 2
    json.dump(result, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
