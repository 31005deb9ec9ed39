"""The REST API: API Gateway (regional) in front of the API function (FastAPI + Mangum).

- ``/api/{proxy+}`` and ``/wapi/{proxy+}``: Backpack's public and signed routes. Signed requests
  are authenticated by the function (Ed25519 over the request, ``cloudex/signing.py``), so
  API Gateway passes them through.
- ``/admin/{proxy+}``: accounts, keys, deposits, withdrawals, markets. IAM authorisation: API
  Gateway checks the caller's SigV4 signature and IAM policy, and the function refuses an admin
  request whose event carries no caller (fails closed if this were ever wired without IAM).

The stage throttles (rate and burst), writes JSON access logs, and traces with X-Ray.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra import constants as c
from infra.components.data import Data
from infra.components.messaging import Messaging
from infra.components.network import Network
from infra.lambda_bundle import build_function
from infra.log_groups import log_group

__all__ = ["RestApi"]

PUBLIC_PREFIXES = ("api", "wapi")


class RestApi(Construct):
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
        security_group = network.security_group(self, "SecurityGroup", "REST API function")
        self.function = build_function(
            self,
            c.API,
            network=network,
            security_group=security_group,
            environment={
                "ORDERS_QUEUE_URL": messaging.orders.queue_url,
                **data.redis_environment(),
                **data.proxy_database_environment(),
            },
        )
        messaging.orders.grant_send_messages(self.function)
        data.allow_cache(security_group, self.function, "REST API (replies, market data)")
        data.allow_proxy(security_group, self.function, "REST API (keys, history)")

        access_logs = log_group(self, "AccessLogs")
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{cdk.Stack.of(self).stack_name}-rest",
            description="Cloudex REST API (Backpack-compatible)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name=c.API_STAGE,
                throttling_rate_limit=c.API_THROTTLE_RATE,
                throttling_burst_limit=c.API_THROTTLE_BURST,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
            ),
        )
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        for prefix in PUBLIC_PREFIXES:
            self.api.root.add_resource(prefix).add_proxy(
                default_integration=integration, any_method=True
            )
        admin = self.api.root.add_resource(c.ADMIN_PATH).add_proxy(any_method=False)
        self.admin_method = admin.add_method(
            "ANY", integration, authorization_type=apigw.AuthorizationType.IAM
        )
        self.url = self.api.url
        self.web_acl = _web_acl(self)
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=self.web_acl.attr_arn,
        )


def _managed_rule(name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS", name=name
            )
        ),
        visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
        ),
    )


def _web_acl(scope: Construct) -> wafv2.CfnWebACL:
    """AWS's IP reputation and known-bad-input rules, and a per-IP rate ceiling far above the
    function's own per-IP and per-key limits (it stops floods before they cost invocations).
    The common rule set is left out: its body and user-agent rules refuse legitimate API
    clients."""
    return wafv2.CfnWebACL(
        scope,
        "WebAcl",
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True,
            metric_name="cloudex-rest",
            sampled_requests_enabled=True,
        ),
        rules=[
            _managed_rule("AWSManagedRulesAmazonIpReputationList", 0),
            _managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 1),
            wafv2.CfnWebACL.RuleProperty(
                name="PerIpRateCeiling",
                priority=2,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        aggregate_key_type="IP",
                        limit=c.WAF_REQUESTS_PER_IP_PER_5_MIN,
                        evaluation_window_sec=300,
                    )
                ),
                visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                    cloud_watch_metrics_enabled=True,
                    metric_name="PerIpRateCeiling",
                    sampled_requests_enabled=True,
                ),
            ),
        ],
    )
