"""The interfaces between the use cases and the outside world, and the values that cross them.

Adapters (lookalike_aws: boto3 S3, the Lambda event parsers) implement or produce these; use cases
(ingest, backfill, search) consume them. Nothing here imports boto3 or Powertools.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class EventOrder:
    sequencer: str | None  # raw, as S3 delivered it (may be a non-hex placeholder)
    event_time: datetime  # timezone-aware


ObjectEventKind = Literal["created", "removed"]


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


# --- reading objects ---------------------------------------------------------------------------


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

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the key has a current version now; raise TransientError to retry."""
        ...


# --- listing objects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int
    etag: str | None  # without S3's quotes
    last_modified: datetime  # timezone-aware


class ObjectLister(Protocol):
    def list_pages(
        self, bucket: str, prefix: str, *, start_after: str | None = None
    ) -> Iterator[list[ListedObject]]:
        """The objects under the prefix in key order, a page at a time (after `start_after`)."""
        ...
