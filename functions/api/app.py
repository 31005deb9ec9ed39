"""The REST API as one FastAPI app: public market data, signed private endpoints, admin."""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import FastAPI
from mangum import Mangum

from functions.api import admin, errors, private, public
from functions.api.encoding import JsonResponse
from functions.api.ratelimit import RateLimiter
from functions.api.runtime import METRICS_NAMESPACE, SERVICE, Runtime, logger, tracer
from functions.api.settings import ApiSettings
from functions.api.timing import ServerTimingMiddleware

__all__ = ["create_app", "make_handler"]

DESCRIPTION = """\
Backpack-compatible REST API of Cloudex (existing Backpack clients such as ccxt work with only
the base URL changed). Private endpoints are signed with Ed25519 (X-API-Key, X-Signature,
X-Timestamp, X-Window); errors are always `{"code", "message"}`.
"""


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="Cloudex API",
        version="1",
        description=DESCRIPTION,
        default_response_class=JsonResponse,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    settings = runtime.settings
    app.state.limiter = RateLimiter(
        runtime.redis,
        rate_per_key=settings.rate_per_key,
        burst_per_key=settings.burst_per_key,
        rate_per_ip=settings.rate_per_ip,
        burst_per_ip=settings.burst_per_ip,
    )
    errors.install(app)
    app.include_router(public.router)
    app.include_router(private.router)
    app.include_router(admin.router)
    app.add_middleware(ServerTimingMiddleware)
    return app


def make_handler(settings: ApiSettings, **runtime_options: Any) -> Any:
    """The Lambda handler (API Gateway REST proxy events, through Mangum) for ``settings``:
    the deployed function's, a test's, the local gateway's."""
    asgi = Mangum(create_app(Runtime(settings, **runtime_options)), lifespan="off")

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        metrics = _metrics()
        try:
            response: dict[str, Any] = asgi(event, context)  # type: ignore[arg-type]
            status = int(response.get("statusCode", 500))
            metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
            if status == 429:
                metrics.add_metric(name="RateLimited", unit=MetricUnit.Count, value=1)
            if status >= 500:
                metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
            return response
        finally:
            metrics.flush_metrics(raise_on_empty_metrics=False)

    return handler


_local = threading.local()


def _metrics() -> EphemeralMetrics:
    """This container's metrics. Ephemeral and per thread, because the local gateway runs
    containers as threads of one process and Powertools' ``Metrics`` shares its buffer
    between instances."""
    metrics: EphemeralMetrics | None = getattr(_local, "metrics", None)
    if metrics is None:
        metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
        _local.metrics = metrics
    return metrics
