"""A model switch under load, end to end: the real ingest handler (moto S3, SQS-shaped events),
the real ONNX models (the base model, and a second one built from it with a projection to 256-d:
tests/integration/second_model.py), a real PostgreSQL, and the query use cases in threads.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from second_model import model_dir_with_a_second_model

from lookalike.backfill import BackfillModels, EmbedLocally, run_backfill
from lookalike.images import decode_image
from lookalike.ingest import IngestLimits
from lookalike.model.embedder import get_embedder
from lookalike.model_versions import add_model, maintained_embedders
from lookalike.ports import ListedObject
from lookalike.search import SearchResult, search_by_image
from lookalike.settings import get_settings
from lookalike.store import ModelRef, ModelRegistry, RegistryError, SearchParameters, Store, VectorSearch
from lookalike_aws.enqueue import notification_for
from lookalike_aws.runtime import reset_runtime
from lookalike_aws.s3 import S3ObjectLister, S3ObjectSource
from lookalike_local.lambda_runtime import LambdaContext, load_module
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLER_FILE = REPO_ROOT / "functions" / "ingest" / "app.py"
BASE_CARD_VERSION = "efficientnet-lite0-imagenet-2026.11"


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(MODEL_DIR with the base model and the projected one in a subfolder, the projected one).
    The projected model's card claims held-out metrics at least the base model's."""
    evaluation = {"parent": BASE_CARD_VERSION, "before": {"recall@10": 0.8}, "after": {"recall@10": 0.8}}
    return model_dir_with_a_second_model(
        get_settings().model_dir, tmp_path_factory.mktemp("models"), evaluation=evaluation
    )


@dataclass
class Deployment:
    app: ModuleType
    bucket: str
    s3: Any
    store: Store  # the operator's (registry, backfill)
    url: str
    second_model_dir: Path
    uploads: list[str] = field(default_factory=list)

    def upload(self, key: str, body: bytes) -> None:
        """PUT the object, then deliver its notification through the handler (SQS-shaped),
        redelivering what the handler hands back, as SQS would."""
        response = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        listed = ListedObject(key, len(body), response["ETag"].strip('"'), head["LastModified"])
        body_json = json.dumps(notification_for(self.bucket, listed, region="us-east-1"))
        message = {
            "messageId": str(uuid.uuid4()),
            "receiptHandle": "handle",
            "body": body_json,
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:lookalike-ingest",
            "awsRegion": "us-east-1",
        }
        for _ in range(5):
            result = self.app.lambda_handler(
                {"Records": [message]}, LambdaContext("lookalike-ingest", 1024, 60)
            )
            if not result["batchItemFailures"]:
                self.uploads.append(key)
                return
        raise AssertionError(f"{key} was never ingested: {result}")

    def vectors(self) -> dict[tuple[str, str], np.ndarray[Any, Any]]:
        """(key, model version) -> stored vector, for every vector in the store."""
        with psycopg.connect(self.url) as connection:
            register_vector(connection)
            rows = connection.execute(
                "SELECT i.key, m.version, e.embedding FROM embeddings e "
                "JOIN images i ON i.id = e.image_id JOIN models m ON m.id = e.model_id"
            ).fetchall()
        return {(row[0], row[1]): row[2].to_numpy() for row in rows}


@pytest.fixture
def deployment(
    clean_database: str, s3_bucket: str, moto_server: str, model_folders: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Deployment]:  # fmt: skip
    model_dir, second = model_folders
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("DATABASE_URL", clean_database)
    # A service name of its own: Powertools loggers of one name share one logging.Logger, and
    # test_ingest.py reads the log lines of "lookalike-ingest".
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "lookalike-ingest-model-switch")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookalikeTest")
    reset_runtime()
    app = load_module(HANDLER_FILE, f"lookalike_ingest_switch_{uuid.uuid4().hex[:6]}")
    store = Store(clean_database)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    yield Deployment(app, s3_bucket, s3, store, clean_database, second)
    store.close()
    reset_runtime()


def photo_bytes(photo: SamplePhoto) -> bytes:
    return photo.path.read_bytes()


def test_ingest_embeds_each_upload_with_every_maintained_model(
    deployment: Deployment, photos: list[SamplePhoto]
) -> None:
    deployment.upload("products/p0/a.jpg", photo_bytes(photos[0]))  # bootstraps the configured model
    registry = ModelRegistry(deployment.store)
    (base,) = registry.models()
    second = add_model(deployment.store, deployment.second_model_dir)
    assert second.state == "building"
    for index in (1, 2):
        deployment.upload(f"products/p{index}/a.jpg", photo_bytes(photos[index]))
    registry.activate(second.version, allow_partial=True)  # p0 has no vector of it
    deployment.upload("products/p3/a.jpg", photo_bytes(photos[3]))  # the base model is standby now

    stored = deployment.vectors()
    assert set(stored) == {("products/p0/a.jpg", base.version)} | {
        (f"products/p{index}/a.jpg", version)
        for index in (1, 2, 3)
        for version in (base.version, second.version)
    }
    for index in (1, 3):  # each vector is that model's embedding of the photo
        image = decode_image(photo_bytes(photos[index]), max_bytes=10**8, max_pixels=10**9).image
        for version in (base.version, second.version):
            expected = get_embedder(version).embed([image]).vectors[0]
            assert float(expected @ stored[(f"products/p{index}/a.jpg", version)]) > 0.999
    assert stored[("products/p1/a.jpg", second.version)].shape == (256,)


@dataclass
class QueryLog:
    results: list[tuple[int, SearchResult, ModelRef | None, ModelRef | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def test_add_backfill_activate_and_roll_back_while_uploads_and_queries_run(
    deployment: Deployment, photos: list[SamplePhoto]
) -> None:
    """Zero failed queries, zero results from a model that was not active, zero uploads lost or
    left without a vector of the active model."""
    catalogue, fresh = photos[:6], photos[6:]
    for index, photo in enumerate(catalogue):
        deployment.upload(f"products/c{index}/a.jpg", photo_bytes(photo))
    registry = ModelRegistry(deployment.store)
    (base,) = registry.models()
    settings = get_settings()
    stop = threading.Event()
    log = QueryLog()

    def query(worker: int) -> None:
        search = VectorSearch(Store(deployment.url))
        turn = worker
        while not stop.is_set():
            index = turn % len(catalogue)
            turn += 1
            try:
                before = search.active_model()
                result = search_by_image(
                    photo_bytes(catalogue[index]), SearchParameters(k=5), search=search, settings=settings
                )
                after = search.active_model()
            except BaseException as error:  # counted: the test asserts there are none
                log.errors.append(error)
                continue
            log.results.append((index, result, before, after))
        search.store.close()

    def upload_all() -> None:
        for index, photo in enumerate(fresh * 2):
            deployment.upload(f"products/n{index}/a.jpg", photo_bytes(photo))
            time.sleep(0.2)

    threads = [threading.Thread(target=query, args=(worker,)) for worker in range(2)]
    uploader = threading.Thread(target=upload_all)
    for thread in [*threads, uploader]:
        thread.start()
    try:
        second = add_model(deployment.store, deployment.second_model_dir)
        models = BackfillModels(maintained_embedders(deployment.store), target=second.id)
        limits = IngestLimits(settings.max_image_bytes, settings.max_image_pixels)
        source, lister = S3ObjectSource(deployment.s3), S3ObjectLister(deployment.s3)
        work = EmbedLocally(
            source=source, store=deployment.store, models=models, limits=limits, layout=settings.key_layout
        )
        refusals: list[str] = []
        # An upload racing the backfill can leave a gap: backfill again, as an operator would.
        for _ in range(10):
            run_backfill(
                bucket=deployment.bucket,
                prefix="",
                lister=lister,
                work=work,
                models=models,
                store=deployment.store,
            )
            try:
                registry.activate(second.version)
                break
            except RegistryError as refused:
                refusals.append(str(refused))
        assert all("covers" in refusal for refusal in refusals), refusals
        assert registry.get(second.version).state == "active"
        _wait_for(lambda: sum(r.model.id == second.id for _, r, _, _ in log.results) >= 3)
        assert registry.rollback().model.version == base.version
        _wait_for(
            lambda: (
                sum(r.model.id == base.id and r_before == base.ref for _, r, r_before, _ in log.results) >= 3
            )
        )
        uploader.join()
    finally:
        stop.set()
        for thread in [*threads, uploader]:
            thread.join()

    assert log.errors == []
    used = {result.model.version for _, result, _, _ in log.results}
    assert used == {base.version, second.version}
    stored = deployment.vectors()
    for index, result, before, after in log.results:
        assert result.model in {before, after}  # the model active when the query ran
        image = decode_image(photo_bytes(catalogue[index]), max_bytes=10**8, max_pixels=10**9).image
        query_vector = get_embedder(result.model.version).embed([image]).vectors[0]
        assert result.neighbours[0].key == f"products/c{index}/a.jpg"
        for neighbour in result.neighbours:  # drawn from THAT model's vectors
            cosine = float(query_vector @ stored[(neighbour.key, result.model.version)])
            assert neighbour.similarity == pytest.approx(cosine, abs=5e-3)
    assert len(deployment.uploads) == len(catalogue) + 2 * len(fresh)
    active = registry.active()
    assert active is not None
    assert active.version == base.version
    for key in deployment.uploads:  # nothing lost, every upload searchable by the active model
        assert (key, base.version) in stored
    assert active.complete
    assert registry.get(second.version).complete  # the standby stays ready for the next switch


def _wait_for(condition: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
