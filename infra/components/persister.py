"""The persister: events.fifo -> PostgreSQL (journal, then read models).

The SQS event source reports partial batch failures, so one block that cannot be written is
retried without redelivering the ones written before it (FIFO keeps the rest of its group
behind it). Concurrency is bounded: the journal has one message group, so more invocations
would only wait.
"""

from __future__ import annotations

from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from infra import constants as c
from infra.components.data import Data
from infra.components.messaging import Messaging
from infra.components.network import Network
from infra.lambda_bundle import build_function

__all__ = ["Persister"]


class Persister(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        messaging: Messaging,
        data: Data,
    ) -> None:
        super().__init__(scope, construct_id)
        security_group = network.security_group(self, "SecurityGroup", "Persister function")
        self.function = build_function(
            self,
            c.PERSISTER,
            network=network,
            security_group=security_group,
            environment=data.proxy_database_environment(),
        )
        data.allow_proxy(security_group, self.function, "Persister (journal, read models)")
        self.function.add_event_source(
            event_sources.SqsEventSource(
                messaging.events,
                batch_size=c.PERSISTER_BATCH_SIZE,
                report_batch_item_failures=True,
                max_concurrency=c.PERSISTER_MAX_CONCURRENCY,
            )
        )
