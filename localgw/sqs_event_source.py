"""The local SQS event source: polls a queue and invokes a Lambda handler as AWS Lambda would.

Faithful to Lambda's SQS event source mapping with ``ReportBatchItemFailures``:

- the handler gets the event Lambda sends (``Records[]`` with ``messageId``, ``receiptHandle``,
  ``body``, system ``attributes``, ``messageAttributes``, ``md5OfBody``, ``eventSource``,
  ``eventSourceARN``, ``awsRegion``) and a context object with the fields Powertools reads;
- one invocation at a time per event source (a FIFO queue's group order depends on it);
- after the handler returns, the records not listed in ``batchItemFailures`` are deleted; a
  malformed response counts as a failure of the whole batch, as in AWS;
- if the handler raises, nothing is deleted: the batch returns after the visibility timeout.

Run one from the command line::

    python -m localgw.sqs_event_source --queue-url URL --handler functions.persister.handler.handler
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import boto3

from localgw.handlers import import_handler
from localgw.lambda_context import LambdaContext

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "LambdaHandler",
    "queue_arn",
    "lambda_sqs_event",
    "SqsEventSource",
    "main",
]

LambdaHandler = Callable[[dict[str, Any], Any], Any]

# Lambda puts these system attributes in a record, when the message has them; SQS may return
# more (e.g. DeadLetterQueueSourceArn), which Lambda leaves out.
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
)

_DEFAULT_REGION = "us-east-1"

logger = logging.getLogger(__name__)


def _queue_location(queue_url: str, default_region: str) -> tuple[str, str, str]:
    """``(region, account, name)`` of a queue URL, in any of the forms AWS and LocalStack use:
    ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``, ``http://HOST/queue/REGION/ACCOUNT/NAME``,
    ``http://sqs.REGION.localhost.localstack.cloud:4566/ACCOUNT/NAME``, ``http://HOST/ACCOUNT/NAME``.
    """
    parsed = urlparse(queue_url)
    parts = [part for part in parsed.path.split("/") if part]
    if len(parts) < 2:
        raise ValueError(f"not an SQS queue URL: {queue_url}")
    account, name = parts[-2], parts[-1]
    region = default_region
    if len(parts) >= 4 and parts[-4] == "queue":
        region = parts[-3]
    elif host_region := re.match(r"sqs\.([a-z0-9-]+)\.", parsed.hostname or ""):
        region = host_region[1]
    return region, account, name


def queue_arn(queue_url: str, default_region: str = _DEFAULT_REGION) -> str:
    region, account, name = _queue_location(queue_url, default_region)
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _record_message_attributes(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    # Lambda's shape differs from ReceiveMessage's: camelCase keys, both list fields always
    # present, and binary values base64-encoded (the event is JSON).
    converted: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        entry: dict[str, Any] = {
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [
                base64.b64encode(item).decode("ascii") for item in value.get("BinaryListValues", [])
            ],
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            entry["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        converted[name] = entry
    return converted


def lambda_sqs_event(
    messages: Sequence[Mapping[str, Any]], *, queue_url: str, region: str = _DEFAULT_REGION
) -> dict[str, Any]:
    """The event Lambda builds from ``messages`` as ``ReceiveMessage`` returned them."""
    arn = queue_arn(queue_url, region)
    aws_region = arn.split(":")[3]
    records = []
    for message in messages:
        system_attributes = message.get("Attributes", {})
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                name: system_attributes[name]
                for name in _RECORD_ATTRIBUTES
                if name in system_attributes
            },
            "messageAttributes": _record_message_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message["MD5OfBody"],
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        record |= {"eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": aws_region}
        records.append(record)
    return {"Records": records}


def _failed_message_ids(response: Any, message_ids: set[str]) -> set[str] | None:
    """The ids a ReportBatchItemFailures response lists, or ``None`` if Lambda would count the
    response as invalid (which fails the whole batch)."""
    try:
        # Lambda sees the response as JSON; what does not survive that is an invalid response.
        response = json.loads(json.dumps(response))
    except (TypeError, ValueError):
        return None
    if response is None or response == {}:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        if not isinstance(failure, dict):
            return None
        identifier = failure.get("itemIdentifier")
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


class SqsEventSource:
    """Polls ``queue_url`` and invokes ``handler`` with batches of up to ``batch_size`` records."""

    def __init__(
        self,
        queue_url: str,
        handler: LambdaHandler,
        *,
        batch_size: int = 10,
        wait_seconds: int = 1,
        function_name: str = "persister",
        sqs_client: SQSClient | None = None,
        report_batch_item_failures: bool = True,
        timeout_seconds: float = 30.0,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be 1..10 (SQS receives at most 10 messages)")
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.function_name = function_name
        self.report_batch_item_failures = report_batch_item_failures
        self.timeout_seconds = timeout_seconds
        self.sqs: SQSClient = sqs_client or boto3.client("sqs")
        self.region, self.account, _ = _queue_location(
            queue_url, self.sqs.meta.region_name or _DEFAULT_REGION
        )
        self.stop_event = threading.Event()
        self._invocation = threading.Lock()

    def poll_once(self) -> int:
        """Receive one batch and invoke the handler with it; return how many records it had."""
        with self._invocation:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.batch_size,
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["All"],
                AttributeNames=["All"],  # what endpoints older than 2024 read
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return 0
            event = lambda_sqs_event(messages, queue_url=self.queue_url, region=self.region)
            context = LambdaContext(
                self.function_name,
                region=self.region,
                account=self.account,
                timeout_s=self.timeout_seconds,
            )
            try:
                response = self.handler(event, context)
            except Exception:
                logger.exception(
                    "%s failed on a batch of %d; it returns after the visibility timeout",
                    self.function_name,
                    len(messages),
                )
                return len(messages)
            self._delete_succeeded(messages, response)
            return len(messages)

    def _delete_succeeded(self, messages: list[Any], response: Any) -> None:
        failed: set[str] | None = set()
        if self.report_batch_item_failures:
            failed = _failed_message_ids(response, {m["MessageId"] for m in messages})
        if failed is None:
            logger.error(
                "%s returned an invalid batch response, so the whole batch failed: %r",
                self.function_name,
                response,
            )
            return
        succeeded = [m for m in messages if m["MessageId"] not in failed]
        if not succeeded:
            return
        result = self.sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
                for index, m in enumerate(succeeded)
            ],
        )
        for failure in result.get("Failed", []):
            # The visibility timeout ran out during the invocation: the message is redelivered.
            logger.error("could not delete a processed message: %s", failure)

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Poll until ``stop_event`` (default: :attr:`stop_event`) is set."""
        stop = self.stop_event if stop_event is None else stop_event
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                # SQS unreachable (LocalStack restarting): keep polling, as Lambda does.
                logger.exception("polling %s failed; retrying", self.queue_url)
                stop.wait(1.0)

    def start(self, stop_event: threading.Event | None = None) -> threading.Thread:
        """Run :meth:`run` in a daemon thread; set the stop event (or call :meth:`stop`) to end
        it, then ``join()`` the thread (it returns within ``wait_seconds``)."""
        thread = threading.Thread(
            target=self.run,
            args=(stop_event,),
            name=f"sqs-event-source-{self.function_name}",
            daemon=True,
        )
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localgw.sqs_event_source",
        description="Poll an SQS queue and invoke a Lambda handler with its batches.",
    )
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--handler", required=True, help="e.g. functions.persister.handler.handler")
    parser.add_argument("--function-name", help="default: the handler's package name")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--wait-seconds", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    handler = import_handler(args.handler)
    # functions.persister.handler.handler -> persister, as the function is named in infra/.
    handler_path = args.handler.replace(":", ".").split(".")
    function_name = args.function_name or handler_path[max(0, len(handler_path) - 3)]
    source = SqsEventSource(
        args.queue_url,
        handler,
        batch_size=args.batch_size,
        wait_seconds=args.wait_seconds,
        function_name=function_name,
    )

    def stop(signum: int, frame: object) -> None:
        # The first signal stops between invocations, so no batch is left half-handled; a
        # second one interrupts a handler that hangs.
        if source.stop_event.is_set():
            raise KeyboardInterrupt
        source.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    logger.info("%s polls %s", function_name, args.queue_url)
    source.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
