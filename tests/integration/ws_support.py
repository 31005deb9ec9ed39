"""A raw WebSocket client for tests and benchmarks (aiohttp, as ccxt.pro uses): frames
decoded as they arrive, with their arrival time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp

__all__ = ["WsClient", "Frame", "BackgroundListener"]

Frame = dict[str, Any]


class WsClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: asyncio.Queue[tuple[float, Frame]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, autoping=True, heartbeat=None)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.put_nowait((time.time(), json.loads(message.data)))
        self.close_code = self.ws.close_code
        self.closed.set()

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def subscribe(
        self, *topics: str, request_id: int | None = 1, signature: list[str] | None = None
    ) -> Frame | None:
        """SUBSCRIBE; with an id, wait for the ack (or error) and return it."""
        frame: Frame = {"method": "SUBSCRIBE", "params": list(topics)}
        if request_id is not None:
            frame["id"] = request_id
        if signature is not None:
            frame["signature"] = signature
        await self.send(frame)
        if request_id is None:
            return None
        return await self.reply(request_id)

    async def unsubscribe(self, *topics: str, request_id: int = 2) -> Frame:
        await self.send({"method": "UNSUBSCRIBE", "params": list(topics), "id": request_id})
        return await self.reply(request_id)

    async def reply(self, request_id: int | None, timeout_s: float = 10.0) -> Frame:
        """The next ack or error frame with this id (data frames before it are kept)."""
        kept: list[tuple[float, Frame]] = []
        try:
            while True:
                received = await asyncio.wait_for(self.frames.get(), timeout_s)
                if "stream" not in received[1] and received[1].get("id") == request_id:
                    return received[1]
                kept.append(received)
        finally:
            for item in kept:
                self.frames.put_nowait(item)

    async def recv(self, timeout_s: float = 10.0) -> Frame:
        return (await asyncio.wait_for(self.frames.get(), timeout_s))[1]

    async def collect(
        self, until: Callable[[list[Frame]], bool], timeout_s: float = 20.0
    ) -> list[Frame]:
        """Frames until ``until(frames)`` holds; raises TimeoutError otherwise."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout_s
        while not until(frames):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(frames)} frames, condition unmet: {frames[-3:]}")
            try:
                frames.append(await self.recv(remaining))
            except TimeoutError:
                continue
        return frames

    async def quiet(self, seconds: float) -> list[Frame]:
        """Whatever arrives within ``seconds``."""
        frames: list[Frame] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frames.append(await self.recv(remaining))
            except TimeoutError:
                break
        return frames

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await self.session.close()


class BackgroundListener:
    """A :class:`WsClient` on its own thread and event loop, collecting every frame of its
    subscription into ``frames`` while synchronous test code drives the stack."""

    def __init__(self, url: str, *topics: str, signature: list[str] | None = None) -> None:
        self.url = url
        self.topics = topics
        self.signature = signature
        self.frames: list[Frame] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    async def _listen(self) -> None:
        client = await WsClient.open(self.url)
        await client.subscribe(*self.topics, signature=self.signature)
        self._ready.set()
        while not self._stop.is_set():
            try:
                self.frames.append(await client.recv(0.5))
            except TimeoutError:
                continue
        await client.close()

    def __enter__(self) -> BackgroundListener:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"could not subscribe {self.topics}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
