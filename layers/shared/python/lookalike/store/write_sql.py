"""The write statements: every write is a state transition of one object's row, guarded by order.

Writes are applied only when the event is newer than what the row holds (S3 sequencer, else event
time: `lookalike.ordering`), in one SQL statement each. S3 delivers at least once and unordered,
so duplicates and late events must change nothing; the guard makes every write idempotent, which
is also what makes retrying it after a reconnect safe. Built once at import, as fixed texts (so
each can be a prepared statement); no user data is ever formatted into them.

Vectors live in `embeddings`, one row per (model, image). The image row's transition decides
whether the event is newer; the vector statements then follow it in the same transaction:
an applied transition replaces the image's vectors (or, for a tombstone, deletes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from psycopg import sql

from lookalike.store.rows import ImageStatus


def order_guard(content_columns: Sequence[str]) -> sql.Composed:
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


def transition(status: ImageStatus, columns: Sequence[str]) -> sql.Composed:
    """INSERT-or-guarded-UPDATE of one object's row; RETURNING its id iff it was applied.

    `columns` are the content columns the event sets (from named parameters of the same name);
    content columns it does not name are cleared, except product_id and category, which a
    tombstone keeps (which product lost an image is worth knowing).
    """
    return sql.SQL(
        """INSERT INTO images AS current (bucket, key, status, s3_sequencer, event_time{names})
        VALUES (%(bucket)s, %(key)s, {status}, %(sequencer)s, %(event_time)s{values})
        {on_conflict}
        RETURNING current.id"""
    ).format(
        names=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(column)) for column in columns),
        status=sql.Literal(status),
        values=sql.SQL("").join(sql.SQL(", {}").format(sql.Placeholder(column)) for column in columns),
        on_conflict=guarded_update(columns),
    )


def guarded_update(columns: Sequence[str]) -> sql.Composed:
    """The ON CONFLICT ... DO UPDATE ... WHERE guard of a state transition (see `transition`);
    shared by the one-row statements and the bulk (COPY) upsert, so both obey the same order."""
    cleared = [column for column in ("etag", "size_bytes", "width", "height") if column not in columns]
    written = ["status", "s3_sequencer", "event_time", *columns]
    compared = ["status", *columns, *cleared]
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
        guard=order_guard(compared),
    )


def tombstone(transitioned: sql.Composable, logged: sql.Composable | None = None) -> sql.Composed:
    """A transition to a tombstone that also deletes the image's vectors when it applies."""
    return sql.SQL(
        """WITH {logged}moved AS ({transition}),
        cleared AS (DELETE FROM embeddings WHERE image_id IN (SELECT id FROM moved))
        SELECT id FROM moved"""
    ).format(logged=logged or sql.SQL(""), transition=transitioned)


IMAGE_COLUMNS = ("product_id", "category", "etag", "size_bytes", "width", "height")
UPSERT_IMAGE: Final = transition("embedded", IMAGE_COLUMNS)
DELETE_IMAGE: Final = tombstone(transition("deleted", ()))
# The rejections log alone: for an object whose key cannot be a row of `images` (see ingest).
LOG_REJECTION: Final = sql.SQL(
    """INSERT INTO rejections (bucket, key, s3_sequencer, event_time, reason, detail, size_bytes)
    VALUES (%(bucket)s, %(key)s, %(sequencer)s, %(event_time)s, %(reason)s, %(detail)s, %(size_bytes)s)
    ON CONFLICT DO NOTHING"""
)
REJECT_IMAGE: Final = tombstone(
    transition("rejected", ("size_bytes",)),
    sql.SQL(
        """logged AS (
        INSERT INTO rejections (bucket, key, s3_sequencer, event_time, reason, detail, size_bytes)
        VALUES (%(bucket)s, %(key)s, %(sequencer)s, %(event_time)s, %(reason)s, %(detail)s,
                %(size_bytes)s)
        ON CONFLICT DO NOTHING
    ), """
    ),
)

# Re-embedding: an event for the object version the row already holds (same ETag: the same
# bytes) adds or refreshes the vectors of the models it carries, whatever the event's order. A
# backfill's event time is the object's LastModified, older than the notification that first
# embedded it, and a re-embedding fan-out (`backfill --enqueue`) redelivers old events: under
# the order guard alone both would be stale and a new model could never reach old rows. The
# ordering state is kept: the object itself has not changed. The row is locked FOR SHARE until
# the transaction ends, so a concurrent write of newer bytes waits and then replaces these
# vectors, never the other way round.
LOCK_SAME_VERSION: Final = sql.SQL(
    """SELECT id FROM images
    WHERE bucket = %(bucket)s AND key = %(key)s AND status = 'embedded' AND etag = %(etag)s
    FOR SHARE"""
)
# An applied write replaces the image's vectors: the models it does not carry lose theirs.
DELETE_OTHER_VECTORS: Final = sql.SQL(
    "DELETE FROM embeddings WHERE image_id = %(image_id)s AND NOT (model_id = ANY(%(model_ids)s))"
)
# A vector of a retired model is never written (the registry drops them when it retires one);
# FOR SHARE waits for a retirement in progress and then sees its state.
UPSERT_VECTOR: Final = sql.SQL(
    """INSERT INTO embeddings AS current (model_id, image_id, embedding)
    SELECT id, %(image_id)s, %(embedding)s FROM models
    WHERE id = %(model_id)s AND state <> 'retired'
    FOR SHARE
    ON CONFLICT (model_id, image_id) DO UPDATE SET embedding = excluded.embedding
        WHERE current.embedding IS DISTINCT FROM excluded.embedding
    RETURNING 1"""
)


# Bulk upserts (backfill): the rows and their vectors are COPYed (binary) into transaction-local
# temp tables, then applied by a few statements with the same guard as `UPSERT_IMAGE`. A temp
# table pins the session behind RDS Proxy: fine for a batch command, which is why the ingest
# function does not use it.
INCOMING_TABLE: Final = "incoming_images"
INCOMING_COLUMNS: Final = (
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
)
INCOMING_VECTORS_TABLE: Final = "incoming_vectors"
INCOMING_VECTOR_COLUMNS: Final = (
    ("bucket", "text"),
    ("key", "text"),
    ("model_id", "integer"),
    ("embedding", "halfvec"),
)


def _temp_table(name: str, columns: Sequence[tuple[str, str]]) -> sql.Composed:
    return sql.SQL("CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP").format(
        table=sql.Identifier(name),
        columns=sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(k)) for n, k in columns
        ),
    )


def _copy(name: str, columns: Sequence[tuple[str, str]]) -> sql.Composed:
    return sql.SQL("COPY {table} ({columns}) FROM STDIN WITH (FORMAT BINARY)").format(
        table=sql.Identifier(name), columns=sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
    )


CREATE_INCOMING: Final = _temp_table(INCOMING_TABLE, INCOMING_COLUMNS)
COPY_INCOMING: Final = _copy(INCOMING_TABLE, INCOMING_COLUMNS)
CREATE_INCOMING_VECTORS: Final = _temp_table(INCOMING_VECTORS_TABLE, INCOMING_VECTOR_COLUMNS)
COPY_INCOMING_VECTORS: Final = _copy(INCOMING_VECTORS_TABLE, INCOMING_VECTOR_COLUMNS)
BULK_UPSERT_IMAGES: Final = sql.SQL(
    """INSERT INTO images AS current (bucket, key, status, s3_sequencer, event_time{names})
    SELECT bucket, key, 'embedded', s3_sequencer, event_time{names} FROM {table}
    {on_conflict}
    RETURNING current.bucket, current.key, current.id"""
).format(
    names=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(column)) for column in IMAGE_COLUMNS),
    table=sql.Identifier(INCOMING_TABLE),
    on_conflict=guarded_update(IMAGE_COLUMNS),
)
# The stale ones that hold the same object version (see LOCK_SAME_VERSION).
BULK_LOCK_SAME_VERSION: Final = sql.SQL(
    """SELECT current.bucket, current.key, current.id FROM images AS current
    JOIN {table} AS incoming ON current.bucket = incoming.bucket AND current.key = incoming.key
    WHERE current.status = 'embedded' AND current.etag = incoming.etag
        AND NOT (current.id = ANY(%(applied)s))
    FOR SHARE OF current"""
).format(table=sql.Identifier(INCOMING_TABLE))
BULK_DELETE_OTHER_VECTORS: Final = sql.SQL(
    """DELETE FROM embeddings AS stored
    WHERE stored.image_id = ANY(%(image_ids)s)
        AND NOT EXISTS (
            SELECT 1 FROM images
            JOIN {vectors} AS incoming ON incoming.bucket = images.bucket AND incoming.key = images.key
            WHERE images.id = stored.image_id AND incoming.model_id = stored.model_id)"""
).format(vectors=sql.Identifier(INCOMING_VECTORS_TABLE))
BULK_UPSERT_VECTORS: Final = sql.SQL(
    """INSERT INTO embeddings AS current (model_id, image_id, embedding)
    SELECT models.id, images.id, incoming.embedding
    FROM {vectors} AS incoming
    JOIN images ON images.bucket = incoming.bucket AND images.key = incoming.key
    JOIN models ON models.id = incoming.model_id AND models.state <> 'retired'
    WHERE images.id = ANY(%(image_ids)s)
    FOR SHARE OF models
    ON CONFLICT (model_id, image_id) DO UPDATE SET embedding = excluded.embedding
        WHERE current.embedding IS DISTINCT FROM excluded.embedding
    RETURNING current.image_id"""
).format(vectors=sql.Identifier(INCOMING_VECTORS_TABLE))
