"""The pgvector store: one row per S3 object, guarded writes, nearest-neighbour search.

Writes are state transitions of an object's row, applied only when the event is newer than
what the row holds (S3 sequencer, else event time), in one SQL statement each. S3 delivers at
least once and unordered, so duplicates and late events must change nothing; the guard makes
every write idempotent, which is also what makes retrying it after a reconnect safe.

One connection per `Store`, opened on first use and reused: a new backend costs a connect
(~1.6 ms) plus `register_vector` (~2.3 ms, four catalog round trips) before the first query
(ANCHORS), more than a whole HNSW search. A connection found broken is dropped and the call
retried once on a fresh one; if the database is still down the `psycopg.OperationalError`
propagates (the ingest handler turns it into a retried SQS record).

Behind RDS Proxy: `prepare_threshold=None` (server-side prepared statements pin sessions) and
only transaction-local settings (`set_config(..., true)`), never a session-level `SET` and never
`enable_*` (stale cached plans on pooled connections, ANCHORS).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import TupleRow

from lookalike.settings import SettingsError, get_settings

EMBEDDING_DIM: Final = 1280

# S3 sequencers are hex strings of varying length; stored right-padded to this width so that
# plain string comparison is S3's rule ("right-pad the shorter with zeros, then compare").
# Longer values are kept whole; the SQL guard pads both sides to the longer one.
SEQUENCER_WIDTH: Final = 64

# Category filter: a category with at most this many embedded rows is searched exactly (every
# distance of the category, through the category btree: recall 1.0); a bigger one through HNSW
# with `iterative_scan = relaxed_order` (re-sorted). scripts/measure_category_filter.py (2 vCPU,
# random categories in 10k-100k synthetic rows, k=10, ef_search 100) measured p50 exact vs
# iterative: 2k rows 6-11 vs 6-9 ms, 5k 26 vs 23-37 ms, 10k 30-47 vs 5-19 ms, 20k 64-106 vs
# 5-10 ms; iterative recall 0.99-1.0 (ANCHORS: 0.85-0.90 at a lower ef_search). The exact cost
# grows with the category's size whatever the table's; the iterative cost with the category's
# rarity, so below ~5k rows (where exact is no slower) exact wins, and at 1M rows a 5k-row
# category is 0.5% of the graph, where the iterative scan gets slow and lossy.
EXACT_CATEGORY_THRESHOLD: Final = 5_000

# The candidate pool (rows fetched before one-per-product deduplication) starts at
# POOL_FACTOR * k, grows POOL_GROWTH-fold while too few distinct products come back from a full
# pool, and is capped: hnsw.ef_search accepts at most 1000, and beyond that a query is a scan.
POOL_FACTOR: Final = 4
MIN_POOL: Final = 40
POOL_GROWTH: Final = 4
MAX_POOL: Final = 1000
DEFAULT_EF_SEARCH: Final = 64  # the HNSW_EF_SEARCH default: measured in settings.py

# Serialises concurrent `migrate()` calls (two cold starts, a deploy and a test) across
# processes; transaction-level, so it is released by the commit even behind RDS Proxy.
MIGRATION_LOCK_ID: Final = 0x4C4F4F4B414C494B  # "LOOKALIK"

# (version, file in lookalike/sql/): append new steps, never edit an applied one.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = ((1, "0001_schema.sql"),)

FloatArray = npt.NDArray[np.float32]
WriteOutcome = Literal["applied", "stale"]
ImageStatus = Literal["embedded", "deleted", "rejected"]


@dataclass(frozen=True, slots=True)
class ObjectRef:
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class EventOrder:
    sequencer: str | None  # raw, as S3 delivered it (may be a non-hex placeholder); Store normalises
    event_time: datetime  # timezone-aware


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
    model_version: str
    embedding: FloatArray  # [1280], unit length


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
    model_version: str
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
    model_version: str | None
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


# --- ordering ----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9A-Fa-f]+")


def normalise_sequencer(raw: str | None) -> str | None:
    """S3's sequencer in a form whose string order is S3's order for one key, or None.

    Upper-case hex right-padded with '0' to SEQUENCER_WIDTH (longer values are kept whole).
    Anything that is not a hex string (published samples carry placeholders such as
    "Happy Sequencer") gives None: the store then orders by event time. Never raises.
    """
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not _HEX.fullmatch(value):
        return None
    return value.upper().ljust(SEQUENCER_WIDTH, "0")


def _guard(content_columns: Sequence[str]) -> sql.Composed:
    """The WHERE of an ON CONFLICT DO UPDATE: is the incoming (excluded) event newer?

    Both sequencers known: S3's rule (pad to the longer one, compare bytes); an equal
    sequencer is a duplicate and changes nothing. Otherwise the event time decides; at an
    equal event time the later delivery wins, unless it would write exactly what the row
    already holds (a redelivered sequencer-less event is then a no-op, as with a sequencer).
    """
    return sql.SQL(
        """CASE
            WHEN excluded.s3_sequencer IS NOT NULL AND current.s3_sequencer IS NOT NULL THEN
                rpad(excluded.s3_sequencer, {width}, '0') COLLATE "C"
                    > rpad(current.s3_sequencer, {width}, '0') COLLATE "C"
            ELSE excluded.event_time > current.event_time
                OR (excluded.event_time = current.event_time
                    AND ROW({incoming}) IS DISTINCT FROM ROW({stored}))
        END"""
    ).format(
        width=sql.SQL("greatest(length(excluded.s3_sequencer), length(current.s3_sequencer))"),
        incoming=sql.SQL(", ").join(sql.Identifier("excluded", column) for column in content_columns),
        stored=sql.SQL(", ").join(sql.Identifier("current", column) for column in content_columns),
    )


def _transition(status: ImageStatus, columns: Sequence[str]) -> sql.Composed:
    """INSERT-or-guarded-UPDATE of one object's row; RETURNING a row iff it was applied.

    `columns` are the content columns the event sets (from named parameters of the same name);
    content columns it does not name are cleared, except product_id and category, which a
    tombstone keeps (which product lost an image is worth knowing).
    """
    return sql.SQL(
        """INSERT INTO images AS current (bucket, key, status, s3_sequencer, event_time{names})
        VALUES (%(bucket)s, %(key)s, {status}, %(sequencer)s, %(event_time)s{values})
        {on_conflict}
        RETURNING 1"""
    ).format(
        names=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(column)) for column in columns),
        status=sql.Literal(status),
        values=sql.SQL("").join(sql.SQL(", {}").format(sql.Placeholder(column)) for column in columns),
        on_conflict=_guarded_update(columns),
    )


def _guarded_update(columns: Sequence[str]) -> sql.Composed:
    """The ON CONFLICT ... DO UPDATE ... WHERE guard of a state transition (see `_transition`);
    shared by the one-row statements and the bulk (COPY) upsert, so both obey the same order."""
    cleared = [
        column
        for column in ("etag", "size_bytes", "width", "height", "model_version", "embedding")
        if column not in columns
    ]
    written = ["status", "s3_sequencer", "event_time", *columns]
    # The embedding follows from the rest (same object version, same model version).
    compared = [column for column in ["status", *columns, *cleared] if column != "embedding"]
    return sql.SQL(
        """ON CONFLICT (bucket, key) DO UPDATE SET {assignments}, updated_at = now()
        WHERE {guard}"""
    ).format(
        assignments=sql.SQL(", ").join(
            [
                *(
                    sql.SQL("{} = {}").format(sql.Identifier(column), sql.Identifier("excluded", column))
                    for column in written
                ),
                *(sql.SQL("{} = NULL").format(sql.Identifier(column)) for column in cleared),
            ]
        ),
        guard=_guard(compared),
    )


_IMAGE_COLUMNS = (
    "product_id",
    "category",
    "etag",
    "size_bytes",
    "width",
    "height",
    "model_version",
    "embedding",
)
_UPSERT_IMAGE: Final = _transition("embedded", _IMAGE_COLUMNS)
_DELETE_IMAGE: Final = _transition("deleted", ())
_REJECT_IMAGE: Final = sql.SQL(
    """WITH logged AS (
        INSERT INTO rejections (bucket, key, s3_sequencer, event_time, reason, detail, size_bytes)
        VALUES (%(bucket)s, %(key)s, %(sequencer)s, %(event_time)s, %(reason)s, %(detail)s,
                %(size_bytes)s)
        ON CONFLICT DO NOTHING
    )
    {transition}"""
).format(transition=_transition("rejected", ("size_bytes",)))


# Bulk upserts (backfill): the rows are COPYed (binary) into a transaction-local temp table, then
# applied by ONE statement with the same guard as `_UPSERT_IMAGE`. A temp table pins the session
# behind RDS Proxy: fine for a batch command, which is why the ingest function does not use it.
_INCOMING_TABLE: Final = "incoming_images"
_INCOMING_COLUMNS: Final = (
    ("bucket", "text"),
    ("key", "text"),
    ("s3_sequencer", "text"),
    ("event_time", "timestamptz"),
    ("product_id", "text"),
    ("category", "text"),
    ("etag", "text"),
    ("size_bytes", "bigint"),
    ("width", "integer"),
    ("height", "integer"),
    ("model_version", "text"),
    ("embedding", "halfvec"),
)
_CREATE_INCOMING: Final = sql.SQL("CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP").format(
    table=sql.Identifier(_INCOMING_TABLE),
    columns=sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL("halfvec(1280)" if kind == "halfvec" else kind))
        for name, kind in _INCOMING_COLUMNS
    ),
)
_COPY_INCOMING: Final = sql.SQL("COPY {table} ({columns}) FROM STDIN WITH (FORMAT BINARY)").format(
    table=sql.Identifier(_INCOMING_TABLE),
    columns=sql.SQL(", ").join(sql.Identifier(name) for name, _ in _INCOMING_COLUMNS),
)
_BULK_UPSERT_IMAGES: Final = sql.SQL(
    """INSERT INTO images AS current (bucket, key, status, s3_sequencer, event_time{names})
    SELECT bucket, key, 'embedded', s3_sequencer, event_time{names} FROM {table}
    {on_conflict}
    RETURNING current.bucket, current.key"""
).format(
    names=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(column)) for column in _IMAGE_COLUMNS),
    table=sql.Identifier(_INCOMING_TABLE),
    on_conflict=_guarded_update(_IMAGE_COLUMNS),
)

# Re-embedding: an event for the object version the row already holds (same ETag: the same
# bytes) that was embedded by another model replaces the embedding whatever the event's order.
# A backfill's event time is the object's LastModified, older than the notification that first
# embedded it, and a re-embedding fan-out (`backfill --enqueue`) redelivers old events: under
# the order guard alone both would be stale and a model change could never reach old rows.
# The ordering state (sequencer, event time) is kept: the object itself has not changed. The
# ETag is compared under the row lock, so a newer version written meanwhile is never overwritten.
_REEMBEDDED_COLUMNS: Final = (
    "product_id",
    "category",
    "size_bytes",
    "width",
    "height",
    "model_version",
    "embedding",
)


def _reembed(values: Callable[[str], sql.Composable], source: sql.Composable) -> sql.Composed:
    """UPDATE of an embedded row holding the same ETag but another model version; `values`
    gives each column's new value (a placeholder, or a column of the incoming table)."""
    return sql.SQL(
        """UPDATE images AS current SET {assignments}, updated_at = now() {source}
        WHERE current.status = 'embedded' AND current.etag = {etag}
            AND current.model_version <> {model_version}"""
    ).format(
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), values(column))
            for column in _REEMBEDDED_COLUMNS
        ),
        source=source,
        etag=values("etag"),
        model_version=values("model_version"),
    )


_REEMBED_IMAGE: Final = sql.SQL(
    "{update} AND current.bucket = %(bucket)s AND current.key = %(key)s RETURNING 1"
).format(update=_reembed(sql.Placeholder, sql.SQL("")))
_BULK_REEMBED_IMAGES: Final = sql.SQL(
    "{update} AND current.bucket = incoming.bucket AND current.key = incoming.key "
    "RETURNING current.bucket, current.key"
).format(
    update=_reembed(
        lambda column: sql.Identifier("incoming", column),
        sql.SQL("FROM {} AS incoming").format(sql.Identifier(_INCOMING_TABLE)),
    )
)

# --- migration -------------------------------------------------------------------------------


def migrate(connection: psycopg.Connection[Any]) -> None:
    """Bring the schema up to date; idempotent, and safe to run from several processes at once
    (the advisory lock serialises them; the loser finds the steps applied)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        for version, filename in MIGRATIONS:
            if version in applied:
                continue
            script = resources.files("lookalike").joinpath("sql", filename).read_text(encoding="utf-8")
            # Several statements in one call: simple query protocol, never prepared.
            connection.execute(script.encode(), prepare=False)
            connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))


# --- the store ---------------------------------------------------------------------------------


def _check_embedding(embedding: npt.NDArray[Any]) -> HalfVector:
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding must have shape ({EMBEDDING_DIM},), got {vector.shape}")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        # Cosine distance to a zero vector is NaN in pgvector: it would poison the ranking.
        raise ValueError("embedding must be finite and non-zero")
    return HalfVector(vector)


def _order_parameters(ref: ObjectRef, order: EventOrder) -> dict[str, Any]:
    if order.event_time.tzinfo is None:
        # A naive time would be read in the server's time zone: ordering across sources breaks.
        raise ValueError(f"event_time of {ref} must be timezone-aware")
    return {
        "bucket": ref.bucket,
        "key": ref.key,
        "sequencer": normalise_sequencer(order.sequencer),
        "event_time": order.event_time,
    }


def _outcome(cursor: psycopg.Cursor[TupleRow]) -> WriteOutcome:
    return "applied" if cursor.fetchone() is not None else "stale"


def _execute_each(
    connection: psycopg.Connection[TupleRow], statement: sql.Composed, parameters: list[dict[str, Any]]
) -> list[WriteOutcome]:
    """executemany (pipelined: one round trip), an outcome per parameter set, in order."""
    with connection.cursor() as cursor:
        cursor.executemany(statement, parameters, returning=True)
        outcomes = [_outcome(cursor)]
        while cursor.nextset():
            outcomes.append(_outcome(cursor))
    return outcomes


def _stored_image(row: TupleRow) -> StoredImage:
    return StoredImage(*row)


class Store:
    def __init__(
        self,
        url: str,
        *,
        prepare_threshold: int | None = 5,
        connect_timeout_s: int = 5,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact_category_threshold: int = EXACT_CATEGORY_THRESHOLD,
    ) -> None:
        self._url = url
        self._prepare_threshold = prepare_threshold
        self._connect_timeout_s = connect_timeout_s
        self.ef_search = ef_search
        self.exact_category_threshold = exact_category_threshold
        self._connection: psycopg.Connection[TupleRow] | None = None
        self._vector_registered = False
        # One connection, one transaction at a time: the local stack calls from threads.
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[TupleRow]:
        connection = self._connection
        if connection is not None and (connection.closed or connection.broken):
            self._drop()
            connection = None
        if connection is None:
            connection = psycopg.Connection.connect(
                self._url,
                autocommit=False,
                prepare_threshold=self._prepare_threshold,
                connect_timeout=self._connect_timeout_s,
                application_name="lookalike",
            )
            self._connection = connection
            self._vector_registered = False
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._vector_registered = False
        if connection is not None:
            connection.close()

    def _run[T](self, work: Callable[[psycopg.Connection[TupleRow]], T], *, vector: bool = True) -> T:
        """Run `work` in one transaction; on a broken connection retry once on a new one.

        Every call is safe to repeat: reads trivially, writes thanks to the ordering guard.
        """
        with self._lock:
            for attempt in (1, 2):
                reused = self._connection is not None
                try:
                    connection = self._connect()
                    if vector and not self._vector_registered:
                        with connection.transaction():
                            register_vector(connection)
                        self._vector_registered = True
                    with connection.transaction():
                        return work(connection)
                except psycopg.OperationalError:
                    current = self._connection
                    lost = current is None or current.closed or current.broken
                    if lost:
                        self._drop()
                    # Retry only a connection that had been idle in the pool (the server may
                    # have restarted or failed over since); a fresh connect that fails means
                    # the database is down: waiting another connect timeout helps nobody.
                    if attempt == 2 or not (lost and reused):
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._drop()

    def ping(self) -> None:
        """SELECT 1; raises psycopg.OperationalError if the database is unreachable."""
        self._run(lambda connection: connection.execute("SELECT 1").fetchone(), vector=False)

    def migrate(self) -> None:
        # Before register_vector: on a new database the vector type does not exist yet.
        self._run(migrate, vector=False)

    # -- writes -----------------------------------------------------------------------------

    def upsert_images(self, records: Sequence[ImageRecord]) -> list[WriteOutcome]:
        """Embedded images, one transaction for the batch; an outcome per record, in order.

        executemany (pipelined: one round trip) rather than one multi-row INSERT, because ON
        CONFLICT DO UPDATE cannot touch one row twice in a statement and a batch may hold two
        events of one key; each statement also sees its predecessors' writes.
        """
        if not records:
            return []
        parameters = [
            {
                **_order_parameters(record.ref, record.order),
                "product_id": record.product_id,
                "category": record.category,
                "etag": record.etag,
                "size_bytes": record.size_bytes,
                "width": record.width,
                "height": record.height,
                "model_version": record.model_version,
                "embedding": _check_embedding(record.embedding),
            }
            for record in records
        ]

        def write(connection: psycopg.Connection[TupleRow]) -> list[WriteOutcome]:
            outcomes = _execute_each(connection, _UPSERT_IMAGE, parameters)
            # Stale by order but the same object version: re-embedded if another model made it.
            again = [index for index, outcome in enumerate(outcomes) if outcome == "stale"]
            again = [index for index in again if parameters[index]["etag"] is not None]
            if again:
                reembedded = _execute_each(connection, _REEMBED_IMAGE, [parameters[i] for i in again])
                for index, outcome in zip(again, reembedded, strict=True):
                    outcomes[index] = outcome
            return outcomes

        return self._run(write)

    def bulk_upsert_images(self, records: Sequence[ImageRecord]) -> list[WriteOutcome]:
        """`upsert_images` for many objects at once (the backfill): binary COPY into a temp table,
        then one guarded INSERT ... ON CONFLICT and one re-embedding UPDATE; one transaction.

        Same guard and same re-embedding rule as `upsert_images`, so a notification racing a
        backfill is ordered exactly as two notifications would be. One record per object: an
        INSERT ... ON CONFLICT cannot touch a row twice (ValueError otherwise).
        """
        if not records:
            return []
        refs = [(record.ref.bucket, record.ref.key) for record in records]
        if len(set(refs)) != len(refs):
            raise ValueError("bulk_upsert_images takes one record per object")
        rows = []
        for record in records:
            order = _order_parameters(record.ref, record.order)
            rows.append(
                (
                    record.ref.bucket,
                    record.ref.key,
                    order["sequencer"],
                    order["event_time"],
                    record.product_id,
                    record.category,
                    record.etag,
                    record.size_bytes,
                    record.width,
                    record.height,
                    record.model_version,
                    _check_embedding(record.embedding),
                )
            )

        def write(connection: psycopg.Connection[TupleRow]) -> list[WriteOutcome]:
            connection.execute(_CREATE_INCOMING, prepare=False)
            with connection.cursor() as cursor:
                with cursor.copy(_COPY_INCOMING) as copy:
                    copy.set_types([kind for _, kind in _INCOMING_COLUMNS])
                    for row in rows:
                        copy.write_row(row)
                applied = {(row[0], row[1]) for row in cursor.execute(_BULK_UPSERT_IMAGES, prepare=False)}
                applied |= {(row[0], row[1]) for row in cursor.execute(_BULK_REEMBED_IMAGES, prepare=False)}
            return ["applied" if ref in applied else "stale" for ref in refs]

        return self._run(write)

    def delete_image(self, ref: ObjectRef, order: EventOrder) -> WriteOutcome:
        """Tombstone the object (also when unknown: a late, older create must not resurrect it)."""
        parameters = _order_parameters(ref, order)
        return self._run(lambda connection: _outcome(connection.execute(_DELETE_IMAGE, parameters)))

    def record_rejection(self, rejection: Rejection) -> WriteOutcome:
        """Log a permanent failure (once per event) and, if the event is newer than the row,
        mark the object rejected: the content at that key is no longer the embedded image.
        The outcome is that of the state transition; the log row is written either way."""
        parameters = {
            **_order_parameters(rejection.ref, rejection.order),
            "reason": rejection.reason,
            "detail": rejection.detail,
            "size_bytes": rejection.size_bytes,
        }
        return self._run(lambda connection: _outcome(connection.execute(_REJECT_IMAGE, parameters)))

    # -- reads ------------------------------------------------------------------------------

    def get_image(self, ref: ObjectRef) -> StoredImage | None:
        def read(connection: psycopg.Connection[TupleRow]) -> StoredImage | None:
            row = connection.execute(
                "SELECT bucket, key, product_id, category, etag, size_bytes, width, height, "
                "model_version, event_time, created_at, updated_at FROM images "
                "WHERE bucket = %s AND key = %s AND status = 'embedded'",
                (ref.bucket, ref.key),
            ).fetchone()
            return None if row is None else _stored_image(row)

        return self._run(read, vector=False)

    def get_product(self, product_id: str) -> list[StoredImage]:
        """The product's embedded images, newest first."""

        def read(connection: psycopg.Connection[TupleRow]) -> list[StoredImage]:
            rows = connection.execute(
                "SELECT bucket, key, product_id, category, etag, size_bytes, width, height, "
                "model_version, event_time, created_at, updated_at FROM images "
                "WHERE product_id = %s AND status = 'embedded' ORDER BY event_time DESC, key",
                (product_id,),
            ).fetchall()
            return [_stored_image(row) for row in rows]

        return self._run(read, vector=False)

    def product_embeddings(self, product_id: str) -> FloatArray:
        """[n, 1280] float32 (halfvec precision), newest image first; [0, 1280] if unknown."""
        return self._run(lambda connection: _product_embeddings(connection, product_id))

    def count_images(self) -> int:
        def read(connection: psycopg.Connection[TupleRow]) -> int:
            row = connection.execute("SELECT count(*) FROM images WHERE status = 'embedded'").fetchone()
            return int(row[0]) if row is not None else 0

        return self._run(read, vector=False)

    def rejections(self, *, limit: int = 100) -> list[RejectionRow]:
        """The latest rejections, newest first."""

        def read(connection: psycopg.Connection[TupleRow]) -> list[RejectionRow]:
            rows = connection.execute(
                "SELECT id, bucket, key, s3_sequencer, event_time, reason, detail, size_bytes, "
                "created_at FROM rejections ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
            return [
                RejectionRow(
                    id=row[0],
                    ref=ObjectRef(row[1], row[2]),
                    sequencer=row[3],
                    event_time=row[4],
                    reason=row[5],
                    detail=row[6],
                    size_bytes=row[7],
                    created_at=row[8],
                )
                for row in rows
            ]

        return self._run(read, vector=False)

    def stored_versions(self, bucket: str, keys: Sequence[str]) -> dict[str, StoredVersion]:
        """What the store holds for these keys of a bucket (any status); unknown keys are absent.
        One query for a whole listing page (the backfill's skip check)."""

        def read(connection: psycopg.Connection[TupleRow]) -> dict[str, StoredVersion]:
            rows = connection.execute(
                "SELECT key, status, etag, model_version, event_time FROM images "
                "WHERE bucket = %s AND key = ANY(%s)",
                (bucket, list(keys)),
            ).fetchall()
            return {row[0]: StoredVersion(*row[1:]) for row in rows}

        return self._run(read, vector=False) if keys else {}

    def images_after(
        self, after: ObjectRef | None, *, limit: int, category: str | None = None
    ) -> list[ImageSummary]:
        """Embedded images in (bucket, key) order after `after` (keyset pagination: stable, and
        a page costs the same wherever it starts). Byte order (COLLATE "C"), which is Python's
        string order, whatever the database's locale: callers compare keys too."""
        conditions = [sql.SQL("status = 'embedded'")]
        if after is not None:
            conditions.append(sql.SQL('(bucket COLLATE "C", key COLLATE "C") > (%(bucket)s, %(key)s)'))
        if category is not None:
            conditions.append(sql.SQL("category = %(category)s"))
        statement = sql.SQL(
            "SELECT bucket, key, product_id, category, width, height FROM images WHERE {conditions} "
            'ORDER BY bucket COLLATE "C", key COLLATE "C" LIMIT %(limit)s'
        ).format(conditions=sql.SQL(" AND ").join(conditions))
        parameters = {
            "bucket": after.bucket if after else None,
            "key": after.key if after else None,
            "category": category,
            "limit": limit,
        }

        def read(connection: psycopg.Connection[TupleRow]) -> list[ImageSummary]:
            return [_summary(row) for row in connection.execute(statement, parameters).fetchall()]

        return self._run(read, vector=False)

    def close_neighbours(
        self,
        refs: Sequence[ObjectRef],
        *,
        min_similarity: float,
        k: int,
        category: str | None = None,
        ef_search: int | None = None,
    ) -> list[CloseNeighbour]:
        """For each embedded image of `refs`, its (at most k) nearest other images with cosine
        similarity >= min_similarity, through the HNSW index: one k-NN search per image, all
        in one statement (a LATERAL join), never a scan of all pairs."""
        _check_search_arguments(k, min_similarity, ef_search)
        if not refs:
            return []

        def read(connection: psycopg.Connection[TupleRow]) -> list[CloseNeighbour]:
            exact = (
                category is not None
                and _category_size(connection, category, self.exact_category_threshold)
                <= self.exact_category_threshold
            )
            if not exact:
                connection.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', %s, true)",
                    (
                        str(max(ef_search or self.ef_search, k)),
                        "off" if category is None else "relaxed_order",
                    ),
                )
            rows = connection.execute(
                _close_neighbours_statement(exact=exact, category=category is not None),
                {
                    "buckets": [ref.bucket for ref in refs],
                    "keys": [ref.key for ref in refs],
                    "category": category,
                    "k": k,
                    "max_distance": 1.0 - min_similarity,
                },
            ).fetchall()
            return [
                CloseNeighbour(ObjectRef(row[0], row[1]), _summary(row[2:8]), float(row[8])) for row in rows
            ]

        return self._run(read)

    def embeddings(
        self, *, category: str | None = None, limit: int | None = None
    ) -> tuple[list[ImageSummary], FloatArray]:
        """Embedded images with their embeddings ([n, 1280] float32), in (bucket, key) order."""

        def read(connection: psycopg.Connection[TupleRow]) -> tuple[list[ImageSummary], FloatArray]:
            rows = connection.execute(
                "SELECT bucket, key, product_id, category, width, height, embedding FROM images "
                "WHERE status = 'embedded' AND (%(category)s::text IS NULL OR category = %(category)s) "
                "ORDER BY bucket, key LIMIT %(limit)s",
                {"category": category, "limit": limit},
            ).fetchall()
            if not rows:
                return [], np.empty((0, EMBEDDING_DIM), dtype=np.float32)
            vectors = np.stack([row[6].to_numpy() for row in rows]).astype(np.float32)
            return [_summary(row[:6]) for row in rows], vectors

        return self._run(read)

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        embedding: FloatArray,
        *,
        k: int,
        category: str | None = None,
        exclude_product_id: str | None = None,
        min_similarity: float | None = None,
        ef_search: int | None = None,
    ) -> list[Neighbour]:
        """The k nearest products by cosine distance, each once (by its best image)."""
        query = _check_embedding(embedding)
        _check_search_arguments(k, min_similarity, ef_search)
        return self._run(
            lambda connection: self._search(
                connection, query, k, category, exclude_product_id, min_similarity, ef_search
            )
        )

    def similar_to_product(
        self,
        product_id: str,
        *,
        k: int,
        category: str | None = None,
        min_similarity: float | None = None,
        ef_search: int | None = None,
    ) -> list[Neighbour] | None:
        """Products like this one (never itself); None if it has no embedded image.

        The query is the normalised mean of the product's embeddings, not its first image: a
        product photographed from several sides is then matched on what its views share, the
        result does not depend on which upload came first, and it costs one search (a search
        per image plus a merge would cost n).
        """
        _check_search_arguments(k, min_similarity, ef_search)

        def run(connection: psycopg.Connection[TupleRow]) -> list[Neighbour] | None:
            embeddings = _product_embeddings(connection, product_id)
            if len(embeddings) == 0:
                return None
            mean = embeddings.mean(axis=0)
            norm = float(np.linalg.norm(mean))
            # Opposite views could cancel out exactly; the first image is the fallback then.
            query = mean / norm if norm > 1e-6 else embeddings[0]
            return self._search(
                connection, _check_embedding(query), k, category, product_id, min_similarity, ef_search
            )

        return self._run(run)

    def _search(
        self,
        connection: psycopg.Connection[TupleRow],
        query: HalfVector,
        k: int,
        category: str | None,
        exclude_product_id: str | None,
        min_similarity: float | None,
        ef_search: int | None,
    ) -> list[Neighbour]:
        exact = (
            category is not None
            and _category_size(connection, category, self.exact_category_threshold)
            <= self.exact_category_threshold
        )
        statement = _search_statement(
            exact=exact, category=category is not None, exclude=exclude_product_id is not None
        )
        max_distance = None if min_similarity is None else 1.0 - min_similarity
        pool = min(max(POOL_FACTOR * k, MIN_POOL), MAX_POOL)
        while True:
            if not exact:
                # Transaction-local (SET LOCAL semantics): safe on pooled connections. The
                # iterative scan keeps reading the graph until LIMIT rows pass the filters
                # (category, excluded product), where a plain HNSW scan stops at ef_search.
                connection.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                    (str(max(ef_search or self.ef_search, pool)),),
                )
            rows = connection.execute(
                statement,
                {"query": query, "category": category, "exclude": exclude_product_id, "limit": pool},
            ).fetchall()
            # relaxed_order returns rows slightly out of order: sort (stable, cheap) before
            # keeping each product's best image.
            rows.sort(key=lambda row: row[4])
            best: dict[str, Neighbour] = {}
            for row in rows:
                if max_distance is not None and row[4] > max_distance:
                    break
                if row[0] not in best:
                    best[row[0]] = Neighbour(*row)
                    if len(best) == k:
                        break
            exhausted = len(rows) < pool or (
                max_distance is not None and bool(rows) and rows[-1][4] > max_distance
            )
            if len(best) >= k or exhausted or pool >= MAX_POOL:
                return list(best.values())
            pool = min(pool * POOL_GROWTH, MAX_POOL)


def _summary(row: Sequence[Any]) -> ImageSummary:
    return ImageSummary(ObjectRef(row[0], row[1]), row[2], row[3], row[4], row[5])


def _close_neighbours_statement(*, exact: bool, category: bool) -> sql.Composed:
    """Per wanted image a k-NN search (the image's own embedding as the query) in a LATERAL
    join; the same exact/iterative choice as `_search_statement` when a category filters."""
    condition = sql.SQL(" AND near.category = %(category)s" if category else "")
    order = sql.SQL(
        "(near.embedding <=> wanted.embedding) + 0" if exact else "near.embedding <=> wanted.embedding"
    )
    return sql.SQL(
        """SELECT wanted.bucket, wanted.key, found.bucket, found.key, found.product_id, found.category,
               found.width, found.height, found.distance
        FROM unnest(%(buckets)s::text[], %(keys)s::text[]) AS asked (bucket, key)
        JOIN images AS wanted
            ON wanted.bucket = asked.bucket AND wanted.key = asked.key AND wanted.status = 'embedded'
        CROSS JOIN LATERAL (
            SELECT near.bucket, near.key, near.product_id, near.category, near.width, near.height,
                   near.embedding <=> wanted.embedding AS distance
            FROM images AS near
            WHERE near.status = 'embedded'{condition}
            ORDER BY {order}
            LIMIT %(k)s
        ) AS found
        WHERE found.distance <= %(max_distance)s
            AND (found.bucket, found.key) <> (wanted.bucket, wanted.key)
        ORDER BY wanted.bucket, wanted.key, found.distance, found.bucket, found.key"""
    ).format(condition=condition, order=order)


def _check_search_arguments(k: int, min_similarity: float | None, ef_search: int | None) -> None:
    if not 1 <= k <= MAX_POOL:
        raise ValueError(f"k must be between 1 and {MAX_POOL}, got {k}")
    if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be between -1 and 1, got {min_similarity}")
    if ef_search is not None and not 1 <= ef_search <= MAX_POOL:
        raise ValueError(f"ef_search must be between 1 and {MAX_POOL}, got {ef_search}")


def _product_embeddings(connection: psycopg.Connection[TupleRow], product_id: str) -> FloatArray:
    rows = connection.execute(
        "SELECT embedding FROM images WHERE product_id = %s AND status = 'embedded' "
        "ORDER BY event_time DESC, key",
        (product_id,),
    ).fetchall()
    if not rows:
        return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
    return np.stack([row[0].to_numpy() for row in rows]).astype(np.float32)


def _category_size(connection: psycopg.Connection[TupleRow], category: str, threshold: int) -> int:
    """The category's embedded rows, counted up to threshold + 1 (an index-only scan of the
    partial category index; bounded, so a huge category costs no more than a small one)."""
    row = connection.execute(
        "SELECT count(*) FROM (SELECT 1 FROM images WHERE category = %s AND status = 'embedded' "
        "LIMIT %s) AS bounded",
        (category, threshold + 1),
    ).fetchone()
    return int(row[0]) if row is not None else 0


def _search_statement(*, exact: bool, category: bool, exclude: bool) -> sql.Composed:
    """One fixed text per filter combination (so each can be a prepared statement).

    The exact path orders by `distance + 0`: an expression the HNSW index cannot serve, so the
    planner computes every distance of the category (through the category btree) and keeps
    the top rows: recall 1.0. Forcing it this way, not with `enable_indexscan = off`, keeps
    cached plans valid on pooled connections.
    """
    conditions = [sql.SQL("status = 'embedded'")]
    if category:
        conditions.append(sql.SQL("category = %(category)s"))
    if exclude:
        conditions.append(sql.SQL("product_id <> %(exclude)s"))
    order = sql.SQL("(embedding <=> %(query)s) + 0" if exact else "embedding <=> %(query)s")
    return sql.SQL(
        "SELECT product_id, bucket, key, category, embedding <=> %(query)s AS distance, width, height "
        "FROM images WHERE {conditions} ORDER BY {order} LIMIT %(limit)s"
    ).format(conditions=sql.SQL(" AND ").join(conditions), order=order)


# --- the process's store -----------------------------------------------------------------------

_store_lock = threading.Lock()
_store: Store | None = None


def get_store() -> Store:
    """The process's store (lazy; the connection opens on the first call that needs it)."""
    global _store
    with _store_lock:
        if _store is None:
            settings = get_settings()
            if settings.database_url is None:
                raise SettingsError(
                    "DATABASE_URL is not set (in Lambda: set it or the database secret; locally: "
                    "call lookalike_local.embedded_db.ensure_database_url() first)"
                )
            _store = Store(
                settings.database_url,
                prepare_threshold=settings.db_prepare_threshold,
                connect_timeout_s=settings.db_connect_timeout_s,
                ef_search=settings.hnsw_ef_search,
            )
        return _store


def reset_store() -> None:
    """Close and forget the process's store (tests; settings changed)."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None:
        store.close()
