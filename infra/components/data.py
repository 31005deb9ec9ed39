"""The data stores: RDS PostgreSQL behind RDS Proxy, and ElastiCache Redis.

PostgreSQL (plain: RDS offers no TimescaleDB) at a pinned minor version, upgraded on purpose,
never automatically; Multi-AZ with the ``cloudex:multiAz`` context switch; encrypted; TLS
forced; credentials generated into Secrets Manager and rotated; daily backups; deletion
protected. Two ways in:
- the engine and the migration connect to the instance directly with the secret: the engine's
  lease is a session-level advisory lock, which a proxy would pin anyway;
- the Lambdas connect through RDS Proxy with IAM authentication: no password in any function,
  so rotating the secret never breaks a warm one, and the proxy pools their connections.

Redis: a replication group with one primary and a replica in another zone (automatic
failover), cluster mode disabled (the subscription registry's Lua scripts address keys named
inside a hash), encrypted in transit (TLS required) and at rest, with an AUTH token generated
into Secrets Manager.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra import constants as c
from infra.components.network import Network
from infra.log_groups import log_group

__all__ = ["Data"]


class Data(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, network: Network, multi_az: bool
    ) -> None:
        super().__init__(scope, construct_id)
        vpc = network.vpc

        # --- PostgreSQL ---------------------------------------------------------------------
        self.database_security_group = network.security_group(
            self, "DatabaseSecurityGroup", "RDS PostgreSQL: from the engine, migrations, proxy"
        )
        engine = rds.DatabaseInstanceEngine.postgres(
            version=rds.PostgresEngineVersion.of(
                c.DB_ENGINE_VERSION, c.DB_ENGINE_VERSION.split(".")[0]
            )
        )
        parameters = rds.ParameterGroup(
            self,
            "DatabaseParameters",
            engine=engine,
            description="Cloudex: TLS only, slow statements logged",
            parameters={"rds.force_ssl": "1", "log_min_duration_statement": "500"},
        )
        self.database = rds.DatabaseInstance(
            self,
            "Database",
            engine=engine,
            instance_type=ec2.InstanceType(c.DB_INSTANCE_CLASS),
            vpc=vpc,
            vpc_subnets=network.data_subnets,
            security_groups=[self.database_security_group],
            credentials=rds.Credentials.from_generated_secret(c.DB_USER),
            database_name=c.DB_NAME,
            parameter_group=parameters,
            multi_az=multi_az,
            storage_type=rds.StorageType.GP3,
            allocated_storage=c.DB_ALLOCATED_STORAGE_GB,
            max_allocated_storage=c.DB_MAX_STORAGE_GB,
            storage_encrypted=True,
            backup_retention=cdk.Duration.days(c.DB_BACKUP_DAYS),
            delete_automated_backups=False,
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            auto_minor_version_upgrade=False,
            iam_authentication=True,
            enable_performance_insights=True,
            monitoring_interval=cdk.Duration.seconds(60),
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
            copy_tags_to_snapshot=True,
        )
        assert self.database.secret is not None
        self.database_secret = self.database.secret
        # The rotation function runs in the App subnets and reaches Secrets Manager through
        # the interface endpoint.
        self.database.add_rotation_single_user(
            automatically_after=cdk.Duration.days(c.DB_SECRET_ROTATION_DAYS),
            vpc_subnets=network.app_subnets,
        )

        self.proxy_security_group = network.security_group(
            self, "ProxySecurityGroup", "RDS Proxy: from the API, WebSocket and persister functions"
        )
        self.proxy = self.database.add_proxy(
            "Proxy",
            secrets=[self.database_secret],
            vpc=vpc,
            vpc_subnets=network.data_subnets,
            security_groups=[self.proxy_security_group],
            iam_auth=True,
            require_tls=True,
            idle_client_timeout=cdk.Duration.minutes(30),
            max_connections_percent=90,
            debug_logging=False,
        )
        self.database.connections.allow_default_port_from(self.proxy_security_group, "RDS Proxy")

        # --- Redis --------------------------------------------------------------------------
        self.cache_security_group = network.security_group(
            self, "CacheSecurityGroup", "ElastiCache Redis: from the engine and the functions"
        )
        self.cache_auth_secret = secretsmanager.Secret(
            self,
            "CacheAuthToken",
            description="Cloudex ElastiCache Redis AUTH token",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
        )
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "CacheSubnets",
            description="Cloudex Redis: the Data subnets",
            subnet_ids=vpc.select_subnets(subnet_group_name="Data").subnet_ids,
        )
        slow_log = log_group(self, "CacheSlowLog")
        self.cache = elasticache.CfnReplicationGroup(
            self,
            "Cache",
            replication_group_description="Cloudex: replies, depth, tickers, balances, WebSocket "
            "subscriptions",
            engine="redis",
            engine_version=c.CACHE_ENGINE_VERSION,
            cache_node_type=c.CACHE_NODE_TYPE,
            num_cache_clusters=1 + c.CACHE_REPLICAS,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.cache_security_group.security_group_id],
            port=c.CACHE_PORT,
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            # A CloudFormation dynamic reference: the token never appears in the template.
            auth_token=self.cache_auth_secret.secret_value.unsafe_unwrap(),
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=1,
            log_delivery_configurations=[
                elasticache.CfnReplicationGroup.LogDeliveryConfigurationRequestProperty(
                    destination_type="cloudwatch-logs",
                    log_format="json",
                    log_type="slow-log",
                    destination_details=elasticache.CfnReplicationGroup.DestinationDetailsProperty(
                        cloud_watch_logs_details=elasticache.CfnReplicationGroup.CloudWatchLogsDestinationDetailsProperty(
                            log_group=slow_log.log_group_name
                        )
                    ),
                )
            ],
        )
        self.redis_url = (
            f"rediss://{self.cache.attr_primary_end_point_address}:"
            f"{self.cache.attr_primary_end_point_port}/0"
        )

    # --- what a client of the data stores gets --------------------------------------------

    def direct_database_environment(self) -> dict[str, str]:
        """The instance itself, with the generated secret (engine, migrations). The database is
        named explicitly: the secret RDS generates need not carry it."""
        return {"DATABASE_SECRET_ARN": self.database_secret.secret_arn, "DATABASE_NAME": c.DB_NAME}

    def proxy_database_environment(self) -> dict[str, str]:
        """RDS Proxy with IAM authentication (the Lambdas): host, user, database."""
        return {
            "DATABASE_HOST": self.proxy.endpoint,
            "DATABASE_PORT": "5432",
            "DATABASE_USER": c.DB_USER,
            "DATABASE_NAME": c.DB_NAME,
            "DATABASE_IAM_AUTH": "1",
        }

    def redis_environment(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "REDIS_AUTH_SECRET_ARN": self.cache_auth_secret.secret_arn,
        }

    def allow_direct(self, peer: ec2.ISecurityGroup, grantee: iam.IGrantable, why: str) -> None:
        self.database.connections.allow_default_port_from(peer, why)
        self.database_secret.grant_read(grantee)

    def allow_proxy(self, peer: ec2.ISecurityGroup, grantee: iam.IGrantable, why: str) -> None:
        self.proxy_security_group.add_ingress_rule(peer, ec2.Port.tcp(5432), why)
        self.proxy.grant_connect(grantee, c.DB_USER)

    def allow_cache(self, peer: ec2.ISecurityGroup, grantee: iam.IGrantable, why: str) -> None:
        self.cache_security_group.add_ingress_rule(peer, ec2.Port.tcp(c.CACHE_PORT), why)
        self.cache_auth_secret.grant_read(grantee)
