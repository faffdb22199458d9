"""The ingest function end to end, through its Lambda entry point, against real parts.

S3 and SQS are moto's server over HTTP on 127.0.0.1, the database is the embedded PostgreSQL
with pgvector, the model is the real ONNX file, the images are real photos. The events are the
published samples in events/, rewritten only where they must point at what the test uploaded
(bucket, key, size, ETag, sequencer, event time); every other field stays as published.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

import boto3
import numpy as np
import psycopg
import pytest
from PIL import Image
from sample_categories import CATEGORY_OF

from lookalike.ports import ObjectRef
from lookalike.settings import get_settings
from lookalike.store import SearchParameters, Store
from lookalike.store.category_suggestions import uncategorised_images
from lookalike_aws.runtime import get_search, get_store, reset_runtime
from lookalike_local.embedded_db import EmbeddedPostgres
from lookalike_local.lambda_runtime import LambdaContext, load_module
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "events"
HANDLER_FILE = REPO_ROOT / "functions" / "ingest" / "app.py"


def published(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture(scope="module")
def ingest_app() -> ModuleType:
    """The handler module, loaded from its file as Lambda does (module-level init runs once),
    with the Powertools variables the template gives the function (read at init)."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("POWERTOOLS_SERVICE_NAME", "lookalike-ingest")
        environment.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookalikeTest")
        return load_module(HANDLER_FILE, "lookalike_ingest_app_under_test")


class Sequencer:
    """Increasing S3-style sequencers and event times, one per simulated request."""

    def __init__(self) -> None:
        self.value = 0x0064_0000_0000_0000_00
        self.time = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def next(self) -> tuple[str, str]:
        self.value += 0x10
        self.time += timedelta(milliseconds=5)
        return f"{self.value:018X}", self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Upload:
    key: str
    etag: str
    size: int
    sequencer: str
    event_time: str


class Harness:
    def __init__(
        self, app: ModuleType, bucket: str, endpoint: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.app = app
        self.bucket = bucket
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.clock = Sequencer()
        self.capsys = capsys
        self.log_stream = io.StringIO()
        for handler in app.logger.handlers:  # the Powertools logger's stdout handler
            handler.setStream(self.log_stream)

    @property
    def store(self) -> Store:
        return get_store()

    # --- S3 side -------------------------------------------------------------------------
    def upload(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> Upload:
        response = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata or {})
        sequencer, event_time = self.clock.next()
        return Upload(key, response["ETag"].strip('"'), len(data), sequencer, event_time)

    def delete(self, key: str) -> Upload:
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        sequencer, event_time = self.clock.next()
        return Upload(key, "", 0, sequencer, event_time)

    # --- events (published samples, rewritten to point at our objects) --------------------
    def s3_record(self, upload: Upload, *, removed: bool = False) -> dict[str, Any]:
        name = "sam-generated__s3_delete.json" if removed else "sam-generated__s3_put.json"
        record: dict[str, Any] = published(name)["Records"][0]
        record["eventTime"] = upload.event_time
        record["s3"]["bucket"]["name"] = self.bucket
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{self.bucket}"
        s3_object = record["s3"]["object"]
        s3_object["key"] = quote_plus(upload.key, safe="/")  # as S3 encodes keys in events
        s3_object["sequencer"] = upload.sequencer
        if not removed:
            s3_object["size"] = upload.size
            s3_object["eTag"] = upload.etag
        return record

    def sqs_event(self, *bodies: dict[str, Any] | str) -> dict[str, Any]:
        template = published("powertools__s3SqsEvent.json")
        message = template["Records"][0]
        records = []
        for body in bodies:
            record = copy.deepcopy(message)
            record["messageId"] = str(uuid.uuid4())
            record["body"] = body if isinstance(body, str) else json.dumps(body)
            records.append(record)
        template["Records"] = records
        return template

    def sqs_for(self, *uploads: Upload, removed: bool = False) -> dict[str, Any]:
        """One SQS message per object event, each body an S3 notification with one record."""
        return self.sqs_event(*({"Records": [self.s3_record(upload, removed=removed)]} for upload in uploads))

    # --- the Lambda boundary ------------------------------------------------------------
    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        self.capsys.readouterr()
        self.log_stream.seek(0)
        self.log_stream.truncate()
        response: dict[str, Any] = self.app.lambda_handler(event, LambdaContext("lookalike-ingest", 1024, 60))
        return response

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines() if line.startswith("{")]

    def metrics(self) -> dict[str, float]:
        """The EMF metrics the last invocation printed (summed per name)."""
        totals: dict[str, float] = {}
        for line in self.capsys.readouterr().out.splitlines():
            if not line.startswith("{") or '"_aws"' not in line:
                continue
            blob = json.loads(line)
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = blob[metric["Name"]]
                    totals[metric["Name"]] = totals.get(metric["Name"], 0) + float(
                        sum(value) if isinstance(value, list) else value
                    )
        return totals

    def outcomes(self) -> dict[str, str]:
        """s3_key -> outcome of the last invocation, from its log lines."""
        return {line["s3_key"]: line["outcome"] for line in self.log_lines() if "outcome" in line}


def failed_ids(response: dict[str, Any]) -> set[str]:
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


def message_ids(event: dict[str, Any]) -> list[str]:
    return [record["messageId"] for record in event["Records"]]


@pytest.fixture
def ingest(
    ingest_app: ModuleType,
    clean_database: str,
    s3_bucket: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Harness]:
    monkeypatch.setenv("DATABASE_URL", clean_database)
    monkeypatch.delenv("KEY_PREFIX", raising=False)
    monkeypatch.delenv("KEY_LAYOUT", raising=False)
    reset_runtime()
    get_store().migrate()  # clean_database dropped every table
    yield Harness(ingest_app, s3_bucket, moto_server, capsys)
    reset_runtime()


def jpeg(image: Image.Image, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def twenty_images(photos: list[SamplePhoto]) -> list[tuple[str, bytes]]:
    """20 distinct real images: each photo, and a resized crop of it (a detail view)."""
    images = []
    for photo in photos[:10]:
        image = photo.open_rgb()
        image.thumbnail((480, 480))
        width, height = image.size
        detail = image.crop((width // 6, height // 6, width * 5 // 6, height * 5 // 6)).resize((300, 300))
        images += [(f"{photo.name}-front.jpg", jpeg(image)), (f"{photo.name}-detail.jpg", jpeg(detail, 75))]
    assert len(images) == 20
    assert len({data for _, data in images}) == 20
    return images


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


# --- tests ---------------------------------------------------------------------------------


def test_a_batch_of_20_real_images_is_embedded_in_one_inference(
    ingest: Harness, photos: list[SamplePhoto]
) -> None:
    uploads = [
        ingest.upload(f"products/{'cats' if 'chelsea' in name else 'misc'}/{name.split('-')[0]}/{name}", data)
        for name, data in twenty_images(photos)
    ]
    event = ingest.sqs_for(*uploads)

    response = ingest.invoke(event)

    assert response == {"batchItemFailures": []}
    metrics = ingest.metrics()
    assert metrics["ImagesEmbedded"] == 20
    assert metrics["BatchImages"] == 20
    assert metrics["InferenceMs"] > 0
    assert metrics.get("ImagesRejected", 0) == 0
    assert ingest.store.count_images() == 20
    stored = ingest.store.get_image(ObjectRef(ingest.bucket, "products/cats/chelsea/chelsea-detail.jpg"))
    assert stored is not None
    assert (stored.product_id, stored.category) == ("chelsea", "cats")
    assert stored.etag == uploads[1].etag
    assert stored.size_bytes == uploads[1].size
    assert (stored.width, stored.height) == (300, 300)
    embeddings = get_search().product_embeddings("chelsea")
    assert embeddings.shape == (2, 1280)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-2)  # halfvec storage
    # The photo and its detail view are each other's nearest product-mates.
    neighbours = get_search().similar_to_product("coffee", SearchParameters(k=3))
    assert neighbours is not None
    assert len(neighbours) == 3
    # Every per-event log line carries the S3 key and request id.
    lines = [line for line in ingest.log_lines() if "outcome" in line]
    assert len(lines) == 20
    assert {line["s3_key"] for line in lines} == {upload.key for upload in uploads}
    assert {line["s3_request_id"] for line in lines} == {"EXAMPLE123456789"}  # the sample's x-amz-request-id
    assert all(line["function_request_id"] and line["message_id"] for line in lines)


def test_keys_with_spaces_unicode_and_plus(ingest: Harness, photos: list[SamplePhoto]) -> None:
    data = photos[1].jpeg_bytes(max_side=256)
    keys = [
        "products/shoes/red shoe/front view.jpg",
        "products/sacs à main/sac été/ünïcødé 😀.jpg",
        "products/tops/a+b/1+1=2.jpg",
        "products/tops/100% cotton/50%20off.jpg",
    ]
    uploads = [ingest.upload(key, data) for key in keys]
    sqs = ingest.sqs_for(*uploads[:3])
    direct = published("sam-generated__s3_put.json")  # a direct S3 invocation for the last one
    direct["Records"] = [ingest.s3_record(uploads[3])]

    assert ingest.invoke(sqs) == {"batchItemFailures": []}
    assert ingest.invoke(direct) == {"processed": 1}

    products = {
        key: (image.product_id, image.category)
        for key in keys
        if (image := ingest.store.get_image(ObjectRef(ingest.bucket, key))) is not None
    }
    assert products == {
        keys[0]: ("red shoe", "shoes"),
        keys[1]: ("sac été", "sacs à main"),
        keys[2]: ("a+b", "tops"),
        keys[3]: ("100% cotton", "tops"),
    }


def test_metadata_wins_over_the_key_layout(
    ingest: Harness, photos: list[SamplePhoto], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = photos[0].jpeg_bytes(max_side=256)
    with_metadata = ingest.upload(
        "products/shoes/sku-1/a.jpg", data, {"product-id": "P-42", "category": "boots"}
    )
    only_product = ingest.upload("products/shoes/sku-1/b.jpg", data, {"product-id": "P-43"})
    by_layout = ingest.upload("products/shoes/sku-1/c.jpg", data)
    outside = ingest.upload("uploads/loose photo.jpg", data)

    assert (
        ingest.invoke(ingest.sqs_for(with_metadata, only_product, by_layout, outside))["batchItemFailures"]
        == []
    )

    def identity(key: str) -> tuple[str, str | None]:
        image = ingest.store.get_image(ObjectRef(ingest.bucket, key))
        assert image is not None
        return image.product_id, image.category

    assert identity(with_metadata.key) == ("P-42", "boots")
    assert identity(only_product.key) == ("P-43", "shoes")
    assert identity(by_layout.key) == ("sku-1", "shoes")
    assert identity(outside.key) == ("uploads/loose photo.jpg", None)

    # A configured layout (a new container reads it at start).
    monkeypatch.setenv("KEY_PREFIX", "catalog/")
    monkeypatch.setenv("KEY_LAYOUT", "{product_id}/images/{file}")
    get_settings.cache_clear()
    custom = ingest.upload("catalog/SKU-9/images/main.jpg", data)
    assert ingest.invoke(ingest.sqs_for(custom))["batchItemFailures"] == []
    assert identity(custom.key) == ("SKU-9", None)


def test_duplicate_and_reordered_events_change_nothing(ingest: Harness, photos: list[SamplePhoto]) -> None:
    key = "products/cups/coffee/main.jpg"
    first = ingest.upload(key, photos[1].jpeg_bytes(max_side=300))
    second = ingest.upload(key, photos[1].jpeg_bytes(max_side=200, quality=70))  # overwritten
    ref = ObjectRef(ingest.bucket, key)

    # The newer event first, with a duplicate of it in the same batch.
    newer = ingest.sqs_for(second, second)
    assert ingest.invoke(newer)["batchItemFailures"] == []
    assert sorted(line["outcome"] for line in ingest.log_lines() if "outcome" in line) == [
        "duplicate",
        "embedded",
    ]
    stored = ingest.store.get_image(ref)
    assert stored is not None
    assert stored.etag == second.etag

    # The older event arrives late, then the newer one again (redelivery): nothing changes.
    assert ingest.invoke(ingest.sqs_for(first))["batchItemFailures"] == []
    assert ingest.outcomes() == {key: "stale"}
    assert ingest.invoke(newer)["batchItemFailures"] == []
    after = ingest.store.get_image(ref)
    assert after is not None
    assert (after.etag, after.updated_at) == (stored.etag, stored.updated_at)
    assert ingest.store.count_images() == 1

    # Older and newer of one key reordered inside one batch: the newer wins without a read.
    third = ingest.upload(key, photos[1].jpeg_bytes(max_side=320, quality=80))
    assert ingest.invoke(ingest.sqs_for(third, first))["batchItemFailures"] == []
    latest = ingest.store.get_image(ref)
    assert latest is not None
    assert latest.etag == third.etag


def test_sequencers_of_different_lengths_and_non_hex_placeholders(
    ingest: Harness, photos: list[SamplePhoto]
) -> None:
    key = "products/x/y/z.jpg"
    upload = ingest.upload(key, photos[2].jpeg_bytes(max_side=200))
    # S3: right-pad the shorter sequencer with zeros, then compare: 0A1B2C3D4E5F6789010 (padded)
    # > 0A1B2C3D4E5F678901.
    short, long_ = "0A1B2C3D4E5F678901", "0A1B2C3D4E5F67890110"
    newer = ingest.s3_record(upload)
    newer["s3"]["object"]["sequencer"] = long_
    older = ingest.s3_record(upload, removed=True)
    older["s3"]["object"]["sequencer"] = short
    assert ingest.invoke(ingest.sqs_event({"Records": [newer]}))["batchItemFailures"] == []
    assert ingest.invoke(ingest.sqs_event({"Records": [older]}))["batchItemFailures"] == []
    assert ingest.store.get_image(ObjectRef(ingest.bucket, key)) is not None  # the delete was older

    # The published "Happy Sequencer" sample: not hex, must not crash (event time decides).
    happy = published("powertools__s3EventDecodedKey.json")
    record = happy["Records"][0]
    other = ingest.upload("products/faces/happy/Happy Face.jpg", photos[3].jpeg_bytes(max_side=200))
    record["s3"]["bucket"]["name"] = ingest.bucket
    record["s3"]["object"].update(key=quote_plus(other.key, safe="/"), size=other.size, eTag=other.etag)
    assert record["s3"]["object"]["sequencer"] == "Happy Sequencer"
    assert ingest.invoke(happy) == {"processed": 1}
    assert ingest.outcomes() == {other.key: "embedded"}


def test_delete_then_late_create_never_resurrects(ingest: Harness, photos: list[SamplePhoto]) -> None:
    key = "products/bikes/moto/side.jpg"
    created = ingest.upload(key, photos[4].jpeg_bytes(max_side=300))
    ref = ObjectRef(ingest.bucket, key)
    assert ingest.invoke(ingest.sqs_for(created))["batchItemFailures"] == []
    assert ingest.store.get_image(ref) is not None

    # The published delete sample (direct invocation), pointed at our object.
    removal = published("powertools__s3EventDeleteObject.json")
    removed = ingest.delete(key)
    removal["Records"][0]["s3"]["bucket"]["name"] = ingest.bucket
    removal["Records"][0]["s3"]["object"].update(key=quote_plus(key, safe="/"), sequencer=removed.sequencer)
    assert ingest.invoke(removal) == {"processed": 1}
    assert ingest.store.get_image(ref) is None

    # The object is uploaded again, but a late, older create (before the delete) arrives first:
    # it must not resurrect the row, even though the object exists again.
    again = ingest.upload(key, photos[4].jpeg_bytes(max_side=280))
    assert ingest.invoke(ingest.sqs_for(created))["batchItemFailures"] == []
    assert ingest.outcomes() == {key: "stale"}
    assert ingest.store.get_image(ref) is None
    # The delete redelivered: still a tombstone. Then the real, newer create lands.
    assert ingest.invoke(ingest.sqs_for(removed, removed=True))["batchItemFailures"] == []
    assert ingest.invoke(ingest.sqs_for(again))["batchItemFailures"] == []
    restored = ingest.store.get_image(ref)
    assert restored is not None
    assert restored.etag == again.etag


def test_eventbridge_created_and_deleted(ingest: Harness, photos: list[SamplePhoto]) -> None:
    key = "products/flowers/rose+red/petal 1.jpg"
    upload = ingest.upload(key, photos[-1].jpeg_bytes(max_side=256))
    created = published("powertools__s3EventBridgeNotificationObjectCreatedEvent.json")
    created["resources"] = [f"arn:aws:s3:::{ingest.bucket}"]
    created["detail"]["bucket"]["name"] = ingest.bucket
    created["detail"]["object"].update(
        key=quote_plus(key, safe="/"), size=upload.size, etag=upload.etag, sequencer=upload.sequencer
    )
    assert ingest.invoke(created) == {"processed": 1}
    stored = ingest.store.get_image(ObjectRef(ingest.bucket, key))
    assert stored is not None
    assert stored.product_id == "rose+red"

    deleted = copy.deepcopy(created)
    removed = ingest.delete(key)
    deleted["detail-type"] = "Object Deleted"
    deleted["detail"]["reason"] = "DeleteObject"
    deleted["detail"]["deletion-type"] = "Permanently Deleted"
    deleted["detail"]["object"] = {"key": quote_plus(key, safe="/"), "sequencer": removed.sequencer}
    assert ingest.invoke(deleted) == {"processed": 1}
    assert ingest.store.get_image(ObjectRef(ingest.bucket, key)) is None


def test_bad_files_are_rejected_once_and_acknowledged(
    ingest: Harness, photos: list[SamplePhoto], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", "200000")
    get_settings.cache_clear()  # settings are read once per container: this is a new one
    good = photos[0].jpeg_bytes(max_side=256)
    noise = Image.fromarray(np.random.default_rng(7).integers(0, 255, (900, 900, 3), dtype=np.uint8))
    too_large = jpeg(noise, quality=95)
    assert len(too_large) > 200_000
    bad_files = {
        "empty": b"",
        "not_an_image": b"name,price\nred shoe,49.90\n" * 20,
        "truncated": good[: len(good) // 2],
        "too_many_pixels": png_declaring(60_000, 60_000),
        "too_large": too_large,
        "unsupported_format": b"8BPS\x00\x01" + bytes(64),  # a PSD header
    }
    uploads = {
        reason: ingest.upload(f"products/bad/{reason}/file.jpg", data) for reason, data in bad_files.items()
    }
    ico = ingest.upload("products/bad/icon/favicon.ico", b"\x00\x00\x01\x00\x01\x00" + bytes(40))
    pdf = ingest.upload("products/bad/pdf/spec.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    fine = ingest.upload("products/good/one/ok.jpg", good)
    event = ingest.sqs_for(*uploads.values(), ico, pdf, fine)

    response = ingest.invoke(event)

    assert response == {"batchItemFailures": []}  # permanent: acknowledged, never retried
    outcomes = ingest.outcomes()
    assert outcomes[fine.key] == "embedded"
    assert {upload.key: outcomes[upload.key] for upload in [*uploads.values(), ico, pdf]} == dict.fromkeys(
        [u.key for u in [*uploads.values(), ico, pdf]], "rejected"
    )
    reasons = {
        line["s3_key"]: line["reason"] for line in ingest.log_lines() if line.get("outcome") == "rejected"
    }
    assert reasons == {
        **{upload.key: reason for reason, upload in uploads.items()},
        ico.key: "unsupported_format",
        pdf.key: "unsupported_format",
    }
    metrics = ingest.metrics()
    assert metrics["ImagesRejected"] == 8
    assert metrics["ImagesRejected_unsupported_format"] == 3
    assert metrics["ImagesEmbedded"] == 1
    recorded = ingest.store.rejections(limit=100)
    assert {(rejection.ref.key, rejection.reason) for rejection in recorded} == set(reasons.items())
    assert ingest.store.count_images() == 1

    # Redelivered (at-least-once): acknowledged again, still one rejection per object.
    assert ingest.invoke(event) == {"batchItemFailures": []}
    assert len(ingest.store.rejections(limit=100)) == 8


def test_missing_objects_and_test_events_are_acknowledged(ingest: Harness, photos: list[SamplePhoto]) -> None:
    present = ingest.upload("products/a/b/here.jpg", photos[5].jpeg_bytes(max_side=200))
    never_uploaded = Upload(
        "products/a/b/never.jpg", "0123456789abcdef0123456789abcdef", 1024, *ingest.clock.next()
    )
    deleted_meanwhile = ingest.upload("products/a/b/gone.jpg", photos[6].jpeg_bytes(max_side=200))
    ingest.delete(deleted_meanwhile.key)
    test_event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-01T12:00:00.000Z",
        "Bucket": ingest.bucket,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    event = ingest.sqs_event(
        test_event,
        *({"Records": [ingest.s3_record(u)]} for u in (present, never_uploaded, deleted_meanwhile)),
    )

    assert ingest.invoke(event) == {"batchItemFailures": []}
    assert ingest.outcomes() == {
        present.key: "embedded",
        never_uploaded.key: "gone",
        deleted_meanwhile.key: "gone",
    }
    assert ingest.store.count_images() == 1
    assert ingest.store.rejections(limit=10) == []


def test_an_unreadable_message_fails_alone(ingest: Harness, photos: list[SamplePhoto]) -> None:
    upload = ingest.upload("products/a/b/ok.jpg", photos[7].jpeg_bytes(max_side=200))
    event = ingest.sqs_event(
        "this is not JSON", {"Records": [ingest.s3_record(upload)]}, {"unexpected": "shape"}
    )
    ids = message_ids(event)
    assert failed_ids(ingest.invoke(event)) == {ids[0], ids[2]}  # retried, then dead-lettered
    assert ingest.store.count_images() == 1


def test_database_restarted_mid_batch_loses_nothing(
    ingest: Harness, photos: list[SamplePhoto], embedded_postgres: EmbeddedPostgres
) -> None:
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server to stop and start it")
    # A warm container: its connection is open.
    warm = ingest.upload("products/warm/w/0.jpg", photos[0].jpeg_bytes(max_side=200))
    assert ingest.invoke(ingest.sqs_for(warm))["batchItemFailures"] == []

    uploads = [
        ingest.upload(f"products/batch/p{i}/{i}.jpg", photos[i].jpeg_bytes(max_side=240)) for i in range(1, 6)
    ]
    removal = ingest.delete(warm.key)
    missing = Upload("products/batch/none/x.jpg", "", 10, *ingest.clock.next())
    event = ingest.sqs_event(
        *({"Records": [ingest.s3_record(upload)]} for upload in uploads),
        {"Records": [ingest.s3_record(removal, removed=True)]},
        {"Records": [ingest.s3_record(missing)]},
    )
    ids = message_ids(event)

    embedded_postgres.stop()  # the database goes away between the container's invocations
    try:
        response = ingest.invoke(event)
        assert failed_ids(response) == set(ids[:6])  # the 5 images and the delete; "gone" is settled
        assert ingest.metrics()["TransientFailures"] == 6
        direct = published("sam-generated__s3_put.json")
        direct["Records"] = [ingest.s3_record(uploads[0])]
        with pytest.raises(ingest.app.RetryLater):  # a direct (async) invocation raises: Lambda retries
            ingest.invoke(direct)
    finally:
        embedded_postgres.start()

    # SQS redelivers the failed messages (only those) to the same warm container.
    retry = copy.deepcopy(event)
    retry["Records"] = [record for record in event["Records"] if record["messageId"] in failed_ids(response)]
    assert ingest.invoke(retry) == {"batchItemFailures": []}
    assert ingest.store.count_images() == 5
    assert all(ingest.store.get_image(ObjectRef(ingest.bucket, upload.key)) for upload in uploads)
    assert ingest.store.get_image(ObjectRef(ingest.bucket, warm.key)) is None


def test_s3_unreachable_is_transient(
    ingest: Harness, photos: list[SamplePhoto], monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = ingest.upload("products/a/b/c.jpg", photos[0].jpeg_bytes(max_side=200))
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: connection refused
    reset_runtime()
    event = ingest.sqs_for(upload)
    assert failed_ids(ingest.invoke(event)) == set(message_ids(event))
    assert ingest.outcomes() == {upload.key: "failed"}


def test_moto_s3_to_sqs_notifications_end_to_end(
    ingest: Harness, photos: list[SamplePhoto], moto_server: str
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"ingest-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    ingest.s3.put_bucket_notification_configuration(
        Bucket=ingest.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    keys = [
        "products/cats/chelsea/the cat.jpg",
        "products/cups/coffee/café+crème.jpg",
        "products/x/y/deleted.jpg",
    ]
    for index, key in enumerate(keys):
        ingest.s3.put_object(Bucket=ingest.bucket, Key=key, Body=photos[index].jpeg_bytes(max_side=256))
    time.sleep(0.05)  # moto's events carry no sequencer: event times must differ
    ingest.s3.delete_object(Bucket=ingest.bucket, Key=keys[2])

    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum('"ObjectRemoved' in m["Body"] for m in messages) < 1:
        received = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        )
        messages += received.get("Messages", [])
    event = {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }
    assert len(event["Records"]) >= 4  # 3 creates + 1 delete (+ moto's s3:TestEvent, if sent)

    assert ingest.invoke(event) == {"batchItemFailures": []}
    outcomes = ingest.outcomes()
    assert outcomes[keys[0]] == outcomes[keys[1]] == "embedded"
    assert outcomes[keys[2]] in {"deleted", "stale"}  # the create of the deleted object found it gone
    stored = ingest.store.get_image(ObjectRef(ingest.bucket, keys[1]))
    assert stored is not None
    assert (stored.product_id, stored.category) == ("coffee", "cups")
    assert ingest.store.get_image(ObjectRef(ingest.bucket, keys[2])) is None
    assert ingest.store.count_images() == 2


def test_database_url_from_a_secrets_manager_secret(
    ingest: Harness,
    photos: list[SamplePhoto],
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    clean_database: str,
) -> None:
    """DATABASE_SECRET_ARN (the deployment's setting) resolves to the RDS secret's URL."""
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(clean_database)
    secrets = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
    secret = {
        "engine": "postgres",
        "username": str(info.get("user") or os.environ.get("USER", "postgres")),
        "password": "p@ss:word/+",
        "host": str(info["host"]),
        "port": int(info.get("port") or 5432),
        "dbname": str(info.get("dbname") or "postgres"),
    }
    arn = secrets.create_secret(Name=f"db-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(secret))["ARN"]
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server)
    reset_runtime()

    upload = ingest.upload("products/a/b/secret.jpg", photos[0].jpeg_bytes(max_side=200))
    assert ingest.invoke(ingest.sqs_for(upload)) == {"batchItemFailures": []}
    assert "DATABASE_URL" not in os.environ  # the secret's URL is the store's, not the environment's
    assert ingest.store.count_images() == 1


def test_a_key_the_database_cannot_hold_fails_alone_and_is_recorded(
    ingest: Harness, photos: list[SamplePhoto]
) -> None:
    """S3 accepts a NUL character in a key; PostgreSQL text does not. That object is recorded as
    rejected (invalid_key) and the rest of its SQS batch, a delete included, lands."""
    data = photos[0].jpeg_bytes(max_side=200)
    good = ingest.upload("products/a/good/front.jpg", data)
    doomed = ingest.upload("products/a/doomed/front.jpg", data)
    assert ingest.invoke(ingest.sqs_for(doomed)) == {"batchItemFailures": []}
    poisoned = ingest.upload("products/a/nul\x00key/front.jpg", data)
    removal = ingest.delete(doomed.key)
    event = ingest.sqs_event(
        {"Records": [ingest.s3_record(good)]},
        {"Records": [ingest.s3_record(poisoned)]},
        {"Records": [ingest.s3_record(removal, removed=True)]},
    )

    assert ingest.invoke(event) == {"batchItemFailures": []}
    assert ingest.store.get_image(ObjectRef(ingest.bucket, good.key)) is not None
    assert ingest.store.get_image(ObjectRef(ingest.bucket, doomed.key)) is None  # the delete landed
    logged = [row for row in ingest.store.rejections() if row.reason == "invalid_key"]
    assert [row.ref.key for row in logged] == ["products/a/nul%00key/front.jpg"]
    assert ingest.outcomes()[poisoned.key] == "rejected"


def test_a_record_the_database_refuses_fails_alone(
    ingest: Harness, photos: list[SamplePhoto], clean_database: str
) -> None:
    """Whatever else PostgreSQL refuses for one record's content (an error no retry of the whole
    batch can fix), only that record's message fails; the rest of the batch is written. The
    refusal is a real one: a CHECK constraint this test adds to the table."""
    with psycopg.connect(clean_database, autocommit=True) as connection:
        connection.execute("ALTER TABLE images ADD CONSTRAINT refuse_one CHECK (product_id <> 'refused')")
    data = photos[0].jpeg_bytes(max_side=200)
    refused = ingest.upload("products/a/refused/front.jpg", data)
    accepted = ingest.upload("products/a/accepted/front.jpg", data)
    event = ingest.sqs_for(refused, accepted)

    assert failed_ids(ingest.invoke(event)) == {event["Records"][0]["messageId"]}
    assert ingest.store.get_image(ObjectRef(ingest.bucket, accepted.key)) is not None
    assert ingest.outcomes() == {refused.key: "failed", accepted.key: "embedded"}


def test_versioned_bucket_delete_of_one_version_keeps_what_s3_still_serves(
    ingest: Harness, photos: list[SamplePhoto]
) -> None:
    """In a versioned bucket, deleting a non-current version must not remove the image S3 still
    serves; deleting the current version makes S3 serve the previous one, which is re-read."""
    ingest.s3.put_bucket_versioning(Bucket=ingest.bucket, VersioningConfiguration={"Status": "Enabled"})
    key = "products/cups/espresso/front.jpg"
    ref = ObjectRef(ingest.bucket, key)
    first = ingest.upload(key, photos[0].jpeg_bytes(max_side=240))
    second = ingest.upload(key, photos[1].jpeg_bytes(max_side=240))
    versions = ingest.s3.list_object_versions(Bucket=ingest.bucket, Prefix=key)["Versions"]
    by_etag = {version["ETag"].strip('"'): version["VersionId"] for version in versions}
    assert ingest.invoke(ingest.sqs_for(first, second))["batchItemFailures"] == []
    current = ingest.store.get_image(ref)
    assert current is not None
    assert current.etag == second.etag

    def delete_version(upload: Upload) -> dict[str, Any]:
        ingest.s3.delete_object(Bucket=ingest.bucket, Key=key, VersionId=by_etag[upload.etag])
        sequencer, event_time = ingest.clock.next()
        record = ingest.s3_record(Upload(key, "", 0, sequencer, event_time), removed=True)
        record["s3"]["object"]["versionId"] = by_etag[upload.etag]
        return ingest.sqs_event({"Records": [record]})

    # The first (non-current) version goes: S3 still serves the second, and so does the index.
    assert ingest.invoke(delete_version(first))["batchItemFailures"] == []
    kept = ingest.store.get_image(ref)
    assert kept is not None
    assert kept.etag == second.etag
    # Put the first back and delete the current (second) version: S3 serves the first again.
    restored = ingest.upload(key, photos[0].jpeg_bytes(max_side=240))
    assert ingest.invoke(ingest.sqs_for(restored))["batchItemFailures"] == []
    versions = ingest.s3.list_object_versions(Bucket=ingest.bucket, Prefix=key)["Versions"]
    by_etag = {version["ETag"].strip('"'): version["VersionId"] for version in versions}
    assert ingest.invoke(delete_version(restored))["batchItemFailures"] == []
    served = ingest.s3.get_object(Bucket=ingest.bucket, Key=key)["ETag"].strip('"')
    now = ingest.store.get_image(ref)
    assert now is not None
    assert now.etag == served == second.etag
    # The last version goes: nothing is served, the image leaves the index.
    assert ingest.invoke(delete_version(second))["batchItemFailures"] == []
    assert ingest.store.get_image(ref) is None


# --- suggested categories (lookalike.store.category_suggestions) ------------------------------


def _suggestion_rows(url: str) -> list[tuple[str, str, float, Any, datetime]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT i.key, s.category, s.confidence, s.ranked, s.updated_at "
            "FROM category_suggestions AS s JOIN images AS i ON i.id = s.image_id ORDER BY i.key"
        ).fetchall()
    return [(str(r[0]), str(r[1]), float(r[2]), r[3], r[4]) for r in rows]


def test_an_upload_without_a_category_gets_a_stored_suggestion(
    ingest: Harness, photos: list[SamplePhoto], clean_database: str
) -> None:
    """Two categorised products per photo and, in the SAME batch, a new photo of the cup without a
    category (a key outside the layout) and a rocket given the category "toys". The cup gets the
    vote of the batch's categorised images; the rocket keeps its category and gets no
    suggestion; a redelivery changes nothing; a later upload with a category wins."""
    uploads = []
    for photo in photos:
        image = photo.open_rgb()
        image.thumbnail((320, 320))
        width, height = image.size
        detail = image.crop((width // 8, height // 8, width * 7 // 8, height * 7 // 8))
        category = CATEGORY_OF[photo.name]
        uploads.append(ingest.upload(f"products/{category}/{photo.name}/front.jpg", jpeg(image)))
        uploads.append(ingest.upload(f"products/{category}/{photo.name}-detail/front.jpg", jpeg(detail, 75)))
    cup = next(photo for photo in photos if photo.name == "coffee").open_rgb()
    cup = cup.crop((cup.width // 5, cup.height // 6, cup.width, cup.height)).rotate(6).resize((300, 220))
    loose = ingest.upload("uploads/new cup.jpg", jpeg(cup, 60))
    rocket = next(photo for photo in photos if photo.name == "rocket").open_rgb()
    toy = ingest.upload("products/toys/toy-rocket/front.jpg", jpeg(rocket.resize((200, 300)), 70))
    event = ingest.sqs_for(*uploads, loose, toy)

    assert ingest.invoke(event)["batchItemFailures"] == []
    assert set(ingest.outcomes().values()) == {"embedded"}
    rows = _suggestion_rows(clean_database)
    assert [(key, category) for key, category, *_ in rows] == [(loose.key, "food")]
    confidence, ranked = rows[0][2], rows[0][3]
    assert 0.0 < confidence <= 1.0
    assert ranked[0] == {"category": "food", "confidence": pytest.approx(confidence, abs=1e-4)}
    assert [item["confidence"] for item in ranked] == sorted(
        (item["confidence"] for item in ranked), reverse=True
    )
    toy_image = ingest.store.get_image(ObjectRef(ingest.bucket, toy.key))
    assert toy_image is not None
    assert toy_image.category == "toys"
    loose_image = ingest.store.get_image(ObjectRef(ingest.bucket, loose.key))
    assert loose_image is not None
    assert loose_image.category is None

    listed = uncategorised_images(ingest.store, after=None, limit=10)
    assert [(image.ref.key, image.suggestions[0].category) for image in listed] == [(loose.key, "food")]
    assert listed[0].model_version == get_search().active_model().version  # type: ignore[union-attr]

    # At least once: the same delivery again writes nothing new.
    assert ingest.invoke(event)["batchItemFailures"] == []
    assert _suggestion_rows(clean_database) == rows

    # The shop files the photo: a later upload with a category wins, and the suggestion goes.
    filed = ingest.upload(loose.key, jpeg(cup, 60), {"category": "cups", "product-id": "cup-7"})
    assert ingest.invoke(ingest.sqs_for(filed))["batchItemFailures"] == []
    filed_image = ingest.store.get_image(ObjectRef(ingest.bucket, loose.key))
    assert filed_image is not None
    assert filed_image.category == "cups"
    assert _suggestion_rows(clean_database) == []
    assert uncategorised_images(ingest.store, after=None, limit=10) == []


def test_an_upload_without_a_category_and_nothing_to_vote_is_listed_without_a_suggestion(
    ingest: Harness, photos: list[SamplePhoto], clean_database: str
) -> None:
    loose = ingest.upload("loose.jpg", photos[0].jpeg_bytes(max_side=200))
    assert ingest.invoke(ingest.sqs_for(loose))["batchItemFailures"] == []
    assert _suggestion_rows(clean_database) == []
    listed = uncategorised_images(ingest.store, after=None, limit=10)
    assert [(image.ref.key, image.suggestions, image.model_version) for image in listed] == [
        ("loose.jpg", [], None)
    ]


def test_a_suggestion_the_database_refuses_fails_only_its_own_record(
    ingest: Harness, photos: list[SamplePhoto], clean_database: str
) -> None:
    """Per-record isolation holds for the suggestion step too: a refusal (a real CHECK constraint
    this test adds) fails the one uncategorised image's message, for a retry; the rest of the
    batch is written and acknowledged."""
    with psycopg.connect(clean_database, autocommit=True) as connection:
        connection.execute(
            "ALTER TABLE category_suggestions ADD CONSTRAINT refuse_one CHECK (category <> 'food')"
        )
    coffee = next(photo for photo in photos if photo.name == "coffee")
    chelsea = next(photo for photo in photos if photo.name == "chelsea")
    known = ingest.upload("products/food/coffee/front.jpg", coffee.jpeg_bytes(max_side=300))
    cat = ingest.upload("products/animals/chelsea/front.jpg", chelsea.jpeg_bytes(max_side=300))
    assert ingest.invoke(ingest.sqs_for(known, cat))["batchItemFailures"] == []
    loose_cup = ingest.upload("loose/cup.jpg", coffee.jpeg_bytes(max_side=250, quality=60))
    loose_cat = ingest.upload("loose/cat.jpg", chelsea.jpeg_bytes(max_side=250, quality=60))
    event = ingest.sqs_for(loose_cup, loose_cat)

    assert failed_ids(ingest.invoke(event)) == {event["Records"][0]["messageId"]}
    assert ingest.outcomes() == {loose_cup.key: "failed", loose_cat.key: "embedded"}
    assert [(key, category) for key, category, *_ in _suggestion_rows(clean_database)] == [
        (loose_cat.key, "animals")
    ]
