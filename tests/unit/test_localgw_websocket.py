"""The local WebSocket API gateway, end to end on a loopback port: aiohttp clients (the one
ccxt.pro uses), a raw-socket client for what aiohttp's client cannot do (fragmented messages,
not reading, closing without a code), the route handlers of ``tests.localgw_ws_fixtures``, and
a real boto3 ``apigatewaymanagementapi`` client. The events are read back through Powertools."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.api_gateway_websocket_event import (
    APIGatewayWebSocketEvent,
)
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from botocore.config import Config

from localgw.websocket import WebSocketGateway
from tests import localgw_ws_fixtures as routes
from tests.localgw_ws_fixtures import RECORDER

pytestmark = pytest.mark.timeout(30)

ID = re.compile(r"[A-Za-z0-9_-]{15}=")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    RECORDER.clear()


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., WebSocketGateway]]:
    started: list[WebSocketGateway] = []

    def start(**options: Any) -> WebSocketGateway:
        gateway = WebSocketGateway(routes.connect, routes.disconnect, routes.default, **options)
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def management(gateway: WebSocketGateway, *, stage: bool = False) -> Any:
    endpoint = gateway.management_endpoint + ("/local" if stage else "")
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.005)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 3.0) -> Any:
    return await ws.receive(timeout=timeout_s)


@contextlib.asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A WebSocket client of its own session."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, **options) as ws:
        yield ws


class RawClient:
    """A WebSocket client on a plain socket: sends frames as told, reads only when asked."""

    def __init__(self, gateway: WebSocketGateway, query: str, *, receive_buffer: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(5)
        self.sock.connect((gateway.host, gateway.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /?{query} HTTP/1.1\r\nHost: {gateway.host}:{gateway.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_frame(self, payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> None:
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def close(self) -> None:
        self.sock.close()


# -- CONNECTING -------------------------------------------------------------------------------


def test_connect_and_disconnect_events_read_back_through_powertools(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{gateway.url}local?name=first&tag=1&tag=2"
            async with session.ws_connect(url, headers={"User-Agent": "ccxt-test/1.0"}) as ws:
                await ws.close(code=4001, message=b"bye")
            async with session.ws_connect(gateway.url) as ws:
                await ws.close()

    asyncio.run(scenario())

    before = time.time() * 1000
    first = RECORDER.connection_id("first")
    raw = RECORDER.invocations("$connect", first)[0].event
    event = APIGatewayWebSocketEvent(raw)
    context = event.request_context
    assert ID.fullmatch(context.connection_id)
    assert context.route_key == "$connect"
    assert context.event_type == "CONNECT"
    assert context.message_direction == "IN"
    assert context.stage == "local"
    assert context.domain_name == f"127.0.0.1:{gateway.port}"
    assert context.api_id == "cloudexwss"
    assert ID.fullmatch(context.request_id)
    assert context.extended_request_id == context.request_id
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context.request_time)
    assert abs(context.connected_at - before) < 10_000
    assert context.request_time_epoch >= context.connected_at
    assert context.identity.source_ip == "127.0.0.1"
    assert context.identity.user_agent == "ccxt-test/1.0"
    assert context.message_id is None
    assert context.disconnect_status_code is None
    assert event.query_string_parameters == {"name": "first", "tag": "2"}
    assert event.multi_value_query_string_parameters["tag"] == ["1", "2"]
    assert event.headers["user-agent"] == "ccxt-test/1.0"
    assert event.headers["x-forwarded-for"] == "127.0.0.1"
    assert event.headers["sec-websocket-version"] == "13"
    assert event.multi_value_headers["Upgrade"] == ["websocket"]
    assert event.body is None
    assert event.json_body is None
    assert event.is_base64_encoded is False
    APIGatewayWebSocketConnectEventModel.model_validate(raw)

    disconnect_raw = RECORDER.disconnect_of(first)
    disconnect = APIGatewayWebSocketEvent(disconnect_raw)
    assert disconnect.request_context.route_key == "$disconnect"
    assert disconnect.request_context.event_type == "DISCONNECT"
    assert disconnect.request_context.disconnect_status_code == 4001
    assert disconnect.request_context.disconnect_reason == "bye"
    assert disconnect.request_context.connection_id == first
    assert disconnect.request_context.connected_at == context.connected_at
    assert disconnect.request_context.identity.user_agent == "ccxt-test/1.0"
    assert disconnect.headers["host"] == f"127.0.0.1:{gateway.port}"
    assert ID.fullmatch(disconnect.request_context.request_id)
    assert disconnect.request_context.request_id != context.request_id
    model = APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect_raw)
    assert model.request_context.disconnect_status_code == 4001

    # At / without a query string: the query keys are absent, as in AWS's events.
    second = next(i for i in RECORDER.invocations("$connect") if i.connection_id != first)
    assert "queryStringParameters" not in second.event
    assert APIGatewayWebSocketEvent(second.event).query_string_parameters == {}
    assert second.connection_id != first
    assert RECORDER.disconnect_of(second.connection_id)["requestContext"][
        "disconnectStatusCode"
    ] == (1000)

    connects = RECORDER.invocations("$connect")
    assert {i.function_name for i in connects} == {"ws-connect"}
    assert {i.function_name for i in RECORDER.invocations("$disconnect")} == {"ws-disconnect"}
    assert all(i.thread_name.startswith("lambda-ws-") for i in RECORDER.invocations())
    assert all(27_000 < i.remaining_ms <= 29_000 for i in connects)


def test_connect_handler_refuses_with_its_status_or_500_when_it_raises(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()

    async def status_of(query: str) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"{gateway.url}?{query}"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(status_of("refuse=403")) == 403
    assert asyncio.run(status_of("refuse=401")) == 401
    assert asyncio.run(status_of("explode=1")) == 500
    assert len(RECORDER.invocations("$connect")) == 3
    time.sleep(0.1)
    assert RECORDER.invocations("$disconnect") == []  # refused connections never opened
    assert gateway.connection_count == 0


def test_connect_selects_the_subprotocol_and_the_connection_exists_only_after_it(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()

    async def scenario() -> str | None:
        async with aiohttp.ClientSession() as session:
            url = f"{gateway.url}?protocol=v2&post_self=1"
            async with session.ws_connect(url, protocols=("v1", "v2")) as ws:
                assert gateway.connection_count == 1
                return ws.protocol

    assert asyncio.run(scenario()) == "v2"
    assert RECORDER.notes["post_self"] == "GoneException"


def test_non_websocket_requests_and_unknown_paths_are_refused(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    with pytest.raises(urllib.error.HTTPError) as plain_get:
        urllib.request.urlopen(gateway.management_endpoint + "/", timeout=5)
    assert plain_get.value.code == 426
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(gateway.management_endpoint + "/prod/@connections/x", timeout=5)
    assert elsewhere.value.code == 403
    assert RECORDER.invocations() == []


# -- MESSAGES ---------------------------------------------------------------------------------


def test_message_event_reads_back_and_the_body_of_the_result_is_the_reply(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    subscribe = '{"method":"SUBSCRIBE","params":["depth.SOL_USDC"]}'

    async def scenario() -> list[Any]:
        async with connected(gateway.url + "?name=a") as ws:
            await ws.send_str(subscribe)  # no body in the result: no reply
            await ws.send_str("echo héllo")
            return [await receive(ws)]

    [reply] = asyncio.run(scenario())
    assert (reply.type, reply.data) == (aiohttp.WSMsgType.TEXT, "héllo")

    connection_id = RECORDER.connection_id("a")
    messages = RECORDER.invocations("$default", connection_id)
    assert [i.event["body"] for i in messages] == [subscribe, "echo héllo"]
    event = APIGatewayWebSocketEvent(messages[0].event)
    context = event.request_context
    assert context.route_key == "$default"
    assert context.event_type == "MESSAGE"
    assert context.connection_id == connection_id
    assert ID.fullmatch(context.message_id or "")
    assert messages[1].event["requestContext"]["messageId"] != context.message_id
    assert context.identity.source_ip == "127.0.0.1"
    assert context.stage == "local"
    assert context.domain_name == f"127.0.0.1:{gateway.port}"
    assert context.disconnect_status_code is None
    assert context.disconnect_reason is None
    assert event.body == subscribe
    assert event.json_body == {"method": "SUBSCRIBE", "params": ["depth.SOL_USDC"]}
    assert event.is_base64_encoded is False
    assert event.headers == {}
    model = APIGatewayWebSocketMessageEventModel.model_validate(messages[0].event)
    assert model.request_context.message_id == context.message_id
    assert {i.function_name for i in messages} == {"ws-default"}


def test_a_failing_handler_gets_the_client_api_gateways_error_frame(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway(integration_timeout_s=0.3)

    async def scenario() -> list[str]:
        async with connected(gateway.url + "?name=a") as ws:
            frames = []
            for message in ("raise", "bad", "sleep 0.6 late", "echo still open"):
                await ws.send_str(message)
                frames.append((await receive(ws)).data)
            return frames

    raised, bad, late, after = asyncio.run(scenario())
    connection_id = RECORDER.connection_id("a")
    request_ids = [
        i.event["requestContext"]["requestId"]
        for i in RECORDER.invocations("$default", connection_id)
    ]
    assert raised == (
        f'{{"message": "Internal server error", "connectionId":"{connection_id}", '
        f'"requestId":"{request_ids[0]}"}}'
    )
    assert json.loads(bad) == {
        "message": "Internal server error",
        "connectionId": connection_id,
        "requestId": request_ids[1],
    }
    assert json.loads(late) == {
        "message": "Endpoint request timed out",
        "connectionId": connection_id,
        "requestId": request_ids[2],
    }
    assert after == "still open"


def test_messages_of_a_connection_are_handled_one_at_a_time_in_order(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway(workers=8)
    count = 12

    async def scenario() -> list[str]:
        async with connected(gateway.url) as ws:
            # The first takes longest: run side by side, they would finish in reverse.
            for index in range(count):
                await ws.send_str(f"sleep {(count - index) * 0.005} {index}")
            return [(await receive(ws)).data for _ in range(count)]

    assert asyncio.run(scenario()) == [str(index) for index in range(count)]


def test_a_binary_frame_closes_the_connection_with_1003(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()

    async def scenario() -> Any:
        async with connected(gateway.url + "?name=a") as ws:
            await ws.send_bytes(b"\x00\x01")
            return await receive(ws)

    closing = asyncio.run(scenario())
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1003)
    connection_id = RECORDER.connection_id("a")
    event = RECORDER.disconnect_of(connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1003
    assert RECORDER.invocations("$default") == []


# -- LIMITS -----------------------------------------------------------------------------------


def test_a_frame_over_32_kb_closes_the_connection_with_1009(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    limit = 32 * 1024

    async def scenario() -> Any:
        async with connected(gateway.url + "?name=a") as ws:
            await ws.send_str("x" * limit)  # exactly the limit: handled
            await ws.send_str("y" * (limit + 1))
            return await receive(ws)

    closing = asyncio.run(scenario())
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    connection_id = RECORDER.connection_id("a")
    event = RECORDER.disconnect_of(connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1009
    # Received before the close, so handled, possibly after $disconnect began (as in AWS).
    RECORDER.wait_for(lambda invocations: any(i.route_key == "$default" for i in invocations))
    time.sleep(0.05)
    assert [len(i.event["body"]) for i in RECORDER.invocations("$default")] == [limit]


def test_a_fragmented_message_may_reach_128_kb_and_not_more(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    fragment = 32 * 1024

    def send_in_fragments(client: RawClient, count: int, *, last: bool) -> None:
        for index in range(count):
            final = last and index == count - 1
            client.send_frame(b"z" * fragment, 0x1 if index == 0 else 0x0, fin=final)

    within = RawClient(gateway, "name=within")
    send_in_fragments(within, 4, last=True)  # 128 KB in frames of 32 KB
    RECORDER.wait_for(lambda invocations: any(i.route_key == "$default" for i in invocations))
    assert len(RECORDER.invocations("$default")[0].event["body"]) == 4 * fragment

    over = RawClient(gateway, "name=over")
    send_in_fragments(over, 4, last=False)
    over.send_frame(b"!", 0x0, fin=True)  # one byte more
    opcode, payload = over.read_frame()
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1009)
    event = RECORDER.disconnect_of(RECORDER.connection_id("over"))
    assert event["requestContext"]["disconnectStatusCode"] == 1009
    assert len(RECORDER.invocations("$default")) == 1
    within.close()
    over.close()


def test_idle_timeout_counts_data_messages_either_way_but_not_pings(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    idle_s = 0.3
    gateway = start_gateway(idle_timeout_s=idle_s)
    client = management(gateway)

    async def idle(session: aiohttp.ClientSession) -> tuple[Any, float]:
        async with session.ws_connect(gateway.url + "?name=idle") as ws:
            opened = time.monotonic()
            return await receive(ws), time.monotonic() - opened

    async def pinging(session: aiohttp.ClientSession) -> tuple[Any, bool]:
        async with session.ws_connect(gateway.url + "?name=pinging", autoping=False) as ws:
            ponged = False
            while True:
                with contextlib.suppress(ConnectionResetError):  # closed while it slept
                    await ws.ping(b"keepalive")
                message = await receive(ws)
                if message.type is not aiohttp.WSMsgType.PONG:
                    return message, ponged
                ponged = message.data == b"keepalive"
                await asyncio.sleep(0.05)

    async def talking(session: aiohttp.ClientSession) -> bool:
        async with session.ws_connect(gateway.url + "?name=talking") as ws:
            for _ in range(8):  # 0.8 s: well past the idle timeout
                await ws.send_str("echo hi")
                assert (await receive(ws)).data == "hi"
                await asyncio.sleep(0.1)
            return not ws.closed

    async def listening(session: aiohttp.ClientSession) -> bool:
        async with session.ws_connect(gateway.url + "?name=listening") as ws:
            connection_id = RECORDER.connection_id("listening")
            for index in range(8):
                await asyncio.to_thread(
                    client.post_to_connection, ConnectionId=connection_id, Data=f"{index}".encode()
                )
                assert (await receive(ws)).data == str(index)
                await asyncio.sleep(0.1)
            return not ws.closed

    async def scenario() -> tuple[Any, ...]:
        async with aiohttp.ClientSession() as session:
            results: tuple[Any, ...] = await asyncio.gather(
                idle(session), pinging(session), talking(session), listening(session)
            )
            return results

    (idle_close, idle_after), (ping_close, ponged), talked, listened = asyncio.run(scenario())
    assert (idle_close.type, idle_close.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert idle_s * 0.9 < idle_after < idle_s + 0.5
    assert ponged
    assert (ping_close.type, ping_close.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert talked and listened
    for name in ("idle", "pinging"):
        context = RECORDER.disconnect_of(RECORDER.connection_id(name))["requestContext"]
        assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
            1001,
            "Going away",
        )


def test_max_duration_closes_even_a_busy_connection_with_1001(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway(max_duration_s=0.3)

    async def scenario() -> tuple[Any, float]:
        async with connected(gateway.url + "?name=a") as ws:
            opened = time.monotonic()
            while True:
                with contextlib.suppress(ConnectionResetError):  # closed while it slept
                    await ws.send_str("echo busy")
                message = await receive(ws)
                if message.type is not aiohttp.WSMsgType.TEXT:
                    return message, time.monotonic() - opened
                await asyncio.sleep(0.02)

    closing, after = asyncio.run(scenario())
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert 0.25 < after < 1.0
    event = RECORDER.disconnect_of(RECORDER.connection_id("a"))
    assert event["requestContext"]["disconnectStatusCode"] == 1001


# -- MANAGEMENT API ---------------------------------------------------------------------------


def test_post_get_and_delete_through_boto3(start_gateway: Callable[..., WebSocketGateway]) -> None:
    gateway = start_gateway(send_buffer_bytes=16 * 1024 * 1024)
    client = management(gateway)
    staged = management(gateway, stage=True)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            url = gateway.url + "?name=a"
            async with session.ws_connect(url, headers={"User-Agent": "ccxt-test/1.0"}) as ws:
                connection_id = RECORDER.connection_id("a")
                seen["id"] = connection_id

                def post(data: bytes, via: Any = client) -> None:
                    via.post_to_connection(ConnectionId=connection_id, Data=data)

                await asyncio.to_thread(post, b'{"stream":"depth.SOL_USDC"}')
                await asyncio.to_thread(post, b"\xff\x00binary", staged)
                seen["frames"] = [await receive(ws), await receive(ws)]

                def post_many() -> None:
                    for index in range(50):
                        post(f"m{index}".encode())

                await asyncio.to_thread(post_many)
                seen["ordered"] = [(await receive(ws)).data for _ in range(50)]

                seen["info"] = await asyncio.to_thread(
                    client.get_connection, ConnectionId=connection_id
                )
                seen["staged_info"] = await asyncio.to_thread(
                    staged.get_connection, ConnectionId=connection_id
                )

                def last_words_then_delete() -> None:
                    # More than the sockets buffer while this client is not reading: some are
                    # still queued when the DELETE comes, and go before the close frame.
                    for index in range(50):
                        post(b"%02d" % index + b"." * (128 * 1024 - 2))
                    staged.delete_connection(ConnectionId=connection_id)

                await asyncio.to_thread(last_words_then_delete)
                seen["after_delete"] = [await receive(ws) for _ in range(51)]
        return seen

    seen = asyncio.run(scenario())
    connection_id = seen["id"]
    text, binary = seen["frames"]
    assert (text.type, text.data) == (aiohttp.WSMsgType.TEXT, '{"stream":"depth.SOL_USDC"}')
    assert (binary.type, binary.data) == (aiohttp.WSMsgType.BINARY, b"\xff\x00binary")
    assert seen["ordered"] == [f"m{index}" for index in range(50)]

    info = seen["info"]
    assert info["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert abs((datetime.now(UTC) - info["ConnectedAt"]).total_seconds()) < 10
    assert info["LastActiveAt"] >= info["ConnectedAt"]
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "ccxt-test/1.0"}
    assert seen["staged_info"]["Identity"] == info["Identity"]

    *words, closing = seen["after_delete"]
    assert [message.data[:2] for message in words] == [f"{index:02d}" for index in range(50)]
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1000)
    context = RECORDER.disconnect_of(connection_id)["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
        1000,
        "Connection Closed Normally",
    )
    assert gateway.connection_count == 0


def test_a_closed_or_unknown_connection_is_gone(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    client = management(gateway)

    async def connect_and_leave() -> None:
        async with connected(gateway.url + "?name=a"):
            pass

    asyncio.run(connect_and_leave())
    connection_id = RECORDER.connection_id("a")
    RECORDER.disconnect_of(connection_id)
    calls: list[Callable[[str], object]] = [
        lambda cid: client.post_to_connection(ConnectionId=cid, Data=b"x"),
        lambda cid: client.get_connection(ConnectionId=cid),
        lambda cid: client.delete_connection(ConnectionId=cid),
    ]
    for call in calls:
        for cid in (connection_id, "NeverConnected0="):
            with pytest.raises(client.exceptions.GoneException) as gone:
                call(cid)
            assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410

    request = urllib.request.Request(
        f"{gateway.management_endpoint}/@connections/{connection_id}", data=b"x", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=5)
    assert raw.value.code == 410
    assert raw.value.headers["x-amzn-ErrorType"] == "GoneException"
    assert raw.value.read() == b'{"message":null}'


def test_data_over_128_kb_is_refused_with_413(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    client = management(gateway)
    limit = 128 * 1024

    async def scenario() -> tuple[int, Exception]:
        async with connected(gateway.url + "?name=a") as ws:
            connection_id = RECORDER.connection_id("a")
            await asyncio.to_thread(
                client.post_to_connection, ConnectionId=connection_id, Data=b"a" * limit
            )
            delivered = len((await receive(ws)).data)
            try:
                await asyncio.to_thread(
                    client.post_to_connection,
                    ConnectionId=connection_id,
                    Data=b"b" * (limit + 1),
                )
            except Exception as exc:  # what boto3 raised
                return delivered, exc
            raise AssertionError("posting over the limit succeeded")

    delivered, error = asyncio.run(scenario())
    assert delivered == limit
    assert isinstance(error, client.exceptions.PayloadTooLargeException)
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_a_client_that_does_not_read_delays_no_one_and_is_closed_when_its_buffer_overflows(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway(send_buffer_bytes=256 * 1024)
    client = management(gateway)
    chunk = b"s" * (64 * 1024)

    async def scenario() -> dict[str, Any]:
        outcome: dict[str, Any] = {"slowest_post_s": 0.0, "slowest_delivery_s": 0.0}
        stuck = RawClient(gateway, "name=stuck", receive_buffer=4096)
        async with connected(gateway.url + "?name=reader") as reader:
            stuck_id = RECORDER.connection_id("stuck")
            reader_id = RECORDER.connection_id("reader")
            for index in range(1000):  # at most 64 MB: the kernel buffers a few
                started = time.monotonic()
                try:
                    await asyncio.to_thread(
                        client.post_to_connection, ConnectionId=stuck_id, Data=chunk
                    )
                except client.exceptions.GoneException:
                    outcome["posts_before_gone"] = index
                    break
                finally:
                    took = time.monotonic() - started
                    outcome["slowest_post_s"] = max(outcome["slowest_post_s"], took)
                if index % 10 == 0:  # meanwhile, the reader gets its messages at once
                    started = time.monotonic()
                    await asyncio.to_thread(
                        client.post_to_connection, ConnectionId=reader_id, Data=b"%d" % index
                    )
                    assert (await receive(reader)).data == str(index)
                    took = time.monotonic() - started
                    outcome["slowest_delivery_s"] = max(outcome["slowest_delivery_s"], took)
            outcome["reader_open"] = not reader.closed
        stuck.close()
        return outcome

    outcome = asyncio.run(scenario())
    assert "posts_before_gone" in outcome, outcome
    assert outcome["slowest_post_s"] < 0.5, outcome
    assert outcome["slowest_delivery_s"] < 0.5, outcome
    assert outcome["reader_open"]
    context = RECORDER.disconnect_of(RECORDER.connection_id("stuck"))["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
        1008,
        "Send buffer full",
    )


# -- CLOSING ----------------------------------------------------------------------------------


def test_client_closes_without_a_code_or_without_a_close_frame(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    no_code = RawClient(gateway, "name=no_code")
    no_code.send_frame(b"", 0x8)
    assert no_code.read_frame()[0] == 0x8  # the gateway answers the close
    dropped = RawClient(gateway, "name=dropped")
    dropped.close()

    context = RECORDER.disconnect_of(RECORDER.connection_id("no_code"))["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
        1005,
        "Client-side close frame status not set",
    )
    context = RECORDER.disconnect_of(RECORDER.connection_id("dropped"))["requestContext"]
    assert context["disconnectStatusCode"] == 1006
    no_code.close()


def test_stop_closes_every_connection_and_runs_each_disconnect(
    start_gateway: Callable[..., WebSocketGateway],
) -> None:
    gateway = start_gateway()
    names = ["a", "b", "c"]

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(f"{gateway.url}?name={name}") for name in names]
            assert gateway.connection_count == 3
            stopping = asyncio.create_task(asyncio.to_thread(gateway.stop))
            closings = [await receive(ws) for ws in clients]
            await stopping
            for ws in clients:
                await ws.close()
            return closings

    closings = asyncio.run(scenario())
    assert [(m.type, m.data) for m in closings] == [(aiohttp.WSMsgType.CLOSE, 1001)] * 3
    # stop() returned after every $disconnect had run.
    disconnects = RECORDER.invocations("$disconnect")
    assert sorted(i.connection_id for i in disconnects) == sorted(
        RECORDER.connection_id(name) for name in names
    )
    assert {i.event["requestContext"]["disconnectStatusCode"] for i in disconnects} == {1001}
    assert gateway.connection_count == 0


def test_command_line_serves_the_handlers_it_is_given() -> None:
    spec = "tests.localgw_ws_fixtures"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localgw.websocket",
            *("--connect", f"{spec}:connect"),
            *("--disconnect", f"{spec}:disconnect"),
            *("--default", f"{spec}:default"),
            *("--port", "0", "--workers", "2", "--idle-timeout-s", "30"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"listening on (ws://127\.0\.0\.1:\d+/) \(management API (http://127\.0\.0\.1:\d+)\)\n",
            line,
        )
        assert match, line

        async def echo() -> str:
            async with connected(match[1]) as ws:
                await ws.send_str("echo from the command line")
                return str((await receive(ws)).data)

        assert asyncio.run(echo()) == "from the command line"
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
