"""The pgvector store, in rooms: row types (`rows`), write statements (`write_sql`), schema
migrations (`migrations`), the connection store with writes and simple reads (`database`), and
vector search (`search`). The names callers need are re-exported here."""

from lookalike.store.database import Store
from lookalike.store.migrations import migrate
from lookalike.store.registry import (
    Activation,
    ModelRegistry,
    ModelSpec,
    ModelState,
    RegisteredModel,
    RegistryError,
)
from lookalike.store.rows import (
    EMBEDDING_DIM,
    CloseNeighbour,
    ImageRecord,
    ImageStatus,
    ImageSummary,
    ModelRef,
    Neighbour,
    Rejection,
    RejectionRow,
    StoredImage,
    StoredVersion,
    WriteOutcome,
)
from lookalike.store.search import MAX_K, NoActiveModelError, SearchParameters, VectorSearch

__all__ = [
    "EMBEDDING_DIM",
    "MAX_K",
    "Activation",
    "CloseNeighbour",
    "ImageRecord",
    "ImageStatus",
    "ImageSummary",
    "ModelRef",
    "ModelRegistry",
    "ModelSpec",
    "ModelState",
    "Neighbour",
    "NoActiveModelError",
    "RegisteredModel",
    "RegistryError",
    "Rejection",
    "RejectionRow",
    "SearchParameters",
    "Store",
    "StoredImage",
    "StoredVersion",
    "VectorSearch",
    "WriteOutcome",
    "migrate",
]
