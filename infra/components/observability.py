"""What an operator watches: one dashboard, and every alarm sent to one SNS topic.

The dashboard: order rate (commands into orders.fifo, REST requests), engine lag (age of the
oldest command waiting), journal lag (age of the oldest journal block waiting), the dead-letter
queue, the engine task's CPU and memory, and each function's errors and p99 duration.
Alarms added here: the engine is not running; the persister's journal-write and projection
failures (its own metrics); each function's errors and p99 duration;
the queues' alarms come from messaging.py. ``-c cloudex:alarmEmail=ops@example.com``
subscribes an address to the topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra import constants as c
from infra.components.api import RestApi
from infra.components.engine import Engine
from infra.components.messaging import Messaging

__all__ = ["Observability"]

ONE_MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)
GTE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        messaging: Messaging,
        engine: Engine,
        rest_api: RestApi,
        functions: Mapping[str, lambda_.IFunction],
        alarms: Sequence[cloudwatch.Alarm],
        alarm_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description="Cloudex alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
            pending_window=cdk.Duration.days(7),
        )
        # CloudWatch alarms publish to an encrypted topic only if they may use its key.
        key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.topic = sns.Topic(
            self, "Alarms", display_name="Cloudex alarms", master_key=key, enforce_ssl=True
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        self.alarms: list[cloudwatch.Alarm] = list(alarms)
        running = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": engine.cluster.cluster_name,
                "ServiceName": engine.service.service_name,
            },
            statistic="Minimum",
            period=ONE_MINUTE,
        )
        self.alarms.append(
            cloudwatch.Alarm(
                self,
                "EngineNotRunning",
                alarm_description="No engine task is running: commands wait in orders.fifo",
                metric=running,
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=3,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
        )
        # The persister counts what it could not do (functions/persister/handler.py, EMF under
        # the service dimension): a journal block it failed to write, a read model it failed
        # to project. Neither fails the invocation, so the function's error alarm misses them.
        for metric_name, meaning in (
            ("JournalWriteErrors", "a journal block could not be written (it is retried)"),
            ("ProjectionFailures", "a read model could not be projected (it stops and retries)"),
        ):
            self.alarms.append(
                cloudwatch.Alarm(
                    self,
                    f"Persister{metric_name}",
                    alarm_description=f"Persister: {meaning}; see its logs",
                    metric=cloudwatch.Metric(
                        namespace=c.METRICS_NAMESPACE,
                        metric_name=metric_name,
                        dimensions_map={"service": c.PERSISTER.package},
                        statistic="Sum",
                        period=FIVE_MINUTES,
                    ),
                    threshold=1,
                    comparison_operator=GTE,
                    evaluation_periods=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        for name, function in functions.items():
            self.alarms.append(
                cloudwatch.Alarm(
                    self,
                    f"{name}Errors",
                    alarm_description=f"{name}: invocations failed",
                    metric=function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                    threshold=1,
                    comparison_operator=GTE,
                    evaluation_periods=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
            self.alarms.append(
                cloudwatch.Alarm(
                    self,
                    f"{name}SlowP99",
                    alarm_description=f"{name}: p99 duration above {c.LAMBDA_P99_ALARM_MS} ms",
                    metric=function.metric_duration(period=FIVE_MINUTES, statistic="p99"),
                    threshold=c.LAMBDA_P99_ALARM_MS,
                    comparison_operator=GTE,
                    evaluation_periods=3,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        for alarm in self.alarms:
            alarm.add_alarm_action(actions.SnsAction(self.topic))
            alarm.add_ok_action(actions.SnsAction(self.topic))

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{cdk.Stack.of(self).stack_name}-exchange",
            default_interval=cdk.Duration.hours(3),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Order rate (per minute)",
                left=[
                    messaging.orders.metric_number_of_messages_sent(
                        period=ONE_MINUTE, statistic="Sum", label="commands into orders.fifo"
                    ),
                    rest_api.api.metric_count(period=ONE_MINUTE, label="REST requests"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Engine lag and journal lag (oldest message, s)",
                left=[
                    messaging.orders.metric_approximate_age_of_oldest_message(
                        period=ONE_MINUTE, statistic="Maximum", label="engine lag (orders.fifo)"
                    ),
                    messaging.events.metric_approximate_age_of_oldest_message(
                        period=ONE_MINUTE, statistic="Maximum", label="journal lag (events.fifo)"
                    ),
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Dead letters (orders-dlq.fifo)",
                left=[
                    messaging.orders_dlq.metric_approximate_number_of_messages_visible(
                        period=ONE_MINUTE, statistic="Maximum"
                    )
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Engine task",
                left=[
                    engine.service.metric_cpu_utilization(period=ONE_MINUTE),
                    engine.service.metric_memory_utilization(period=ONE_MINUTE),
                ],
                right=[running],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="REST API: 5XX and p99 latency",
                left=[rest_api.api.metric_server_error(period=ONE_MINUTE, statistic="Sum")],
                right=[rest_api.api.metric_latency(period=ONE_MINUTE, statistic="p99")],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda errors",
                left=[
                    function.metric_errors(period=ONE_MINUTE, statistic="Sum", label=name)
                    for name, function in functions.items()
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Lambda p99 duration (ms)",
                left=[
                    function.metric_duration(period=ONE_MINUTE, statistic="p99", label=name)
                    for name, function in functions.items()
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24)
        )
