"""Parsing the published sample events (unchanged) into domain object events."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lookalike_aws.events import UnsupportedEventError, parse_invocation

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def test_sqs_wrapped_notification() -> None:
    parsed = parse_invocation(load("powertools__s3SqsEvent.json"))
    assert parsed.source == "sqs"
    [delivery] = parsed.deliveries
    [event] = delivery.events
    assert delivery.message_id == "ca3e7a89-c358-40e5-8aa0-5da01403c267" == event.message_id
    assert (event.bucket, event.key, event.kind, event.event_name) == (
        "xxx",
        "test.pdf",
        "created",
        "ObjectCreated:Put",
    )
    assert (event.size, event.etag, event.sequencer) == (
        104681,
        "2e3ad1e983318bbd8e73b080e2997980",
        "00643717F9F8B85354",
    )
    assert event.version_id == "yd3d4HaWOT2zguDLvIQLU6ptDTwKBnQV"
    assert event.event_time == datetime(2023, 4, 12, 20, 43, 38, 21000, tzinfo=UTC)
    assert event.request_id == "YMSSR8BZJ2Y99K6P"


@pytest.mark.parametrize(
    ("name", "key", "kind"),
    [
        ("powertools__s3Event.json", "b21b84d653bb07b05b1e6b33684dc11b", "created"),
        ("powertools__s3EventDeleteObject.json", "b21b84d653bb07b05b1e6b33684dc11b", "removed"),
        ("powertools__s3EventDecodedKey.json", "Happy Face.jpg", "created"),
        ("sam-generated__s3_put.json", "products/red shoe.jpg", "created"),
        ("sam-generated__s3_delete.json", "products/red shoe.jpg", "removed"),
        ("sam-cli-template__S3Put.json", "{{{key}}}", "created"),
    ],
)
def test_direct_s3_notifications(name: str, key: str, kind: str) -> None:
    parsed = parse_invocation(load(name))
    assert parsed.source == "s3"
    [event] = parsed.events
    assert (event.key, event.kind, event.message_id) == (key, kind, None)
    if kind == "removed":
        assert event.size is None  # delete events carry no size


def test_eventbridge_object_created_and_deleted() -> None:
    created = load("powertools__s3EventBridgeNotificationObjectCreatedEvent.json")
    [event] = parse_invocation(created).events
    assert (event.bucket, event.key, event.kind, event.size) == (
        "example-bucket",
        "IMG_m7fzo3.jpg",
        "created",
        184662,
    )
    assert (event.sequencer, event.request_id) == ("006408CAD69598B05E", "57H08PA84AB1JZW0")
    deleted = copy.deepcopy(created)
    deleted["detail-type"] = "Object Deleted"
    deleted["detail"]["object"] = {"key": "a%2Bb+c.jpg", "sequencer": "006408CAD69598B05F"}
    deleted["detail"]["deletion-type"] = "Delete Marker Created"
    [removal] = parse_invocation(deleted).events
    assert (removal.kind, removal.key, removal.size) == ("removed", "a+b c.jpg", None)


def test_keys_are_decoded_exactly_once() -> None:
    event = load("sam-generated__s3_put.json")
    event["Records"][0]["s3"]["object"]["key"] = "products/sacs+%C3%A0+main/a%2Bb%2520/%C3%BC.jpg"
    [parsed] = parse_invocation(event).events
    assert parsed.key == "products/sacs à main/a+b%20/ü.jpg"


@pytest.mark.parametrize(
    ("event_name", "kind"),
    [
        ("ObjectCreated:CompleteMultipartUpload", "created"),
        ("ObjectCreated:Copy", "created"),
        ("ObjectRemoved:DeleteMarkerCreated", "removed"),
        ("LifecycleExpiration:Delete", "removed"),
    ],
)
def test_event_names(event_name: str, kind: str) -> None:
    event = load("sam-generated__s3_put.json")
    event["Records"][0]["eventName"] = event_name
    [parsed] = parse_invocation(event).events
    assert parsed.kind == kind


def test_other_event_types_are_skipped_not_errors() -> None:
    event = load("sam-generated__s3_put.json")
    event["Records"][0]["eventName"] = "ObjectRestore:Completed"
    [delivery] = parse_invocation(event).deliveries
    assert delivery.events == []
    assert delivery.errors == []
    assert delivery.skipped == ["event type ObjectRestore:Completed is not handled"]


def sqs_event(*bodies: str) -> dict[str, Any]:
    template = load("powertools__s3SqsEvent.json")["Records"][0]
    records = []
    for index, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"message-{index}"
        record["body"] = body
        records.append(record)
    return {"Records": records}


def test_test_events_bad_bodies_and_sns_envelopes_per_message() -> None:
    notification = json.loads(load("powertools__s3SqsEvent.json")["Records"][0]["body"])
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-01-01T00:00:00Z",
        "Bucket": "b",
    }
    two_records = {"Records": [notification["Records"][0], notification["Records"][0]]}
    bad_record = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}
    sns = {"Type": "Notification", "Message": json.dumps(notification)}
    parsed = parse_invocation(
        sqs_event(
            json.dumps(test_event),
            "not json",
            json.dumps(two_records),
            json.dumps(bad_record),
            json.dumps(sns),
        )
    )
    test, not_json, two, bad, via_sns = parsed.deliveries
    assert test.skipped == ["s3:TestEvent"]
    assert not test.errors
    assert not test.events
    assert len(not_json.errors) == 1
    assert not not_json.events
    assert len(two.events) == 2
    assert not two.errors
    assert len(bad.errors) == 1
    assert "malformed" in bad.errors[0]
    assert [event.key for event in via_sns.events] == ["test.pdf"]
    assert {event.message_id for event in parsed.events} == {"message-2", "message-4"}


def test_a_non_hex_sequencer_is_kept_raw() -> None:
    [event] = parse_invocation(load("powertools__s3EventDecodedKey.json")).events
    assert event.sequencer == "Happy Sequencer"


@pytest.mark.parametrize(
    "payload", [{}, {"Records": [{"eventSource": "aws:sns"}]}, {"detail-type": "Scheduled Event"}]
)
def test_unknown_shapes_are_refused_clearly(payload: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedEventError, match="expected SQS messages"):
        parse_invocation(payload)
