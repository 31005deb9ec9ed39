"""Schema migrations, applied on every deployment before anything that uses the schema.

A CDK trigger invokes the migration function once the database exists and before the engine
service and the functions that read or write PostgreSQL are created or updated; it runs again
whenever the function's bundle (which holds the SQL files) changes. The runner is idempotent
and takes an advisory lock, so a re-run applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import triggers
from constructs import Construct

from infra import constants as c
from infra.components.data import Data
from infra.components.network import Network
from infra.lambda_bundle import build_function

__all__ = ["Migrations"]


class Migrations(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        data: Data,
        before: Sequence[Construct],
    ) -> None:
        super().__init__(scope, construct_id)
        security_group = network.security_group(self, "SecurityGroup", "Migration function")
        self.function = build_function(
            self,
            c.MIGRATE,
            network=network,
            security_group=security_group,
            environment=data.direct_database_environment(),
        )
        data.allow_direct(security_group, self.function, "Migrations")
        self.trigger = triggers.Trigger(
            self,
            "Apply",
            handler=self.function,
            execute_after=[data.database],
            execute_before=list(before),
            execute_on_handler_change=True,
            timeout=cdk.Duration.seconds(c.MIGRATE.timeout_s),
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
        )
