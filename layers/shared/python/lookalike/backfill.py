"""Backfill and re-embedding: bring the store up to date with what a bucket (or a prefix) holds.

Every object under the prefix that the store does not hold, or holds with another ETag, is
embedded with every maintained model (active, building, standby); an object the store holds with
the same ETag is embedded only with the models it lacks a vector of (`--model VERSION`: only that
one, which is how a building model is filled); the rest is skipped. The store is the checkpoint:
a re-run after an interruption skips what the first run finished (same ETag, a vector of each
wanted model), so no object is embedded twice. A small checkpoint file additionally
records the last listing page whose objects were all settled, so that a resumed run does not
even list those pages again (LIST costs requests; the store check costs a query per page).

What happens to the objects to process is a `BatchWork`:
- `EmbedLocally` (here): the ingest use case's read/decode/embed step (`ingest.embed_objects`:
  concurrent reads, hardened decoding, ONE batched inference), then one bulk write (COPY into a
  temp table + one guarded INSERT ... ON CONFLICT: `Store.bulk_upsert_images`);
- `lookalike_aws.enqueue.EnqueueForIngest`: S3-notification-shaped messages to the ingest queue,
  so that the deployed ingest function does the work, in parallel.

There is no S3 sequencer outside a notification: an object's event time is its LastModified.
The store's guard orders it like any sequencer-less event (a delete or overwrite notified after
the listing wins); an object version the store already holds (same ETag) is re-embedded in place
with the vectors it lacks, keeping its ordering state (see store/write_sql.py, "Re-embedding").

No boto3 here: listing and reading are behind the ports `ObjectLister` and `ObjectSource`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lookalike.catalogue import KeyLayout
from lookalike.ingest import IngestLimits, embed_objects
from lookalike.model.embedder import MAX_BATCH, Embedder
from lookalike.ports import ListedObject, ObjectEvent, ObjectLister, ObjectSource
from lookalike.store import Store, StoredVersion

DEFAULT_BATCH_SIZE = MAX_BATCH  # one ONNX call per batch
BACKFILL_EVENT_NAME = "ObjectCreated:Backfill"  # what the ingest outcome logs as the event


@dataclass(slots=True)
class BatchResult:
    done: int = 0  # embedded (EmbedLocally) or enqueued (EnqueueForIngest)
    stale: int = 0  # the store already holds a newer state of the object
    gone: int = 0  # deleted since the listing
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # key, reason, detail
    failed: list[tuple[str, str]] = field(default_factory=list)  # key, detail (retry by re-running)


@dataclass(frozen=True, slots=True)
class BackfillModels:
    """Which vectors a run writes. `embedders`: model id -> embedder of every maintained model
    this process can load; `target`: fill only this model's gaps (None: every model's). An
    object the store does not hold yet gets every model's vector either way: an upload must
    never lack the active model's."""

    embedders: Mapping[int, Embedder]
    target: int | None = None

    @property
    def label(self) -> str:
        """What the checkpoint and the summary name (model versions, sorted)."""
        chosen = self.embedders if self.target is None else {self.target: self.embedders[self.target]}
        return ",".join(sorted(embedder.model_version for embedder in chosen.values()))

    def needed(self, listed: ListedObject, stored: StoredVersion | None) -> frozenset[int]:
        """The models to embed this object with; empty when the store already reflects it."""
        every = frozenset(self.embedders)
        if stored is None:
            return every
        if stored.status == "embedded":
            if stored.etag != listed.etag:
                return every
            wanted = every if self.target is None else frozenset({self.target})
            return wanted - stored.model_ids
        if stored.status == "rejected":
            # Rejected at (or after) this version's time: the same bytes would be rejected again
            # (decoding does not depend on the model). A newer upload is retried.
            return every if stored.event_time < listed.last_modified else frozenset()
        return every  # a tombstone older than the object: its create notification was lost


class BatchWork(Protocol):
    verb: str  # "embedded" / "enqueued": how the summary names `done`

    def __call__(self, bucket: str, objects: Sequence[ListedObject]) -> BatchResult: ...


@dataclass(slots=True)
class BackfillSummary:
    bucket: str
    prefix: str
    models: str  # BackfillModels.label
    verb: str = "embedded"
    listed: int = 0
    done: int = 0
    skipped: int = 0  # already up to date (same ETag, every wanted model) or rejected before
    stale: int = 0
    gone: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    rejected_keys: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    resumed_after: str | None = None
    stopped_early: bool = False  # --limit reached: the checkpoint stays for the next run
    elapsed_s: float = 0.0

    @property
    def settled(self) -> int:
        return (
            self.done + self.skipped + self.stale + self.gone + sum(self.rejected.values()) + len(self.failed)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "models": self.models,
            "listed": self.listed,
            self.verb: self.done,
            "skipped": self.skipped,
            "stale": self.stale,
            "gone": self.gone,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_keys": [
                {"key": key, "reason": reason, "detail": detail} for key, reason, detail in self.rejected_keys
            ],
            "failed": [{"key": key, "detail": detail} for key, detail in self.failed],
            "resumed_after": self.resumed_after,
            "stopped_early": self.stopped_early,
            "elapsed_s": round(self.elapsed_s, 2),
            "per_second": round(self.done / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
        }


# --- what needs work ---------------------------------------------------------------------------


def needs_work(listed: ListedObject, stored: StoredVersion | None, models: BackfillModels) -> bool:
    """False when the store already reflects this object version with every wanted model."""
    return bool(models.needed(listed, stored))


def backfill_event(bucket: str, listed: ListedObject) -> ObjectEvent:
    return ObjectEvent(
        bucket=bucket,
        key=listed.key,
        kind="created",
        event_name=BACKFILL_EVENT_NAME,
        event_time=listed.last_modified,
        size=listed.size,
        etag=listed.etag,
    )


# --- embedding here ----------------------------------------------------------------------------


class EmbedLocally:
    """Read, decode and embed a batch with the ingest use case's step, then one bulk write."""

    verb = "embedded"

    def __init__(
        self,
        *,
        source: ObjectSource,
        store: Store,
        models: BackfillModels,
        limits: IngestLimits,
        layout: KeyLayout,
    ) -> None:
        self.source = source
        self.store = store
        self.models = models
        self.limits = limits
        self.layout = layout

    def __call__(self, bucket: str, objects: Sequence[ListedObject]) -> BatchResult:
        # Which vectors each object lacks, as of now (one query per batch; the listing's skip
        # check may be a page old).
        stored = self.store.stored_versions(bucket, [listed.key for listed in objects])
        needed = {listed.key: self.models.needed(listed, stored.get(listed.key)) for listed in objects}
        embedded = embed_objects(
            [backfill_event(bucket, listed) for listed in objects],
            source=self.source,
            embedders=lambda: self.models.embedders,
            limits=self.limits,
            layout=self.layout,
            models_for=lambda event: needed[event.key],
        )
        result = BatchResult()
        for outcome in embedded.outcomes:
            if outcome.kind == "gone":
                result.gone += 1
            else:
                result.failed.append((outcome.event.key, outcome.detail))
        records = [record for _, record in embedded.images]
        for written in self.store.bulk_upsert_images(records):
            if written == "applied":
                result.done += 1
            else:
                result.stale += 1
        for event, rejection in embedded.rejections:
            self.store.record_rejection(rejection)
            result.rejected.append((event.key, rejection.reason, rejection.detail))
        for _, rejection in embedded.unstorable:
            self.store.log_rejection(rejection)
            result.rejected.append((rejection.ref.key, rejection.reason, rejection.detail))
        return result


# --- the checkpoint ----------------------------------------------------------------------------


class Checkpoint:
    """The last listed key before which every object is settled, in a small JSON file.

    Keyed by bucket, prefix and models (`BackfillModels.label`): a run for other models starts
    from the top.
    Written atomically (temp file + rename): an interruption leaves the old or the new one.
    """

    def __init__(self, folder: Path, bucket: str, prefix: str, model_version: str) -> None:
        digest = hashlib.sha256(f"{bucket}\0{prefix}\0{model_version}".encode()).hexdigest()[:16]
        self.path = folder / f"backfill-{bucket}-{digest}.json"
        self._identity = {"bucket": bucket, "prefix": prefix, "model_version": model_version}

    def load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or any(
            data.get(name) != value for name, value in self._identity.items()
        ):
            return None
        start_after = data.get("start_after")
        return start_after if isinstance(start_after, str) else None

    def save(self, start_after: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({**self._identity, "start_after": start_after}), encoding="utf-8")
        temporary.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# --- the use case ------------------------------------------------------------------------------


def count_objects(lister: ObjectLister, bucket: str, prefix: str, *, start_after: str | None = None) -> int:
    """How many objects a run will list (the progress bar's total: LIST pages are cheap next to
    inference, ~0.1 s per 1000 keys)."""
    return sum(len(page) for page in lister.list_pages(bucket, prefix, start_after=start_after))


def run_backfill(
    *,
    bucket: str,
    prefix: str,
    lister: ObjectLister,
    work: BatchWork,
    models: BackfillModels,
    store: Store | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint: Checkpoint | None = None,
    limit: int | None = None,
    progress: Callable[[int, BackfillSummary], None] | None = None,
) -> BackfillSummary:
    """List the prefix, skip what the store already reflects, hand the rest to `work` in batches.

    `store` None: no skip check (every listed object is worked on; for `--enqueue` without
    database access, where the ingest guard makes repeats harmless). `limit`: stop once that
    many objects were handed to `work` (a partial run; the next run resumes). `progress` is
    called with the number of objects settled since its last call. The checkpoint advances only
    past pages whose objects are all settled without a transient failure.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    summary = BackfillSummary(bucket=bucket, prefix=prefix, models=models.label, verb=work.verb)
    start_after = checkpoint.load() if checkpoint is not None else None
    summary.resumed_after = start_after
    todo: list[ListedObject] = []
    queued = 0  # objects put into `todo` so far
    flushed = 0  # objects handed to `work` so far
    page_ends: deque[tuple[int, str]] = deque()  # (queued count when the page ended, its last key)
    clean = True  # no transient failure yet: the checkpoint may advance

    def report(count: int) -> None:
        if progress is not None and count:
            progress(count, summary)

    def advance_checkpoint() -> None:
        while page_ends and page_ends[0][0] <= flushed:
            _, last_key = page_ends.popleft()
            if checkpoint is not None and clean:
                checkpoint.save(last_key)

    def flush(objects: list[ListedObject]) -> None:
        nonlocal flushed, clean
        result = work(bucket, objects)
        summary.done += result.done
        summary.stale += result.stale
        summary.gone += result.gone
        for key, reason, detail in result.rejected:
            summary.rejected[reason] += 1
            summary.rejected_keys.append((key, reason, detail))
        summary.failed += result.failed
        clean = clean and not result.failed
        flushed += len(objects)
        advance_checkpoint()
        report(len(objects))

    def flush_batches(*, final: bool) -> bool:
        """Hand full batches (all of `todo` when final) to `work`; False once the limit is hit."""
        nonlocal todo
        while todo:
            remaining = None if limit is None else limit - flushed
            size = batch_size if remaining is None else min(batch_size, remaining)
            if size <= 0:
                return False
            if len(todo) < size and not final:
                break
            batch, todo = todo[:size], todo[size:]
            flush(batch)
        return limit is None or flushed < limit

    for page in lister.list_pages(bucket, prefix, start_after=start_after):
        summary.listed += len(page)
        stored = store.stored_versions(bucket, [listed.key for listed in page]) if store is not None else {}
        skipped = 0
        for listed in page:
            if store is None or needs_work(listed, stored.get(listed.key), models):
                todo.append(listed)
                queued += 1
            else:
                skipped += 1
        summary.skipped += skipped
        report(skipped)
        if page:
            page_ends.append((queued, page[-1].key))
        if not flush_batches(final=False):
            summary.stopped_early = True
            break
        advance_checkpoint()
    else:
        flush_batches(final=True)
        if not todo:
            advance_checkpoint()
            if checkpoint is not None and clean:
                checkpoint.clear()  # finished: the next run lists everything again (new uploads)
    summary.stopped_early = summary.stopped_early or bool(todo)
    summary.elapsed_s = time.perf_counter() - started
    return summary
