"""The ingest use case: a batch of S3 object events in, one outcome per event out.

Delivery is at-least-once and unordered (S3 notifications, SQS, async retries), so every step
is safe to repeat: the store applies a write only when its event order (S3 sequencer, else
event time) is newer than what it holds, so duplicates and late events change nothing.

For a batch the use case
1. keeps the newest event per object (older and duplicate ones of the same batch are settled
   without reading anything),
2. reads the created objects (concurrently: S3 latency, not CPU, dominates),
3. decodes them with the hardened decoder (a bad file becomes a permanent rejection),
4. embeds every decodable image of the batch in ONE ONNX call per model (batching is ~2x cheaper
   per image than one call each) with every model the registry maintains (active, building,
   standby: `lookalike.model_versions.maintained_embedders`), decoding each image once,
5. writes: one upsert for all images and their vectors, one tombstone per removal, one row per
   rejection,
6. stores a suggested category for each image without one (`lookalike.store.category_suggestions`).

Failures are sorted by what a retry can change. A rejection is permanent and acknowledged (a
poison image must not loop). A vanished object is not an error: its delete event tombstones it.
A transient failure (S3 throttled/5xx after the client's retries, database down) fails only
the affected events; the caller hands those back to SQS or Lambda for a retry.

No boto3 and no Powertools here: reading objects is behind the `ObjectSource` protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import psycopg

from lookalike.catalogue import KeyLayout, product_identity
from lookalike.images import DecodedImage, ImageRejected, ImageTooLarge, decode_image
from lookalike.model.embedder import Embedder, FloatArray
from lookalike.ordering import compare_orders
from lookalike.ports import (
    FetchedObject,
    FetchResult,
    ObjectEvent,
    ObjectGone,
    ObjectRef,
    ObjectSource,
    ObjectTooLarge,
    TransientError,
)
from lookalike.store import ImageRecord, Rejection, Store
from lookalike.store.category_suggestions import refresh_suggestions

# Reads in flight at once; boto3's default connection pool (10) is the ceiling.
FETCH_CONCURRENCY = 8

# What a database that is down or restarting raises (psycopg.InterfaceError: a connection the
# server closed under us). Anything else from the store is a bug and propagates.
TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


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
class IngestBatch:
    """One delivery's events on their way through the pipeline, and then its report.

    `embed_objects` fills it (images to write, rejections, failed reads); `ingest_batch` adds the
    settled duplicates and the removals, writes, and returns the same object with every outcome.
    """

    outcomes: list[EventOutcome] = field(default_factory=list)
    images: list[tuple[ObjectEvent, ImageRecord]] = field(default_factory=list)
    rejections: list[tuple[ObjectEvent, Rejection]] = field(default_factory=list)
    removals: list[ObjectEvent] = field(default_factory=list)
    # Events whose key the database cannot hold (a NUL character): logged as rejections only.
    unstorable: list[tuple[ObjectEvent, Rejection]] = field(default_factory=list)
    timings: IngestTimings = field(default_factory=IngestTimings)

    @property
    def images_in_inference(self) -> int:
        return len(self.images)

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
    embedders: Callable[[Store], Mapping[int, Embedder]],
    limits: IngestLimits,
    layout: KeyLayout,
) -> IngestBatch:
    """Run the use case on one delivery's events; see the module docstring.

    `store` is called only when there is something to write, so a database that is down at
    cold start fails the events that need it, not the batch (gone objects are still settled).
    `embedders` gives the models to embed with (model id -> embedder), asked per batch so that
    a model added meanwhile is picked up.
    """
    position = {id(event): index for index, event in enumerate(events)}
    latest, settled = newest_per_object(events)
    latest, failed_checks = _versions_still_current(latest, source, position)
    settled += failed_checks
    created = [event for event in latest if event.kind == "created"]
    batch = embed_objects(
        created, source=source, embedders=lambda: embedders(store()), limits=limits, layout=layout
    )
    batch.outcomes += settled
    removals = [event for event in latest if event.kind == "removed"]
    batch.removals = [event for event in removals if storable_key(event.key)]
    batch.unstorable += [(event, _unstorable(event)) for event in removals if not storable_key(event.key)]

    started = time.perf_counter()
    _write(batch, store)
    batch.timings.db_write_ms = (time.perf_counter() - started) * 1000
    batch.outcomes.sort(key=lambda outcome: position[id(outcome.event)])  # back to delivery order
    return batch


def embed_objects(
    created: Sequence[ObjectEvent],
    *,
    source: ObjectSource,
    embedders: Callable[[], Mapping[int, Embedder]],
    limits: IngestLimits,
    layout: KeyLayout,
    models_for: Callable[[ObjectEvent], Collection[int]] | None = None,
) -> IngestBatch:
    """Steps 2-4 of the use case for "created" events (at most one per object): read the
    objects concurrently, decode them (a bad file becomes a rejection), embed the decodable
    images with each model in ONE batched inference per model. Writes nothing: the ingest
    function and the backfill each write the result their own way.

    `embedders` is called once, only when an image was decoded (it may ask the database: if
    that is down, those events fail and are retried). `models_for` narrows the models per
    event (the backfill: only the vectors an object lacks); default: every model.
    """
    result = IngestBatch()
    result.unstorable = [(event, _unstorable(event)) for event in created if not storable_key(event.key)]
    created = [event for event in created if storable_key(event.key)]
    timings = result.timings
    started = time.perf_counter()
    fetched = _fetch_all(created, source, limits.max_image_bytes)
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
        try:
            models = embedders()
        except TRANSIENT_DATABASE_ERRORS as error:
            detail = f"database unavailable: {error}".strip()
            result.outcomes += [EventOutcome(item.event, "failed", detail) for item in images]
            return result
        started = time.perf_counter()
        vectors: list[dict[int, FloatArray]] = [{} for _ in images]
        for model_id, embedder in models.items():
            wanted = [
                index
                for index, item in enumerate(images)
                if models_for is None or model_id in models_for(item.event)
            ]
            if wanted:
                embedded = embedder.embed([images[index].decoded.image for index in wanted]).vectors
                for index, vector in zip(wanted, embedded, strict=True):
                    vectors[index][model_id] = vector
        timings.inference_ms = (time.perf_counter() - started) * 1000
        for item, embeddings in zip(images, vectors, strict=True):
            if embeddings:
                result.images.append((item.event, _record(item, embeddings, layout)))
            else:  # no registered model to embed with (retried: a model may be added meanwhile)
                result.outcomes.append(
                    EventOutcome(item.event, "failed", "no model to embed this image with")
                )
    return result


# In a versioned bucket "ObjectRemoved:Delete" with a versionId deletes that one version for good;
# the object itself is gone only if no version is left current (a delete marker is its own event).
_VERSION_DELETED = "ObjectRemoved:Delete"


def _versions_still_current(
    events: list[ObjectEvent], source: ObjectSource, position: dict[int, int]
) -> tuple[list[ObjectEvent], list[EventOutcome]]:
    """Removals of one version of an object that still has a current version become a re-read of
    the object: the index must describe what S3 serves now (the deleted version may have been
    a non-current one, or the current one, in which case S3 made the previous version current)."""
    kept: list[ObjectEvent] = []
    failed: list[EventOutcome] = []
    for event in events:
        if (
            event.kind != "removed"
            or event.version_id is None
            or not event.event_name.endswith(_VERSION_DELETED)
        ):
            kept.append(event)
            continue
        try:
            still_there = source.exists(event.bucket, event.key)
        except TransientError as error:
            failed.append(
                EventOutcome(event, "failed", f"checking the object's current version failed: {error}")
            )
            continue
        if still_there:
            reread = replace(event, kind="created", size=None, etag=None)
            position[id(reread)] = position[id(event)]  # its outcome is reported in the event's place
            event = reread
        kept.append(event)
    return kept, failed


def storable_key(key: str) -> bool:
    """S3 allows control characters in keys; PostgreSQL text cannot hold NUL."""
    return "\x00" not in key


def _unstorable(event: ObjectEvent) -> Rejection:
    """The rejection of an event whose key the database cannot hold, with the key percent-encoded
    (only '%' and NUL) so that the log names the object."""
    escaped = event.key.replace("%", "%25").replace("\x00", "%00")
    return Rejection(
        ref=ObjectRef(event.bucket, escaped),
        order=event.order,
        reason="invalid_key",
        detail="the key contains a NUL character, which the database cannot store (logged percent-encoded)",
        size_bytes=event.size,
    )


def _rejection(event: ObjectEvent, rejected: ImageRejected, size: int | None) -> Rejection:
    return Rejection(
        ref=event.ref, order=event.order, reason=rejected.reason, detail=rejected.message, size_bytes=size
    )


def _record(item: _Decoded, embeddings: Mapping[int, FloatArray], layout: KeyLayout) -> ImageRecord:
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
        embeddings=embeddings,
    )


def _suggest(batch: IngestBatch, store: Store) -> Exception | None:
    """Step 6: the stored category suggestions of the images just written (uncategorised ones
    get their neighbours' vote, categorised ones lose any old suggestion); after the images'
    own transaction, so that categorised images of the same batch vote too.

    Recomputed from the store's state, so a retry or a redelivery gives the same rows. A failure
    fails the image's event (retried; the image write itself is then a no-op): transient ones
    for every image, as for the writes above (returned, so that the remaining writes are not
    tried), a refused one for its own image only.
    """
    written = {id(outcome.event) for outcome in batch.outcomes if outcome.kind in ("embedded", "stale")}
    targets = [(event, record.ref) for event, record in batch.images if id(event) in written]

    def fail(events: list[ObjectEvent], detail: str) -> None:
        failed = {id(event) for event in events}
        batch.outcomes[:] = [outcome for outcome in batch.outcomes if id(outcome.event) not in failed]
        batch.outcomes.extend(EventOutcome(event, "failed", detail) for event in events)

    def attempt(items: list[tuple[ObjectEvent, ObjectRef]]) -> Exception | None:
        try:
            refresh_suggestions(store, [ref for _, ref in items])
        except TRANSIENT_DATABASE_ERRORS as caught:
            fail([event for event, _ in items], f"database unavailable: {caught}".strip())
            return caught
        except psycopg.Error as refused:
            if len(items) == 1:
                fail([items[0][0]], f"suggesting a category failed: {refused}".strip())
                return None
            for position, item in enumerate(items):
                down = attempt([item])
                if down is not None:
                    rest = [event for event, _ in items[position + 1 :]]
                    fail(rest, f"database unavailable: {down}".strip())
                    return down
        return None

    return attempt(targets) if targets else None


def _write(batch: IngestBatch, store_factory: Callable[[], Store]) -> None:
    """All database writes, each outcome kept with its own event.

    After the first transient error the remaining writes fail without being tried: a database
    that is down would otherwise cost a connect timeout per event. A write the database refuses
    for its content (psycopg.DataError and the like: not transient) is retried record by record,
    so that only the record it belongs to fails (and, retried alone, ends in the dead-letter
    queue), never the rest of its batch.
    """
    if not (batch.images or batch.removals or batch.rejections or batch.unstorable):
        return
    error: Exception | None = None
    store: Store | None = None
    try:
        store = store_factory()
    except TRANSIENT_DATABASE_ERRORS as caught:
        error = caught

    def attempt[T](
        items: list[tuple[ObjectEvent, T]], write: Callable[[Store, list[T]], list[EventOutcome]]
    ) -> None:
        nonlocal error
        if store is not None and error is None:
            try:
                batch.outcomes.extend(write(store, [item for _, item in items]))
                return
            except TRANSIENT_DATABASE_ERRORS as caught:
                error = caught
            except psycopg.Error as refused:
                if len(items) > 1:
                    for item in items:
                        attempt([item], write)
                    return
                detail = f"the database refused this record: {refused}".strip()
                batch.outcomes.append(EventOutcome(items[0][0], "failed", detail))
                return
        detail = f"database unavailable: {error}".strip()
        batch.outcomes.extend(EventOutcome(event, "failed", detail) for event, _ in items)

    newer_state = "the store holds a newer state of this object"
    events_of = {id(record): event for event, record in batch.images}

    def upsert(store: Store, records: list[ImageRecord]) -> list[EventOutcome]:
        return [
            EventOutcome(events_of[id(record)], "embedded", product_id=record.product_id)
            if result == "applied"
            else EventOutcome(events_of[id(record)], "stale", newer_state, product_id=record.product_id)
            for record, result in zip(records, store.upsert_images(records), strict=True)
        ]

    def delete(store: Store, events: list[ObjectEvent]) -> list[EventOutcome]:
        return [
            EventOutcome(event, "deleted")
            if store.delete_image(event.ref, event.order) == "applied"
            else EventOutcome(event, "stale", newer_state)
            for event in events
        ]

    def rejected(
        write_row: Callable[[Store, Rejection], object],
    ) -> Callable[[Store, list[Rejection]], list[EventOutcome]]:
        # Reported as rejected even when the store already holds a newer state of the object:
        # the file itself is bad, which is what logs and metrics count.
        def write(store: Store, rows: list[Rejection]) -> list[EventOutcome]:
            outcomes = []
            for row in rows:
                write_row(store, row)
                outcomes.append(
                    EventOutcome(rejected_events[id(row)], "rejected", row.detail, reason=row.reason)
                )
            return outcomes

        return write

    rejected_events = {id(row): event for event, row in [*batch.rejections, *batch.unstorable]}
    if batch.images:
        attempt(batch.images, upsert)
        if store is not None and error is None:
            error = _suggest(batch, store)
    for removal in batch.removals:
        attempt([(removal, removal)], delete)
    for rejection in batch.rejections:
        attempt([rejection], rejected(Store.record_rejection))
    for unstorable in batch.unstorable:
        attempt([unstorable], rejected(Store.log_rejection))
