"""Backfill and re-embedding against real parts: moto S3/SQS over HTTP, the embedded PostgreSQL,
the real ONNX model and the sample catalogue's real photos (one of them a truncated JPEG)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config

from lookalike.backfill import BackfillModels, BatchResult, BatchWork, Checkpoint, EmbedLocally, run_backfill
from lookalike.catalogue import KeyLayout
from lookalike.ingest import IngestLimits, ingest_batch
from lookalike.model.embedder import Embedder, get_embedder
from lookalike.model_versions import ensure_active_model, maintained_embedders
from lookalike.ports import EventOrder, ListedObject, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import Store
from lookalike_aws.enqueue import EnqueueForIngest
from lookalike_aws.events import parse_invocation
from lookalike_aws.s3 import S3ObjectLister, S3ObjectSource
from lookalike_local.catalogue import CatalogueObject, catalogue

LAYOUT = KeyLayout.parse("products/", "{category}/{product_id}/{file}")
LIMITS = IngestLimits(max_image_bytes=20 * 1024 * 1024, max_image_pixels=50_000_000)
# A small slice of the sample catalogue (fast on 2 vCPUs) plus its broken upload.
PRODUCTS = {"tabby-cat", "espresso-cup", "garden-flower", "gift-box", "damaged-upload"}


@pytest.fixture(scope="module")
def objects() -> list[CatalogueObject]:
    return [item for item in catalogue() if item.product_id in PRODUCTS]


@pytest.fixture(scope="module")
def bodies(objects: list[CatalogueObject]) -> dict[str, bytes]:
    return {item.key: item.body() for item in objects}


@pytest.fixture
def s3(moto_server: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(s3_bucket: str, s3: Any, objects: list[CatalogueObject], bodies: dict[str, bytes]) -> str:
    """The catalogue slice uploaded with its product metadata, but never notified: a backfill's case."""
    for item in objects:
        s3.put_object(
            Bucket=s3_bucket,
            Key=item.key,
            Body=bodies[item.key],
            ContentType=item.content_type,
            Metadata={"product-id": item.product_id, "category": item.category},
        )
    return s3_bucket


@pytest.fixture
def store(clean_database: str) -> Iterator[Store]:
    store = Store(clean_database)
    store.migrate()
    ensure_active_model(store, get_settings())
    yield store
    store.close()


@pytest.fixture
def models(store: Store) -> BackfillModels:
    return BackfillModels(maintained_embedders(store))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


class Counting:
    """Wraps a BatchWork and records every key handed to it (to prove nothing is done twice)."""

    def __init__(self, work: BatchWork) -> None:
        self.work = work
        self.verb = work.verb
        self.keys: list[str] = []

    def __call__(self, bucket: str, objects: Sequence[ListedObject]) -> BatchResult:
        self.keys += [listed.key for listed in objects]
        return self.work(bucket, objects)


def embed_locally(s3: Any, store: Store, models: BackfillModels) -> Counting:
    return Counting(
        EmbedLocally(source=S3ObjectSource(s3), store=store, models=models, limits=LIMITS, layout=LAYOUT)
    )


def timestamps(url: str) -> dict[str, tuple[datetime, datetime, list[int]]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT key, created_at, updated_at, "
            "ARRAY(SELECT model_id FROM embeddings WHERE image_id = images.id ORDER BY model_id) "
            "FROM images WHERE status = 'embedded'"
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_backfill_embeds_missing_objects_and_records_rejections(
    bucket: str,
    s3: Any,
    store: Store,
    models: BackfillModels,
    embedder: Embedder,
    objects: list[CatalogueObject],
    tmp_path: Path,
) -> None:
    work = embed_locally(s3, store, models)
    summary = run_backfill(
        bucket=bucket,
        prefix="products/",
        lister=S3ObjectLister(s3),
        work=work,
        models=models,
        store=store,
        batch_size=4,
        checkpoint=Checkpoint(tmp_path, bucket, "products/", models.label),
    )
    good = len(objects) - 1
    assert (summary.listed, summary.done, summary.skipped, summary.failed) == (len(objects), good, 0, [])
    assert dict(summary.rejected) == {"truncated": 1}
    assert summary.rejected_keys[0][0] == "products/food-drink/damaged-upload/truncated.jpg"
    assert store.count_images() == good
    cat = store.get_image(ObjectRef(bucket, "products/animals/tabby-cat/front.jpg"))
    assert cat is not None
    assert (cat.product_id, cat.category, cat.model_versions) == (
        "tabby-cat",
        "animals",
        (embedder.model_version,),
    )
    assert store.rejections(limit=5)[0].reason == "truncated"
    assert not Checkpoint(tmp_path, bucket, "products/", models.label).path.exists()  # finished

    # A second run finds everything up to date (the rejected file too) and embeds nothing.
    again = run_backfill(
        bucket=bucket,
        prefix="products/",
        lister=S3ObjectLister(s3),
        work=work,
        models=models,
        store=store,
    )
    assert (again.done, again.skipped, sum(again.rejected.values())) == (0, len(objects), 0)
    assert len(work.keys) == len(set(work.keys)) == len(objects)


def test_an_interrupted_backfill_resumes_without_redoing_finished_work(
    bucket: str,
    s3: Any,
    store: Store,
    models: BackfillModels,
    embedder: Embedder,
    objects: list[CatalogueObject],
    tmp_path: Path,
    clean_database: str,
) -> None:
    checkpoint = Checkpoint(tmp_path, bucket, "", models.label)
    work = embed_locally(s3, store, models)
    lister = S3ObjectLister(s3, page_size=4)  # several LIST pages: the checkpoint advances per page
    first = run_backfill(
        bucket=bucket,
        prefix="",
        lister=lister,
        work=work,
        models=models,
        store=store,
        batch_size=3,
        checkpoint=checkpoint,
        limit=5,  # "interrupted" after 5 objects
    )
    assert first.stopped_early
    keys = sorted(item.key for item in objects)
    broken = "products/food-drink/damaged-upload/truncated.jpg"
    assert broken in keys[:5]  # the rejection counts as work done
    assert (first.done, dict(first.rejected)) == (4, {"truncated": 1})
    assert checkpoint.load() == keys[3]  # the first page (4 keys) is settled, the second is not
    before = timestamps(clean_database)
    assert set(before) == set(keys[:5]) - {broken}

    second = run_backfill(
        bucket=bucket,
        prefix="",
        lister=lister,
        work=work,
        models=models,
        store=store,
        batch_size=3,
        checkpoint=checkpoint,
    )
    assert second.resumed_after == keys[3]
    assert second.listed == len(objects) - 4  # the first page is not listed again
    assert second.skipped == 1  # keys[4]: embedded by the first run, found in the store
    assert (second.done, sum(second.rejected.values())) == (len(objects) - 5, 0)
    # No object was handed to the embedder twice, and the first run's rows were not rewritten.
    assert sorted(work.keys) == keys
    after = timestamps(clean_database)
    assert {key: after[key] for key in before} == before
    assert store.count_images() == len(objects) - 1
    assert checkpoint.load() is None


def test_rows_lacking_a_models_vector_are_re_embedded_in_place(
    bucket: str,
    s3: Any,
    store: Store,
    models: BackfillModels,
    embedder: Embedder,
    objects: list[CatalogueObject],
    clean_database: str,
) -> None:
    work = embed_locally(s3, store, models)
    arguments: dict[str, Any] = {
        "bucket": bucket,
        "prefix": "products/",
        "lister": S3ObjectLister(s3),
        "models": models,
        "store": store,
    }
    run_backfill(work=work, **arguments)
    old = ["products/animals/tabby-cat/front.jpg", "products/gifts/gift-box/mirror.png"]
    with psycopg.connect(clean_database) as connection:
        connection.execute(
            "DELETE FROM embeddings USING images "
            "WHERE embeddings.image_id = images.id AND images.key = ANY(%s)",
            (old,),
        )
        orders = dict(
            connection.execute("SELECT key, event_time FROM images WHERE key = ANY(%s)", (old,)).fetchall()
        )

    summary = run_backfill(work=work, **arguments)
    assert (summary.done, summary.stale) == (2, 0)
    assert work.keys[-2:] == sorted(old)
    for key in old:
        image = store.get_image(ObjectRef(bucket, key))
        assert image is not None
        assert image.model_versions == (embedder.model_version,)
        assert image.event_time == orders[key]  # same object version: its ordering state is kept


def test_the_guard_still_holds_for_backfilled_rows(
    bucket: str, s3: Any, store: Store, models: BackfillModels
) -> None:
    """A delete notified after the object's LastModified wins over the backfill, and a newer
    upload's notification wins over a backfilled row."""
    deleted = ObjectRef(bucket, "products/animals/tabby-cat/mirror.jpg")
    store.delete_image(deleted, EventOrder("00FF", datetime.now(UTC) + timedelta(seconds=5)))
    summary = run_backfill(
        bucket=bucket,
        prefix="products/animals/",
        lister=S3ObjectLister(s3),
        work=embed_locally(s3, store, models),
        models=models,
        store=store,
    )
    assert summary.stale == 1
    assert store.get_image(deleted) is None
    assert summary.done == 2


def test_enqueue_sends_s3_shaped_messages_the_ingest_function_accepts(
    bucket: str,
    s3: Any,
    store: Store,
    models: BackfillModels,
    embedder: Embedder,
    bodies: dict[str, bytes],
    moto_server: str,
    clean_database: str,
) -> None:
    # A key S3 must URL-encode in its events (space, plus, non-ASCII).
    odd_key = "products/gifts/gift-box/side view+1 été.png"
    s3.put_object(Bucket=bucket, Key=odd_key, Body=bodies["products/gifts/gift-box/front.png"])
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"backfill-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    summary = run_backfill(
        bucket=bucket,
        prefix="products/gifts/",
        lister=S3ObjectLister(s3),
        work=EnqueueForIngest(queue_url, sqs),
        models=models,
        store=None,
    )
    assert (summary.verb, summary.done, summary.failed) == ("enqueued", 3, [])
    assert summary.as_dict()["enqueued"] == 3

    messages: list[dict[str, Any]] = []
    for _ in range(5):
        messages += sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if len(messages) >= 3:
            break
    assert len(messages) == 3
    raw = json.loads(next(m["Body"] for m in messages if "side" in m["Body"]))["Records"][0]
    assert raw["eventName"] == "ObjectCreated:Put"
    assert raw["s3"]["object"]["key"] == "products/gifts/gift-box/side+view%2B1+%C3%A9t%C3%A9.png"

    event = {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lookalike-ingest",
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }
    parsed = parse_invocation(event)
    assert parsed.source == "sqs"
    events = {item.key: item for item in parsed.events}
    listed = {
        item["Key"]: item for item in s3.list_objects_v2(Bucket=bucket, Prefix="products/gifts/")["Contents"]
    }
    assert set(events) == set(listed)
    for key, item in events.items():
        assert (item.kind, item.size, item.etag) == (
            "created",
            listed[key]["Size"],
            listed[key]["ETag"].strip('"'),
        )
        assert item.event_time == listed[key]["LastModified"]

    report = ingest_batch(
        parsed.events,
        source=S3ObjectSource(s3),
        store=lambda: store,
        embedders=maintained_embedders,
        limits=LIMITS,
        layout=LAYOUT,
    )
    assert {outcome.kind for outcome in report.outcomes} == {"embedded"}
    image = store.get_image(ObjectRef(bucket, odd_key))
    assert image is not None
    assert image.product_id == "gift-box"

    # The fan-out fills missing vectors too: the same messages, redelivered for rows that lack
    # the model's vector (a model added since), are applied (same ETag), not stale.
    with psycopg.connect(clean_database) as connection:
        connection.execute("DELETE FROM embeddings")
    again = ingest_batch(
        parsed.events,
        source=S3ObjectSource(s3),
        store=lambda: store,
        embedders=maintained_embedders,
        limits=LIMITS,
        layout=LAYOUT,
    )
    assert {outcome.kind for outcome in again.outcomes} == {"embedded"}
    reembedded = store.get_image(ObjectRef(bucket, odd_key))
    assert reembedded is not None
    assert reembedded.model_versions == (embedder.model_version,)
    assert reembedded.event_time == image.event_time
    # ... and once embedded by this model, a redelivery changes nothing.
    third = ingest_batch(
        parsed.events,
        source=S3ObjectSource(s3),
        store=lambda: store,
        embedders=maintained_embedders,
        limits=LIMITS,
        layout=LAYOUT,
    )
    assert {outcome.kind for outcome in third.outcomes} == {"stale"}
