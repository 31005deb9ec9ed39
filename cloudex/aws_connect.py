"""Connection settings for PostgreSQL and Redis, from plain URLs locally or AWS-style variables.

Environment contract (the first that applies wins):

PostgreSQL, :func:`database_url`:

- ``DATABASE_URL`` set: used as is (local runs, tests).
- else ``DATABASE_SECRET_ARN``: a Secrets Manager secret in the JSON shape RDS generates
  (``username``, ``password``, ``host``, ``port``, ``dbname``, ``engine``). The URL is
  ``postgresql://user:password@host:port/dbname?sslmode=require``, user and password URL-quoted.
  ``DATABASE_HOST``, ``DATABASE_PORT`` and ``DATABASE_NAME`` override the secret's fields when
  set (``dbname`` defaults to ``postgres`` when neither has it). The engine (a direct connection
  to the RDS instance: it holds a session advisory lock) and the migration function use this.
- else ``DATABASE_HOST``, ``DATABASE_USER``, ``DATABASE_NAME`` (``DATABASE_PORT``, default 5432)
  with ``DATABASE_IAM_AUTH=1``: IAM authentication to RDS Proxy. The URL has no password and
  ``sslmode=require``; :func:`connect` adds a fresh token from boto3's
  ``rds.generate_db_auth_token`` (a local presign, valid 15 minutes) to every new connection.
  The Lambdas (API, WebSocket routes, persister) use this.

Redis, :func:`redis_url`:

- ``REDIS_URL`` is required (in AWS e.g. ``rediss://master.xxx.cache.amazonaws.com:6379/0``).
- ``REDIS_AUTH_SECRET_ARN`` set: that secret's string (plain, or JSON with a ``password`` or
  ``authToken`` field) becomes the URL's password (URL-quoted; a user name in the URL is kept).

Secrets are read with a boto3 ``secretsmanager`` client (endpoint and region from the
environment, as boto3 does by default), once per process, and are never logged nor put into
error messages. A missing or inconsistent variable raises
:class:`~cloudex.env_settings.SettingsError` naming it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from cloudex.env_settings import SettingsError

if TYPE_CHECKING:  # psycopg is imported when used: the fan-out function's bundle has none
    import psycopg

__all__ = ["database_url", "redis_url", "resolve_env", "connect", "auth_token"]

_DATABASE_VARS = ("DATABASE_SECRET_ARN", "DATABASE_HOST", "DATABASE_IAM_AUTH")
_AUTH_KEYS = ("host", "port", "user", "password")
_IAM_VARS = ("DATABASE_HOST", "DATABASE_USER", "DATABASE_NAME")

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_secrets: dict[str, str] = {}


def database_url(env: Mapping[str, str] | None = None) -> str:
    """The PostgreSQL URL ``env`` (default: the process environment) configures."""
    env = os.environ if env is None else env
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    if env.get("DATABASE_SECRET_ARN"):
        return _url_from_secret(env, env["DATABASE_SECRET_ARN"])
    missing = [name for name in _IAM_VARS if not env.get(name)]
    if missing == list(_IAM_VARS):
        raise SettingsError(
            "no database configured: set DATABASE_URL, DATABASE_SECRET_ARN, or DATABASE_HOST, "
            "DATABASE_USER and DATABASE_NAME with DATABASE_IAM_AUTH=1"
        )
    if missing:
        raise SettingsError(f"missing environment variables: {', '.join(missing)}")
    if env.get("DATABASE_IAM_AUTH") != "1":
        raise SettingsError(
            "DATABASE_HOST without DATABASE_URL or DATABASE_SECRET_ARN needs DATABASE_IAM_AUTH=1"
        )
    return _url(
        env["DATABASE_USER"],
        None,
        env["DATABASE_HOST"],
        _port(env.get("DATABASE_PORT") or "5432", "DATABASE_PORT"),
        env["DATABASE_NAME"],
    )


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """``REDIS_URL``, with the password from ``REDIS_AUTH_SECRET_ARN`` when that is set."""
    env = os.environ if env is None else env
    url = env.get("REDIS_URL")
    if not url:
        raise SettingsError("missing environment variables: REDIS_URL")
    arn = env.get("REDIS_AUTH_SECRET_ARN")
    if not arn:
        return url
    token = secret_string(arn)
    try:
        document = json.loads(token)
    except ValueError:
        document = None
    if isinstance(document, dict):
        token = document.get("password") or document.get("authToken") or ""
        if not isinstance(token, str) or not token:
            raise SettingsError(
                f"secret {arn} (REDIS_AUTH_SECRET_ARN) has no 'password' or 'authToken' field"
            )
    parts = urlsplit(url)
    if not parts.hostname:
        raise SettingsError("REDIS_URL has no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{parts.username or ''}:{quote(token, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_env(
    env: Mapping[str, str], *, database: bool = True, redis: bool = True
) -> Mapping[str, str]:
    """``env`` with ``DATABASE_URL`` (if ``database``) and ``REDIS_URL`` (if ``redis``) resolved
    from the AWS-style variables when those are in use; else ``env`` itself, so that a missing
    variable stays missing for the caller's own message."""
    overlay: dict[str, str] = {}
    if database and not env.get("DATABASE_URL") and any(env.get(n) for n in _DATABASE_VARS):
        overlay["DATABASE_URL"] = database_url(env)
    if redis and env.get("REDIS_URL") and env.get("REDIS_AUTH_SECRET_ARN"):
        overlay["REDIS_URL"] = redis_url(env)
    return {**env, **overlay} if overlay else env


def connect(
    conninfo: str = "", *, env: Mapping[str, str] | None = None, **kwargs: Any
) -> psycopg.Connection[Any]:
    """``psycopg.connect(conninfo, **kwargs)``; with ``DATABASE_IAM_AUTH=1`` in ``env`` (default:
    the process environment) and no password given, with a fresh IAM token as the password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    env = os.environ if env is None else env
    if env.get("DATABASE_IAM_AUTH") == "1":
        params: dict[str, Any] = {**conninfo_to_dict(conninfo)}
        params.update(
            (k, v) for k, v in kwargs.items() if k in ("host", "port", "user", "password")
        )
        if not params.get("password"):
            if not params.get("host") or not params.get("user"):
                raise SettingsError("IAM database authentication needs a host and a user")
            kwargs["password"] = auth_token(
                str(params["host"]), int(params.get("port") or 5432), str(params["user"])
            )
    return psycopg.connect(conninfo, **kwargs)


def auth_token(host: str, port: int, user: str) -> str:
    """A fresh RDS IAM authentication token (valid 15 minutes for opening a connection)."""
    token: str = _client("rds").generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
    return token


def secret_string(arn: str) -> str:
    """The ``SecretString`` of ``arn``, fetched once per process."""
    with _lock:
        cached = _secrets.get(arn)
    if cached is not None:
        return cached
    value = _client("secretsmanager").get_secret_value(SecretId=arn).get("SecretString")
    if not isinstance(value, str):
        raise SettingsError(f"secret {arn} has no SecretString")
    with _lock:
        _secrets[arn] = value
    return value


def clear_cache() -> None:
    """Forget the cached secrets and clients (tests; a rotated secret needs a new process)."""
    with _lock:
        _secrets.clear()
        _clients.clear()


def _client(service: str) -> Any:
    # boto3's default session is not thread-safe: the clients are made under the lock (the
    # clients themselves are).
    with _lock:
        client = _clients.get(service)
        if client is None:
            import boto3  # only when AWS-style variables are in use

            client = _clients[service] = boto3.client(service)  # type: ignore[call-overload]
        return client


def _url_from_secret(env: Mapping[str, str], arn: str) -> str:
    try:
        secret = json.loads(secret_string(arn))
    except ValueError:
        secret = None
    if not isinstance(secret, dict):
        raise SettingsError(f"secret {arn} (DATABASE_SECRET_ARN) is not a JSON object")
    missing = [k for k in ("username", "password") if not secret.get(k)]
    host = env.get("DATABASE_HOST") or secret.get("host")
    if not host:
        missing.append("host")
    if missing:
        raise SettingsError(
            f"secret {arn} (DATABASE_SECRET_ARN) lacks {', '.join(missing)}"
            + (" (or set DATABASE_HOST)" if "host" in missing else "")
        )
    port = env.get("DATABASE_PORT") or str(secret.get("port") or 5432)
    dbname = env.get("DATABASE_NAME") or secret.get("dbname") or "postgres"
    return _url(
        str(secret["username"]),
        str(secret["password"]),
        str(host),
        _port(port, "DATABASE_PORT" if env.get("DATABASE_PORT") else f"the port of secret {arn}"),
        str(dbname),
    )


def _url(user: str, password: str | None, host: str, port: int, dbname: str) -> str:
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    host = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}?sslmode=require"


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be a port number, got {value!r}")
    return port
