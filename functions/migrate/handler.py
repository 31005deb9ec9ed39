"""The migration Lambda: applies the pending migrations to the database in ``DATABASE_URL``.

A plain handler for now (invoked after a deploy); a CloudFormation custom-resource wrapper that
runs it on every ``cdk deploy`` comes with the infrastructure.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.migrate.runner import apply_migrations

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "migrate"))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> list[str]:
    """Apply what is due and return the names applied (``[]`` when the schema is current)."""
    applied = apply_migrations(os.environ["DATABASE_URL"])
    logger.info("migrations applied", extra={"applied": applied})
    return applied
