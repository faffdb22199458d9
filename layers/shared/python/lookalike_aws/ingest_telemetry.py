"""What the ingest handler tells operators about a batch: log lines, metrics, trace metadata.

One log line per event, carrying the S3 key, S3's request id and the SQS message id (appended
for that line only, on top of the Lambda context the handler's logger injects), one line per
unreadable or skipped record, and a "batch done" line with counts and phase timings.

Metrics (EMF, namespace from POWERTOOLS_METRICS_NAMESPACE): ImagesEmbedded, ImagesDeleted,
ImagesRejected and ImagesRejected_<reason> (dimension-free names: one alarm per reason needs no
dimension bookkeeping), TransientFailures, UnreadableRecords, InferenceMs, BatchImages.
"""

from __future__ import annotations

from dataclasses import asdict

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from lookalike.ingest import EventOutcome, IngestBatch
from lookalike_aws.events import ParsedInvocation


def report_batch(
    report: IngestBatch, parsed: ParsedInvocation, *, logger: Logger, metrics: Metrics, tracer: Tracer
) -> None:
    for outcome in report.outcomes:
        _log_outcome(logger, outcome)
    unreadable = 0
    for delivery in parsed.deliveries:
        for error in delivery.errors:
            unreadable += 1
            logger.error("unreadable record", extra={"message_id": delivery.message_id, "error": error})
        for skipped in delivery.skipped:
            logger.info("skipped", extra={"message_id": delivery.message_id, "why": skipped})

    metrics.add_metric("ImagesEmbedded", MetricUnit.Count, report.count("embedded"))
    metrics.add_metric("ImagesDeleted", MetricUnit.Count, report.count("deleted"))
    metrics.add_metric("ImagesRejected", MetricUnit.Count, report.count("rejected"))
    for reason in sorted({outcome.reason for outcome in report.outcomes if outcome.reason}):
        count = sum(outcome.reason == reason for outcome in report.outcomes)
        metrics.add_metric(f"ImagesRejected_{reason}", MetricUnit.Count, count)
    metrics.add_metric("TransientFailures", MetricUnit.Count, report.count("failed"))
    if unreadable:
        metrics.add_metric("UnreadableRecords", MetricUnit.Count, unreadable)
    if report.images_in_inference:
        metrics.add_metric("InferenceMs", MetricUnit.Milliseconds, report.timings.inference_ms)
        metrics.add_metric("BatchImages", MetricUnit.Count, report.images_in_inference)

    timings = {name: round(value, 2) for name, value in asdict(report.timings).items()}
    counts = {kind: report.count(kind) for kind in sorted({outcome.kind for outcome in report.outcomes})}
    summary = {"source": parsed.source, "images_in_inference": report.images_in_inference}
    logger.info("batch done", extra={**summary, "outcomes": counts, "timings_ms": timings})
    tracer.put_metadata("timings_ms", timings)


def _log_outcome(logger: Logger, outcome: EventOutcome) -> None:
    event = outcome.event
    fields = {
        "outcome": outcome.kind,
        "bucket": event.bucket,
        "event": event.event_name,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "product_id": outcome.product_id,
    }
    with logger.append_context_keys(
        s3_key=event.key, s3_request_id=event.request_id, message_id=event.message_id
    ):
        if outcome.kind == "failed":
            logger.warning("will be retried", extra=fields)
        elif outcome.kind == "rejected":
            logger.warning("image rejected", extra=fields)
        else:
            logger.info(outcome.kind, extra=fields)
