"""Backfill by fan-out: S3-notification-shaped messages on the ingest queue (`backfill --enqueue`).

Each message is what S3 itself would have sent for a PUT of the object (an `ObjectCreated:Put`
record, key form-URL-encoded as S3 encodes it, size and eTag), so the deployed ingest function
treats it like any upload: `lookalike_aws.events.parse_invocation` reads it, the store's guard
orders it. It carries no sequencer (only S3 has one) and the object's LastModified as its event
time: a delete or overwrite notified after the listing wins, and an object version the store
already holds is re-embedded only when another model embedded it (store.py, "Re-embedding").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import boto3

from lookalike.backfill import BatchResult
from lookalike.ports import ListedObject

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries
SEND_ATTEMPTS = 3  # entries SQS refuses (throttling) are sent again, then reported as failed
CONFIGURATION_ID = "lookalike-backfill"


def s3_key_in_event(key: str) -> str:
    """The key as S3 writes it into a notification: form-URL-encoded (space -> '+')."""
    return quote_plus(key, safe="/")


def notification_for(bucket: str, listed: ListedObject, *, region: str) -> dict[str, Any]:
    """One `ObjectCreated:Put` S3 event notification (event version 2.1) for a listed object."""
    event_time = listed.last_modified.astimezone(UTC).isoformat(timespec="milliseconds")
    s3_object: dict[str, Any] = {"key": s3_key_in_event(listed.key), "size": listed.size}
    if listed.etag:
        s3_object["eTag"] = listed.etag
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": event_time.replace("+00:00", "Z"),
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": CONFIGURATION_ID},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                    "x-amz-id-2": CONFIGURATION_ID,
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": CONFIGURATION_ID,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": CONFIGURATION_ID},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": s3_object,
                },
            }
        ]
    }


class EnqueueForIngest:
    """The backfill's `BatchWork` that sends each object to the ingest queue (10 per request)."""

    verb = "enqueued"

    def __init__(self, queue_url: str, client: SQSClient | None = None, *, region: str | None = None) -> None:
        self.queue_url = queue_url
        self.client: SQSClient = client or boto3.client("sqs")
        self.region = region or self.client.meta.region_name or "us-east-1"

    def __call__(self, bucket: str, objects: Sequence[ListedObject]) -> BatchResult:
        result = BatchResult()
        for start in range(0, len(objects), SQS_BATCH):
            chunk = objects[start : start + SQS_BATCH]
            entries: dict[str, SendMessageBatchRequestEntryTypeDef] = {
                str(index): {
                    "Id": str(index),
                    "MessageBody": json.dumps(notification_for(bucket, listed, region=self.region)),
                }
                for index, listed in enumerate(chunk)
            }
            errors: dict[str, str] = {}
            for _ in range(SEND_ATTEMPTS):
                response = self.client.send_message_batch(
                    QueueUrl=self.queue_url, Entries=list(entries.values())
                )
                for sent in response.get("Successful", []):
                    errors.pop(sent["Id"], None)
                    result.done += 1
                failed = response.get("Failed", [])
                errors |= {entry["Id"]: entry.get("Message", entry["Code"]) for entry in failed}
                # Sender faults (a malformed entry) would fail again; only SQS's own are retried.
                entries = {
                    entry["Id"]: entries[entry["Id"]] for entry in failed if not entry.get("SenderFault")
                }
                if not entries:
                    break
            result.failed += [
                (chunk[int(entry_id)].key, f"SendMessageBatch: {error}") for entry_id, error in errors.items()
            ]
        return result
