"""Connection settings from AWS-style variables (:mod:`cloudex.aws_connect`), with Secrets Manager
mocked by moto; the IAM connection tests also use the local PostgreSQL when it is up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
import redis
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from cloudex import aws_connect
from cloudex.aws_connect import connect, database_url, redis_url
from cloudex.env_settings import SettingsError
from cloudex.pg import ThreadConnections
from engine_service.settings import Settings
from functions.api.settings import ApiSettings
from functions.ws_fanout.settings import FanoutSettings
from functions.ws_routes.settings import WsSettings

NASTY = "p@ss/w:rd%?#& '=x"  # every character a URL or a conninfo string treats specially
LOCAL_PG = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("DATABASE_URL", "DATABASE_IAM_AUTH", "REDIS_AUTH_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    aws_connect.clear_cache()
    with mock_aws():
        yield
    aws_connect.clear_cache()


def put_secret(name: str, value: str) -> str:
    client = boto3.client("secretsmanager")
    arn: str = client.create_secret(Name=name, SecretString=value)["ARN"]
    return arn


def rds_secret(password: str = NASTY, **fields: object) -> str:
    document = {
        "username": "cloudex_admin",
        "password": password,
        "host": "db.abc.eu-west-1.rds.amazonaws.com",
        "port": 5432,
        "dbname": "cloudex",
        "engine": "postgres",
        **fields,
    }
    return put_secret("rds-secret", json.dumps(document))


IAM_ENV = {
    "DATABASE_HOST": "proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
    "DATABASE_USER": "cloudex_app",
    "DATABASE_NAME": "cloudex",
    "DATABASE_IAM_AUTH": "1",
}


# --- PostgreSQL URL -------------------------------------------------------------------------------


def test_database_url_is_used_as_is_and_wins() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    # The secret does not exist: reading it would fail.
    env = {"DATABASE_URL": url, "DATABASE_SECRET_ARN": "arn:missing", **IAM_ENV}
    assert database_url(env) == url
    settings = ApiSettings.from_env({"ORDERS_QUEUE_URL": "q", "REDIS_URL": "redis://r", **env})
    assert settings.database_url == url


def test_url_from_an_rds_secret_round_trips_the_password() -> None:
    arn = rds_secret()
    params = conninfo_to_dict(database_url({"DATABASE_SECRET_ARN": arn}))
    assert params == {
        "user": "cloudex_admin",
        "password": NASTY,
        "host": "db.abc.eu-west-1.rds.amazonaws.com",
        "port": "5432",
        "dbname": "cloudex",
        "sslmode": "require",
    }


def test_host_port_and_name_override_the_secret() -> None:
    arn = rds_secret(port=6543)
    env = {"DATABASE_SECRET_ARN": arn, "DATABASE_HOST": "db.internal"}
    params = conninfo_to_dict(database_url(env))
    assert (params["host"], params["port"], params["dbname"]) == ("db.internal", "6543", "cloudex")
    env |= {"DATABASE_PORT": "5433", "DATABASE_NAME": "other"}
    params = conninfo_to_dict(database_url(env))
    assert (params["host"], params["port"], params["dbname"]) == ("db.internal", "5433", "other")
    assert params["password"] == NASTY
    assert params["sslmode"] == "require"


def test_the_secret_is_read_once_per_process() -> None:
    arn = rds_secret()
    first = database_url({"DATABASE_SECRET_ARN": arn})
    boto3.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert database_url({"DATABASE_SECRET_ARN": arn}) == first
    aws_connect.clear_cache()
    with pytest.raises(Exception, match="ResourceNotFound"):
        database_url({"DATABASE_SECRET_ARN": arn})


def test_an_incomplete_secret_is_refused_without_showing_it() -> None:
    arn = put_secret("partial", json.dumps({"username": "u", "password": NASTY}))
    with pytest.raises(SettingsError, match="lacks host") as raised:
        database_url({"DATABASE_SECRET_ARN": arn})
    assert NASTY not in str(raised.value)
    arn = put_secret("plain", NASTY)
    with pytest.raises(SettingsError, match="not a JSON object") as raised:
        database_url({"DATABASE_SECRET_ARN": arn})
    assert NASTY not in str(raised.value)


def test_iam_url_has_no_password_and_requires_tls() -> None:
    params = conninfo_to_dict(database_url(IAM_ENV))
    assert params == {
        "user": "cloudex_app",
        "host": IAM_ENV["DATABASE_HOST"],
        "port": "5432",
        "dbname": "cloudex",
        "sslmode": "require",
    }
    assert conninfo_to_dict(database_url({**IAM_ENV, "DATABASE_PORT": "6432"}))["port"] == "6432"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no database configured: set DATABASE_URL, DATABASE_SECRET_ARN"),
        ({"DATABASE_URL": ""}, "no database configured"),
        ({**IAM_ENV, "DATABASE_USER": ""}, "missing environment variables: DATABASE_USER$"),
        ({**IAM_ENV, "DATABASE_IAM_AUTH": "0"}, "needs DATABASE_IAM_AUTH=1"),
        ({**IAM_ENV, "DATABASE_PORT": "x"}, "DATABASE_PORT must be a port number"),
    ],
)
def test_a_missing_or_wrong_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        database_url(env)


# --- IAM tokens -----------------------------------------------------------------------------------


class Captured:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, conninfo: str, **kwargs: Any) -> Any:
        self.calls.append((conninfo, kwargs))
        return object()


def spy_tokens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the tokens the real boto3 RDS client makes."""
    tokens: list[str] = []
    client = aws_connect._client("rds")
    real = client.generate_db_auth_token

    def generate(**kwargs: Any) -> str:
        token: str = real(**kwargs)
        tokens.append(token)
        return token

    monkeypatch.setattr(client, "generate_db_auth_token", generate)
    return tokens


def test_iam_connect_adds_a_fresh_token_to_each_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = Captured()
    monkeypatch.setattr(psycopg, "connect", captured)
    tokens = spy_tokens(monkeypatch)
    url = database_url(IAM_ENV)
    connect(url, env=IAM_ENV, autocommit=True)
    connect(url, env=IAM_ENV, autocommit=True)
    assert len(tokens) == 2
    for (conninfo, kwargs), token in zip(captured.calls, tokens, strict=True):
        assert conninfo == url
        assert kwargs == {"autocommit": True, "password": token}
        assert token.startswith(
            f"{IAM_ENV['DATABASE_HOST']}:5432/?Action=connect&DBUser=cloudex_app"
        )
        assert "X-Amz-Signature=" in token


def test_no_token_without_iam_or_with_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = Captured()
    monkeypatch.setattr(psycopg, "connect", captured)
    tokens = spy_tokens(monkeypatch)
    connect(database_url(IAM_ENV), env={})
    connect("postgresql://u:secret@h/db", env=IAM_ENV)
    connect("postgresql://u@h/db", env=IAM_ENV, password="given")
    assert tokens == []
    assert [kwargs for _, kwargs in captured.calls] == [{}, {}, {"password": "given"}]


def local_pg() -> None:
    try:
        psycopg.connect(LOCAL_PG, connect_timeout=2).close()
    except psycopg.OperationalError:
        pytest.skip("no local PostgreSQL at 127.0.0.1:5432")


def test_iam_connect_against_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    local_pg()
    tokens = spy_tokens(monkeypatch)
    with connect(LOCAL_PG, env={"DATABASE_IAM_AUTH": "1"}, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert tokens and conn.info.password == tokens[-1]
        assert conn.info.password.startswith("127.0.0.1:5432/?Action=connect&DBUser=postgres")


def test_thread_connections_take_a_token_per_new_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local_pg()
    monkeypatch.setenv("DATABASE_IAM_AUTH", "1")
    tokens = spy_tokens(monkeypatch)
    connections = ThreadConnections(LOCAL_PG)
    first = connections.get()
    assert connections.get() is first
    assert len(tokens) == 1
    connections.close()
    assert connections.get().info.password == tokens[-1]
    assert len(tokens) == 2
    connections.close()


# --- Redis ----------------------------------------------------------------------------------------

REDIS = "rediss://master.abc.euw1.cache.amazonaws.com:6379/0"


def redis_password(url: str) -> Any:
    return redis.ConnectionPool.from_url(url).connection_kwargs.get("password")


@pytest.mark.parametrize(
    "secret",
    [NASTY, json.dumps({"password": NASTY}), json.dumps({"authToken": NASTY, "other": 1})],
)
def test_redis_auth_secret_becomes_the_password(secret: str) -> None:
    arn = put_secret("redis-auth", secret)
    url = redis_url({"REDIS_URL": REDIS, "REDIS_AUTH_SECRET_ARN": arn})
    assert redis_password(url) == NASTY
    kwargs = redis.ConnectionPool.from_url(url).connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == (
        "master.abc.euw1.cache.amazonaws.com",
        6379,
        0,
    )
    assert url.startswith("rediss://")


def test_redis_url_keeps_a_user_name_and_is_plain_without_a_secret() -> None:
    assert redis_url({"REDIS_URL": REDIS}) == REDIS
    arn = put_secret("redis-auth", "token")
    url = redis_url({"REDIS_URL": "rediss://app@h:6380/1", "REDIS_AUTH_SECRET_ARN": arn})
    assert url == "rediss://app:token@h:6380/1"
    json_without_field = put_secret("redis-json", json.dumps({"user": "x"}))
    with pytest.raises(SettingsError, match="no 'password' or 'authToken'"):
        redis_url({"REDIS_URL": REDIS, "REDIS_AUTH_SECRET_ARN": json_without_field})
    with pytest.raises(SettingsError, match="missing environment variables: REDIS_URL"):
        redis_url({"REDIS_AUTH_SECRET_ARN": arn})


# --- the settings loaders -------------------------------------------------------------------------


def test_function_settings_resolve_aws_variables() -> None:
    redis_arn = put_secret("redis-auth", NASTY)
    env = {**IAM_ENV, "REDIS_URL": REDIS, "REDIS_AUTH_SECRET_ARN": redis_arn}
    api = ApiSettings.from_env({**env, "ORDERS_QUEUE_URL": "q"})
    assert api.database_url == database_url(IAM_ENV)
    assert redis_password(api.redis_url) == NASTY
    ws = WsSettings.from_env(env)
    assert (ws.database_url, ws.redis_url) == (api.database_url, api.redis_url)
    # No database field: a database secret that does not exist is never read.
    fanout = FanoutSettings.from_env(
        {**env, "DATABASE_SECRET_ARN": "arn:missing", "WS_MANAGEMENT_ENDPOINT": "http://gw"}
    )
    assert redis_password(fanout.redis_url) == NASTY


def test_function_settings_still_name_missing_variables() -> None:
    with pytest.raises(
        SettingsError, match=r"variables: ORDERS_QUEUE_URL, REDIS_URL, DATABASE_URL$"
    ):
        ApiSettings.from_env({})
    with pytest.raises(SettingsError, match="missing environment variables: DATABASE_USER"):
        ApiSettings.from_env(
            {**IAM_ENV, "DATABASE_USER": "", "ORDERS_QUEUE_URL": "q", "REDIS_URL": REDIS}
        )


def test_engine_settings_resolve_the_database_secret() -> None:
    arn = rds_secret()
    redis_arn = put_secret("redis-auth", json.dumps({"password": "tok"}))
    settings = Settings.from_env(
        {
            "ORDERS_QUEUE_URL": "q1",
            "EVENTS_QUEUE_URL": "q2",
            "DATABASE_SECRET_ARN": arn,
            "REDIS_URL": REDIS,
            "REDIS_AUTH_SECRET_ARN": redis_arn,
        }
    )
    assert conninfo_to_dict(settings.database_url)["password"] == NASTY
    assert redis_password(settings.redis_url) == "tok"
    with pytest.raises(SettingsError, match="DATABASE_URL, REDIS_URL"):
        Settings.from_env({"ORDERS_QUEUE_URL": "q1", "EVENTS_QUEUE_URL": "q2"})
