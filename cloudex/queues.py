"""The SQS queues, defined once: the CDK stack (infra/) and LocalStack (localstack/) both build
them from these specs, and a test checks that the two agree.

- orders.fifo: commands in. No content-based deduplication: every command carries its own
  deduplication id (the command id). A message received ``max_receive_count`` times without
  being deleted (the engine crashed on it each time) moves to orders-dlq.fifo.
- orders-dlq.fifo: the dead letters, kept 14 days for an operator to inspect.
- events.fifo: the journal. No dead-letter queue, on purpose: the persister must write blocks
  contiguously, so a block that cannot be written is retried, never set aside (an alarm on the
  age of the oldest message says so). Kept 14 days, the SQS maximum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cloudex.names import EVENTS_QUEUE, ORDERS_DLQ, ORDERS_QUEUE

__all__ = ["QueueSpec", "ORDERS_DLQ_SPEC", "ORDERS_SPEC", "EVENTS_SPEC", "QUEUES"]

FOURTEEN_DAYS_S = 14 * 24 * 3600
FOUR_DAYS_S = 4 * 24 * 3600


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    visibility_timeout_s: int
    retention_s: int
    dead_letter: str | None = None  # the name of this queue's DLQ
    max_receive_count: int = 0  # receives before a message moves to the DLQ
    content_based_deduplication: bool = False
    # High-throughput FIFO: deduplication and throughput limits per message group.
    high_throughput: bool = False
    fifo: bool = True

    def attributes(self, dead_letter_arn: str | None = None) -> dict[str, str]:
        """The queue's attributes as SQS ``SetQueueAttributes`` spells them (minus FifoQueue,
        which only ``CreateQueue`` takes)."""
        attributes = {
            "ContentBasedDeduplication": str(self.content_based_deduplication).lower(),
            "VisibilityTimeout": str(self.visibility_timeout_s),
            "MessageRetentionPeriod": str(self.retention_s),
        }
        if self.high_throughput:
            attributes["DeduplicationScope"] = "messageGroup"
            attributes["FifoThroughputLimit"] = "perMessageGroupId"
        if self.dead_letter is not None:
            if dead_letter_arn is None:
                raise ValueError(f"{self.name} needs the ARN of {self.dead_letter}")
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": self.max_receive_count}
            )
        return attributes


ORDERS_DLQ_SPEC = QueueSpec(name=ORDERS_DLQ, visibility_timeout_s=30, retention_s=FOURTEEN_DAYS_S)
# The engine deletes a command once its events are journaled, well within 30 s; a crash
# leaves it to be received again by the next engine after the timeout. One message group per
# account, and a command id is never reused across accounts, so per-group deduplication
# (high-throughput mode) is as strict as per-queue.
ORDERS_SPEC = QueueSpec(
    name=ORDERS_QUEUE,
    visibility_timeout_s=30,
    retention_s=FOUR_DAYS_S,
    dead_letter=ORDERS_DLQ,
    max_receive_count=5,
    high_throughput=True,
)
# At least the persister function's timeout (infra/constants.py), as Lambda requires.
EVENTS_SPEC = QueueSpec(name=EVENTS_QUEUE, visibility_timeout_s=30, retention_s=FOURTEEN_DAYS_S)

# In creation order: a dead-letter queue before the queue that names it.
QUEUES = (ORDERS_DLQ_SPEC, ORDERS_SPEC, EVENTS_SPEC)
