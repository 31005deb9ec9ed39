"""Every name and number the CDK app uses, in one place.

Queue names and attributes are not here: they come from ``cloudex/queues.py``, shared with
LocalStack. Sizes are the defaults for a small production deployment; the cost estimate in
docs/deploy.md is computed for these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_NAME = "Cloudex"
SERVICE_NAME = "cloudex"
METRICS_NAMESPACE = "Cloudex"

# Context keys (cdk.json or `cdk deploy -c key=value`).
CONTEXT_MULTI_AZ = "cloudex:multiAz"
CONTEXT_ALARM_EMAIL = "cloudex:alarmEmail"
# Concurrency reserved for the WebSocket fan-out, so that a surge of API calls can never starve
# market data. Off by default: a new account's concurrency quota (as low as 10) cannot spare it,
# and the deployment would fail. Set it (e.g. 100) once the quota is raised.
CONTEXT_FANOUT_CONCURRENCY = "cloudex:fanoutReservedConcurrency"

VPC_CIDR = "10.40.0.0/16"

# --- Lambda ---------------------------------------------------------------------------------
LAMBDA_PYTHON = "3.14"  # the bundles' wheels are built for this interpreter
LAMBDA_ARCHITECTURE_PLATFORM = "manylinux2014_x86_64"


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One Lambda function: its package under functions/, handler and resources."""

    construct_id: str
    package: str  # the directory under functions/ bundled with cloudex/
    handler: str  # module.attribute, relative to the bundle root
    memory_mb: int
    timeout_s: int
    description: str


API = FunctionSpec(
    "ApiFunction",
    "api",
    "functions.api.handler.handler",
    memory_mb=1024,
    # Under API Gateway's 29 s integration timeout; the API waits at most REPLY_TIMEOUT_S (10 s)
    # for the engine's answer.
    timeout_s=15,
    description="REST API (FastAPI + Mangum): validates, signs off and enqueues commands",
)
WS_CONNECT = FunctionSpec(
    "WsConnectFunction",
    "ws_routes",
    "functions.ws_routes.handler.connect",
    memory_mb=256,
    timeout_s=10,
    description="WebSocket $connect: registers the connection",
)
WS_DISCONNECT = FunctionSpec(
    "WsDisconnectFunction",
    "ws_routes",
    "functions.ws_routes.handler.disconnect",
    memory_mb=256,
    timeout_s=10,
    description="WebSocket $disconnect: removes the connection and its subscriptions",
)
WS_DEFAULT = FunctionSpec(
    "WsDefaultFunction",
    "ws_routes",
    "functions.ws_routes.handler.default",
    memory_mb=512,
    timeout_s=10,
    description="WebSocket $default: SUBSCRIBE / UNSUBSCRIBE frames, signed private topics",
)
WS_FANOUT = FunctionSpec(
    "WsFanoutFunction",
    "ws_fanout",
    "functions.ws_fanout.handler.handler",
    memory_mb=1024,
    timeout_s=30,
    description="Posts the engine's market-data and account updates to WebSocket subscribers",
)
PERSISTER = FunctionSpec(
    "PersisterFunction",
    "persister",
    "functions.persister.handler.handler",
    memory_mb=512,
    # At most events.fifo's visibility timeout (cloudex/queues.py), as Lambda requires.
    timeout_s=25,
    description="Writes journal blocks from events.fifo to PostgreSQL and projects read models",
)
MIGRATE = FunctionSpec(
    "MigrateFunction",
    "migrate",
    "functions.migrate.handler.handler",
    memory_mb=256,
    timeout_s=300,
    description="Applies the PostgreSQL schema migrations (run on every deployment)",
)
FUNCTIONS = (API, WS_CONNECT, WS_DISCONNECT, WS_DEFAULT, WS_FANOUT, PERSISTER, MIGRATE)

# Concurrency: the persister writes the journal contiguously, so one invocation at a time per
# message group is all FIFO gives it anyway; two bound a retry storm.
PERSISTER_MAX_CONCURRENCY = 2
PERSISTER_BATCH_SIZE = 10  # the FIFO maximum

# --- API Gateway ----------------------------------------------------------------------------
API_STAGE = "v1"
API_THROTTLE_RATE = 1_000  # requests/s across the stage
API_THROTTLE_BURST = 2_000
WS_STAGE = "v1"
WS_THROTTLE_RATE = 500
WS_THROTTLE_BURST = 1_000
# Per source IP over 5 minutes (WAF): 100/s sustained, above any one client's fair use.
WAF_REQUESTS_PER_IP_PER_5_MIN = 30_000
ADMIN_PATH = "admin"  # /admin/v1/...: IAM-authorised

# --- Engine (ECS Fargate) -------------------------------------------------------------------
ENGINE_CPU = 1024  # 1 vCPU: the matcher is one Python thread plus I/O threads
ENGINE_MEMORY_MIB = 4096
ENGINE_HEALTH_PORT = 8081
# Restoring a snapshot and replaying the journal before the engine reports live.
ENGINE_HEALTH_START_PERIOD_S = 300
# SIGTERM: finish the batch in hand, journal, snapshot, exit. ECS allows at most 120 s.
ENGINE_STOP_TIMEOUT_S = 120
ENGINE_DOCKERFILE = "engine_service/Dockerfile"

# --- Data -----------------------------------------------------------------------------------
DB_NAME = "cloudex"
DB_USER = "cloudex"
DB_ENGINE_VERSION = "17.5"
DB_INSTANCE_CLASS = "t4g.medium"  # ec2.InstanceType string
DB_ALLOCATED_STORAGE_GB = 50
DB_MAX_STORAGE_GB = 500
DB_BACKUP_DAYS = 14
DB_SECRET_ROTATION_DAYS = 30
CACHE_NODE_TYPE = "cache.t4g.small"
CACHE_ENGINE_VERSION = "7.1"
CACHE_PORT = 6379
# Cluster mode disabled: the subscription registry's Lua scripts touch keys named inside a hash
# (cloudex/subscriptions.py), valid only on a non-clustered Redis.
CACHE_REPLICAS = 1

# --- Alarms ---------------------------------------------------------------------------------
ORDERS_OLDEST_AGE_ALARM_S = 30  # commands waiting this long: the engine is down or stuck
EVENTS_OLDEST_AGE_ALARM_S = 120  # journal blocks waiting this long: the persister is stuck
LAMBDA_P99_ALARM_MS = 5_000
