"""The model registry: which embedding models the store holds vectors of, and which one is active.

States: `building` (added; ingest embeds new uploads with it, a backfill fills the rest) →
`active` (every query searches its vectors; exactly one) → `standby` (was active; still maintained
by ingest, so that `rollback()` can switch back at once) → `retired` (vectors and index dropped).

Every transition locks the registry's rows (FOR UPDATE, in id order) and runs in ONE transaction:
a refused transition changes nothing. Vector writes take the model's row FOR SHARE
(store/write_sql.py, UPSERT_VECTOR), so a coverage count made under the lock sees every write
that will ever carry the model, and a retirement never races a write of its vectors.

Each model has its own partial HNSW index, `embeddings_hnsw_<id>` on (embedding::halfvec(D))
WHERE model_id = <id>: built CONCURRENTLY when the model is added (writes go on meanwhile), and
dropped CONCURRENTLY when it is retired (a plain DROP INDEX would lock every query out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from lookalike.ports import ObjectRef
from lookalike.store.database import Store
from lookalike.store.rows import MAX_DIMENSION, ModelRef

ModelState = Literal["building", "active", "standby", "retired"]
# The states ingest embeds new uploads with.
MAINTAINED_STATES: Final = ("active", "building", "standby")
# The HNSW parameters of step 1's index (docs/BENCHMARKS.md, "Recall vs ef_search").
HNSW_OPTIONS: Final = "m = 16, ef_construction = 64"
# Transaction-level advisory lock id of registry transitions ("LOOKMODL").
REGISTRY_LOCK_ID: Final = 0x4C4F4F4B4D4F444C
# Uncovered keys a refusal or a partial activation names (the count is always complete).
UNCOVERED_SAMPLE: Final = 20


class RegistryError(ValueError):
    """A registry operation was refused; the message says why. Nothing was changed."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What `add` registers: the embedder's version string, its dimension and its card."""

    version: str
    dimension: int
    card_sha256: str | None
    card: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    id: int
    version: str
    dimension: int
    card_sha256: str | None
    card: dict[str, Any] | None
    state: ModelState
    created_at: datetime
    activated_at: datetime | None
    deactivated_at: datetime | None
    retired_at: datetime | None
    images_embedded: int  # embedded images holding a vector of this model
    images_stored: int  # embedded images in the store

    @property
    def coverage(self) -> float:
        """images_embedded / images_stored (1.0 for an empty store)."""
        return 1.0 if self.images_stored == 0 else self.images_embedded / self.images_stored

    @property
    def complete(self) -> bool:
        return self.images_embedded >= self.images_stored

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.id, self.version, self.dimension)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dimension": self.dimension,
            "state": self.state,
            "coverage": round(self.coverage, 6),
            "images_embedded": self.images_embedded,
            "images_stored": self.images_stored,
            "created_at": self.created_at.isoformat(),
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
        }


@dataclass(frozen=True, slots=True)
class Activation:
    model: RegisteredModel  # as it is now (active)
    previous: RegisteredModel | None  # the model it replaced (now standby)
    uncovered: int  # embedded images without a vector of it (allow_partial only)
    uncovered_sample: list[ObjectRef]


def index_name(model_id: int) -> str:
    return f"embeddings_hnsw_{model_id}"


def create_index_statement(
    model_id: int, dimension: int, *, concurrently: bool, options: str = HNSW_OPTIONS
) -> sql.Composed:
    """The model's partial HNSW index; `options` other than the default only for benchmarks that
    compare build parameters on the very expression and predicate the searches use."""
    return sql.SQL(
        "CREATE INDEX {concurrently} IF NOT EXISTS {name} ON embeddings "
        "USING hnsw ((embedding::halfvec({dimension})) halfvec_cosine_ops) WITH ({options}) "
        "WHERE model_id = {model_id}"
    ).format(
        concurrently=sql.SQL("CONCURRENTLY" if concurrently else ""),
        name=sql.Identifier(index_name(model_id)),
        dimension=sql.Literal(dimension),
        options=sql.SQL(options),
        model_id=sql.Literal(model_id),
    )


_SELECT_MODELS = (
    "SELECT m.id, m.version, m.dimension, m.card_sha256, m.card, m.state, m.created_at, m.activated_at, "
    "m.deactivated_at, m.retired_at, "
    "(SELECT count(*) FROM embeddings AS e WHERE e.model_id = m.id), "
    "(SELECT count(*) FROM images WHERE status = 'embedded') "
    "FROM models AS m ORDER BY m.id"
)


def _model(row: tuple[Any, ...]) -> RegisteredModel:
    return RegisteredModel(
        id=int(row[0]),
        version=str(row[1]),
        dimension=int(row[2]),
        card_sha256=row[3],
        card=row[4],
        state=row[5],
        created_at=row[6],
        activated_at=row[7],
        deactivated_at=row[8],
        retired_at=row[9],
        images_embedded=int(row[10]),
        images_stored=int(row[11]),
    )


def _all(connection: psycopg.Connection[TupleRow], *, lock: bool = False) -> list[RegisteredModel]:
    if lock:
        # Serialises registry transitions (also two processes registering the first model of a
        # new deployment, when there is no row to lock yet), and waits for vector writes in
        # flight (they hold their model's row FOR SHARE).
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRY_LOCK_ID,))
        connection.execute("SELECT id FROM models ORDER BY id FOR UPDATE")
    rows = connection.execute(_SELECT_MODELS).fetchall()
    return [_model(tuple(row)) for row in rows]


def _find(models: list[RegisteredModel], version: str) -> RegisteredModel:
    for model in models:
        if model.version == version:
            return model
    known = ", ".join(model.version for model in models) or "none"
    raise RegistryError(f"unknown model version {version!r} (registered: {known})")


def _uncovered(connection: psycopg.Connection[TupleRow], model_id: int) -> list[ObjectRef]:
    rows = connection.execute(
        "SELECT bucket, key FROM images AS i WHERE i.status = 'embedded' AND NOT EXISTS "
        "(SELECT 1 FROM embeddings AS e WHERE e.model_id = %s AND e.image_id = i.id) "
        "ORDER BY bucket, key LIMIT %s",
        (model_id, UNCOVERED_SAMPLE),
    ).fetchall()
    return [ObjectRef(row[0], row[1]) for row in rows]


def _index_valid(connection: psycopg.Connection[TupleRow], model_id: int) -> bool:
    row = connection.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (index_name(model_id),)
    ).fetchone()
    return row is not None and bool(row[0])


def metrics_regression(candidate: dict[str, Any] | None, active: RegisteredModel) -> str | None:
    """Why the candidate card's held-out metrics do not show it at least as good as `active`;
    None when they do.

    The card's `evaluation` block: {"parent": <the registry version (or card model_version) it
    was evaluated against>, "before": {metric: value}, "after": {metric: value}}, higher is
    better for every metric; `after` must reach `before` on each.
    """
    evaluation = (candidate or {}).get("evaluation")
    if not isinstance(evaluation, dict):
        return "its model card has no held-out metrics (an `evaluation` block)"
    parent = evaluation.get("parent")
    active_card_version = (active.card or {}).get("model_version")
    if parent not in {active.version, active_card_version}:
        return f"its metrics were measured against {parent!r}, not the active model {active.version!r}"
    before, after = evaluation.get("before"), evaluation.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict) or not before:
        return "its evaluation block lacks `before` and `after` metrics"
    worse = []
    for name, baseline in before.items():
        value = after.get(name)
        if not isinstance(value, int | float) or not isinstance(baseline, int | float) or math.isnan(value):
            return f"metric {name!r} is missing from `after` or not a number"
        if value < baseline:
            worse.append(f"{name} {value} < {baseline}")
    return f"its held-out metrics are worse than the active model's: {', '.join(worse)}" if worse else None


class ModelRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ------------------------------------------------------------------------------

    def models(self) -> list[RegisteredModel]:
        """Every registered model (retired ones too), oldest first, with its coverage."""
        return self.store.run(_all, vector=False)

    def get(self, version: str) -> RegisteredModel:
        return _find(self.models(), version)

    def active(self) -> RegisteredModel | None:
        return next((model for model in self.models() if model.state == "active"), None)

    def maintained(self) -> list[ModelRef]:
        """The models every new upload is embedded with (active, building, standby); one cheap
        query (no coverage counts), made per ingest batch."""
        rows = self.store.run(
            lambda connection: connection.execute(
                "SELECT id, version, dimension FROM models WHERE state = ANY(%s) ORDER BY id",
                (list(MAINTAINED_STATES),),
            ).fetchall(),
            vector=False,
        )
        return [ModelRef(int(row[0]), str(row[1]), int(row[2])) for row in rows]

    def status(self) -> list[dict[str, Any]]:
        """Each non-retired model's state and coverage (GET /health)."""
        return [model.as_dict() for model in self.models() if model.state != "retired"]

    def uncovered(self, version: str) -> list[ObjectRef]:
        """Up to UNCOVERED_SAMPLE embedded images without a vector of this model."""
        model = self.get(version)
        return self.store.run(lambda connection: _uncovered(connection, model.id), vector=False)

    # -- transitions ------------------------------------------------------------------------

    def add(self, spec: ModelSpec) -> RegisteredModel:
        """Register a model as `building` and build its (empty) partial HNSW index."""
        if not 1 <= spec.dimension <= MAX_DIMENSION:
            raise RegistryError(
                f"dimension {spec.dimension} cannot be indexed: pgvector's HNSW takes halfvec of "
                f"1 to {MAX_DIMENSION} dimensions"
            )

        def insert(connection: psycopg.Connection[TupleRow]) -> int:
            models = _all(connection, lock=True)
            if any(model.version == spec.version for model in models):
                raise RegistryError(f"model version {spec.version!r} is already registered")
            row = connection.execute(
                "INSERT INTO models (version, dimension, card_sha256, card, state) "
                "VALUES (%s, %s, %s, %s, 'building') RETURNING id",
                (
                    spec.version,
                    spec.dimension,
                    spec.card_sha256,
                    None if spec.card is None else Jsonb(spec.card),
                ),
            ).fetchone()
            assert row is not None
            return int(row[0])

        model_id = self.store.run(insert, vector=False, write=True)
        try:
            # CONCURRENTLY: writes (ingest of the other models) go on while it is built; on a
            # table holding no vector of this model yet it only scans the table once.
            self.store.run_outside_transaction(
                create_index_statement(model_id, spec.dimension, concurrently=True)
            )
        except psycopg.Error as error:
            self._forget(model_id)
            raise RegistryError(f"building the index of {spec.version!r} failed: {error}") from error
        return self.get(spec.version)

    def _forget(self, model_id: int) -> None:
        """Undo a half-done add: the failed (invalid) index, the vectors written meanwhile, the row."""
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index_name(model_id)))
        self.store.run_outside_transaction(drop)

        def delete(connection: psycopg.Connection[TupleRow]) -> None:
            connection.execute("DELETE FROM embeddings WHERE model_id = %s", (model_id,))
            connection.execute("DELETE FROM models WHERE id = %s", (model_id,))

        self.store.run(delete, vector=False, write=True)

    def activate(self, version: str, *, allow_partial: bool = False, force: bool = False) -> Activation:
        """Make `version` the active model; the active one becomes `standby`. One transaction.

        Refused unless every embedded image has a vector of it (`allow_partial`: activate anyway
        and report the uncovered images, which searches will not find) and unless its card's
        held-out metrics are at least the active model's (`force`: skip that comparison).
        """

        def switch(connection: psycopg.Connection[TupleRow]) -> Activation:
            models = _all(connection, lock=True)
            candidate = _find(models, version)
            if candidate.state == "active":
                raise RegistryError(f"{version!r} is already the active model")
            if candidate.state == "retired":
                raise RegistryError(f"{version!r} is retired (its vectors are gone); add it again")
            if not _index_valid(connection, candidate.id):
                raise RegistryError(f"{version!r} has no valid HNSW index ({index_name(candidate.id)})")
            uncovered = candidate.images_stored - candidate.images_embedded
            sample = _uncovered(connection, candidate.id) if uncovered > 0 else []
            if uncovered > 0 and not allow_partial:
                names = ", ".join(f"{ref.bucket}/{ref.key}" for ref in sample)
                raise RegistryError(
                    f"{version!r} covers {candidate.images_embedded} of {candidate.images_stored} images "
                    f"({uncovered} without a vector, e.g. {names}); backfill it first "
                    "(scripts/backfill.py --model) or pass allow_partial"
                )
            previous = next((model for model in models if model.state == "active"), None)
            if previous is not None and not force:
                regression = metrics_regression(candidate.card, previous)
                if regression is not None:
                    raise RegistryError(f"{version!r} is not activated: {regression} (force to override)")
            _switch(connection, candidate.id)
            now = {model.id: model for model in _all(connection)}
            return Activation(
                model=now[candidate.id],
                previous=None if previous is None else now[previous.id],
                uncovered=max(uncovered, 0),
                uncovered_sample=sample,
            )

        return self.store.run(switch, vector=False, write=True)

    def rollback(self) -> Activation:
        """Switch back to the most recently deactivated (standby) model; refused unless it still
        covers every image. The active model becomes standby."""

        def switch(connection: psycopg.Connection[TupleRow]) -> Activation:
            models = _all(connection, lock=True)
            standby = [model for model in models if model.state == "standby"]
            if not standby:
                raise RegistryError("there is no standby model to roll back to")
            target = max(standby, key=lambda model: (model.deactivated_at or model.created_at, model.id))
            if not target.complete:
                uncovered = target.images_stored - target.images_embedded
                raise RegistryError(
                    f"{target.version!r} lacks vectors of {uncovered} images; backfill it "
                    f"(scripts/backfill.py --model {target.version}) before rolling back"
                )
            previous = next((model for model in models if model.state == "active"), None)
            _switch(connection, target.id)
            now = {model.id: model for model in _all(connection)}
            return Activation(now[target.id], None if previous is None else now[previous.id], 0, [])

        return self.store.run(switch, vector=False, write=True)

    def retire(self, version: str) -> RegisteredModel:
        """Drop a non-active model's vectors and index; its row stays, state `retired`."""

        def mark(connection: psycopg.Connection[TupleRow]) -> int:
            model = _find(_all(connection, lock=True), version)
            if model.state == "active":
                raise RegistryError(f"{version!r} is the active model: activate another one first")
            if model.state == "retired":
                raise RegistryError(f"{version!r} is already retired")
            connection.execute(
                "UPDATE models SET state = 'retired', retired_at = now() WHERE id = %s", (model.id,)
            )
            connection.execute("DELETE FROM embeddings WHERE model_id = %s", (model.id,))
            return model.id

        model_id = self.store.run(mark, vector=False, write=True)
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index_name(model_id)))
        self.store.run_outside_transaction(drop)
        return self.get(version)


def _switch(connection: psycopg.Connection[TupleRow], model_id: int) -> None:
    """The active model (if any) becomes standby, `model_id` active (order matters: at most one
    row may be active at any statement's end)."""
    connection.execute(
        "UPDATE models SET state = 'standby', deactivated_at = clock_timestamp() WHERE state = 'active'"
    )
    connection.execute(
        "UPDATE models SET state = 'active', activated_at = clock_timestamp() WHERE id = %s", (model_id,)
    )
