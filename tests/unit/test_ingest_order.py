"""Which event of a batch wins, by S3's ordering rule (no database, no model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lookalike.ingest import newest_per_object
from lookalike.ordering import compare_orders
from lookalike.ports import EventOrder, ObjectEvent

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def order(sequencer: str | None, seconds: float = 0) -> EventOrder:
    return EventOrder(sequencer=sequencer, event_time=T0 + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        (order("0055B9B8C2E3000000"), order("0055B9B8C2E3000001")),
        # Right-pad the shorter with zeros, then compare (S3's documented rule).
        (order("0A1B2C3D4E5F678901"), order("0A1B2C3D4E5F67890110")),
        (order("0A1B2C3D4E5F6789"), order("0A1B2C3D4E5F678901")),
        # No usable sequencer on either side: event time.
        (order(None, 0), order(None, 1)),
        (order("Happy Sequencer", 0), order("0A", 1)),
        (order("{{{sequencer}}}", 0), order("Happy Sequencer", 0.001)),
    ],
)
def test_compare_orders(older: EventOrder, newer: EventOrder) -> None:
    assert compare_orders(older, newer) == -1
    assert compare_orders(newer, older) == 1
    assert compare_orders(newer, newer) == 0


def test_padding_makes_equal_sequencers_equal() -> None:
    assert compare_orders(order("0A1B"), order("0A1B00")) == 0


def event(key: str, sequencer: str, kind: str = "created", message: str = "m") -> ObjectEvent:
    return ObjectEvent(
        bucket="b",
        key=key,
        kind="created" if kind == "created" else "removed",
        event_name="ObjectCreated:Put" if kind == "created" else "ObjectRemoved:Delete",
        event_time=T0,
        sequencer=sequencer,
        message_id=message,
    )


def test_newest_per_object_settles_duplicates_and_older_events() -> None:
    create_1 = event("a.jpg", "0001", message="1")
    delete_2 = event("a.jpg", "0002", "removed", message="2")
    duplicate = event("a.jpg", "0002", "removed", message="3")
    other = event("b.jpg", "0001", message="4")
    latest, settled = newest_per_object([create_1, delete_2, duplicate, other])
    assert latest == [delete_2, other]
    assert {(outcome.event.message_id, outcome.kind) for outcome in settled} == {
        ("1", "stale"),
        ("3", "duplicate"),
    }


def test_a_newer_event_delivered_first_still_wins() -> None:
    newer, older = event("a.jpg", "0009"), event("a.jpg", "0001", "removed")
    latest, settled = newest_per_object([newer, older])
    assert latest == [newer]
    assert [(outcome.event, outcome.kind) for outcome in settled] == [(older, "stale")]
