"""The engine service's configuration and health endpoints (no services needed)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from cloudex.messages import Deposit, encode_command_body
from engine_service.health import HealthServer, PhaseTimes
from engine_service.publisher import MarketDataPublisher, MemorySink
from engine_service.service import BATCH_PHASES, EngineService
from engine_service.settings import Settings, SettingsError
from engine_service.sqs import MemoryInbox, MemoryJournalTransport

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


def test_phase_times_keep_the_last_batches_and_report_medians_in_ms() -> None:
    times = PhaseTimes(("match", "journal"), size=3)
    assert times.medians_ms() == {} and len(times) == 0
    times.add(0.001, 0.010)
    times.add(0.003, 0.030)
    assert times.medians_ms() == {"match": 2.0, "journal": 20.0}  # even count: the mean of two
    times.add(0.002, 0.020)
    times.add(1.0, 1.0)  # replaces the oldest: the ring holds the last 3
    times.add(1.0, 1.0)
    assert len(times) == 3
    assert times.medians_ms() == {"match": 1000.0, "journal": 1000.0}
    with pytest.raises(ValueError):
        PhaseTimes(("match",), size=0)


class _Database:
    def check_lease(self) -> None:
        pass


class _Output:
    def send_batch(self, *args: Any) -> None:
        return None

    def finish(self, *args: Any) -> None:
        pass


def test_batches_with_messages_are_timed_by_phase_in_the_live_json() -> None:
    inbox = MemoryInbox()
    publisher = MarketDataPublisher(MemorySink())
    service = EngineService(
        Settings.from_env(REQUIRED),
        inbox=inbox,
        journal=MemoryJournalTransport(),
        database=_Database(),  # type: ignore[arg-type]
        output=_Output(),  # type: ignore[arg-type]
        publisher=publisher,
    )
    try:
        service._process([], [])  # nothing received (a tick's batch): not timed
        assert service.status()["phaseMedianMs"] == {}
        command = Deposit(id="d1", ts=0, account=1, asset="USDC", amount=5)
        inbox.put(encode_command_body(command), command.id)
        service._process(inbox.take(10, 0), [])
        status = service.status()
        assert status["phaseBatches"] == 1
        medians = status["phaseMedianMs"]
        assert tuple(medians) == BATCH_PHASES
        assert all(value >= 0 for value in medians.values())
        assert medians["batch"] >= medians["match"] + medians["journal"] - 0.002  # rounding
        server = HealthServer(0, service.status)
        server.start()
        try:
            assert get(server.port, "/live")[1]["phaseMedianMs"] == medians
        finally:
            server.close()
    finally:
        publisher.close()
