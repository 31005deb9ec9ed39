"""Posting an outbox through the API Gateway management API (``post_to_connection``).

Connections are posted to in parallel (threads: each call is a network round trip in AWS),
each connection's own messages in order. A connection that is gone (``GoneException``) is
removed from the registry and gets nothing more; a throttled call (``LimitExceededException``,
the account's shared post quota) is retried with backoff; any other failure skips that
connection's remaining messages of this delivery and is counted. None of them fails the
delivery: the others have been posted to, and a retry would post to them twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["PostResult", "Poster"]

log = logging.getLogger(__name__)

THROTTLE_RETRIES = 3


@dataclass
class PostResult:
    posted: int = 0
    gone: int = 0
    failed: int = 0
    throttled: int = 0

    def add(self, other: PostResult) -> None:
        self.posted += other.posted
        self.gone += other.gone
        self.failed += other.failed
        self.throttled += other.throttled


class Poster:
    def __init__(self, client: Any, on_gone: Callable[[str], object], threads: int = 16) -> None:
        self.client = client
        self.on_gone = on_gone
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="post")

    def post(self, messages: list[bytes], deliveries: list[tuple[str, list[int]]]) -> PostResult:
        if not deliveries:
            return PostResult()
        # A few big chunks, not one task per connection: the pool's hand-off costs about as
        # much as a post's own Python work.
        chunk_count = min(self.threads, len(deliveries))
        chunks = [deliveries[i::chunk_count] for i in range(chunk_count)]
        result = PostResult()
        if chunk_count == 1:
            result.add(self._post_chunk(messages, chunks[0]))
            return result
        for chunk_result in self._pool.map(lambda c: self._post_chunk(messages, c), chunks):
            result.add(chunk_result)
        return result

    def _post_chunk(self, messages: list[bytes], chunk: list[tuple[str, list[int]]]) -> PostResult:
        result = PostResult()
        post = self.client.post_to_connection
        for connection_id, indexes in chunk:
            for index in indexes:
                if not self._post_one(post, connection_id, messages[index], result):
                    break
        return result

    def _post_one(self, post: Any, connection_id: str, data: bytes, result: PostResult) -> bool:
        """Post one message; ``False``: give up on this connection for this delivery."""
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                post(ConnectionId=connection_id, Data=data)
                result.posted += 1
                return True
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code == "GoneException":
                    result.gone += 1
                    self._forget(connection_id)
                    return False
                if code in ("LimitExceededException", "TooManyRequestsException", "Throttling"):
                    result.throttled += 1
                    if attempt < THROTTLE_RETRIES:
                        time.sleep(0.05 * 2**attempt)
                        continue
                log.warning("post to %s failed: %s", connection_id, code or error)
                result.failed += 1
                return False
            except Exception as error:  # connection reset, timeout: this connection only
                log.warning("post to %s failed: %s", connection_id, error)
                result.failed += 1
                return False
        return False

    def _forget(self, connection_id: str) -> None:
        try:
            self.on_gone(connection_id)
        except Exception as error:  # the next delivery finds it gone again
            log.warning("could not remove gone connection %s: %s", connection_id, error)
