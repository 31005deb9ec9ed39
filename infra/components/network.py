"""The VPC: nothing of Cloudex has a public address, and only the fan-out reaches the internet.

Subnet tiers, in two availability zones:
- ``App`` (isolated, no route out): the engine task and every function but the fan-out. AWS
  APIs are reached through interface endpoints (SQS, Secrets Manager, ECR, CloudWatch Logs,
  Lambda) and the S3 gateway endpoint (ECR image layers), so no NAT carries their traffic.
- ``Data`` (isolated): RDS, RDS Proxy and ElastiCache.
- ``Egress`` (private, through one NAT gateway): the WebSocket fan-out only. It posts to the
  public API Gateway management API, which an ``execute-api`` interface endpoint cannot serve
  (with private DNS on, every ``*.execute-api`` name in the VPC resolves to the endpoint, which
  answers 403 for public APIs), so that one path needs a NAT.
- ``Public``: the NAT gateway.

Flow logs of rejected traffic go to CloudWatch Logs.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from infra import constants as c
from infra.log_groups import log_group

__all__ = ["Network"]

INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Lambda": ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
}


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        flow_logs = log_group(self, "FlowLogs")
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(c.VPC_CIDR),
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="Egress", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="App", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
                ),
                ec2.SubnetConfiguration(
                    name="Data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
            flow_logs={
                "Rejected": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        self.app_subnets = ec2.SubnetSelection(subnet_group_name="App")
        self.data_subnets = ec2.SubnetSelection(subnet_group_name="Data")
        self.egress_subnets = ec2.SubnetSelection(subnet_group_name="Egress")

        self.vpc.add_gateway_endpoint(
            "S3",
            service=ec2.GatewayVpcEndpointAwsService.S3,
            subnets=[self.app_subnets],
        )
        endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface endpoints: HTTPS from inside the VPC",
            allow_all_outbound=False,
        )
        endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(c.VPC_CIDR), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        # One endpoint per service for the whole VPC (private DNS is VPC-wide); its network
        # interfaces sit in the App subnets.
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.app_subnets,
                private_dns_enabled=True,
                open=False,  # the security group above already admits the VPC
                security_groups=[endpoint_security_group],
            )

    def security_group(
        self, scope: Construct, construct_id: str, description: str
    ) -> ec2.SecurityGroup:
        """A security group in this VPC; outbound is open (inside an isolated subnet that
        reaches only the VPC's endpoints and data stores)."""
        return ec2.SecurityGroup(scope, construct_id, vpc=self.vpc, description=description)
