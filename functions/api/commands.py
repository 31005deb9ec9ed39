"""Exactly-once commands: send to ``orders.fifo``, wait for the engine's answer.

For each command the API, in this order:

1. reads the stored result (``cx:result:<id>``) and the engine heartbeat in one round trip:
   a resent request is answered from the result, without queueing anything; a stale heartbeat
   is ``MAINTENANCE``, nothing queued;
2. subscribes to the command's reply channel and waits for the confirmation, so the reply
   cannot be published before anyone listens;
3. sends it (message group: the account, so its commands keep their order; dedup id: the
   command id, so SQS drops a resend within 5 minutes, and the engine answers one SQS could
   not catch from its result cache);
4. waits for the reply; when none comes in time, reads the stored result once more, then
   answers ``TIMEOUT`` with the command id. The command carries a deadline (the signed
   timestamp plus window): once it has passed, the engine can only reject it, so the outcome a
   client finds then (resending the same signed request, or looking for the order) is final.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import redis

from cloudex import names
from cloudex.enums import ErrorCode
from cloudex.messages import Command, CommandResult, decode_result, encode_command_body
from functions.api.errors import ApiError
from functions.api.runtime import Runtime, logger
from functions.api.timing import phase, record

__all__ = ["CommandGateway", "raise_for_result", "heartbeat_age_ms"]

_SQS_BATCH = 10  # SendMessageBatch's limit
_json = msgspec.json.Decoder()


def heartbeat_age_ms(runtime: Runtime, heartbeat: bytes | None) -> int | None:
    """How old the engine's last heartbeat is, or ``None`` when there is none."""
    if heartbeat is None:
        return None
    try:
        return runtime.now_ms() - int(_json.decode(heartbeat)["ts"]) // 1_000
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None


def raise_for_result(result: CommandResult) -> None:
    if result.error is not None:
        raise ApiError(result.error, result.message)


class CommandGateway:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def execute(self, commands: Sequence[Command], group: str) -> list[CommandResult]:
        """Send ``commands`` (in this order, one message group) and return their results.

        Raises ``MAINTENANCE`` when the engine is not running and ``TIMEOUT`` when an answer
        does not come within the reply timeout (nothing of the batch is answered then).
        """
        ids = [command.id for command in commands]
        with phase("redis"):
            results = self._stored(ids, check_engine=True)
        pending = [command for command in commands if command.id not in results]
        if pending:
            results.update(self._send_and_wait(pending, group))
        return [results[command_id] for command_id in ids]

    # -- STEPS --------------------------------------------------------------------------------

    def _stored(self, ids: list[str], *, check_engine: bool) -> dict[str, CommandResult]:
        pipe = self.runtime.redis.pipeline(transaction=False)
        pipe.mget([names.result_key(command_id) for command_id in ids])
        pipe.get(names.heartbeat_key())
        stored, heartbeat = pipe.execute()
        # Found before sending: the answer to an earlier send of the same command.
        results = {
            command_id: msgspec.structs.replace(decode_result(value), duplicate=check_engine)
            for command_id, value in zip(ids, stored, strict=True)
            if value is not None
        }
        if check_engine and len(results) < len(ids):
            self._check_engine(heartbeat)
        return results

    def _check_engine(self, heartbeat: bytes | None) -> None:
        age_ms = heartbeat_age_ms(self.runtime, heartbeat)
        if age_ms is None or age_ms > self.runtime.settings.heartbeat_max_age_ms:
            raise ApiError(
                ErrorCode.MAINTENANCE, "The matching engine is not running; nothing was queued"
            )

    def _send_and_wait(self, commands: Sequence[Command], group: str) -> dict[str, CommandResult]:
        runtime = self.runtime
        channels = {names.reply_channel(command.id).encode(): command.id for command in commands}
        pubsub = runtime.pubsub()
        results: dict[str, CommandResult] = {}
        try:
            with phase("subscribe"):
                pubsub.subscribe(*channels)
                self._await_subscribed(pubsub, set(channels))
            with phase("sqs"):
                self._send(commands, group)
            wait_start = time.perf_counter()
            deadline = time.monotonic() + runtime.settings.reply_timeout_s
            while len(results) < len(channels):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = pubsub.get_message(timeout=remaining)
                if message is None or message["type"] != "message":
                    continue
                command_id = channels.get(message["channel"])
                if command_id is not None:
                    results[command_id] = decode_result(message["data"])
            record("engine", time.perf_counter() - wait_start)
            pubsub.unsubscribe()
        except redis.RedisError:
            # A broken subscription: start a new one next time; the stored results still tell.
            runtime.drop_pubsub()
            logger.warning("reply subscription failed", exc_info=True)
        missing = [command_id for command_id in channels.values() if command_id not in results]
        if missing:
            results.update(self._stored(missing, check_engine=False))
            still = [command_id for command_id in missing if command_id not in results]
            if still:
                raise ApiError(
                    ErrorCode.TIMEOUT,
                    "No answer from the matching engine in time; the command may still take "
                    "effect until the request's window has passed. Resend the same signed "
                    "request within its window to read the outcome (after it, look the order "
                    "up: the resend is refused as expired)",
                    extra={"commandIds": still},
                )
        return results

    @staticmethod
    def _await_subscribed(pubsub: Any, channels: set[bytes]) -> None:
        deadline = time.monotonic() + 2.0
        waiting = set(channels)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError("no subscribe confirmation")
            message = pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                waiting.discard(message["channel"])

    def _send(self, commands: Sequence[Command], group: str) -> None:
        sqs = self.runtime.sqs
        queue_url = self.runtime.settings.orders_queue_url
        try:
            if len(commands) == 1:
                command = commands[0]
                sqs.send_message(
                    QueueUrl=queue_url,
                    MessageBody=encode_command_body(command),
                    MessageGroupId=group,
                    MessageDeduplicationId=command.id,
                )
                return
            for start in range(0, len(commands), _SQS_BATCH):
                chunk = commands[start : start + _SQS_BATCH]
                response = sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {
                            "Id": str(index),
                            "MessageBody": encode_command_body(command),
                            "MessageGroupId": group,
                            "MessageDeduplicationId": command.id,
                        }
                        for index, command in enumerate(chunk)
                    ],
                )
                if response.get("Failed"):
                    raise RuntimeError(f"SQS refused {response['Failed']}")
        except Exception:
            logger.exception("sending to orders.fifo failed")
            # Whether SQS kept the message is unknown: the reply wait and the stored result
            # decide, and a resend of the same request is safe.
            raise ApiError(
                ErrorCode.SERVER_ERROR,
                "Could not confirm the command was queued: resend the same signed request",
                status=503,
                extra={"commandIds": [command.id for command in commands]},
            ) from None
