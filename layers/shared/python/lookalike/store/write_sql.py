"""The write statements: every write is a state transition of one object's row, guarded by order.

Writes are applied only when the event is newer than what the row holds (S3 sequencer, else event
time: `lookalike.ordering`), in one SQL statement each. S3 delivers at least once and unordered,
so duplicates and late events must change nothing; the guard makes every write idempotent, which
is also what makes retrying it after a reconnect safe. Built once at import, as fixed texts (so
each can be a prepared statement); no user data is ever formatted into them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        on_conflict=guarded_update(columns),
    )


def guarded_update(columns: Sequence[str]) -> sql.Composed:
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
        guard=order_guard(compared),
    )


IMAGE_COLUMNS = (
    "product_id",
    "category",
    "etag",
    "size_bytes",
    "width",
    "height",
    "model_version",
    "embedding",
)
UPSERT_IMAGE: Final = transition("embedded", IMAGE_COLUMNS)
DELETE_IMAGE: Final = transition("deleted", ())
# The rejections log alone: for an object whose key cannot be a row of `images` (see ingest).
LOG_REJECTION: Final = sql.SQL(
    """INSERT INTO rejections (bucket, key, s3_sequencer, event_time, reason, detail, size_bytes)
    VALUES (%(bucket)s, %(key)s, %(sequencer)s, %(event_time)s, %(reason)s, %(detail)s, %(size_bytes)s)
    ON CONFLICT DO NOTHING"""
)
REJECT_IMAGE: Final = sql.SQL(
    """WITH logged AS (
        INSERT INTO rejections (bucket, key, s3_sequencer, event_time, reason, detail, size_bytes)
        VALUES (%(bucket)s, %(key)s, %(sequencer)s, %(event_time)s, %(reason)s, %(detail)s,
                %(size_bytes)s)
        ON CONFLICT DO NOTHING
    )
    {transition}"""
).format(transition=transition("rejected", ("size_bytes",)))


# Bulk upserts (backfill): the rows are COPYed (binary) into a transaction-local temp table, then
# applied by ONE statement with the same guard as `UPSERT_IMAGE`. A temp table pins the session
# behind RDS Proxy: fine for a batch command, which is why the ingest function does not use it.
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
    ("model_version", "text"),
    ("embedding", "halfvec"),
)
CREATE_INCOMING: Final = sql.SQL("CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP").format(
    table=sql.Identifier(INCOMING_TABLE),
    columns=sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL("halfvec(1280)" if kind == "halfvec" else kind))
        for name, kind in INCOMING_COLUMNS
    ),
)
COPY_INCOMING: Final = sql.SQL("COPY {table} ({columns}) FROM STDIN WITH (FORMAT BINARY)").format(
    table=sql.Identifier(INCOMING_TABLE),
    columns=sql.SQL(", ").join(sql.Identifier(name) for name, _ in INCOMING_COLUMNS),
)
BULK_UPSERT_IMAGES: Final = sql.SQL(
    """INSERT INTO images AS current (bucket, key, status, s3_sequencer, event_time{names})
    SELECT bucket, key, 'embedded', s3_sequencer, event_time{names} FROM {table}
    {on_conflict}
    RETURNING current.bucket, current.key"""
).format(
    names=sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(column)) for column in IMAGE_COLUMNS),
    table=sql.Identifier(INCOMING_TABLE),
    on_conflict=guarded_update(IMAGE_COLUMNS),
)

# Re-embedding: an event for the object version the row already holds (same ETag: the same
# bytes) that was embedded by another model replaces the embedding whatever the event's order.
# A backfill's event time is the object's LastModified, older than the notification that first
# embedded it, and a re-embedding fan-out (`backfill --enqueue`) redelivers old events: under
# the order guard alone both would be stale and a model change could never reach old rows.
# The ordering state (sequencer, event time) is kept: the object itself has not changed. The
# ETag is compared under the row lock, so a newer version written meanwhile is never overwritten.
REEMBEDDED_COLUMNS: Final = (
    "product_id",
    "category",
    "size_bytes",
    "width",
    "height",
    "model_version",
    "embedding",
)


def reembed(values: Callable[[str], sql.Composable], source: sql.Composable) -> sql.Composed:
    """UPDATE of an embedded row holding the same ETag but another model version; `values`
    gives each column's new value (a placeholder, or a column of the incoming table)."""
    return sql.SQL(
        """UPDATE images AS current SET {assignments}, updated_at = now() {source}
        WHERE current.status = 'embedded' AND current.etag = {etag}
            AND current.model_version <> {model_version}"""
    ).format(
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), values(column)) for column in REEMBEDDED_COLUMNS
        ),
        source=source,
        etag=values("etag"),
        model_version=values("model_version"),
    )


REEMBED_IMAGE: Final = sql.SQL(
    "{update} AND current.bucket = %(bucket)s AND current.key = %(key)s RETURNING 1"
).format(update=reembed(sql.Placeholder, sql.SQL("")))
BULK_REEMBED_IMAGES: Final = sql.SQL(
    "{update} AND current.bucket = incoming.bucket AND current.key = incoming.key "
    "RETURNING current.bucket, current.key"
).format(
    update=reembed(
        lambda column: sql.Identifier("incoming", column),
        sql.SQL("FROM {} AS incoming").format(sql.Identifier(INCOMING_TABLE)),
    )
)
