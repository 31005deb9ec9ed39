"""The persister Lambda: ``events.fifo`` -> the PostgreSQL ``journal`` table -> read models.

Invoked by the SQS FIFO event source with ReportBatchItemFailures. Each record is one journal
message, written in its own transaction (:mod:`functions.persister.journal_writer`). On the first
record that fails, the rest of the batch is reported failed too, so that FIFO order holds: the
failed record and everything after it come back together after the visibility timeout.

Nothing is ever dropped: an undecodable body, a gap, a fork all fail the record, which stays on
``events.fifo`` (no dead-letter queue) until someone looks; the queue's age alarm says when.

After the batch's raw writes, the read-model projections catch up with the journal table
(:mod:`functions.persister.projection`), each from its own checkpoint, within the invocation's
remaining time. They never affect the batch's response: a projection that fails stays at its
checkpoint, is logged and counted (``ProjectionFailures``), and is retried on the next invocation.
"""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

import psycopg
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudex.aws_connect import connect, database_url
from cloudex.journal import EpochStarted, JournalBlock, decode_journal_message
from functions.persister.journal_writer import JournalWriteError, Outcome, write_journal_message
from functions.persister.projection import RunReport, run_projections
from functions.persister.read_models import ALL_PROJECTIONS

# Defaults for running outside AWS (the deployed function's environment sets the same values),
# read rather than written into os.environ: locally, several functions share one process.
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "persister")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Cloudex")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
processor = SqsFifoPartialProcessor()


class UndecodableJournalMessage(ValueError):
    """The body is not a journal message. It is retried, never dropped, until someone looks."""


class _Database:
    """The connection, kept across warm invocations (a connect per batch would dominate).

    It is reopened when it broke (RDS closes idle connections, failovers drop them) and when
    ``DATABASE_URL`` changed, which only happens when several functions or tests share a process.
    In AWS the URL comes from the IAM variables of :mod:`cloudex.aws_connect`, and each new
    connection gets a fresh token.
    """

    def __init__(self) -> None:
        self._conn: psycopg.Connection | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        url = database_url(os.environ)
        with self._lock:
            if self._conn is not None and (
                self._conn.closed or self._conn.broken or url != self._url
            ):
                self._conn.close()
                self._conn = None
            if self._conn is None:
                # autocommit: each message's transaction() is then a real, committed transaction.
                self._conn = connect(url, autocommit=True, connect_timeout=10)
                self._url = url
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


database = _Database()


def write_record(record: SQSRecord) -> Outcome:
    """Write one record's journal message; raise if it must be retried."""
    try:
        message = decode_journal_message(record.body)
    except ValueError as exc:
        metrics.add_metric(name="JournalWriteErrors", unit=MetricUnit.Count, value=1)
        logger.error(
            "undecodable journal message",
            extra={"message_id": record.message_id, "error": str(exc), "body": record.body[:200]},
        )
        raise UndecodableJournalMessage(f"message {record.message_id}: {exc}") from exc
    raw = base64.b64decode(record.body)
    log_fields = _describe(message) | {"message_id": record.message_id}

    try:
        conn = database.connection()
        try:
            outcome = write_journal_message(conn, message, raw)
        except psycopg.OperationalError:
            # A connection that died while idle fails its first statement. The write is
            # idempotent, so one retry on a fresh connection is safe; other errors go back.
            if not conn.broken:
                raise
            logger.warning("database connection lost; reconnecting", extra=log_fields)
            outcome = write_journal_message(database.connection(), message, raw)
    except Exception as exc:
        metrics.add_metric(name="JournalWriteErrors", unit=MetricUnit.Count, value=1)
        logger.error(
            "journal message not written; it will be retried",
            extra=log_fields | {"error": str(exc), "error_type": type(exc).__name__},
            exc_info=not isinstance(exc, JournalWriteError),
        )
        raise

    _report(outcome, message, log_fields)
    return outcome


def _report(
    outcome: Outcome, message: JournalBlock | EpochStarted, log_fields: dict[str, Any]
) -> None:
    if outcome is Outcome.REFUSED:
        # Stale epoch markers count here too: both come from an engine that was fenced out.
        metrics.add_metric(name="JournalBlocksRefused", unit=MetricUnit.Count, value=1)
        logger.warning("journal message of an older epoch refused", extra=log_fields)
    elif outcome is Outcome.DUPLICATE:
        metrics.add_metric(name="JournalDuplicates", unit=MetricUnit.Count, value=1)
        logger.info("journal message already written", extra=log_fields)
    elif isinstance(message, JournalBlock):
        records = message.last_seq - message.first_seq + 1
        metrics.add_metric(name="JournalBlocksWritten", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="JournalRecordsWritten", unit=MetricUnit.Count, value=records)
    else:
        metrics.add_metric(name="JournalEpochsStarted", unit=MetricUnit.Count, value=1)
        logger.info("epoch started", extra=log_fields)


def _describe(message: JournalBlock | EpochStarted) -> dict[str, Any]:
    if isinstance(message, EpochStarted):
        return {"kind": "EpochStarted", "epoch": message.epoch, "engine_id": message.engine_id}
    return {
        "kind": "JournalBlock",
        "epoch": message.epoch,
        "first_seq": message.first_seq,
        "last_seq": message.last_seq,
    }


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    response = process_partial_response(
        event=event, record_handler=write_record, processor=processor, context=context
    )
    project(context)
    return response


def project(context: LambdaContext | None = None) -> RunReport | None:
    """Catch the read models up with the journal; never raise (the raw journal is what the
    batch's response is about, and it is committed already)."""
    try:
        report = run_projections(
            database.connection(),
            ALL_PROJECTIONS,
            time_left_ms=context.get_remaining_time_in_millis if context is not None else None,
        )
    except Exception as exc:
        metrics.add_metric(name="ProjectionFailures", unit=MetricUnit.Count, value=1)
        logger.exception("projection round failed", extra={"error": str(exc)})
        return None
    metrics.add_metric(name="ProjectedEvents", unit=MetricUnit.Count, value=report.events)
    if report.failed:
        metrics.add_metric(
            name="ProjectionFailures", unit=MetricUnit.Count, value=len(report.failed)
        )
        logger.error("projections failed", extra={"failed": report.failed, "lag": report.lag})
    metrics.add_metric(
        name="ProjectionLagRecords",
        unit=MetricUnit.Count,
        value=max(report.lag.values(), default=0),
    )
    return report
