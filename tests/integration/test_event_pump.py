"""The event pump against moto's S3 + SQS over HTTP: Lambda's SQS trigger semantics."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

import pytest

from lookalike_local.moto_stack import (
    Provisioned,
    provision,
    s3_client,
    sqs_client,
    use_local_aws,
)
from lookalike_local.sqs_pump import SqsEventPump
from lookalike_local.template import Topology


@pytest.fixture
def moto_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("AWS_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    use_local_aws(moto_server)  # monkeypatch restores the environment afterwards
    return moto_server


@pytest.fixture
def topology() -> Topology:
    """Names of their own per test: moto's state lives as long as the test session."""
    suffix = uuid.uuid4().hex[:8]
    return Topology(
        bucket=f"pump-{suffix}",
        queue=f"pump-{suffix}",
        dlq=f"pump-{suffix}-dlq",
        visibility_timeout_s=1,
        max_receive_count=2,
        batch_size=10,
        batching_window_s=0.5,
    )


class RecordingHandler:
    """An ingest handler stand-in that fails the objects whose key contains 'bad'."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.raise_next = False

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        if self.raise_next:
            self.raise_next = False
            raise RuntimeError("database down")
        failures = [
            {"itemIdentifier": record["messageId"]}
            for record in event["Records"]
            if any("bad" in key for key in _keys(record))
        ]
        return {"batchItemFailures": failures}

    def deliveries(self, fragment: str) -> list[dict[str, Any]]:
        """The records delivered for objects whose key contains `fragment`."""
        return [
            record
            for event in self.events
            for record in event["Records"]
            if any(fragment in key for key in _keys(record))
        ]


def _keys(record: dict[str, Any]) -> list[str]:
    """The object keys of one SQS record (S3 sends them URL-encoded; moto encodes / too)."""
    notification = json.loads(record["body"])
    return [unquote_plus(entry["s3"]["object"]["key"]) for entry in notification.get("Records", [])]


def _pump(
    provisioned: Provisioned, endpoint: str, handler: RecordingHandler, topology: Topology
) -> SqsEventPump:
    return SqsEventPump(
        sqs_client(endpoint),
        queue_url=provisioned.queue_url,
        queue_arn=provisioned.queue_arn,
        invoke=handler,
        batch_size=topology.batch_size,
        batching_window_s=topology.batching_window_s,
        report_batch_item_failures=True,
    )


def _queue_depth(endpoint: str, queue_url: str) -> int:
    attributes = sqs_client(endpoint).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _drain(pump: SqsEventPump, until: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "the pump did not get there in time"
        pump.pump_once()


def test_partial_batch_failure_retries_only_the_failed_message_then_dead_letters_it(
    moto_endpoint: str, topology: Topology
) -> None:
    provisioned = provision(moto_endpoint, topology)
    s3 = s3_client(moto_endpoint)
    for key in (
        "products/a/p1/good.jpg",
        "products/a/p2/bad.jpg",
        "products/a/p3/good2.jpg",
        "elsewhere/x.jpg",
    ):
        s3.put_object(Bucket=provisioned.bucket, Key=key, Body=b"not really an image")
    handler = RecordingHandler()
    pump = _pump(provisioned, moto_endpoint, handler, topology)

    _drain(pump, lambda: _queue_depth(moto_endpoint, provisioned.dlq_url) == 1)

    record = handler.deliveries("good.jpg")[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == provisioned.queue_arn
    assert {"messageId", "receiptHandle", "body", "attributes", "md5OfBody", "awsRegion"} <= record.keys()
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    s3_event = json.loads(record["body"])["Records"][0]
    assert s3_event["eventName"].startswith("ObjectCreated:")
    assert s3_event["s3"]["bucket"]["name"] == provisioned.bucket
    # Succeeded messages are deleted after one delivery; the failed one comes back after the
    # visibility timeout until maxReceiveCount, then the redrive policy moves it to the DLQ.
    assert len(handler.deliveries("good.jpg")) == 1
    assert len(handler.deliveries("good2.jpg")) == 1
    bad = handler.deliveries("bad.jpg")
    assert [r["attributes"]["ApproximateReceiveCount"] for r in bad] == ["1", "2"]
    assert handler.deliveries("elsewhere/") == []  # outside the notification's prefix filter
    assert _queue_depth(moto_endpoint, provisioned.queue_url) == 0
    assert pump.stats.failed == 2


def test_a_handler_error_fails_the_whole_batch(moto_endpoint: str, topology: Topology) -> None:
    provisioned = provision(moto_endpoint, topology)
    s3 = s3_client(moto_endpoint)
    for index in range(3):
        s3.put_object(Bucket=provisioned.bucket, Key=f"products/a/p{index}/x.jpg", Body=b"x")
    handler = RecordingHandler()
    handler.raise_next = True
    pump = _pump(provisioned, moto_endpoint, handler, topology)

    _drain(pump, lambda: _queue_depth(moto_endpoint, provisioned.queue_url) == 0)

    assert pump.stats.handler_errors == 1
    for index in range(3):
        counts = [r["attributes"]["ApproximateReceiveCount"] for r in handler.deliveries(f"p{index}/x.jpg")]
        assert counts[-1] == "2", counts  # delivered again after the failed invocation
    assert _queue_depth(moto_endpoint, provisioned.dlq_url) == 0
