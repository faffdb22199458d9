"""The query API keeps the contract it serves: schemathesis, every check, through the local gateway.

The real handler behind the local API Gateway (the template's routes, HTTP API v2 events) on
127.0.0.1, the embedded PostgreSQL, a moto bucket; the document is the one served at
/openapi.json. Generation is bounded (`MAX_EXAMPLES` per operation, plus the coverage phase's
boundary cases) so the run stays well under a minute; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, StopReason, events

from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord
from lookalike_aws.runtime import get_store, reset_runtime
from lookalike_local.http_api import LocalApiGateway, LocalHttpServer
from lookalike_local.lambda_runtime import LocalFunction, load_handler
from lookalike_local.samples import SamplePhoto
from lookalike_local.template import load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 30

# Schema-valid is not always acceptable, and no schema can say where: a body for POST /search may
# be well-formed bytes that are no photo, or name an object that does not exist (4xx); a cursor
# for GET /duplicates and GET /uncategorised is an opaque token only the server issues (400 when it
# did not). Every other operation and check keeps schemathesis' defaults.
CONFIG = {
    "generation": {"max-examples": MAX_EXAMPLES},
    # API Gateway answers a method the template does not route with its own 404 before any
    # function runs (as the local gateway does): there is no 405 for the function to give.
    "phases": {"coverage": {"unexpected-methods": []}},
    "operations": [
        {
            "include-path": "/search",
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "413", "415"]}
            },
        },
        {
            "include-path": "/duplicates",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}},
        },
        {
            "include-path": "/uncategorised",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}},
        },
    ],
}


class NoPageHelpers:
    """The local gateway's page helpers (thumbnails, uploads): not part of the API under test."""

    def _not_the_api(self, *_: Any) -> Any:
        raise AssertionError("the contract run called a local page helper")

    thumbnail = upload = object_status = status = products = _not_the_api


def _index(photos: list[SamplePhoto]) -> None:
    """A small real index: searches find products, and their results are checked too."""
    model = ensure_active_model(get_store(), get_settings())  # the configured model, as a deployment does
    embedder = get_embedder(model.version)
    images = [photo.open_rgb() for photo in photos]
    now = datetime.now(UTC)
    records = [
        ImageRecord(
            ref=ObjectRef("contract-photos", f"products/{photo.name}/front.jpg"),
            order=EventOrder(sequencer=None, event_time=now),
            product_id=photo.name,
            category="samples",
            etag=f"etag-{photo.name}",
            size_bytes=None,
            width=image.width,
            height=image.height,
            embeddings={model.id: embedding},
        )
        for photo, image, embedding in zip(photos, images, embedder.embed(images).vectors, strict=True)
    ]
    assert get_store().upsert_images(records) == ["applied"] * len(records)


def _jpeg(photo: SamplePhoto, side: int) -> bytes:
    image = photo.open_rgb()
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def local_api(postgres_url: str, moto_server: str, photos: list[SamplePhoto]) -> Iterator[str]:
    """The query handler behind the local gateway on 127.0.0.1; yields its URL."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        connection.execute("CREATE SCHEMA public")
    bucket = "contract-photos"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DATABASE_URL", postgres_url)
        environment.setenv("S3_ENDPOINT_URL", moto_server)
        environment.setenv("BUCKET_NAME", bucket)
        environment.setenv("POWERTOOLS_SERVICE_NAME", "lookalike-query")
        environment.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookalikeContract")
        environment.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        reset_runtime()
        get_store().migrate()
        _index(photos[:6])
        handler = load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app_contract")
        function = LocalFunction("lookalike-query", handler, memory_mb=1769, timeout_s=10)
        routes = load_topology(REPO_ROOT / "template.yaml").routes
        server = LocalHttpServer("127.0.0.1", 0, LocalApiGateway(function.invoke, routes, NoPageHelpers()))
        server.start()
        # Real photos for image/* bodies: the searches that can succeed do (and are checked).
        photo_bodies = [_jpeg(photo, 256) for photo in photos[:4]]
        schemathesis.openapi.media_type("image/*", st.sampled_from(photo_bodies))
        try:
            yield server.url
        finally:
            server.stop()
            reset_runtime()


def test_every_operation_keeps_the_served_contract(local_api: str) -> None:
    config = SchemathesisConfig.from_dict({**CONFIG, "base-url": local_api})
    schema = schemathesis.openapi.from_url(f"{local_api}/openapi.json", config=config)
    started = time.monotonic()
    problems: list[str] = []
    scenarios = requests = 0
    answered: dict[str, set[int]] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            requests += len(event.recorder.interactions)
            answered.setdefault(event.recorder.label, set()).update(
                i.response.status_code for i in event.recorder.interactions.values() if i.response is not None
            )
            for checks in event.recorder.checks.values():
                problems += [
                    f"{event.recorder.label} [{check.name}] {check.failure_info.failure.title}: "
                    f"{check.failure_info.failure.message[:300]}\n{check.failure_info.code_sample}"
                    for check in checks
                    if check.status == Status.FAILURE and check.failure_info is not None
                ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event}")
        elif isinstance(event, events.EngineFinished):
            assert event.stop_reason == StopReason.COMPLETED, event.stop_reason
            problems += [f"after run: {failure.title}" for failure in event.failures]
    print(f"schemathesis: {scenarios} scenarios, {requests} requests, {time.monotonic() - started:.1f} s")
    assert not problems, "\n\n".join(problems)
    # Every documented operation ran, with a real number of requests (MAX_EXAMPLES bounds the run's
    # length; a wall-clock assertion would fail on a busy machine, not on a broken contract).
    assert scenarios >= 5
    # Bodies were sent as documented: real photos were searched.
    assert all(200 in answered[label] for label in ("POST /search", "GET /health", "GET /duplicates")), (
        answered
    )
    assert requests >= 5 * MAX_EXAMPLES
