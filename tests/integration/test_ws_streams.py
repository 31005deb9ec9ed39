"""WebSocket streams end to end with raw clients: engine -> ws_fanout (local Lambda) ->
management API -> local WebSocket gateway -> aiohttp clients. Subscriptions go through the
route handlers into the Redis registry."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from typing import Any

from cloudex import names, signing
from cloudex.subscriptions import SubscriptionRegistry
from tests.integration.api_support import ApiStack, Trader
from tests.integration.ws_support import Frame, WsClient


def order(stack: ApiStack, trader: Trader, side: str, price: str, quantity: str) -> Any:
    response = stack.signed(
        trader,
        "POST",
        "/api/v1/order",
        {
            "symbol": "SOL_USDC",
            "side": side,
            "orderType": "Limit",
            "price": price,
            "quantity": quantity,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def cross(stack: ApiStack, maker: Trader, taker: Trader, price: str = "100.00") -> None:
    order(stack, maker, "Ask", price, "1")
    order(stack, taker, "Bid", price, "1")


def traders(stack: ApiStack) -> tuple[Trader, Trader]:
    return (
        stack.new_trader({"SOL": "100", "USDC": "100000"}),
        stack.new_trader({"SOL": "100", "USDC": "100000"}),
    )


def of(frames: list[Frame], stream: str) -> list[Frame]:
    return [frame for frame in frames if frame.get("stream") == stream]


async def in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def test_backpack_names_and_the_original_aliases_both_stream(ws_stack: ApiStack) -> None:
    maker, taker = traders(ws_stack)

    async def run() -> None:
        client = await WsClient.open(ws_stack.ws_url)
        topics = ("depth@SOL_USDC", "trades@SOL_USDC", "ticker@SOL_USDC", "trade.SOL_USDC")
        assert await client.subscribe(*topics) == {"id": 1, "result": None}
        await in_thread(cross, ws_stack, maker, taker, "100.10")
        frames = await client.collect(
            lambda fs: bool(of(fs, "trades@SOL_USDC") and of(fs, "ticker@SOL_USDC"))
        )
        frames += await client.quiet(0.3)
        trades = of(frames, "trades@SOL_USDC")
        assert trades[0]["data"]["e"] == "trade" and trades[0]["data"]["p"] == "100.10"
        # The same trade under both names, each frame under the topic its client used.
        assert of(frames, "trade.SOL_USDC")[0]["data"] == trades[0]["data"]
        assert of(frames, "ticker@SOL_USDC")[-1]["data"]["c"] == "100.10"
        depth = of(frames, "depth@SOL_USDC")
        assert depth and all(d["data"]["e"] == "depth" for d in depth)
        await client.close()

    asyncio.run(run())


def test_bad_frames_get_an_error_frame_and_the_connection_carries_on(ws_stack: ApiStack) -> None:
    maker, taker = traders(ws_stack)

    async def run() -> None:
        client = await WsClient.open(ws_stack.ws_url)
        await client.send("not json")
        assert (await client.reply(None))["error"]["code"] == 4000
        await client.send({"method": "PING", "id": 3})
        assert (await client.reply(3))["error"]["code"] == 4001
        unknown = await client.subscribe("depth.DOGE_USDC", "nonsense", request_id=4)
        assert unknown is not None and unknown["error"]["code"] == 4006
        assert "DOGE_USDC" in unknown["error"]["message"]
        # ccxt's watch_orders() asks for this too: accepted, silently.
        assert await client.subscribe("account.rfqUpdate", request_id=5) == {
            "id": 5,
            "result": None,
        }
        # Unsigned private streams are refused, and nothing of them is registered.
        unsigned = await client.subscribe("account.orderUpdate", request_id=6)
        assert unsigned is not None and unsigned["error"]["code"] == 4004
        stale = signing.ws_subscribe_signature(
            maker.api_key, maker.secret, timestamp_ms=int(time.time() * 1000) - 70_000
        )
        expired = await client.subscribe("account.orderUpdate", signature=stale, request_id=8)
        assert expired is not None and expired["error"]["code"] == 4003
        crowded = await client.subscribe(*["depth.SOL_USDC"] * 51, request_id=10)
        assert crowded is not None and crowded["error"]["code"] == 4000
        assert await client.subscribe("trade.SOL_USDC", request_id=7) == {"id": 7, "result": None}
        await in_thread(cross, ws_stack, maker, taker)
        frames = await client.collect(lambda fs: bool(of(fs, "trade.SOL_USDC")))
        assert not [f for f in frames if "error" in f]
        assert not client.closed.is_set()
        await client.close()

    asyncio.run(run())


def test_a_quiet_book_gets_sequenced_heartbeat_deltas(ws_stack: ApiStack) -> None:
    """Nothing trades on TATA_INR: its depth stream still moves, one id at a time, so a
    client that waits for several deltas before syncing (ccxt waits for 11) gets there."""

    async def run() -> None:
        client = await WsClient.open(ws_stack.ws_url)
        await client.subscribe("depth.TATA_INR")
        frames = await client.collect(lambda fs: len(of(fs, "depth.TATA_INR")) >= 3, 10)
        deltas = [f["data"] for f in of(frames, "depth.TATA_INR")]
        assert all(d["b"] == [] and d["a"] == [] for d in deltas)
        assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(deltas))
        await client.close()

    asyncio.run(run())


def test_unsubscribe_stops_delivery_to_that_connection_only(ws_stack: ApiStack) -> None:
    maker, taker = traders(ws_stack)

    async def run() -> None:
        leaving, staying = (
            await WsClient.open(ws_stack.ws_url),
            await WsClient.open(ws_stack.ws_url),
        )
        await leaving.subscribe("trade.SOL_USDC")
        await staying.subscribe("trade.SOL_USDC")
        await in_thread(cross, ws_stack, maker, taker)
        await leaving.collect(lambda fs: bool(of(fs, "trade.SOL_USDC")))
        await staying.collect(lambda fs: bool(of(fs, "trade.SOL_USDC")))
        assert await leaving.unsubscribe("trade.SOL_USDC") == {"id": 2, "result": None}
        await in_thread(cross, ws_stack, maker, taker, "100.20")
        got = await staying.collect(lambda fs: bool(of(fs, "trade.SOL_USDC")))
        assert of(got, "trade.SOL_USDC")[0]["data"]["p"] == "100.20"
        assert of(await leaving.quiet(1.0), "trade.SOL_USDC") == []
        await leaving.close()
        await staying.close()

    asyncio.run(run())


def test_private_streams_carry_only_the_signers_own_events(ws_stack: ApiStack) -> None:
    alice, bob = traders(ws_stack)
    private = ("account.orderUpdate", "account.balanceUpdate")

    async def run() -> None:
        alice_ws, bob_ws = (
            await WsClient.open(ws_stack.ws_url),
            await WsClient.open(ws_stack.ws_url),
        )
        signature = signing.ws_subscribe_signature(alice.api_key, alice.secret)
        assert await alice_ws.subscribe(*private, signature=signature) == {"id": 1, "result": None}
        # A signature by Alice's key over a tampered timestamp is refused.
        forged = [*signature[:2], str(int(signature[2]) + 1), signature[3]]
        refused = await bob_ws.subscribe(*private, signature=forged, request_id=9)
        assert refused is not None and refused["error"]["code"] == 4002
        bob_signature = signing.ws_subscribe_signature(bob.api_key, bob.secret)
        assert await bob_ws.subscribe(*private, signature=bob_signature) == {
            "id": 1,
            "result": None,
        }
        alice_order = await in_thread(order, ws_stack, alice, "Ask", "100.30", "1")
        bob_order = await in_thread(order, ws_stack, bob, "Bid", "100.30", "1")

        def filled(fs: list[Frame]) -> bool:
            return any(f.get("data", {}).get("e") == "orderFill" for f in fs)

        alice_frames = await alice_ws.collect(filled)
        bob_frames = await bob_ws.collect(filled)
        alice_frames += await alice_ws.quiet(0.5)
        bob_frames += await bob_ws.quiet(0.5)
        alice_orders = {f["data"]["i"] for f in of(alice_frames, "account.orderUpdate")}
        bob_orders = {f["data"]["i"] for f in of(bob_frames, "account.orderUpdate")}
        assert alice_orders == {alice_order["id"]} and bob_orders == {bob_order["id"]}
        fill = next(f["data"] for f in alice_frames if f["data"]["e"] == "orderFill")
        assert fill["X"] == "Filled" and fill["l"] == "1.00" and fill["m"] is True
        balances = of(alice_frames, "account.balanceUpdate")
        assert {b["data"]["a"] for b in balances} >= {"SOL", "USDC"}
        await alice_ws.close()
        await bob_ws.close()

    asyncio.run(run())


def registry_keys(stack: ApiStack, connection_id: str) -> list[str]:
    """Every registry key that still mentions the connection."""
    assert stack.engines is not None
    client = stack.engines.redis
    found = []
    for key in client.scan_iter("cx:ws:*"):
        name = key.decode()
        kind = client.type(key)
        if kind == b"hash" and name != names.WS_DELIVERED_KEY:
            fields = [field.decode() for field in client.hkeys(key)]
            mentioned = any(field.startswith(connection_id + " ") for field in fields)
        elif kind == b"zset":
            mentioned = client.zscore(key, connection_id) is not None
        else:
            mentioned = False
        if mentioned or name == names.ws_connection_key(connection_id):
            found.append(name)
    return found


def test_disconnect_removes_every_trace_of_the_connection(ws_stack: ApiStack) -> None:
    assert ws_stack.engines is not None
    registry = SubscriptionRegistry(ws_stack.engines.redis)
    alice, _ = traders(ws_stack)

    async def run() -> str:
        before = set(ws_stack.engines.redis.zrange(names.WS_CONNECTIONS_KEY, 0, -1))  # type: ignore[union-attr]
        client = await WsClient.open(ws_stack.ws_url)
        signature = signing.ws_subscribe_signature(alice.api_key, alice.secret)
        await client.subscribe("depth.SOL_USDC", "kline.1m.SOL_USDC", "account.orderUpdate",
                               signature=signature)  # fmt: skip
        after = set(ws_stack.engines.redis.zrange(names.WS_CONNECTIONS_KEY, 0, -1))  # type: ignore[union-attr]
        (connection_id,) = {c.decode() for c in after - before}
        assert registry.topics(connection_id) == [
            "account.orderUpdate",
            "depth.SOL_USDC",
            "kline.1m.SOL_USDC",
        ]
        # The connection set, its own hash, its market audience and its account audience.
        assert len(registry_keys(ws_stack, connection_id)) == 4
        await client.close()
        return connection_id

    connection_id = asyncio.run(run())
    deadline = time.monotonic() + 5
    while registry_keys(ws_stack, connection_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry_keys(ws_stack, connection_id) == []


def test_a_vanished_connection_is_dropped_from_the_registry_on_gone(ws_stack: ApiStack) -> None:
    """A connection whose $disconnect was lost: the fan-out's post gets GoneException and
    removes it."""
    assert ws_stack.engines is not None
    registry = SubscriptionRegistry(ws_stack.engines.redis)
    ghost = "Z2hvc3RjbjEyMzQ1Njc="
    registry.connect(ghost, int(time.time() * 1000))
    from cloudex.streams import parse_stream

    stream = parse_stream("depth.SOL_USDC", {"SOL_USDC"})
    assert stream is not None and registry.subscribe(ghost, "depth.SOL_USDC", stream)
    deadline = time.monotonic() + 10  # the next depth update (a heartbeat at worst) finds it
    while registry.is_connected(ghost) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not registry.is_connected(ghost)
    assert registry.topics(ghost) == []


def raw_websocket_that_never_reads(url: str) -> socket.socket:
    """A client that completes the handshake, subscribes, and then never reads a byte."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response, response
    payload = b'{"method":"SUBSCRIBE","params":["depth.SOL_USDC","trade.SOL_USDC"],"id":1}'
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


def test_a_client_that_stops_reading_never_delays_the_others(ws_stack: ApiStack) -> None:
    maker, taker = traders(ws_stack)
    stalled = [raw_websocket_that_never_reads(ws_stack.ws_url) for _ in range(3)]

    async def run() -> list[float]:
        client = await WsClient.open(ws_stack.ws_url)
        await client.subscribe("depth.SOL_USDC", "trade.SOL_USDC")
        lags: list[float] = []
        for round_ in range(15):
            await in_thread(cross, ws_stack, maker, taker, f"{100 + round_ / 100:.2f}")
            frames = await client.collect(lambda fs: bool(of(fs, "trade.SOL_USDC")))
            trade = of(frames, "trade.SOL_USDC")[0]["data"]
            lags.append(time.time() * 1000 - trade["T"] / 1000)
        await client.close()
        return lags

    lags = asyncio.run(run())
    for sock in stalled:
        sock.close()
    assert max(lags) < 1_000, lags


def test_a_large_audience_is_split_into_shards_posted_by_parallel_invocations(
    ws_stack: ApiStack,
) -> None:
    """ws_fanout with SHARD_SIZE 2 and 5 subscribers: it posts to the first shard itself and
    invokes itself for the other two; every subscriber gets the update exactly once."""
    import json

    import boto3

    from cloudex.market_data import MarketUpdate, encode_update

    assert ws_stack.lambdas is not None
    client = boto3.client("lambda", endpoint_url=ws_stack.lambdas.endpoint_url)

    async def run() -> None:
        clients = [await WsClient.open(ws_stack.ws_url) for _ in range(5)]
        for ws in clients:
            await ws.subscribe("depth.TATA_INR")
        update = MarketUpdate(
            market="TATA_INR",
            first_update_id=10**9,
            last_update_id=10**9 + 1,
            bids={2_000: 7},
            ts=int(time.time() * 1e6),
        )
        response = await in_thread(
            lambda: client.invoke(FunctionName="ws_fanout_sharded", Payload=encode_update(update))
        )
        summary = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, summary
        assert summary["shards"] == 3 and summary["connections"] == 5 and summary["posted"] == 5
        for ws in clients:
            frames = await ws.collect(
                lambda fs: any(f.get("data", {}).get("U") == 10**9 for f in fs)
            )
            sent = [f for f in frames if f.get("data", {}).get("U") == 10**9]
            assert sent[0]["data"]["b"] == [["100.00", "7"]]
            later = await ws.quiet(0.3)
            assert len(sent) + sum(f.get("data", {}).get("U") == 10**9 for f in later) == 1
            await ws.close()

    asyncio.run(run())
