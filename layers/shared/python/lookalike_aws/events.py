"""Lambda events in, domain `ObjectEvent`s out: the three ways a deployment delivers S3 events.

- SQS (the default trigger): each message body is an S3 notification (possibly several
  records), an `s3:TestEvent`, an EventBridge S3 event (EventBridge -> SQS rule) or any of
  these inside an SNS envelope (S3 -> SNS -> SQS fan-out).
- A direct S3 notification (asynchronous invocation by the bucket).
- An EventBridge "Object Created" / "Object Deleted" event.

The unit the caller acknowledges is a `Delivery`: an SQS message, or one record of a direct
event. A record that cannot be parsed becomes an error on its own delivery, never a crash of
the whole batch. Keys arrive form-URL-encoded and are decoded here, exactly once, with
`unquote_plus` (Powertools' `S3Object.key` is the raw value; its EventBridge `key` is already
decoded, so the raw dictionaries are read for the key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent, SQSEvent
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

from lookalike.ports import ObjectEvent, ObjectEventKind

InvocationSource = Literal["sqs", "s3", "eventbridge"]

TEST_EVENT = "s3:TestEvent"
_EVENTBRIDGE_KINDS: dict[str, ObjectEventKind] = {"Object Created": "created", "Object Deleted": "removed"}


class UnsupportedEventError(ValueError):
    """The invocation is none of the shapes above (a wiring mistake, not a bad record)."""


class MalformedRecordError(ValueError):
    """One record or message that cannot be read as an S3 object event."""


@dataclass(slots=True)
class Delivery:
    message_id: str | None  # SQS message id; None for direct invocations
    events: list[ObjectEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # acknowledged without work, and why
    errors: list[str] = field(default_factory=list)  # could not be parsed: retried, then dead-lettered


@dataclass(slots=True)
class ParsedInvocation:
    source: InvocationSource
    deliveries: list[Delivery]

    @property
    def events(self) -> list[ObjectEvent]:
        return [event for delivery in self.deliveries for event in delivery.events]


def parse_invocation(event: Mapping[str, Any]) -> ParsedInvocation:
    """Sort an invocation's payload into deliveries of object events; see the module docstring."""
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        if records[0].get("eventSource") == "aws:sqs":
            return ParsedInvocation(
                "sqs", [_parse_sqs_message(message) for message in SQSEvent(dict(event)).records]
            )
        if records[0].get("eventSource") == "aws:s3":
            deliveries = []
            for record in records:
                delivery = Delivery(message_id=None)
                _parse_into(delivery, {"Records": [record]})
                deliveries.append(delivery)
            return ParsedInvocation("s3", deliveries)
    if _is_eventbridge_s3(event):
        delivery = Delivery(message_id=None)
        _parse_into(delivery, event)
        return ParsedInvocation("eventbridge", [delivery])
    if event.get("Event") == TEST_EVENT:
        return ParsedInvocation("s3", [Delivery(message_id=None, skipped=[TEST_EVENT])])
    raise UnsupportedEventError(
        "expected SQS messages, an S3 notification or an EventBridge S3 event; "
        f"got an event with keys {sorted(event)[:10]}"
    )


def _parse_sqs_message(message: Any) -> Delivery:
    delivery = Delivery(message_id=message.message_id)
    try:
        body = json.loads(message.body)
    except (TypeError, ValueError) as error:
        delivery.errors.append(f"the message body is not JSON: {error}")
        return delivery
    _parse_into(delivery, body)
    return delivery


def _parse_into(delivery: Delivery, payload: Any, *, depth: int = 0) -> None:
    """Add the payload's object events (or why not) to the delivery."""
    if not isinstance(payload, Mapping):
        delivery.errors.append(f"expected a JSON object, got {type(payload).__name__}")
        return
    if payload.get("Event") == TEST_EVENT:
        delivery.skipped.append(TEST_EVENT)  # sent once when notifications are configured
        return
    if payload.get("Type") == "Notification" and isinstance(payload.get("Message"), str) and depth == 0:
        try:
            inner = json.loads(payload["Message"])
        except ValueError as error:
            delivery.errors.append(f"the SNS message is not JSON: {error}")
            return
        _parse_into(delivery, inner, depth=1)
        return
    if _is_eventbridge_s3(payload):
        try:
            _add(delivery, _from_eventbridge(payload, delivery.message_id))
        except (MalformedRecordError, KeyError, TypeError, ValueError) as error:
            delivery.errors.append(f"malformed EventBridge S3 event: {error!r}")
        return
    records = payload.get("Records")
    if not isinstance(records, list):
        delivery.errors.append(f"not an S3 notification: keys {sorted(payload)[:10]}")
        return
    for record in records:
        try:
            _add(delivery, _from_s3_record(record, delivery.message_id))
        except (MalformedRecordError, KeyError, TypeError, ValueError) as error:
            delivery.errors.append(f"malformed S3 notification record: {error!r}")


def _add(delivery: Delivery, parsed: ObjectEvent | str) -> None:
    if isinstance(parsed, str):
        delivery.skipped.append(parsed)
    else:
        delivery.events.append(parsed)


def _s3_kind(event_name: str) -> ObjectEventKind | None:
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return "created"
    # Removal in every form: Delete, DeleteMarkerCreated (versioned buckets), and lifecycle
    # expirations (their own event type, same effect: the object is gone).
    if name.startswith(("ObjectRemoved:", "LifecycleExpiration:")):
        return "removed"
    return None


def _from_s3_record(raw: Any, message_id: str | None) -> ObjectEvent | str:
    if not isinstance(raw, Mapping):
        raise MalformedRecordError(f"a record is a {type(raw).__name__}, not an object")
    record = S3EventRecord(dict(raw))
    kind = _s3_kind(record.event_name)
    if kind is None:
        return f"event type {record.event_name} is not handled"
    s3_object = record.s3.get_object
    return ObjectEvent(
        bucket=_text(record.s3.bucket.name, "bucket name"),
        key=unquote_plus(_text(s3_object.key, "object key")),
        kind=kind,
        event_name=record.event_name,
        event_time=_timestamp(record.event_time),
        # Read leniently: moto's events and removals lack a sequencer and a size, which
        # Powertools' properties would turn into a KeyError.
        sequencer=_optional_text(s3_object.get("sequencer")),
        size=_optional_int(s3_object.get("size")) if kind == "created" else None,
        etag=_optional_text(s3_object.etag),
        version_id=_optional_text(s3_object.version_id),
        message_id=message_id,
        request_id=_optional_text((raw.get("responseElements") or {}).get("x-amz-request-id")),
    )


def _is_eventbridge_s3(payload: Mapping[str, Any]) -> bool:
    return payload.get("source") == "aws.s3" and "detail-type" in payload and "detail" in payload


def _from_eventbridge(raw: Mapping[str, Any], message_id: str | None) -> ObjectEvent | str:
    event = S3EventBridgeNotificationEvent(dict(raw))
    kind = _EVENTBRIDGE_KINDS.get(event.detail_type)
    if kind is None:
        return f"EventBridge event {event.detail_type!r} is not handled"
    detail = event.detail
    raw_object = raw["detail"]["object"]  # the raw key: Powertools' .key is already decoded
    return ObjectEvent(
        bucket=_text(detail.bucket.name, "bucket name"),
        key=unquote_plus(_text(raw_object["key"], "object key")),
        kind=kind,
        event_name=event.detail_type,
        event_time=_timestamp(event.time),
        sequencer=_optional_text(raw_object.get("sequencer")),
        size=_optional_int(raw_object.get("size")) if kind == "created" else None,
        etag=_optional_text(raw_object.get("etag")),
        version_id=_optional_text(raw_object.get("version-id")),
        message_id=message_id,
        request_id=_optional_text(raw["detail"].get("request-id")),
    )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or value == "":
        raise MalformedRecordError(f"{what} is missing or not a string: {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedRecordError(f"size is not a number: {value!r}")
    return int(value)


def _timestamp(value: Any) -> datetime:
    """S3's eventTime ("2019-09-03T19:37:27.192Z") or EventBridge's time, timezone-aware."""
    parsed = datetime.fromisoformat(_text(value, "event time"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
