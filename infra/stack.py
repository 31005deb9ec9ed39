"""The Cloudex stack: wires one construct per concern, nothing else.

Environment-agnostic (no account or region), so ``cdk synth`` needs no credentials.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from infra import constants as c
from infra.components.api import RestApi
from infra.components.data import Data
from infra.components.engine import Engine
from infra.components.frontend import Frontend
from infra.components.messaging import Messaging
from infra.components.migrations import Migrations
from infra.components.network import Network
from infra.components.observability import Observability
from infra.components.persister import Persister
from infra.components.websocket import WebSocket

__all__ = ["ExchangeStack"]


class ExchangeStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        multi_az: bool = False,
        alarm_email: str | None = None,
        fanout_reserved_concurrency: int = 0,
        **kwargs: object,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="Cloudex: a serverless spot crypto exchange (engine on ECS Fargate, "
            "REST and WebSocket APIs on API Gateway + Lambda, SQS FIFO, RDS, ElastiCache)",
            **kwargs,  # type: ignore[arg-type]
        )
        self.multi_az = multi_az
        self.network = Network(self, "Network")
        self.messaging = Messaging(self, "Messaging")
        self.data = Data(self, "Data", network=self.network, multi_az=multi_az)
        self.websocket = WebSocket(
            self,
            "WebSocket",
            network=self.network,
            data=self.data,
            fanout_reserved_concurrency=fanout_reserved_concurrency or None,
        )
        self.engine = Engine(
            self,
            "Engine",
            network=self.network,
            messaging=self.messaging,
            data=self.data,
            fanout=self.websocket.fanout,
        )
        self.rest_api = RestApi(
            self, "RestApi", network=self.network, messaging=self.messaging, data=self.data
        )
        self.persister = Persister(
            self, "Persister", network=self.network, messaging=self.messaging, data=self.data
        )
        self.migrations = Migrations(
            self,
            "Migrations",
            network=self.network,
            data=self.data,
            before=[
                self.engine.service,
                self.rest_api.function,
                self.persister.function,
                self.websocket.default_function,
            ],
        )
        self.frontend = Frontend(self, "Frontend")
        self.observability = Observability(
            self,
            "Observability",
            messaging=self.messaging,
            engine=self.engine,
            rest_api=self.rest_api,
            functions={
                "Api": self.rest_api.function,
                "Persister": self.persister.function,
                "WsConnect": self.websocket.connect_function,
                "WsDisconnect": self.websocket.disconnect_function,
                "WsDefault": self.websocket.default_function,
                "WsFanout": self.websocket.fanout,
            },
            alarms=self.messaging.alarms,
            alarm_email=alarm_email,
        )

        outputs = {
            "RestApiUrl": self.rest_api.url,
            "WebSocketUrl": self.websocket.url,
            "FrontendUrl": self.frontend.url,
            "OrdersQueueUrl": self.messaging.orders.queue_url,
            "EventsQueueUrl": self.messaging.events.queue_url,
            "DashboardName": self.observability.dashboard.dashboard_name,
            "AlarmTopicArn": self.observability.topic.topic_arn,
            "EngineCluster": self.engine.cluster.cluster_name,
            "EngineService": self.engine.service.service_name,
            "DatabaseSecretArn": self.data.database_secret.secret_arn,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value).override_logical_id(name)
        # RDS Proxy target groups take no tags, though the CDK would give them some.
        cdk.Tags.of(self).add(
            "project", c.SERVICE_NAME, exclude_resource_types=["AWS::RDS::DBProxyTargetGroup"]
        )
