"""Create (or bring up to date) the Cloudex SQS queues on LocalStack; print their URLs as JSON.

Run with the project's virtual environment once LocalStack is up (``./dev services``)::

    .venv/bin/python localstack/create_queues.py [--prefix P] [--visibility-timeout S]

The endpoint is ``$AWS_ENDPOINT_URL_SQS`` or ``$AWS_ENDPOINT_URL`` (default
http://127.0.0.1:4566), in us-east-1 with the credentials test/test (account 000000000000).
Idempotent: an existing queue keeps its URL and gets the attributes below set again.

- orders.fifo: commands in; no content-based deduplication (every command carries its own
  deduplication id); after 5 failed receives a message moves to orders-dlq.fifo.
- orders-dlq.fifo: the dead letters, kept 14 days.
- events.fifo: the journal; no DLQ, kept 14 days (the SQS maximum).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

from cloudex.names import EVENTS_QUEUE, ORDERS_DLQ, ORDERS_QUEUE

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
REGION = "us-east-1"
MAX_RECEIVE_COUNT = 5
FOURTEEN_DAYS = 14 * 24 * 3600


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


def create_queues(sqs: Any, prefix: str = "", visibility_timeout: int = 30) -> dict[str, str]:
    """Ensure the three Cloudex queues exist; return their URLs keyed by ``cloudex.names``."""
    dlq_url = _ensure_queue(
        sqs,
        prefix + ORDERS_DLQ,
        {
            "ContentBasedDeduplication": "false",
            "VisibilityTimeout": "30",
            "MessageRetentionPeriod": str(FOURTEEN_DAYS),
        },
    )
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    orders_url = _ensure_queue(
        sqs,
        prefix + ORDERS_QUEUE,
        {
            "ContentBasedDeduplication": "false",
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
        },
    )
    events_url = _ensure_queue(
        sqs,
        prefix + EVENTS_QUEUE,
        {
            "ContentBasedDeduplication": "false",
            "VisibilityTimeout": "30",
            "MessageRetentionPeriod": str(FOURTEEN_DAYS),
        },
    )
    return {"ORDERS_QUEUE": orders_url, "ORDERS_DLQ": dlq_url, "EVENTS_QUEUE": events_url}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="", help="prepended to every queue name")
    parser.add_argument(
        "--visibility-timeout",
        type=int,
        default=30,
        metavar="S",
        help="visibility timeout of orders.fifo in seconds (default 30)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.visibility_timeout <= 43200:
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
