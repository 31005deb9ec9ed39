"""The SQS FIFO queues, from the specs in ``cloudex/queues.py`` (LocalStack uses the same).

SQS-managed encryption at rest (no KMS request per message at the exchange's rates), TLS
enforced by the queue policy. orders.fifo runs in high-throughput FIFO mode: deduplication and
throughput are per message group (one account), which is what the engine's ordering needs.
Alarms: anything in the dead-letter queue; a command waiting too long (the engine is down or
stuck); a journal block waiting too long (the persister is stuck: events.fifo has no DLQ).
"""

from __future__ import annotations

from collections.abc import Callable

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cloudex.queues import EVENTS_SPEC, ORDERS_DLQ_SPEC, ORDERS_SPEC, QUEUES, QueueSpec
from infra import constants as c

__all__ = ["Messaging", "queue_construct_id"]


def queue_construct_id(spec: QueueSpec) -> str:
    """``orders-dlq.fifo`` -> ``OrdersDlqQueue``."""
    stem = spec.name.removesuffix(".fifo")
    return "".join(part.capitalize() for part in stem.split("-")) + "Queue"


class Messaging(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack_name = cdk.Stack.of(self).stack_name
        self.queues: dict[str, sqs.Queue] = {}
        for spec in QUEUES:
            dead_letter = (
                sqs.DeadLetterQueue(
                    queue=self.queues[spec.dead_letter], max_receive_count=spec.max_receive_count
                )
                if spec.dead_letter
                else None
            )
            self.queues[spec.name] = sqs.Queue(
                self,
                queue_construct_id(spec),
                # Prefixed with the stack so that two stacks can share an account and region.
                queue_name=f"{stack_name}-{spec.name}",
                fifo=spec.fifo,
                content_based_deduplication=spec.content_based_deduplication,
                visibility_timeout=cdk.Duration.seconds(spec.visibility_timeout_s),
                retention_period=cdk.Duration.seconds(spec.retention_s),
                dead_letter_queue=dead_letter,
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP
                if spec.high_throughput
                else None,
                fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID
                if spec.high_throughput
                else None,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
        self.orders = self.queues[ORDERS_SPEC.name]
        self.orders_dlq = self.queues[ORDERS_DLQ_SPEC.name]
        self.events = self.queues[EVENTS_SPEC.name]

        self.alarms = [
            _alarm(
                self,
                "OrdersDeadLetters",
                "Commands in the orders dead-letter queue: the engine failed on them repeatedly "
                "(docs/deploy.md, dead letters)",
                self.orders_dlq.metric_approximate_number_of_messages_visible,
                threshold=1,
                evaluation_periods=1,
            ),
            _alarm(
                self,
                "OrdersWaiting",
                f"A command has waited in orders.fifo longer than {c.ORDERS_OLDEST_AGE_ALARM_S} "
                "s: the engine is down, restarting or stuck",
                self.orders.metric_approximate_age_of_oldest_message,
                threshold=c.ORDERS_OLDEST_AGE_ALARM_S,
                evaluation_periods=2,
            ),
            _alarm(
                self,
                "JournalWaiting",
                "A journal block has waited in events.fifo longer than "
                f"{c.EVENTS_OLDEST_AGE_ALARM_S} s: the persister cannot write it (it is never "
                "skipped; see its logs)",
                self.events.metric_approximate_age_of_oldest_message,
                threshold=c.EVENTS_OLDEST_AGE_ALARM_S,
                evaluation_periods=2,
            ),
        ]


def _alarm(
    scope: Construct,
    construct_id: str,
    description: str,
    metric: Callable[..., cloudwatch.Metric],
    *,
    threshold: int,
    evaluation_periods: int,
) -> cloudwatch.Alarm:
    """An alarm on a queue metric's per-minute maximum reaching ``threshold``."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric(period=cdk.Duration.minutes(1), statistic="Maximum"),
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
