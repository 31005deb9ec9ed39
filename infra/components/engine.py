"""The matching engine: one ECS Fargate task, the single writer.

Exactly one task: ``desiredCount`` 1 with ``minHealthyPercent`` 0 and ``maxHealthyPercent``
100, so a deployment stops the old engine before it starts the new one and two engines never
run at once. (The PostgreSQL lease fences them anyway; this keeps the second one from even
waiting for it.) The circuit breaker rolls back a deployment whose engine never turns healthy.

The container's health check asks ``/live`` with a start period that covers snapshot restore
and journal replay; ECS waits ``stopTimeout`` after SIGTERM, the time the engine needs to
finish its batch, journal and snapshot. The image is built from ``engine_service/Dockerfile``
at deploy time (the synth only hashes its inputs, listed in ``.dockerignore``).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import constants as c
from infra.components.data import Data
from infra.components.messaging import Messaging
from infra.components.network import Network
from infra.log_groups import log_group

__all__ = ["Engine"]

LIVENESS_PROBE = (
    "import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{c.ENGINE_HEALTH_PORT}/live', timeout=3)"
)


class Engine(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        messaging: Messaging,
        data: Data,
        fanout: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = network.security_group(
            self, "SecurityGroup", "The engine task (no inbound traffic)"
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=c.ENGINE_CPU,
            memory_limit_mib=c.ENGINE_MEMORY_MIB,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.log_group = log_group(self, "Logs")
        self.container = task.add_container(
            "Engine",
            image=ecs.ContainerImage.from_asset(
                str(c.REPO_ROOT),
                file=c.ENGINE_DOCKERFILE,
                platform=ecr_assets.Platform.LINUX_AMD64,
                ignore_mode=cdk.IgnoreMode.DOCKER,
            ),
            essential=True,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="engine", log_group=self.log_group),
            environment={
                "ORDERS_QUEUE_URL": messaging.orders.queue_url,
                "EVENTS_QUEUE_URL": messaging.events.queue_url,
                "FANOUT_FUNCTION": fanout.function_name,
                "HEALTH_PORT": str(c.ENGINE_HEALTH_PORT),
                # boto3's region for SQS, Lambda, Secrets Manager and RDS tokens.
                "AWS_REGION": cdk.Stack.of(self).region,
                "AWS_DEFAULT_REGION": cdk.Stack.of(self).region,
                **data.direct_database_environment(),
                **data.redis_environment(),
            },
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "-c", LIVENESS_PROBE],
                interval=cdk.Duration.seconds(10),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(c.ENGINE_HEALTH_START_PERIOD_S),
            ),
            stop_timeout=cdk.Duration.seconds(c.ENGINE_STOP_TIMEOUT_S),
            readonly_root_filesystem=True,
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=task,
            desired_count=1,
            min_healthy_percent=0,
            max_healthy_percent=100,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            vpc_subnets=network.app_subnets,
            security_groups=[self.security_group],
            assign_public_ip=False,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            enable_execute_command=False,
        )

        messaging.orders.grant_consume_messages(task.task_role)
        messaging.events.grant_send_messages(task.task_role)
        fanout.grant_invoke(task.task_role)
        data.allow_direct(self.security_group, task.task_role, "the engine (lease, snapshots)")
        data.allow_cache(self.security_group, task.task_role, "the engine (replies, market data)")
