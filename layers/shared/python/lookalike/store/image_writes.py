"""The two transactions that write images with their vectors (statements in `write_sql`): one
image at a time in pipelined phases (the ingest function), or many by COPY (the backfill).

Both apply the same rules: the image row goes through the order guard; an applied row gets
exactly the record's vectors (other models' are deleted); a stale row that holds the same object
version (same ETag) gets the record's vectors added or refreshed, the row locked FOR SHARE so that
a concurrent write of newer bytes waits. A record's outcome is "applied" when its row applied or
one of its vectors changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from pgvector import HalfVector
from psycopg import sql
from psycopg.rows import TupleRow

from lookalike.store.rows import WriteOutcome
from lookalike.store.write_sql import (
    BULK_DELETE_OTHER_VECTORS,
    BULK_LOCK_SAME_VERSION,
    BULK_UPSERT_IMAGES,
    BULK_UPSERT_VECTORS,
    COPY_INCOMING,
    COPY_INCOMING_VECTORS,
    CREATE_INCOMING,
    CREATE_INCOMING_VECTORS,
    DELETE_OTHER_VECTORS,
    INCOMING_COLUMNS,
    INCOMING_VECTOR_COLUMNS,
    LOCK_SAME_VERSION,
    UPSERT_IMAGE,
    UPSERT_VECTOR,
)


def _returned_ids(
    connection: psycopg.Connection[TupleRow],
    statement: sql.SQL | sql.Composed,
    parameters: list[dict[str, Any]],
) -> list[int | None]:
    """executemany (pipelined: one round trip): per parameter set, in order, the first column of
    the row it returned, or None when it returned none."""
    if not parameters:
        return []
    results: list[int | None] = []
    with connection.cursor() as cursor:
        cursor.executemany(statement, parameters, returning=True)
        while True:
            row = cursor.fetchone()
            results.append(None if row is None else int(row[0]))
            if not cursor.nextset():
                break
    return results


def write_images(
    connection: psycopg.Connection[TupleRow],
    parameters: list[dict[str, Any]],
    vectors: list[dict[int, HalfVector]],
) -> list[WriteOutcome]:
    """`parameters` per record (the image row's named parameters), `vectors` per record (model id
    -> vector); each phase is one pipelined executemany."""
    applied = _returned_ids(connection, UPSERT_IMAGE, parameters)
    again = [i for i, image_id in enumerate(applied) if image_id is None and parameters[i]["etag"]]
    same_version = dict(
        zip(
            again,
            _returned_ids(connection, LOCK_SAME_VERSION, [parameters[i] for i in again]),
            strict=True,
        )
    )
    replaced = [
        {"image_id": image_id, "model_ids": list(vectors[i])}
        for i, image_id in enumerate(applied)
        if image_id is not None
    ]
    if replaced:
        with connection.cursor() as cursor:
            cursor.executemany(DELETE_OTHER_VECTORS, replaced)
    # An image written twice in the batch keeps the vectors of its last applied write.
    last_applied = {image_id: i for i, image_id in enumerate(applied) if image_id is not None}
    targets: list[tuple[int, int]] = []
    for i, image_id in enumerate(applied):
        target = image_id if image_id is not None and last_applied[image_id] == i else None
        if image_id is None:
            target = same_version.get(i)
        if target is not None:
            targets.append((i, target))
    # Model rows are locked (FOR SHARE) in id order, as the registry locks them (FOR
    # UPDATE): two transactions never wait for each other's model rows in a cycle. The
    # sort is stable, so two records of one image keep their order (the later one wins).
    upserts = sorted(
        (
            (model_id, i, {"image_id": target, "model_id": model_id, "embedding": vector})
            for i, target in targets
            for model_id, vector in vectors[i].items()
        ),
        key=lambda item: item[0],
    )
    changed = _returned_ids(connection, UPSERT_VECTOR, [row for _, _, row in upserts])
    refreshed = {i for (_, i, _), result in zip(upserts, changed, strict=True) if result is not None}
    return [
        "applied" if applied[i] is not None or i in refreshed else "stale" for i in range(len(parameters))
    ]


def bulk_write_images(
    connection: psycopg.Connection[TupleRow],
    refs: Sequence[tuple[str, str]],
    rows: Sequence[tuple[Any, ...]],
    vector_rows: Sequence[tuple[Any, ...]],
) -> list[WriteOutcome]:
    """`rows` in INCOMING_COLUMNS order, `vector_rows` in INCOMING_VECTOR_COLUMNS order; one
    record per object (`refs`, in the records' order)."""
    connection.execute(CREATE_INCOMING, prepare=False)
    connection.execute(CREATE_INCOMING_VECTORS, prepare=False)
    with connection.cursor() as cursor:
        for statement, columns, values in (
            (COPY_INCOMING, INCOMING_COLUMNS, rows),
            (COPY_INCOMING_VECTORS, INCOMING_VECTOR_COLUMNS, vector_rows),
        ):
            with cursor.copy(statement) as copy:
                copy.set_types([kind for _, kind in columns])
                for row in values:
                    copy.write_row(row)
        applied = {(row[0], row[1]): row[2] for row in cursor.execute(BULK_UPSERT_IMAGES, prepare=False)}
        same_version = {
            (row[0], row[1]): row[2]
            for row in cursor.execute(
                BULK_LOCK_SAME_VERSION, {"applied": list(applied.values())}, prepare=False
            )
        }
        cursor.execute(BULK_DELETE_OTHER_VECTORS, {"image_ids": list(applied.values())}, prepare=False)
        targets = [*applied.values(), *same_version.values()]
        refreshed = {
            row[0] for row in cursor.execute(BULK_UPSERT_VECTORS, {"image_ids": targets}, prepare=False)
        }
    return ["applied" if ref in applied or same_version.get(ref) in refreshed else "stale" for ref in refs]
