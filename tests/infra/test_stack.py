"""The synthesized template, concern by concern (aws_cdk.assertions)."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from infra import constants as c
from tests.infra.conftest import Synth


def _function(synth: Synth, spec: c.FunctionSpec) -> dict[str, Any]:
    (function,) = [
        f
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == spec.handler
    ]
    return function


def _policy_statements(synth: Synth, role_logical_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


# --- network --------------------------------------------------------------------------------


def test_network_has_no_public_workload_and_endpoints_replace_the_nat(synth: Synth) -> None:
    synth.template.resource_count_is("AWS::EC2::NatGateway", 1)
    endpoints = synth.resources("AWS::EC2::VPCEndpoint").values()
    services = {json.dumps(e["Properties"]["ServiceName"]) for e in endpoints}
    for service in ("sqs", "secretsmanager", "ecr.api", "ecr.dkr", "logs", "lambda", "s3"):
        assert any(f".{service}" in name for name in services), service
    # No execute-api endpoint: it would make the public management API unreachable (403).
    assert not any("execute-api" in name for name in services)
    synth.template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "REJECT"}
    )


def test_only_the_fanout_runs_in_subnets_that_reach_the_internet(synth: Synth) -> None:
    egress_subnets = {
        logical_id
        for logical_id, subnet in synth.resources("AWS::EC2::Subnet").items()
        if "Egress" in logical_id
    }
    assert egress_subnets
    in_egress = [
        function["Properties"]["Handler"]
        for function in synth.resources("AWS::Lambda::Function").values()
        if any(
            s.get("Ref") in egress_subnets
            for s in function["Properties"].get("VpcConfig", {}).get("SubnetIds", [])
        )
    ]
    assert in_egress == [c.WS_FANOUT.handler]
    for spec in (c.API, c.PERSISTER, c.WS_DEFAULT, c.MIGRATE):
        subnets = _function(synth, spec)["Properties"]["VpcConfig"]["SubnetIds"]
        assert all("App" in s["Ref"] for s in subnets), spec.handler


# --- messaging ------------------------------------------------------------------------------


def test_queues_are_fifo_encrypted_and_tls_only(synth: Synth) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    assert len(queues) == 3
    for queue in queues.values():
        properties = queue["Properties"]
        assert properties["FifoQueue"] is True
        assert properties["SqsManagedSseEnabled"] is True
    policies = synth.resources("AWS::SQS::QueuePolicy").values()
    denied = [
        s
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denied) == 3


def test_orders_has_a_dlq_and_events_none(synth: Synth) -> None:
    orders = synth.raw["Resources"][synth.logical_id(synth.stack.messaging.orders)]
    dlq_id = synth.logical_id(synth.stack.messaging.orders_dlq)
    assert orders["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }
    assert orders["Properties"]["DeduplicationScope"] == "messageGroup"
    events = synth.raw["Resources"][synth.logical_id(synth.stack.messaging.events)]
    assert "RedrivePolicy" not in events["Properties"]
    assert events["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_queue_alarms_watch_dead_letters_and_message_age(synth: Synth) -> None:
    for queue, metric in (
        (synth.stack.messaging.orders_dlq, "ApproximateNumberOfMessagesVisible"),
        (synth.stack.messaging.orders, "ApproximateAgeOfOldestMessage"),
        (synth.stack.messaging.events, "ApproximateAgeOfOldestMessage"),
    ):
        synth.template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "MetricName": metric,
                "Namespace": "AWS/SQS",
                "Dimensions": [
                    {
                        "Name": "QueueName",
                        "Value": {"Fn::GetAtt": [synth.logical_id(queue), "QueueName"]},
                    }
                ],
                "AlarmActions": Match.any_value(),
            },
        )


# --- data -----------------------------------------------------------------------------------


def test_database_is_pinned_encrypted_backed_up_and_protected(synth: Synth) -> None:
    synth.template.has_resource(
        "AWS::RDS::DBInstance",
        {
            "Properties": Match.object_like(
                {
                    "Engine": "postgres",
                    "EngineVersion": c.DB_ENGINE_VERSION,
                    "AutoMinorVersionUpgrade": False,
                    "StorageEncrypted": True,
                    "BackupRetentionPeriod": c.DB_BACKUP_DAYS,
                    "DeletionProtection": True,
                    "MultiAZ": False,
                    "PubliclyAccessible": False,
                    "EnableIAMDatabaseAuthentication": True,
                    "MasterUsername": Match.any_value(),
                    "MasterUserPassword": Match.any_value(),
                }
            ),
            "DeletionPolicy": "Snapshot",
        },
    )
    synth.template.has_resource_properties(
        "AWS::RDS::DBParameterGroup", {"Parameters": Match.object_like({"rds.force_ssl": "1"})}
    )
    password = json.dumps(
        synth.resources("AWS::RDS::DBInstance").popitem()[1]["Properties"]["MasterUserPassword"]
    )
    assert "resolve:secretsmanager" in password  # from Secrets Manager, never in the template
    synth.template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule",
        {"RotationRules": {"ScheduleExpression": f"rate({c.DB_SECRET_ROTATION_DAYS} days)"}},
    )


def test_proxy_requires_tls_and_iam(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::RDS::DBProxy",
        {
            "EngineFamily": "POSTGRESQL",
            "RequireTLS": True,
            "Auth": [Match.object_like({"IAMAuth": "REQUIRED", "AuthScheme": "SECRETS"})],
        },
    )


def test_redis_is_replicated_encrypted_and_authenticated(synth: Synth) -> None:
    (group,) = synth.resources("AWS::ElastiCache::ReplicationGroup").values()
    properties = group["Properties"]
    assert properties["AtRestEncryptionEnabled"] is True
    assert properties["TransitEncryptionEnabled"] is True
    assert properties["TransitEncryptionMode"] == "required"
    assert properties["AutomaticFailoverEnabled"] is True
    assert properties["MultiAZEnabled"] is True
    assert properties["NumCacheClusters"] == 2
    # Cluster mode disabled: the subscription registry's Lua scripts need it.
    assert "NumNodeGroups" not in properties
    assert "resolve:secretsmanager" in json.dumps(properties["AuthToken"])


# --- engine ---------------------------------------------------------------------------------


def test_engine_is_exactly_one_task_never_two(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DesiredCount": 1,
            "LaunchType": "FARGATE",
            "DeploymentConfiguration": {
                "MinimumHealthyPercent": 0,
                "MaximumPercent": 100,
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
            },
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})
            },
        },
    )


def test_engine_container_health_and_stop(synth: Synth) -> None:
    (task,) = synth.resources("AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    check = container["HealthCheck"]
    assert check["Command"][:2] == ["CMD", "python"] and "/live" in check["Command"][-1]
    assert check["StartPeriod"] == c.ENGINE_HEALTH_START_PERIOD_S
    assert container["StopTimeout"] == c.ENGINE_STOP_TIMEOUT_S
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["ReadonlyRootFilesystem"] is True
    names = {e["Name"] for e in container["Environment"]}
    assert {
        "ORDERS_QUEUE_URL",
        "EVENTS_QUEUE_URL",
        "FANOUT_FUNCTION",
        "DATABASE_SECRET_ARN",
    } <= names
    assert "DATABASE_URL" not in names  # no credentials in the environment


def test_engine_task_role_is_least_privilege(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.engine.service.task_definition.task_role)
    statements = _policy_statements(synth, role)
    assert _actions(statements) == {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
        "lambda:InvokeFunction",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    orders = synth.logical_id(synth.stack.messaging.orders)
    events = synth.logical_id(synth.stack.messaging.events)
    for statement in statements:
        actions = _actions([statement])
        if "sqs:ReceiveMessage" in actions:
            assert statement["Resource"] == {"Fn::GetAtt": [orders, "Arn"]}
        if "sqs:SendMessage" in actions:
            assert statement["Resource"] == {"Fn::GetAtt": [events, "Arn"]}


# --- REST API -------------------------------------------------------------------------------


def test_rest_stage_throttles_logs_and_traces(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": c.API_STAGE,
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": [
                Match.object_like(
                    {
                        "ThrottlingRateLimit": c.API_THROTTLE_RATE,
                        "ThrottlingBurstLimit": c.API_THROTTLE_BURST,
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                    }
                )
            ],
        },
    )
    synth.template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_admin_routes_need_iam_and_public_routes_do_not(synth: Synth) -> None:
    resources = synth.resources("AWS::ApiGateway::Resource")
    paths = {k: v["Properties"]["PathPart"] for k, v in resources.items()}
    parents = {k: v["Properties"]["ParentId"] for k, v in resources.items()}
    methods = synth.resources("AWS::ApiGateway::Method").values()
    auth_by_prefix: dict[str, set[str]] = {}
    for method in methods:
        resource = method["Properties"]["ResourceId"].get("Ref")
        parent = parents[resource].get("Ref")
        auth_by_prefix.setdefault(paths[parent], set()).add(
            method["Properties"]["AuthorizationType"]
        )
    assert auth_by_prefix == {"admin": {"AWS_IAM"}, "api": {"NONE"}, "wapi": {"NONE"}}


def test_api_function_may_only_send_to_orders(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.rest_api.function.role)
    statements = _policy_statements(synth, role)
    sqs = [s for s in statements if any(a.startswith("sqs:") for a in _actions([s]))]
    assert set(_actions(sqs)) == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert all(
        s["Resource"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.messaging.orders), "Arn"]}
        for s in sqs
    )
    assert "rds-db:connect" in _actions(statements)


# --- WebSocket ------------------------------------------------------------------------------


def test_websocket_routes_and_stage(synth: Synth) -> None:
    routes = {
        r["Properties"]["RouteKey"] for r in synth.resources("AWS::ApiGatewayV2::Route").values()
    }
    assert routes == {"$connect", "$disconnect", "$default"}
    synth.template.has_resource_properties(
        "AWS::ApiGatewayV2::RouteResponse", {"RouteResponseKey": "$default"}
    )
    synth.template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": c.WS_STAGE,
            "AccessLogSettings": Match.object_like({"DestinationArn": Match.any_value()}),
            "DefaultRouteSettings": Match.object_like({"ThrottlingRateLimit": c.WS_THROTTLE_RATE}),
        },
    )


def test_fanout_manages_only_this_apis_connections(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.websocket.fanout.role)
    statements = _policy_statements(synth, role)
    (manage,) = [s for s in statements if "execute-api:ManageConnections" in _actions([s])]
    resource = json.dumps(manage["Resource"])
    assert synth.logical_id(synth.stack.websocket.api) in resource
    assert "@connections" in resource
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in _actions([s])]
    assert invoke["Resource"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.websocket.fanout), "Arn"]
    }
    environment = _function(synth, c.WS_FANOUT)["Properties"]["Environment"]["Variables"]
    assert "WS_MANAGEMENT_ENDPOINT" in environment


def test_engine_may_invoke_the_fanout(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.engine.service.task_definition.task_role)
    (invoke,) = [
        s for s in _policy_statements(synth, role) if "lambda:InvokeFunction" in _actions([s])
    ]
    fanout = synth.logical_id(synth.stack.websocket.fanout)
    assert {"Fn::GetAtt": [fanout, "Arn"]} in invoke["Resource"]


# --- persister and migrations ---------------------------------------------------------------


def test_persister_event_source(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {
                "Fn::GetAtt": [synth.logical_id(synth.stack.messaging.events), "Arn"]
            },
            "FunctionName": {"Ref": synth.logical_id(synth.stack.persister.function)},
            "BatchSize": c.PERSISTER_BATCH_SIZE,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": c.PERSISTER_MAX_CONCURRENCY},
        },
    )
    # Lambda requires the queue's visibility timeout to cover the function's timeout.
    events = synth.raw["Resources"][synth.logical_id(synth.stack.messaging.events)]
    assert events["Properties"]["VisibilityTimeout"] >= c.PERSISTER.timeout_s


def test_migrations_run_before_the_engine_and_the_functions(synth: Synth) -> None:
    (trigger_id,) = [k for k, v in synth.raw["Resources"].items() if v["Type"] == "Custom::Trigger"]
    resources = synth.raw["Resources"]
    for construct in (
        synth.stack.engine.service,
        synth.stack.rest_api.function,
        synth.stack.persister.function,
    ):
        assert trigger_id in resources[synth.logical_id(construct)].get("DependsOn", [])
    assert synth.logical_id(synth.stack.data.database) in resources[trigger_id]["DependsOn"]


# --- frontend and observability -------------------------------------------------------------


def test_frontend_bucket_is_private_behind_origin_access_control(synth: Synth) -> None:
    site = synth.raw["Resources"][synth.logical_id(synth.stack.frontend.bucket)]["Properties"]
    assert site["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    synth.template.has_resource_properties(
        "AWS::CloudFront::OriginAccessControl",
        {
            "OriginAccessControlConfig": Match.object_like(
                {"SigningBehavior": "always", "OriginAccessControlOriginType": "s3"}
            )
        },
    )
    synth.template.has_resource_properties(
        "AWS::CloudFront::Distribution",
        {
            "DistributionConfig": Match.object_like(
                {
                    "DefaultCacheBehavior": Match.object_like(
                        {"ViewerProtocolPolicy": "redirect-to-https"}
                    ),
                    "Origins": [
                        Match.object_like(
                            {
                                "OriginAccessControlId": Match.any_value(),
                                "S3OriginConfig": {"OriginAccessIdentity": ""},
                            }
                        )
                    ],
                }
            )
        },
    )


def test_dashboard_shows_what_an_operator_watches(synth: Synth) -> None:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in (
        "Order rate",
        "Engine lag",
        "journal lag",
        "Dead letters",
        "Lambda errors",
        "p99",
    ):
        assert title in body, title
    alarms = synth.resources("AWS::CloudWatch::Alarm").values()
    assert all(a["Properties"].get("AlarmActions") for a in alarms)
    assert any(a["Properties"].get("MetricName") == "RunningTaskCount" for a in alarms)
    persister_metrics = {
        a["Properties"]["MetricName"]
        for a in alarms
        if a["Properties"].get("Namespace") == c.METRICS_NAMESPACE
    }
    assert persister_metrics == {"JournalWriteErrors", "ProjectionFailures"}


def test_every_function_has_bounded_logs_and_tracing(synth: Synth) -> None:
    for spec in c.FUNCTIONS:
        function = _function(synth, spec)["Properties"]
        assert function["TracingConfig"] == {"Mode": "Active"}
        assert function["Runtime"] == "python" + c.LAMBDA_PYTHON
        assert function["LoggingConfig"]["LogGroup"]
    for group in synth.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"].get("RetentionInDays"), group
