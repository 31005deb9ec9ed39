"""cdk-nag (AWS Solutions) findings we accept, each with the reason it is right here.

Each acknowledgement is scoped to the constructs it is about; anything else cdk-nag reports
fails the synth (and tests/infra).
"""

from __future__ import annotations

from collections.abc import Iterable

import aws_cdk as cdk
from constructs import IConstruct

from infra.stack import ExchangeStack

__all__ = ["acknowledge_findings"]

LAMBDA_MANAGED_POLICIES = (
    "AWS Lambda's managed execution policies (CloudWatch Logs writes; for VPC functions, "
    "creating and deleting their network interfaces) are the minimum every function needs; "
    "AWS keeps them current"
)
SIGNED_BY_THE_FUNCTION = (
    "Backpack's contract authenticates every private request by an Ed25519 signature over the "
    "request (X-API-Key, X-Signature, X-Timestamp, X-Window), verified by the function "
    "(cloudex/signing.py); public market data needs no authentication. A Cognito or IAM "
    "authorizer would break every existing Backpack client. The admin routes use IAM."
)


def _managed_policy(name: str) -> str:
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{name}]"


def _logical_id(construct: IConstruct) -> str:
    resource = construct.node.default_child
    assert isinstance(resource, cdk.CfnElement)
    return cdk.Stack.of(construct).get_logical_id(resource)


def _ack(scopes: Iterable[IConstruct], rule: str, reason: str) -> None:
    for scope in scopes:
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_findings(stack: ExchangeStack) -> None:
    functions = [
        stack.rest_api.function,
        stack.persister.function,
        stack.migrations.function,
        stack.websocket.connect_function,
        stack.websocket.disconnect_function,
        stack.websocket.default_function,
        stack.websocket.fanout,
    ]
    _ack(
        functions,
        _managed_policy("AWSLambdaBasicExecutionRole"),
        LAMBDA_MANAGED_POLICIES,
    )
    _ack(
        functions,
        _managed_policy("AWSLambdaVPCAccessExecutionRole"),
        LAMBDA_MANAGED_POLICIES,
    )
    _ack(
        functions,
        "AwsSolutions-IAM5[Resource::*]",
        "X-Ray's PutTraceSegments and PutTelemetryRecords accept no resource but '*' "
        "(active tracing); every other statement names its resource",
    )
    _ack(
        [stack.engine],
        "AwsSolutions-IAM5[Resource::*]",
        "the task execution role's ecr:GetAuthorizationToken accepts no resource but '*'; "
        "image pulls are scoped to the asset repository",
    )
    _ack(
        [stack.engine],
        f"AwsSolutions-IAM5[Resource::<{_logical_id(stack.websocket.fanout)}.Arn>:*]",
        "grant_invoke covers the fan-out function's versions and aliases (ARN:*), nothing else",
    )
    _ack(
        [stack.engine],
        "AwsSolutions-ECS2",
        "the environment holds only configuration and resource names (queue URLs, function "
        "name, secret ARNs); the secrets themselves are read from Secrets Manager at start",
    )
    _ack(
        [stack.websocket.fanout],
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
        f"<AWS::AccountId>:<{_logical_id(stack.websocket.api)}>/*/*/@connections/*]",
        "posting to connections: the connection ids are only known at run time; the grant is "
        "limited to this WebSocket API",
    )
    _ack(
        [stack.messaging.events],
        "AwsSolutions-SQS3",
        "events.fifo is the journal: a block the persister cannot write must be retried, never "
        "set aside, or the journal would have a hole. The JournalWaiting alarm fires instead.",
    )
    if not stack.multi_az:
        _ack(
            [stack.data.database],
            "AwsSolutions-RDS3",
            "Multi-AZ is a deploy-time switch (-c cloudex:multiAz=true, docs/deploy.md); off, "
            "the instance is restored from backups (14 days, point in time) and the journal",
        )
    _ack(
        [stack.data.database],
        "AwsSolutions-RDS11",
        "a non-default port hides nothing: the instance is in isolated subnets and reachable "
        "only from the engine, migration, rotation and proxy security groups",
    )
    _ack(
        [stack.data.cache],
        "AwsSolutions-AEC5",
        "a non-default port hides nothing: Redis is in isolated subnets, needs TLS and the "
        "AUTH token, and is reachable only from the engine's and functions' security groups",
    )
    _ack(
        [stack.data.cache_auth_secret],
        "AwsSolutions-SMG4",
        "rotating an ElastiCache AUTH token takes a modify-replication-group call with the "
        "ROTATE strategy, then a roll of every client; docs/deploy.md has the procedure",
    )
    _ack(
        [stack.data],
        _managed_policy("AmazonRDSEnhancedMonitoringRole"),
        "RDS Enhanced Monitoring's role must carry this AWS managed policy",
    )
    log_retention = [
        child for child in stack.node.children if child.node.id.startswith("LogRetention")
    ]
    _ack(
        log_retention,
        _managed_policy("AWSLambdaBasicExecutionRole"),
        "the CDK's log-retention function (sets the RDS log groups' retention) writes its own logs",
    )
    _ack(
        log_retention,
        "AwsSolutions-IAM5[Resource::*]",
        "the CDK's log-retention function must set the retention of log groups RDS creates",
    )
    rest = stack.rest_api
    _ack([rest.api], "AwsSolutions-APIG4", SIGNED_BY_THE_FUNCTION)
    _ack([rest.api], "AwsSolutions-COG4", SIGNED_BY_THE_FUNCTION)
    _ack([stack.websocket.api], "AwsSolutions-APIG4", SIGNED_BY_THE_FUNCTION)
    _ack(
        [rest.api],
        "AwsSolutions-APIG2",
        "the function validates every request against Backpack's schema and answers Backpack's "
        "error format ({code, message}); API Gateway's validator would answer its own format",
    )
    _ack(
        [rest.api],
        _managed_policy("AmazonAPIGatewayPushToCloudWatchLogs"),
        "API Gateway's account-level logging role must carry this AWS managed policy",
    )
    distribution = stack.frontend.distribution
    _ack(
        [distribution],
        "AwsSolutions-CFR1",
        "an exchange's geographic restrictions are a legal decision per operator; "
        "docs/deploy.md shows where to set them",
    )
    _ack(
        [distribution],
        "AwsSolutions-CFR2",
        "a CloudFront web ACL must live in us-east-1 and this stack is region-agnostic; the "
        "frontend is static files (the API it calls has its own web ACL)",
    )
    _ack(
        [distribution],
        "AwsSolutions-CFR4",
        "with the default *.cloudfront.net certificate CloudFront's viewer policy is fixed at "
        "TLSv1; an operator with a domain adds an ACM certificate and TLSv1.2_2021 (deploy.md)",
    )
