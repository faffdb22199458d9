"""The connection store: one connection per process, transactions with one reconnect, the
guarded writes (statements in `write_sql`) and the simple reads.

One connection per `Store`, opened on first use and reused: a new backend costs a connect plus
`register_vector` (catalog round trips) before its first query, more than a whole HNSW search
(docs/BENCHMARKS.md, "Database connections"). A connection found broken is dropped and the call
retried once on a fresh one; if the database is still down the `psycopg.OperationalError`
propagates (the ingest handler turns it into a retried SQS record).

Behind RDS Proxy: `prepare_threshold=None` (server-side prepared statements pin sessions) and
only transaction-local settings (`set_config(..., true)`), never a session-level `SET` and never
`enable_*` (stale cached plans on pooled connections).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import TupleRow

from lookalike.ordering import normalise_sequencer
from lookalike.ports import EventOrder, ObjectRef
from lookalike.store.image_writes import bulk_write_images, write_images
from lookalike.store.migrations import migrate
from lookalike.store.rows import (
    EMBEDDING_DIM,
    FloatArray,
    ImageRecord,
    ImageSummary,
    ModelRef,
    Rejection,
    RejectionRow,
    StoredImage,
    StoredVersion,
    WriteOutcome,
    image_summary,
    to_halfvec,
)
from lookalike.store.write_sql import DELETE_IMAGE, LOG_REJECTION, REJECT_IMAGE

# A write waits this long for a row lock, and a statement runs this long, before the transaction
# fails and its records are retried (DB_LOCK_TIMEOUT_MS / DB_STATEMENT_TIMEOUT_MS).
DEFAULT_LOCK_TIMEOUT_MS = 5_000
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000


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


class Store:
    def __init__(
        self,
        url: str,
        *,
        prepare_threshold: int | None = 5,
        connect_timeout_s: int = 5,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
        statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    ) -> None:
        self._url = url
        self._prepare_threshold = prepare_threshold
        self._connect_timeout_s = connect_timeout_s
        self._write_timeouts = (f"{lock_timeout_ms}ms", f"{statement_timeout_ms}ms")
        self._connection: psycopg.Connection[TupleRow] | None = None
        self._vector_registered = False
        self._migrated = False
        self._dimensions: dict[int, int] = {}
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

    def run[T](
        self, work: Callable[[psycopg.Connection[TupleRow]], T], *, vector: bool = True, write: bool = False
    ) -> T:
        """Run `work` in one transaction; on a broken connection retry once on a new one.

        Every call is safe to repeat: reads trivially, writes thanks to the ordering guard. A
        write transaction waits at most lock_timeout for a row lock and statement_timeout for a
        statement (transaction-local: safe behind a pooler), so a batch stuck behind another
        transaction fails fast (psycopg.OperationalError) and is retried, instead of waiting
        until the function's own timeout.
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
                        if write:
                            connection.execute(
                                "SELECT set_config('lock_timeout', %s, true), "
                                "set_config('statement_timeout', %s, true)",
                                self._write_timeouts,
                            )
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

    def run_outside_transaction(self, statement: sql.Composed) -> None:
        """One statement in autocommit mode (CREATE/DROP INDEX CONCURRENTLY cannot run inside a
        transaction block). Not retried: such statements are not all idempotent."""
        with self._lock:
            connection = self._connect()
            connection.autocommit = True
            try:
                connection.execute(statement, prepare=False)
            finally:
                if not connection.closed:
                    connection.autocommit = False

    def close(self) -> None:
        with self._lock:
            self._drop()

    def ping(self) -> None:
        """SELECT 1; raises psycopg.OperationalError if the database is unreachable."""
        self.run(lambda connection: connection.execute("SELECT 1").fetchone(), vector=False)

    @property
    def migrated(self) -> bool:
        return self._migrated

    def migrate_once(self) -> None:
        """`migrate()` on this store's first call only (a container's cold start)."""
        if not self._migrated:
            self.migrate()
            self._migrated = True

    def migrate(self) -> None:
        # Before register_vector: on a new database the vector type does not exist yet.
        self.run(migrate, vector=False)

    # -- writes -----------------------------------------------------------------------------

    def model_dimension(self, model_id: int) -> int:
        """A registered model's dimension (immutable, so cached; unknown ids are looked up)."""
        dimension = self._dimensions.get(model_id)
        if dimension is None:
            rows = self.run(
                lambda connection: connection.execute("SELECT id, dimension FROM models").fetchall(),
                vector=False,
            )
            self._dimensions.update({int(row[0]): int(row[1]) for row in rows})
            dimension = self._dimensions.get(model_id)
            if dimension is None:
                raise ValueError(f"model id {model_id} is not registered")
        return dimension

    def _vectors(self, record: ImageRecord) -> dict[int, HalfVector]:
        if not record.embeddings:
            raise ValueError(f"{record.ref} carries no embedding")
        return {
            model_id: to_halfvec(vector, self.model_dimension(model_id))
            for model_id, vector in record.embeddings.items()
        }

    def upsert_images(self, records: Sequence[ImageRecord]) -> list[WriteOutcome]:
        """Embedded images with their vectors, one transaction for the batch; an outcome per
        record, in order.

        Each image row goes through the order guard; an applied one gets exactly the record's
        vectors (other models' are deleted), a stale one that holds the same object version
        (same ETag) gets the record's vectors added or refreshed ("applied" if any changed).
        Each phase is one pipelined executemany (one round trip), rather than one multi-row
        INSERT, because ON CONFLICT DO UPDATE cannot touch one row twice in a statement and a
        batch may hold two events of one key; each statement also sees its predecessors' writes.
        """
        if not records:
            return []
        vectors = [self._vectors(record) for record in records]
        parameters = [
            {
                **_order_parameters(record.ref, record.order),
                "product_id": record.product_id,
                "category": record.category,
                "etag": record.etag,
                "size_bytes": record.size_bytes,
                "width": record.width,
                "height": record.height,
            }
            for record in records
        ]

        def write(connection: psycopg.Connection[TupleRow]) -> list[WriteOutcome]:
            return write_images(connection, parameters, vectors)

        return self.run(write, write=True)

    def bulk_upsert_images(self, records: Sequence[ImageRecord]) -> list[WriteOutcome]:
        """`upsert_images` for many objects at once (the backfill): binary COPY into temp tables
        (rows and vectors), then one guarded INSERT ... ON CONFLICT, one lock of the stale rows
        holding the same object version, one delete of the replaced vectors and one vector
        upsert; one transaction.

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
        vector_rows = []
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
                )
            )
            for model_id, vector in self._vectors(record).items():
                vector_rows.append((record.ref.bucket, record.ref.key, model_id, vector))

        def write(connection: psycopg.Connection[TupleRow]) -> list[WriteOutcome]:
            return bulk_write_images(connection, refs, rows, vector_rows)

        return self.run(write, write=True)

    def delete_image(self, ref: ObjectRef, order: EventOrder) -> WriteOutcome:
        """Tombstone the object (also when unknown: a late, older create must not resurrect it)."""
        parameters = _order_parameters(ref, order)
        return self.run(lambda connection: _outcome(connection.execute(DELETE_IMAGE, parameters)), write=True)

    def record_rejection(self, rejection: Rejection) -> WriteOutcome:
        """Log a permanent failure (once per event) and, if the event is newer than the row,
        mark the object rejected: the content at that key is no longer the embedded image.
        The outcome is that of the state transition; the log row is written either way."""
        parameters = self._rejection_parameters(rejection)
        return self.run(lambda connection: _outcome(connection.execute(REJECT_IMAGE, parameters)), write=True)

    def log_rejection(self, rejection: Rejection) -> None:
        """Add a rejection to the log without touching the object's row."""
        parameters = self._rejection_parameters(rejection)
        self.run(lambda connection: connection.execute(LOG_REJECTION, parameters), write=True)

    @staticmethod
    def _rejection_parameters(rejection: Rejection) -> dict[str, Any]:
        return {
            **_order_parameters(rejection.ref, rejection.order),
            "reason": rejection.reason,
            "detail": rejection.detail,
            "size_bytes": rejection.size_bytes,
        }

    # -- reads ------------------------------------------------------------------------------

    def get_image(self, ref: ObjectRef) -> StoredImage | None:
        def read(connection: psycopg.Connection[TupleRow]) -> StoredImage | None:
            row = connection.execute(
                sql.SQL(
                    "SELECT {columns} FROM images WHERE bucket = %s AND key = %s AND status = 'embedded'"
                ).format(columns=_STORED_IMAGE_COLUMNS),
                (ref.bucket, ref.key),
            ).fetchone()
            return None if row is None else _stored_image(row)

        return self.run(read, vector=False)

    def get_product(self, product_id: str) -> list[StoredImage]:
        """The product's embedded images, newest first."""

        def read(connection: psycopg.Connection[TupleRow]) -> list[StoredImage]:
            rows = connection.execute(
                sql.SQL(
                    "SELECT {columns} FROM images "
                    "WHERE product_id = %s AND status = 'embedded' ORDER BY event_time DESC, key"
                ).format(columns=_STORED_IMAGE_COLUMNS),
                (product_id,),
            ).fetchall()
            return [_stored_image(row) for row in rows]

        return self.run(read, vector=False)

    def count_images(self) -> int:
        def read(connection: psycopg.Connection[TupleRow]) -> int:
            row = connection.execute("SELECT count(*) FROM images WHERE status = 'embedded'").fetchone()
            return int(row[0]) if row is not None else 0

        return self.run(read, vector=False)

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

        return self.run(read, vector=False)

    def stored_versions(self, bucket: str, keys: Sequence[str]) -> dict[str, StoredVersion]:
        """What the store holds for these keys of a bucket (any status); unknown keys are absent.
        One query for a whole listing page (the backfill's skip check)."""

        def read(connection: psycopg.Connection[TupleRow]) -> dict[str, StoredVersion]:
            rows = connection.execute(
                "SELECT key, status, etag, "
                "ARRAY(SELECT model_id FROM embeddings WHERE image_id = images.id), event_time "
                "FROM images WHERE bucket = %s AND key = ANY(%s)",
                (bucket, list(keys)),
            ).fetchall()
            return {row[0]: StoredVersion(row[1], row[2], frozenset(row[3]), row[4]) for row in rows}

        return self.run(read, vector=False) if keys else {}

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
            return [image_summary(row) for row in connection.execute(statement, parameters).fetchall()]

        return self.run(read, vector=False)

    def embeddings(
        self, *, category: str | None = None, limit: int | None = None, model: ModelRef | None = None
    ) -> tuple[list[ImageSummary], FloatArray]:
        """Embedded images with their vectors of `model` (default: the active one) as
        [n, dimension] float32, in (bucket, key) order; images without a vector of it are left out."""

        def read(connection: psycopg.Connection[TupleRow]) -> tuple[list[ImageSummary], FloatArray]:
            chosen = model or active_model(connection)
            if chosen is None:
                return [], np.empty((0, EMBEDDING_DIM), dtype=np.float32)
            rows = connection.execute(
                "SELECT i.bucket, i.key, i.product_id, i.category, i.width, i.height, e.embedding "
                "FROM images AS i JOIN embeddings AS e ON e.image_id = i.id AND e.model_id = %(model)s "
                "WHERE i.status = 'embedded' AND (%(category)s::text IS NULL OR i.category = %(category)s) "
                "ORDER BY i.bucket, i.key LIMIT %(limit)s",
                {"model": chosen.id, "category": category, "limit": limit},
            ).fetchall()
            if not rows:
                return [], np.empty((0, chosen.dimension), dtype=np.float32)
            vectors = np.stack([row[6].to_numpy() for row in rows]).astype(np.float32)
            return [image_summary(row[:6]) for row in rows], vectors

        return self.run(read)


# The columns of a StoredImage, in its field order (model versions: those holding a vector).
_STORED_IMAGE_COLUMNS = sql.SQL(
    "bucket, key, product_id, category, etag, size_bytes, width, height, "
    "ARRAY(SELECT m.version FROM embeddings AS e JOIN models AS m ON m.id = e.model_id "
    "WHERE e.image_id = images.id ORDER BY m.version), event_time, created_at, updated_at"
)


def _stored_image(row: Sequence[Any]) -> StoredImage:
    return StoredImage(
        bucket=row[0],
        key=row[1],
        product_id=row[2],
        category=row[3],
        etag=row[4],
        size_bytes=row[5],
        width=row[6],
        height=row[7],
        model_versions=tuple(row[8]),
        event_time=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


def active_model(connection: psycopg.Connection[TupleRow]) -> ModelRef | None:
    """The model every query searches with (None: none is active yet, a new deployment)."""
    row = connection.execute("SELECT id, version, dimension FROM models WHERE state = 'active'").fetchone()
    return None if row is None else ModelRef(int(row[0]), str(row[1]), int(row[2]))
