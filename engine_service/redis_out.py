"""Redis adapter: replies, and the keys the REST API reads without asking the engine.

Written after the journal send and before the inbound messages are deleted: keys first, then
the replies, so a client that got its reply reads its own order, fill and balance. One
pipelined round trip per batch. Values are the Backpack JSON shapes of :mod:`cloudex.views`,
so the API returns them as they are.

Keys (names in :mod:`cloudex.names`): per market its depth (with ``lastUpdateId``), ticker and
recent trades (newest first); the market list; per account its balances, open orders (a hash by
order id), and recently closed orders and fills (sorted sets scored by time, trimmed to the
last ``recent_limit`` and ``recent_window_s``); the engine heartbeat. If Redis restarts (a new
``run_id``) or a write fails, every key the engine's state defines is written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import hiredis
import msgspec
import redis

from cloudex import names
from cloudex.cache import DepthSnapshot, MarketEntry, encode_value
from cloudex.messages import (
    AnyEvent,
    BalanceChanged,
    CommandResult,
    DepthChanged,
    MarketAdded,
    MarketFeesChanged,
    MarketStateChanged,
    MarketStats,
    OrderAccepted,
    OrderClosed,
    TradeExecuted,
    encode,
)
from engine_service.core import Engine

__all__ = ["RedisOutput", "RawPipeline", "PendingWrite", "DEPTH_LEVELS"]

log = logging.getLogger(__name__)

# Levels per side kept in the depth key (Backpack's largest depth limit).
DEPTH_LEVELS = 1_000

# How often the recent closed-order and fill sets are trimmed.
TRIM_INTERVAL_US = 5_000_000

_json = msgspec.json.Encoder()


class RawPipeline:
    """A pipeline that packs commands with hiredis and reads the replies in bulk.

    redis-py's pipeline costs ~25 µs a command in Python (argument handling, per-reply
    callbacks); a batch writes several commands per engine command, so that alone capped the
    service at ~6,000 commands/s. Only the commands the engine writes are here, and replies are
    only checked for errors.
    """

    __slots__ = ("client", "commands", "_future")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.commands: list[bytes] = []
        self._future: Future[None] | None = None

    def _add(self, *args: bytes | str | int | float) -> None:
        self.commands.append(hiredis.pack_command(args))  # type: ignore[arg-type]

    def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        if ex is None:
            self._add("SET", key, value)
        else:
            self._add("SET", key, value, "EX", ex)

    def publish(self, channel: str, message: bytes) -> None:
        self._add("PUBLISH", channel, message)

    def lpush(self, key: str, *values: bytes) -> None:
        self._add("LPUSH", key, *values)

    def ltrim(self, key: str, start: int, end: int) -> None:
        self._add("LTRIM", key, start, end)

    def hset(self, key: str, mapping: dict[str, bytes]) -> None:
        args: list[bytes | str] = []
        for field, value in mapping.items():
            args.append(field)
            args.append(value)
        self._add("HSET", key, *args)

    def hdel(self, key: str, *fields: str) -> None:
        self._add("HDEL", key, *fields)

    def zadd(self, key: str, mapping: dict[bytes, int]) -> None:
        args: list[bytes | int] = []
        for member, score in mapping.items():
            args.append(score)
            args.append(member)
        self._add("ZADD", key, *args)

    def zremrangebyrank(self, key: str, start: int, end: int) -> None:
        self._add("ZREMRANGEBYRANK", key, start, end)

    def zremrangebyscore(self, key: str, low: str, high: str) -> None:
        self._add("ZREMRANGEBYSCORE", key, low, high)

    def delete(self, key: str) -> None:
        self._add("DEL", key)

    def execute(self) -> None:
        """Send every command and read the replies, here and now."""
        payload, count = self._take()
        if count:
            self._roundtrip(payload, count)

    def send(self, writer: Executor) -> None:
        """Send every command and read the replies on ``writer``'s thread; :meth:`wait` waits.

        Socket I/O releases the GIL, so the matcher goes on with the next batch while Redis
        (on the other core) runs this one: a large batch does not fit the socket buffers, and
        a send on the matcher's thread would wait for Redis to drain them.
        """
        payload, count = self._take()
        self._future = writer.submit(self._roundtrip, payload, count) if count else None

    def wait(self) -> None:
        """Wait for what :meth:`send` sent; raise its error (a ``redis.RedisError``)."""
        future, self._future = self._future, None
        if future is not None:
            future.result()

    def _take(self) -> tuple[bytes, int]:
        payload, count = b"".join(self.commands), len(self.commands)
        self.commands = []
        return payload, count

    def _roundtrip(self, payload: bytes, count: int) -> None:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([payload], check_health=False)  # type: ignore[no-untyped-call]
            error = self._read_replies(conn._sock, count)  # type: ignore[attr-defined]
        except BaseException as failure:
            conn.disconnect()  # type: ignore[no-untyped-call]  # unread replies: never reuse it
            if isinstance(failure, OSError):
                raise redis.ConnectionError(str(failure)) from failure
            raise
        finally:
            pool.release(conn)
        if error is not None:
            raise redis.ResponseError(str(error))

    @staticmethod
    def _read_replies(sock: Any, count: int) -> Exception | None:
        """Read ``count`` replies straight off the socket (redis-py's reader costs ~5 µs a
        reply); return the first error reply, if any."""
        reader = hiredis.Reader()
        error: Exception | None = None
        while count:
            data = sock.recv(1 << 17)
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            reader.feed(data)
            while count:
                reply = reader.gets()
                if reply is False:
                    break
                count -= 1
                if isinstance(reply, hiredis.ReplyError) and error is None:
                    error = reply
        return error


def _reply(result: CommandResult) -> bytes:
    """A command's answer without its events: the API needs the verdict and the orders, and
    the events (the bulk of a result) reach subscribers through the market-data publisher."""
    if result.events:
        result = CommandResult(
            result.command_id, result.error, result.message, [], result.orders, result.duplicate
        )
    return encode(result)


class PendingWrite(NamedTuple):
    pipe: RawPipeline
    replies: Sequence[CommandResult]


class RedisOutput:
    def __init__(
        self,
        redis_url: str,
        *,
        recent_limit: int = 1_000,
        recent_window_s: int = 86_400,
        retry_delay_s: float = 0.5,
        result_ttl_s: int = 600,
    ) -> None:
        self.client = redis.Redis.from_url(
            redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self.recent_limit = recent_limit
        self.recent_window_us = recent_window_s * 1_000_000
        self.retry_delay_s = retry_delay_s
        self.result_ttl_s = result_ttl_s
        self._untrimmed: set[str] = set()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-writer")
        self._last_trim = 0
        self._run_id: str | None = None
        # Called while waiting for Redis to come back (the service's liveness beat).
        self.on_wait: Callable[[], None] = lambda: None

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.client.close()

    # -- PER BATCH --------------------------------------------------------------------------

    def send_batch(
        self,
        engine: Engine,
        events: Sequence[AnyEvent],
        replies: Sequence[CommandResult],
        stop: threading.Event,
    ) -> PendingWrite | None:
        """Send what a batch changed, then its replies, in one pipeline; :meth:`finish` reads
        Redis's answers. On failure, recover at once (see :meth:`_recover`)."""
        pipe = RawPipeline(self.client)
        self._batch_keys(pipe, engine, events)
        for result in replies:
            reply = _reply(result)
            # Kept as well as published: a resend that SQS deduplicates never reaches the
            # engine, and its sender reads the result here.
            pipe.set(names.result_key(result.command_id), reply, ex=self.result_ttl_s)
            pipe.publish(names.reply_channel(result.command_id), reply)
        pipe.send(self._writer)
        return PendingWrite(pipe, replies)

    def finish(self, pending: PendingWrite | None, engine: Engine, stop: threading.Event) -> None:
        """Wait for a sent batch; on failure, recover. Returns when Redis has it (or on stop)."""
        if pending is None:
            return
        try:
            pending.pipe.wait()
        except redis.RedisError as error:
            self._recover(engine, pending.replies, stop, error)

    def _recover(
        self,
        engine: Engine,
        replies: Sequence[CommandResult],
        stop: threading.Event,
        error: Exception,
    ) -> None:
        """Wait for Redis, write every key from the engine's state (which may be ahead of the
        failed batch: it is journaled), then the failed batch's replies again."""
        log.error("Redis write failed: %s; rewriting every key once Redis is back", error)
        self._run_id = None
        while not stop.is_set():
            try:
                self.rewrite_all(engine)
                pipe = RawPipeline(self.client)
                for result in replies:
                    reply = _reply(result)
                    pipe.set(names.result_key(result.command_id), reply, ex=self.result_ttl_s)
                    pipe.publish(names.reply_channel(result.command_id), reply)
                pipe.execute()
                return
            except redis.RedisError as again:
                log.error("Redis still unavailable: %s", again)
                # Alive, only waiting: a restart would not bring Redis back.
                self.on_wait()
                stop.wait(self.retry_delay_s)

    def _batch_keys(self, pipe: Any, engine: Engine, events: Iterable[AnyEvent]) -> None:
        depth_markets: set[str] = set()
        ticker_markets: set[str] = set()
        trades: dict[str, list[bytes]] = {}
        # account -> asset -> (available, locked) after the batch: the events carry the values.
        balances: dict[int, dict[str, tuple[int, int]]] = {}
        touched_orders: dict[int, int] = {}  # still-open candidates: order id -> account
        closed: dict[int, OrderClosed] = {}
        fills: dict[int, dict[bytes, int]] = {}
        markets_changed = False
        ts = 0
        # Dispatch on the exact type: events are final classes, and this loop runs per event.
        for event in events:
            kind = type(event)
            if kind is BalanceChanged:
                change: BalanceChanged = event  # type: ignore[assignment]
                account_balances = balances.get(change.account)
                if account_balances is None:
                    account_balances = balances[change.account] = {}
                account_balances[change.asset] = (change.available, change.locked)
            elif kind is OrderAccepted:
                accepted: OrderAccepted = event  # type: ignore[assignment]
                touched_orders[accepted.order_id] = accepted.account
            elif kind is DepthChanged:
                depth: DepthChanged = event  # type: ignore[assignment]
                depth_markets.add(depth.market)
            elif kind is TradeExecuted:
                trade: TradeExecuted = event  # type: ignore[assignment]
                packed = encode_value(trade)
                trades.setdefault(trade.market, []).append(packed)
                ticker_markets.add(trade.market)
                touched_orders[trade.buy_order_id] = trade.buyer
                touched_orders[trade.sell_order_id] = trade.seller
                for account in (trade.buyer, trade.seller):
                    fills.setdefault(account, {})[packed] = trade.ts
            elif kind is OrderClosed:
                close: OrderClosed = event  # type: ignore[assignment]
                closed[close.order_id] = close
            elif kind is MarketStats:
                stats: MarketStats = event  # type: ignore[assignment]
                ticker_markets.add(stats.market)
            elif kind is MarketAdded or kind is MarketFeesChanged or kind is MarketStateChanged:
                markets_changed = True
            ts = event.ts
        if markets_changed:
            self._write_markets(pipe, engine)
        for market in depth_markets:
            self._write_depth(pipe, engine, market, ts)
        for market in ticker_markets:
            self._write_ticker(pipe, engine, market)
        for market, items in trades.items():
            key = names.trades_key(market)
            pipe.lpush(key, *items)
            pipe.ltrim(key, 0, self.recent_limit - 1)
        for account, changed in balances.items():
            pipe.hset(
                names.balances_key(account),
                {asset: encode_value(balance) for asset, balance in changed.items()},
            )
        open_updates: dict[int, dict[str, bytes]] = {}
        open_order = engine.open_order
        for order_id, account in touched_orders.items():
            if order_id in closed:
                continue
            view = open_order(order_id)
            if view is not None:
                updates = open_updates.get(account)
                if updates is None:
                    updates = open_updates[account] = {}
                updates[str(order_id)] = encode_value(view)
        for account, updates in open_updates.items():
            pipe.hset(names.open_orders_key(account), updates)
        closed_by_account: dict[int, list[OrderClosed]] = {}
        for event in closed.values():
            closed_by_account.setdefault(event.account, []).append(event)
        for account, account_closed in closed_by_account.items():
            pipe.hdel(names.open_orders_key(account), *(str(e.order_id) for e in account_closed))
            key = names.closed_orders_key(account)
            pipe.zadd(key, {encode_value(e): e.ts for e in account_closed})
            self._untrimmed.add(key)
        for account, account_fills in fills.items():
            key = names.fills_key(account)
            pipe.zadd(key, account_fills)
            self._untrimmed.add(key)

    def trim_recent(self, now: int) -> None:
        """Trim the recently-closed and fill sets written to since the last trim, to the last
        ``recent_limit`` and ``recent_window_s``. Done every few seconds, not per batch: two
        commands per account and batch cost more than the sets' brief overshoot."""
        if not self._untrimmed:
            return
        pipe = RawPipeline(self.client)
        oldest = f"({now - self.recent_window_us}"
        for key in self._untrimmed:
            pipe.zremrangebyrank(key, 0, -self.recent_limit - 1)
            pipe.zremrangebyscore(key, "-inf", oldest)
        pipe.execute()
        self._untrimmed.clear()

    # -- WHOLE KEYS -------------------------------------------------------------------------

    def _write_markets(self, pipe: Any, engine: Engine) -> None:
        assets = {asset.symbol: asset for asset in engine.assets()}
        entries = [
            MarketEntry(spec, assets[spec.base], assets[spec.quote]) for spec in engine.markets()
        ]
        pipe.set(names.markets_key(), encode_value(entries))

    def _write_depth(self, pipe: Any, engine: Engine, market: str, ts: int) -> None:
        update_id, bids, asks = engine.depth(market, DEPTH_LEVELS)
        pipe.set(names.depth_key(market), encode_value(DepthSnapshot(update_id, ts, bids, asks)))

    def _write_ticker(self, pipe: Any, engine: Engine, market: str) -> None:
        pipe.set(names.ticker_key(market), encode_value(engine.market_stats(market).ticker))

    def _write_balances(self, pipe: Any, engine: Engine, account: int) -> None:
        key = names.balances_key(account)
        pipe.delete(key)
        pipe.hset(
            key,
            {asset: encode_value(balance) for asset, balance in engine.balances(account).items()},
        )

    def rewrite_all(self, engine: Engine) -> None:
        """Write every key the engine's state defines (start-up, after a Redis restart)."""
        self._run_id = str(self.client.info("server").get("run_id"))
        pipe = RawPipeline(self.client)
        self._write_markets(pipe, engine)
        open_orders: dict[int, dict[str, bytes]] = {}
        for spec in engine.markets():
            self._write_depth(pipe, engine, spec.symbol, engine.clock)
            self._write_ticker(pipe, engine, spec.symbol)
            for order in engine.resting_orders(spec.symbol):
                view = engine.open_order(order.id)
                assert view is not None
                open_orders.setdefault(order.account, {})[str(order.id)] = encode_value(view)
        for account in engine.accounts():
            self._write_balances(pipe, engine, account)
            key = names.open_orders_key(account)
            pipe.delete(key)
            if account in open_orders:
                pipe.hset(key, open_orders[account])
        pipe.execute()

    # -- HEARTBEAT --------------------------------------------------------------------------

    def delivered_watermark(self) -> int | None:
        """The last engine's market-data watermark (``None``: never written)."""
        value = self.client.get(names.WS_DELIVERED_KEY)
        return None if value is None else int(value)

    def record_delivered(self, seq: int) -> None:
        self.client.set(names.WS_DELIVERED_KEY, seq)

    def heartbeat(self, engine: Engine, now: int, epoch: int, engine_id: str) -> None:
        """Refresh the liveness key; rewrite every key if Redis restarted since the last one."""
        info = self.client.info("server")
        run_id = str(info.get("run_id"))
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted (run_id changed): rewriting every key")
            self.rewrite_all(engine)
        self._run_id = run_id
        if now - self._last_trim >= TRIM_INTERVAL_US:
            self._last_trim = now
            self.trim_recent(now)
        self.client.set(
            names.heartbeat_key(),
            _json.encode(
                {"ts": now, "epoch": epoch, "eventSeq": engine.seq, "engineId": engine_id}
            ),
            ex=30,
        )
