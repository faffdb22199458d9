"""The ingest use case: a batch of S3 object events in, one outcome per event out.

Delivery is at-least-once and unordered (S3 notifications, SQS, async retries), so every step
is safe to repeat: the store applies a write only when its event order (S3 sequencer, else
event time) is newer than what it holds, so duplicates and late events change nothing.

For a batch the use case
1. keeps the newest event per object (older and duplicate ones of the same batch are settled
   without reading anything),
2. reads the created objects (concurrently: S3 latency, not CPU, dominates),
3. decodes them with the hardened decoder (a bad file becomes a permanent rejection),
4. embeds every decodable image of the batch in ONE ONNX call (batching is ~2x cheaper per
   image than one call each),
5. writes: one upsert for all embeddings, one tombstone per removal, one row per rejection.

Failures are sorted by what a retry can change. A rejection is permanent and acknowledged (a
poison image must not loop). A vanished object is not an error: its delete event tombstones it.
A transient failure (S3 throttled/5xx after the client's retries, database down) fails only
the affected events; the caller hands those back to SQS or Lambda for a retry.

No boto3 and no Powertools here: reading objects is behind the `ObjectSource` protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import psycopg

from lookalike.catalogue import KeyLayout, product_identity
from lookalike.images import DecodedImage, ImageRejected, ImageTooLarge, decode_image
from lookalike.model.embedder import Embedder, FloatArray
from lookalike.store import EventOrder, ImageRecord, ObjectRef, Rejection, Store, normalise_sequencer

ObjectEventKind = Literal["created", "removed"]

# Reads in flight at once; boto3's default connection pool (10) is the ceiling.
FETCH_CONCURRENCY = 8

# What a database that is down or restarting raises (psycopg.InterfaceError: a connection the
# server closed under us). Anything else from the store is a bug and propagates.
TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One S3 object notification, whatever shape delivered it (key already URL-decoded)."""

    bucket: str
    key: str
    kind: ObjectEventKind
    event_name: str  # as S3 / EventBridge named it: "ObjectCreated:Put", "Object Deleted", ...
    event_time: datetime
    sequencer: str | None = None  # raw, as delivered (may be a non-hex placeholder)
    size: int | None = None  # removals carry none
    etag: str | None = None
    version_id: str | None = None
    message_id: str | None = None  # the SQS message it came in, if any
    request_id: str | None = None  # S3's x-amz-request-id, for correlating logs

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(bucket=self.bucket, key=self.key)

    @property
    def order(self) -> EventOrder:
        return EventOrder(sequencer=self.sequencer, event_time=self.event_time)


# --- reading objects (implemented by the AWS adapter) -------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedObject:
    data: bytes
    size: int
    etag: str | None
    metadata: Mapping[str, str]  # user metadata, names without x-amz-meta-


@dataclass(frozen=True, slots=True)
class ObjectGone:
    """The object no longer exists (deleted since the event): nothing to embed."""


@dataclass(frozen=True, slots=True)
class ObjectTooLarge:
    """Larger than the byte limit: refused from its length, without downloading it."""

    size: int


FetchResult = FetchedObject | ObjectGone | ObjectTooLarge


class TransientError(Exception):
    """A failure a later retry may not meet (throttling, 5xx, timeouts, database down)."""


class ObjectSource(Protocol):
    def fetch(self, bucket: str, key: str, *, max_bytes: int) -> FetchResult:
        """Read an object, at most max_bytes + 1 bytes of it; raise TransientError to retry."""
        ...


# --- outcomes ------------------------------------------------------------------------------

OutcomeKind = Literal["embedded", "deleted", "rejected", "stale", "duplicate", "gone", "failed"]


@dataclass(frozen=True, slots=True)
class EventOutcome:
    event: ObjectEvent
    kind: OutcomeKind
    detail: str = ""
    reason: str | None = None  # rejections: the ImageRejected reason
    product_id: str | None = None

    @property
    def needs_retry(self) -> bool:
        return self.kind == "failed"


@dataclass(slots=True)
class IngestTimings:
    """Wall-clock milliseconds per phase for the whole batch."""

    s3_read_ms: float = 0.0
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    db_write_ms: float = 0.0


@dataclass(slots=True)
class IngestReport:
    outcomes: list[EventOutcome]
    timings: IngestTimings
    images_in_inference: int = 0

    def count(self, kind: OutcomeKind) -> int:
        return sum(outcome.kind == kind for outcome in self.outcomes)

    @property
    def failed(self) -> list[EventOutcome]:
        return [outcome for outcome in self.outcomes if outcome.needs_retry]


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_image_bytes: int
    max_image_pixels: int


# --- the use case --------------------------------------------------------------------------


def compare_orders(left: EventOrder, right: EventOrder) -> int:
    """-1, 0 or 1 as `left` is older than, as old as, or newer than `right`.

    S3's rule for the same key: sequencers (hex) are compared after right-padding the shorter
    with zeros. Events without a usable sequencer (moto, some published samples) fall back to
    the event time, as the store does.
    """
    left_sequencer = normalise_sequencer(left.sequencer)
    right_sequencer = normalise_sequencer(right.sequencer)
    if left_sequencer is not None and right_sequencer is not None:
        width = max(len(left_sequencer), len(right_sequencer))
        a, b = left_sequencer.ljust(width, "0"), right_sequencer.ljust(width, "0")
        return (a > b) - (a < b)
    return (left.event_time > right.event_time) - (left.event_time < right.event_time)


def newest_per_object(events: Sequence[ObjectEvent]) -> tuple[list[ObjectEvent], list[EventOutcome]]:
    """The newest event of each object, plus outcomes for the ones it makes redundant.

    Equal order and kind: a duplicate delivery. Otherwise older: stale. (Ties of a different
    kind keep the later-delivered event; S3 never gives two events of one key the same
    sequencer, so only sequencer-less events can tie.)
    """
    newest: dict[tuple[str, str], ObjectEvent] = {}
    settled: list[EventOutcome] = []
    for event in events:
        current = newest.get((event.bucket, event.key))
        if current is None:
            newest[(event.bucket, event.key)] = event
            continue
        order = compare_orders(event.order, current.order)
        if order == 0 and event.kind == current.kind:
            settled.append(EventOutcome(event, "duplicate", "same event delivered twice in this batch"))
        elif order < 0:
            settled.append(EventOutcome(event, "stale", "a newer event for this object is in the batch"))
        else:
            settled.append(EventOutcome(current, "stale", "a newer event for this object is in the batch"))
            newest[(event.bucket, event.key)] = event
    return list(newest.values()), settled


@dataclass(frozen=True, slots=True)
class _Decoded:
    event: ObjectEvent
    fetched: FetchedObject
    decoded: DecodedImage


@dataclass(slots=True)
class EmbeddedObjects:
    """Created objects read, decoded and embedded; nothing written yet (see `embed_objects`)."""

    records: list[tuple[ObjectEvent, ImageRecord]] = field(default_factory=list)
    rejections: list[tuple[ObjectEvent, Rejection]] = field(default_factory=list)
    outcomes: list[EventOutcome] = field(default_factory=list)  # failed reads, vanished objects
    timings: IngestTimings = field(default_factory=IngestTimings)


@dataclass(slots=True)
class _Batch:
    outcomes: list[EventOutcome] = field(default_factory=list)
    rejections: list[tuple[ObjectEvent, Rejection]] = field(default_factory=list)
    images: list[tuple[ObjectEvent, ImageRecord]] = field(default_factory=list)
    removals: list[ObjectEvent] = field(default_factory=list)


def _fetch_all(
    events: list[ObjectEvent], source: ObjectSource, max_bytes: int
) -> list[FetchResult | TransientError]:
    def fetch(event: ObjectEvent) -> FetchResult | TransientError:
        try:
            return source.fetch(event.bucket, event.key, max_bytes=max_bytes)
        except TransientError as error:
            return error

    if len(events) <= 1:
        return [fetch(event) for event in events]
    with ThreadPoolExecutor(max_workers=min(FETCH_CONCURRENCY, len(events))) as pool:
        return list(pool.map(fetch, events))


def ingest_batch(
    events: Sequence[ObjectEvent],
    *,
    source: ObjectSource,
    store: Callable[[], Store],
    embedder: Embedder,
    limits: IngestLimits,
    layout: KeyLayout,
) -> IngestReport:
    """Run the use case on one delivery's events; see the module docstring.

    `store` is called only when there is something to write, so a database that is down at
    cold start fails the events that need it, not the batch (gone objects are still settled).
    """
    latest, settled = newest_per_object(events)
    created = [event for event in latest if event.kind == "created"]
    embedded = embed_objects(created, source=source, embedder=embedder, limits=limits, layout=layout)
    timings = embedded.timings
    batch = _Batch(
        outcomes=settled + embedded.outcomes,
        rejections=embedded.rejections,
        images=embedded.records,
        removals=[event for event in latest if event.kind == "removed"],
    )

    started = time.perf_counter()
    _write(batch, store)
    timings.db_write_ms = (time.perf_counter() - started) * 1000
    position = {id(event): index for index, event in enumerate(events)}
    batch.outcomes.sort(key=lambda outcome: position[id(outcome.event)])  # back to delivery order
    return IngestReport(outcomes=batch.outcomes, timings=timings, images_in_inference=len(embedded.records))


def embed_objects(
    created: Sequence[ObjectEvent],
    *,
    source: ObjectSource,
    embedder: Embedder,
    limits: IngestLimits,
    layout: KeyLayout,
) -> EmbeddedObjects:
    """Steps 2-4 of the use case for "created" events (at most one per object): read the
    objects concurrently, decode them (a bad file becomes a rejection), embed every decodable
    image in ONE batched inference. Writes nothing: the ingest function and the backfill each
    write the result their own way."""
    result = EmbeddedObjects()
    timings = result.timings
    started = time.perf_counter()
    fetched = _fetch_all(list(created), source, limits.max_image_bytes)
    timings.s3_read_ms = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    images: list[_Decoded] = []
    for event, outcome in zip(created, fetched, strict=True):
        if isinstance(outcome, TransientError):
            result.outcomes.append(EventOutcome(event, "failed", f"reading the object failed: {outcome}"))
        elif isinstance(outcome, ObjectGone):
            result.outcomes.append(EventOutcome(event, "gone", "the object no longer exists"))
        elif isinstance(outcome, ObjectTooLarge):
            rejected = ImageTooLarge(
                f"{outcome.size} bytes exceeds the limit of {limits.max_image_bytes} bytes"
            )
            result.rejections.append((event, _rejection(event, rejected, outcome.size)))
        else:
            try:
                decoded = decode_image(
                    outcome.data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
                )
            except ImageRejected as rejected:
                result.rejections.append((event, _rejection(event, rejected, outcome.size)))
            else:
                images.append(_Decoded(event, outcome, decoded))
    timings.decode_ms = (time.perf_counter() - started) * 1000

    if images:
        started = time.perf_counter()
        embeddings = embedder.embed([item.decoded.image for item in images]).vectors
        timings.inference_ms = (time.perf_counter() - started) * 1000
        result.records = [
            (item.event, _record(item, embedding, layout, embedder.model_version))
            for item, embedding in zip(images, embeddings, strict=True)
        ]
    return result


def _rejection(event: ObjectEvent, rejected: ImageRejected, size: int | None) -> Rejection:
    return Rejection(
        ref=event.ref, order=event.order, reason=rejected.reason, detail=rejected.message, size_bytes=size
    )


def _record(item: _Decoded, embedding: FloatArray, layout: KeyLayout, model_version: str) -> ImageRecord:
    identity = product_identity(item.event.key, item.fetched.metadata, layout)
    return ImageRecord(
        ref=item.event.ref,
        order=item.event.order,
        product_id=identity.product_id,
        category=identity.category,
        etag=item.fetched.etag or item.event.etag,
        size_bytes=item.fetched.size,
        width=item.decoded.width,
        height=item.decoded.height,
        model_version=model_version,
        embedding=embedding,
    )


def _write(batch: _Batch, store_factory: Callable[[], Store]) -> None:
    """All database writes. After the first transient error the remaining writes fail without
    being tried: a database that is down would otherwise cost a connect timeout per event."""
    records = [record for _, record in batch.images]
    if not (records or batch.removals or batch.rejections):
        return
    error: Exception | None = None
    store: Store | None = None
    try:
        store = store_factory()
    except TRANSIENT_DATABASE_ERRORS as caught:
        error = caught

    def attempt(events: list[ObjectEvent], write: Callable[[Store], list[EventOutcome]]) -> None:
        nonlocal error
        if store is not None and error is None:
            try:
                batch.outcomes.extend(write(store))
                return
            except TRANSIENT_DATABASE_ERRORS as caught:
                error = caught
        detail = f"database unavailable: {error}".strip()
        batch.outcomes.extend(EventOutcome(event, "failed", detail) for event in events)

    newer_state = "the store holds a newer state of this object"
    if records:

        def upsert(store: Store) -> list[EventOutcome]:
            results = store.upsert_images(records)
            return [
                EventOutcome(event, "embedded", product_id=record.product_id)
                if result == "applied"
                else EventOutcome(event, "stale", newer_state, product_id=record.product_id)
                for (event, record), result in zip(batch.images, results, strict=True)
            ]

        attempt([event for event, _ in batch.images], upsert)

    for removal in batch.removals:

        def delete(store: Store, event: ObjectEvent = removal) -> list[EventOutcome]:
            applied = store.delete_image(event.ref, event.order) == "applied"
            return [EventOutcome(event, "deleted") if applied else EventOutcome(event, "stale", newer_state)]

        attempt([removal], delete)

    for rejected_event, rejection in batch.rejections:

        def reject(
            store: Store, event: ObjectEvent = rejected_event, row: Rejection = rejection
        ) -> list[EventOutcome]:
            store.record_rejection(row)
            # Reported as rejected even when the store already holds a newer state of the
            # object: the file itself is bad, which is what logs and metrics count.
            return [EventOutcome(event, "rejected", row.detail, reason=row.reason)]

        attempt([rejected_event], reject)
