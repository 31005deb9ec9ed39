"""Create (or bring up to date) the Cloudex SQS queues on LocalStack; print their URLs as JSON.

Run with the project's virtual environment once LocalStack is up (``./dev services``)::

    .venv/bin/python localstack/create_queues.py [--prefix P] [--visibility-timeout S]

The endpoint is ``$AWS_ENDPOINT_URL_SQS`` or ``$AWS_ENDPOINT_URL`` (default
http://127.0.0.1:4566), in us-east-1 with the credentials test/test (account 000000000000).
Idempotent: an existing queue keeps its URL and gets its attributes set again.

The queues and their attributes come from ``cloudex/queues.py``, the same specs the CDK stack
deploys (tests/infra checks that LocalStack's queues and the template's agree).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

from cloudex.queues import ORDERS_SPEC, QUEUES, QueueSpec

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
REGION = "us-east-1"


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """Create the FIFO queue ``name``, or set ``attributes`` on it if it exists; return its URL."""
    try:
        url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        created: str = sqs.create_queue(
            QueueName=name, Attributes={"FifoQueue": "true", **attributes}
        )["QueueUrl"]
        return created
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def create_queues(
    sqs: Any, prefix: str = "", visibility_timeout: int | None = None
) -> dict[str, str]:
    """Ensure every queue of ``cloudex.queues.QUEUES`` exists with its attributes; return their
    URLs keyed by name. ``visibility_timeout`` overrides that of orders.fifo (tests)."""
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for spec in QUEUES:
        if visibility_timeout is not None and spec.name == ORDERS_SPEC.name:
            spec = _with_visibility(spec, visibility_timeout)
        dead_letter_arn = arns[spec.dead_letter] if spec.dead_letter else None
        url = _ensure_queue(sqs, prefix + spec.name, spec.attributes(dead_letter_arn))
        urls[spec.name] = url
        arns[spec.name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    return urls


def _with_visibility(spec: QueueSpec, seconds: int) -> QueueSpec:
    return replace(spec, visibility_timeout_s=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="", help="prepended to every queue name")
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=None,
        metavar="S",
        help="visibility timeout of orders.fifo in seconds "
        f"(default {ORDERS_SPEC.visibility_timeout_s})",
    )
    args = parser.parse_args(argv)
    if args.visibility_timeout is not None and not 0 <= args.visibility_timeout <= 43200:
        parser.error("--visibility-timeout must be between 0 and 43200 seconds")

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_SQS")
        or os.environ.get("AWS_ENDPOINT_URL")
        or DEFAULT_ENDPOINT
    )
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    try:
        urls = create_queues(sqs, args.prefix, args.visibility_timeout)
    except EndpointConnectionError:
        print(
            f"No SQS endpoint at {endpoint}: start LocalStack with ./dev services", file=sys.stderr
        )
        return 1
    print(json.dumps(urls, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
