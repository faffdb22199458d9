"""Ingest function: S3 object events (via SQS, direct, or EventBridge) -> embeddings in pgvector.

The work is in `lookalike.ingest.ingest_batch`; this module wires it to Lambda: parsing,
logging, metrics, tracing and telling the event source what to retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lookalike.ingest import IngestLimits, ingest_batch
from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model, maintained_embedders
from lookalike.settings import get_settings
from lookalike.store import Store
from lookalike_aws.events import parse_invocation
from lookalike_aws.ingest_telemetry import report_batch
from lookalike_aws.runtime import get_store
from lookalike_aws.s3 import S3ObjectSource, get_s3_client

logger = Logger()
metrics = Metrics()
tracer = Tracer()

# Init phase (once per container, not per image): build the default model's ONNX session, run one
# inference and create the S3 client. Other registered models (a building one) load on their
# first batch (docs/MODELS.md, "Lambda"). The database connection opens lazily on first use
# instead, so a database that is down fails records (retried), not the container's start.
get_embedder().warm_up()
get_s3_client()


class RetryLater(Exception):  # noqa: N818 - tells the event source what to do
    """Some records hit a transient failure; the event source redelivers them."""


def migrated_store() -> Store:
    """The container's store, its schema brought up to date on first use (idempotent and
    serialised by an advisory lock, so concurrent cold starts are safe), with an active model
    (a new deployment registers and activates its configured one)."""
    store = get_store()
    if not store.migrated:
        store.migrate_once()
        ensure_active_model(store, get_settings())
    return store


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    parsed = parse_invocation(event)
    settings = get_settings()
    report = ingest_batch(
        parsed.events,
        source=S3ObjectSource(),
        store=migrated_store,
        embedders=maintained_embedders,
        limits=IngestLimits(settings.max_image_bytes, settings.max_image_pixels),
        layout=settings.key_layout,
    )
    report_batch(report, parsed, logger=logger, metrics=metrics, tracer=tracer)
    retry = {outcome.event.message_id for outcome in report.failed}
    retry |= {delivery.message_id for delivery in parsed.deliveries if delivery.errors}

    if parsed.source == "sqs":
        # The whole batch was embedded above in one ONNX call; BatchProcessor then walks the
        # records one by one only to turn the precomputed outcomes into its partial batch
        # response (a record handler that raises = a batchItemFailure). Using it, rather than
        # building the response by hand, keeps the response shape and edge cases Powertools'.
        def settle(record: SQSRecord) -> None:
            if record.message_id in retry:
                raise RetryLater(f"message {record.message_id} has records to retry")

        return process_partial_response(
            event=event, record_handler=settle, processor=_processor, context=context
        )

    # Direct S3 / EventBridge invocations are asynchronous: raising makes Lambda retry the
    # event (twice, then its on-failure destination). Repeating the event is harmless.
    if retry:
        raise RetryLater(f"{len(report.failed)} events failed transiently; {len(retry)} deliveries to retry")
    return {"processed": len(report.outcomes)}


# A batch whose every record failed is reported as such (all ids in batchItemFailures) rather
# than raised: same redelivery, but the response says exactly which messages.
_processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
