"""The rows the store reads and writes, as plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector

from lookalike.ports import EventOrder, ObjectRef

# The dimension of the default model's embeddings (the base model's card says 1280). Stored
# vectors may have any dimension their model declares (1..MAX_DIMENSION).
EMBEDDING_DIM: Final = 1280
# pgvector's HNSW index takes halfvec up to 4000 dimensions.
MAX_DIMENSION: Final = 4000

FloatArray = npt.NDArray[np.float32]
WriteOutcome = Literal["applied", "stale"]
ImageStatus = Literal["embedded", "deleted", "rejected"]


@dataclass(frozen=True, slots=True)
class ImageRecord:
    ref: ObjectRef
    order: EventOrder
    product_id: str
    category: str | None
    etag: str | None
    size_bytes: int
    width: int
    height: int
    # Registered model id -> the image's vector from that model (unit length, the model's
    # dimension). An applied write replaces the image's vectors with exactly these.
    embeddings: Mapping[int, FloatArray]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a query needs of a registered model: its id (the statements' partial-index literal),
    its version (which embedder) and its dimension (the index expression's cast)."""

    id: int
    version: str
    dimension: int


@dataclass(frozen=True, slots=True)
class Rejection:
    ref: ObjectRef
    order: EventOrder
    reason: str
    detail: str
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An embedded object as the store holds it (tombstones are never returned)."""

    bucket: str
    key: str
    product_id: str
    category: str | None
    etag: str | None
    size_bytes: int | None
    width: int
    height: int
    model_versions: tuple[str, ...]  # the registered models holding a vector of it, sorted
    event_time: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Neighbour:
    product_id: str
    bucket: str
    key: str
    category: str | None
    distance: float  # cosine distance, 0 = same direction
    width: int
    height: int

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


@dataclass(frozen=True, slots=True)
class RejectionRow:
    id: int
    ref: ObjectRef
    sequencer: str | None  # normalised
    event_time: datetime
    reason: str
    detail: str
    size_bytes: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What the store holds for an object (any status): what a backfill compares with S3."""

    status: ImageStatus
    etag: str | None
    model_ids: frozenset[int]  # the models holding a vector of the stored version
    event_time: datetime


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """An embedded image without its embedding (duplicate groups, the cluster map)."""

    ref: ObjectRef
    product_id: str
    category: str | None
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class CloseNeighbour:
    """`target` lies within the asked distance of `source` (an edge of the near-duplicate graph)."""

    source: ObjectRef
    target: ImageSummary
    distance: float

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


def image_summary(row: Sequence[Any]) -> ImageSummary:
    """An ImageSummary from the columns bucket, key, product_id, category, width, height."""
    return ImageSummary(ObjectRef(row[0], row[1]), row[2], row[3], row[4], row[5])


def to_halfvec(embedding: npt.NDArray[Any], dimension: int) -> HalfVector:
    """The store's form of an embedding of a model with `dimension`; refuses what would poison a
    ranking."""
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (dimension,):
        raise ValueError(f"embedding must have shape ({dimension},), got {vector.shape}")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        # Cosine distance to a zero vector is NaN in pgvector: it would poison the ranking.
        raise ValueError("embedding must be finite and non-zero")
    return HalfVector(vector)
