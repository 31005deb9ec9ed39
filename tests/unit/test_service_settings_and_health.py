"""The engine service's configuration and health endpoints (no services needed)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from engine_service.health import HealthServer
from engine_service.settings import Settings, SettingsError

REQUIRED = {
    "ORDERS_QUEUE_URL": "http://sqs/orders.fifo",
    "EVENTS_QUEUE_URL": "http://sqs/events.fifo",
    "DATABASE_URL": "postgresql://db/cloudex",
    "REDIS_URL": "redis://cache:6379/0",
}


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({**REQUIRED, "RECEIVERS": "6", "SNAPSHOT_INTERVAL_S": "2.5"})
    assert settings.orders_queue_url == REQUIRED["ORDERS_QUEUE_URL"]
    assert settings.receivers == 6
    assert settings.snapshot_interval_s == 2.5
    assert settings.max_batch == 2_000  # the default
    assert settings.engine_id  # host:pid when not given


def test_missing_variables_are_named() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL, REDIS_URL"):
        Settings.from_env({k: v for k, v in REQUIRED.items() if "QUEUE" in k})


@pytest.mark.parametrize(
    ("name", "value"),
    [("RECEIVERS", "many"), ("MAX_BATCH", "-1"), ("FAULT_KILL_AT", "somewhere")],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**REQUIRED, name: value})


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_ready_once_running_and_live_until_the_loop_stalls() -> None:
    status = {"state": "replaying", "seq": 7}
    server = HealthServer(0, lambda: status, stall_after_s=0.3)
    server.start()
    try:
        server.beat()
        assert get(server.port, "/live")[0] == 200
        code, body = get(server.port, "/ready")
        assert (code, body["state"], body["seq"]) == (503, "replaying", 7)
        status["state"] = "running"
        assert get(server.port, "/ready")[0] == 200
        time.sleep(0.4)  # no beat: the loop is stuck
        assert get(server.port, "/live")[0] == 503
        server.beat()
        assert get(server.port, "/live")[0] == 200
        assert get(server.port, "/nothing")[0] == 404
    finally:
        server.close()
