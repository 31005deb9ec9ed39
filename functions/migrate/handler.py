"""The migration Lambda: applies the pending migrations to the database in ``DATABASE_URL``, or
in AWS the one ``DATABASE_SECRET_ARN`` describes (see :mod:`cloudex.aws_connect`), and the
optional TimescaleDB ones when ``TIMESCALE`` is ``1``, for servers with the extension.

A plain handler for now (invoked after a deploy); a CloudFormation custom-resource wrapper that
runs it on every ``cdk deploy`` comes with the infrastructure.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudex.aws_connect import database_url
from functions.migrate.runner import apply_migrations, apply_timescale_migrations

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "migrate"))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> list[str]:
    """Apply what is due and return the names applied (``[]`` when the schema is current)."""
    apply = apply_timescale_migrations if os.environ.get("TIMESCALE") == "1" else apply_migrations
    applied = apply(database_url(os.environ))
    logger.info("migrations applied", extra={"applied": applied})
    return applied
