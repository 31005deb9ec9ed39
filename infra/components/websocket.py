"""The WebSocket API: $connect, $disconnect and $default Lambdas, and the fan-out function the
engine invokes to post updates to subscribers.

The fan-out may post only to this API's connections (``execute-api:ManageConnections`` on this
API and stage), and may invoke only itself (shards of a large audience). It is the one function
in the Egress subnets, because the management API is public (see network.py).
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import constants as c
from infra.components.data import Data
from infra.components.network import Network
from infra.lambda_bundle import build_function
from infra.log_groups import log_group

__all__ = ["WebSocket"]

WS_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey",
    "eventType": "$context.eventType",
    "connectionId": "$context.connectionId",
    "status": "$context.status",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integration.error",
}


class WebSocket(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        data: Data,
        fanout_reserved_concurrency: int | None,
    ) -> None:
        super().__init__(scope, construct_id)
        routes_security_group = network.security_group(
            self, "RoutesSecurityGroup", "WebSocket route functions"
        )
        route_environment = {**data.redis_environment(), **data.proxy_database_environment()}
        routes = {
            spec.construct_id: build_function(
                self,
                spec,
                network=network,
                security_group=routes_security_group,
                environment=route_environment,
            )
            for spec in (c.WS_CONNECT, c.WS_DISCONNECT, c.WS_DEFAULT)
        }
        for function in routes.values():
            data.allow_cache(routes_security_group, function, "WebSocket routes (registry)")
            data.allow_proxy(routes_security_group, function, "WebSocket routes (API keys)")
        self.connect_function = routes[c.WS_CONNECT.construct_id]
        self.disconnect_function = routes[c.WS_DISCONNECT.construct_id]
        self.default_function = routes[c.WS_DEFAULT.construct_id]

        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"{cdk.Stack.of(self).stack_name}-ws",
            description="Cloudex WebSocket streams (Backpack-compatible)",
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integrations.WebSocketLambdaIntegration(
                    "ConnectIntegration", self.connect_function
                )
            ),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integrations.WebSocketLambdaIntegration(
                    "DisconnectIntegration", self.disconnect_function
                )
            ),
            # $default answers each frame (acks, errors) as the route response.
            default_route_options=apigwv2.WebSocketRouteOptions(
                integration=integrations.WebSocketLambdaIntegration(
                    "DefaultIntegration", self.default_function
                ),
                return_response=True,
            ),
        )
        access_logs = log_group(self, "AccessLogs")
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=c.WS_STAGE,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=c.WS_THROTTLE_RATE, burst_limit=c.WS_THROTTLE_BURST
            ),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=json.dumps(WS_ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        cfn_stage.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=c.WS_THROTTLE_RATE,
            throttling_burst_limit=c.WS_THROTTLE_BURST,
            logging_level="ERROR",
            data_trace_enabled=False,
            detailed_metrics_enabled=True,
        )
        self.url = self.stage.url  # wss://...
        self.management_endpoint = self.stage.callback_url  # https://.../<stage>

        # --- fan-out ------------------------------------------------------------------------
        self.fanout_security_group = network.security_group(
            self, "FanoutSecurityGroup", "WebSocket fan-out (Redis, management API via NAT)"
        )
        self.fanout = build_function(
            self,
            c.WS_FANOUT,
            network=network,
            subnets=network.egress_subnets,
            security_group=self.fanout_security_group,
            environment={
                "WS_MANAGEMENT_ENDPOINT": self.management_endpoint,
                **data.redis_environment(),
            },
            reserved_concurrency=fanout_reserved_concurrency,
        )
        data.allow_cache(self.fanout_security_group, self.fanout, "WebSocket fan-out (registry)")
        self.api.grant_manage_connections(self.fanout)
        # Shards of a large audience: the function invokes itself. A separate policy, so that
        # the function (which depends on its role's default policy) does not depend on it.
        iam.Policy(
            self,
            "FanoutSelfInvoke",
            roles=[self.fanout.role] if self.fanout.role else [],
            statements=[
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"], resources=[self.fanout.function_arn]
                )
            ],
        )
