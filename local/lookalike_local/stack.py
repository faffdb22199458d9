"""The whole service on one machine, without Docker: what `make demo` starts and stops.

embedded PostgreSQL (pgvector)  <-  ingest handler  <-  event pump  <-  SQS (moto)  <-  S3 (moto)
                                <-  query handler   <-  local API Gateway (HTTP API v2 events) on :3000

Everything runs in this process except PostgreSQL (the embedded server's own processes).
`LocalStack.stop()` stops everything `start()` started, including PostgreSQL when it was not
already running.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lookalike.images import ImageRejected, decode_image
from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import ObjectRef
from lookalike.settings import get_settings
from lookalike.store import Store
from lookalike_aws.runtime import get_store, reset_runtime
from lookalike_local.catalogue import KEY_PREFIX, CatalogueObject
from lookalike_local.embedded_db import EmbeddedPostgres, ensure_database_url
from lookalike_local.http_api import LocalApiGateway, LocalHttpServer
from lookalike_local.lambda_runtime import LocalFunction, load_handler
from lookalike_local.moto_stack import (
    MotoServer,
    Provisioned,
    enable_notifications,
    provision,
    s3_client,
    sqs_client,
    use_local_aws,
)
from lookalike_local.settings import REPO_ROOT, TEMPLATE, data_dir, embedded_pgdata
from lookalike_local.sqs_pump import SqsEventPump
from lookalike_local.template import FunctionSpec, Topology, load_topology

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


# Local stand-ins for what the template or AWS provides; the template's own values win where it
# sets them, except these, which must point at local things.
_LOCAL_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
    "POWERTOOLS_METRICS_NAMESPACE": "Lookalike",
    "POWERTOOLS_DEV": "false",
}
# CloudWatch EMF lines on stdout are for CloudWatch, not for a person at the console.
_QUIET_ENV = {"POWERTOOLS_METRICS_DISABLED": "true"}


@dataclass(slots=True)
class ObjectState:
    key: str
    state: str  # "pending" | "embedded" | "rejected"
    product_id: str | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class IngestProgress:
    uploaded: int = 0
    skipped: int = 0  # already embedded with the same ETag: put back silently, not re-ingested
    keys: list[str] = field(default_factory=list)


def _handler_spec(topology_spec: FunctionSpec | None, folder: str) -> FunctionSpec:
    """The template's function, or the repository's handler with Lambda-like defaults."""
    if topology_spec is not None:
        return topology_spec
    return FunctionSpec(
        logical_id=f"{folder.capitalize()}Function",
        code_dir=REPO_ROOT / "functions" / folder,
        handler_module="app",
        handler_name="lambda_handler",
        timeout_s=30,
        memory_mb=1024,
        environment={"POWERTOOLS_SERVICE_NAME": f"lookalike-{folder}"},
    )


class LocalStack:
    def __init__(
        self,
        *,
        http_host: str = "127.0.0.1",
        http_port: int = 3000,
        moto_port: int = 0,
        template: Path = TEMPLATE,
        log_level: str = "WARNING",
    ) -> None:
        self.http_host = http_host
        self.http_port = http_port
        self.topology: Topology = load_topology(template)
        self._moto = MotoServer(moto_port)
        self._log_level = log_level
        self._started_postgres: EmbeddedPostgres | None = None
        self._http: LocalHttpServer | None = None
        self.pump: SqsEventPump | None = None
        self.provisioned: Provisioned | None = None
        self.ingest: LocalFunction | None = None
        self.query: LocalFunction | None = None
        self._s3: S3Client | None = None
        self._thumbnails: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._thumbnail_lock = threading.Lock()
        self.progress = IngestProgress()

    # -- start / stop -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._http.url if self._http is not None else f"http://{self.http_host}:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        return data_dir()

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            raise RuntimeError("the stack is not started")
        return self._s3

    def start(self) -> None:
        """Database, S3 + SQS, handlers, event pump, HTTP server; stops what started if one fails."""
        try:
            self._start_database()
            endpoint = self._moto.start()
            use_local_aws(endpoint)
            self._s3 = s3_client(endpoint)
            # Notifications come on after the catalogue's already-embedded objects are back in place.
            self.provisioned = provision(endpoint, self.topology, notify=False)
            os.environ["BUCKET_NAME"] = self.provisioned.bucket
            self.ingest = self._load(_handler_spec(self.topology.ingest, "ingest"), "lookalike_ingest_app")
            self.query = self._load(_handler_spec(self.topology.query, "query"), "lookalike_query_app")
            self.pump = SqsEventPump(
                sqs_client(endpoint),
                queue_url=self.provisioned.queue_url,
                queue_arn=self.provisioned.queue_arn,
                invoke=self.ingest.invoke,
                batch_size=self.topology.batch_size,
                batching_window_s=self.topology.batching_window_s,
                report_batch_item_failures=self.topology.report_batch_item_failures,
            )
            self.pump.start()
            gateway = LocalApiGateway(self.query.invoke, self.topology.routes, self)
            self._http = LocalHttpServer(self.http_host, self.http_port, gateway)
            self._http.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything start() started, the last started first; safe to call twice."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self.pump is not None:
            self.pump.stop()
            self.pump = None
        self._moto.stop()
        self._close_store()
        if self._started_postgres is not None:
            self._started_postgres.stop()
            self._started_postgres = None

    def _start_database(self) -> None:
        settings = get_settings()
        if settings.database_url is None and not (embedded_pgdata() / "postmaster.pid").exists():
            # Ours to stop on exit (a server that was already running is left as it was).
            self._started_postgres = EmbeddedPostgres(embedded_pgdata())
        ensure_database_url()
        # What a deployment does once: create or upgrade the schema (idempotent).
        with LocalFunction.exclusive():
            self._store().migrate()
            ensure_active_model(self._store(), get_settings())

    def _load(self, spec: FunctionSpec, module_name: str) -> LocalFunction:
        if not spec.handler_file.is_file():
            raise FileNotFoundError(f"{spec.handler_file} is missing: the local stack runs the real handlers")
        os.environ.update(spec.environment)
        os.environ.update(_LOCAL_ENV)
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", self._log_level)
        if self._log_level != "INFO":
            os.environ.update(_QUIET_ENV)
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = spec.logical_id
        os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(spec.memory_mb)
        get_settings.cache_clear()
        handler = load_handler(spec.handler_file, module_name, spec.handler_name)
        return LocalFunction(spec.logical_id, handler, memory_mb=spec.memory_mb, timeout_s=spec.timeout_s)

    # -- the store, from this process (under the handlers' lock: they share its connection) -----
    @staticmethod
    def _store() -> Store:
        return get_store()

    @staticmethod
    def _close_store() -> None:
        with LocalFunction.exclusive():
            reset_runtime()

    def object_states(self, keys: list[str]) -> list[ObjectState]:
        bucket = self.topology.bucket
        with LocalFunction.exclusive():
            store = self._store()
            rejected = {
                rejection.ref.key: rejection
                for rejection in store.rejections(limit=1000)
                if rejection.ref.bucket == bucket
            }
            states = []
            for key in keys:
                image = store.get_image(ObjectRef(bucket, key))
                if image is not None:
                    states.append(ObjectState(key, "embedded", product_id=image.product_id))
                elif key in rejected:
                    rejection = rejected[key]
                    states.append(
                        ObjectState(key, "rejected", reason=rejection.reason, detail=rejection.detail)
                    )
                else:
                    states.append(ObjectState(key, "pending"))
        return states

    def _embedded_etags(self, keys: list[str]) -> dict[str, str]:
        """ETags of the objects embedded with the current model version: an object embedded by
        another model (e.g. after MODEL_VARIANT changed) goes through ingest again."""
        with LocalFunction.exclusive():
            store = self._store()
            current = get_embedder().model_version
            etags = {}
            for key in keys:
                image = store.get_image(ObjectRef(self.topology.bucket, key))
                if image is not None and image.etag and current in image.model_versions:
                    etags[key] = image.etag.strip('"')
        return etags

    # -- the catalogue ----------------------------------------------------------------------------
    def upload_catalogue(self, objects: list[CatalogueObject]) -> IngestProgress:
        """Put every object into the bucket with its product metadata.

        moto's bucket is empty at each start, so the objects go in again; those the store already
        has with the same ETag go in before the S3 -> SQS notification is switched on and are not
        embedded a second time.
        """
        assert self.provisioned is not None, "start() first"
        bodies = {obj.key: obj.body() for obj in objects}
        known = self._embedded_etags(list(bodies))
        fresh: list[CatalogueObject] = []
        for obj in objects:
            body = bodies[obj.key]
            if known.get(obj.key) == hashlib.md5(body, usedforsecurity=False).hexdigest():
                self._put(obj.key, body, obj.content_type, obj.product_id, obj.category)
                self.progress.skipped += 1
            else:
                fresh.append(obj)
        enable_notifications(self._moto.endpoint_url, self.topology, self.provisioned)
        for obj in fresh:
            self._put(obj.key, bodies[obj.key], obj.content_type, obj.product_id, obj.category)
        self.progress.uploaded += len(objects)
        self.progress.keys += [obj.key for obj in objects]
        return self.progress

    def _put(self, key: str, body: bytes, content_type: str, product_id: str, category: str | None) -> None:
        metadata = {"product-id": product_id} | ({"category": category} if category is not None else {})
        self.s3.put_object(
            Bucket=self.topology.bucket,
            Key=key,
            Body=body,
            ContentType=content_type or "application/octet-stream",
            Metadata=metadata,
        )
        with self._thumbnail_lock:
            for cached in [cached for cached in self._thumbnails if cached[0] == key]:
                del self._thumbnails[cached]

    def wait_until_ingested(self, keys: list[str], timeout_s: float = 300.0) -> list[ObjectState]:
        """Poll the store until every key is embedded or rejected (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.object_states(keys)
            if all(state.state != "pending" for state in states) or time.monotonic() > deadline:
                return states
            time.sleep(0.5)

    # -- local routes of the page (LocalRoutes) -----------------------------------------------------
    def thumbnail(self, key: str, max_side: int) -> bytes | None:
        with self._thumbnail_lock:
            cached = self._thumbnails.get((key, max_side))
        if cached is not None:
            return cached
        try:
            data = self.s3.get_object(Bucket=self.topology.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        try:
            image = decode_image(
                data, max_bytes=get_settings().max_image_bytes, max_pixels=get_settings().max_image_pixels
            ).image
        except ImageRejected:
            image = Image.new("RGB", (max_side, max_side), (236, 236, 236))  # a grey tile for a broken upload
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=82)
        thumbnail = buffer.getvalue()
        with self._thumbnail_lock:
            self._thumbnails[(key, max_side)] = thumbnail
            while len(self._thumbnails) > 512:
                self._thumbnails.popitem(last=False)
        return thumbnail

    def upload(self, product_id: str, category: str, filename: str, body: bytes, content_type: str) -> Any:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).name).strip("-.") or "upload"
        key = f"{KEY_PREFIX}{category}/{product_id}/{int(time.time())}-{stem}"
        self._put(key, body, content_type, product_id, category)
        self.progress.uploaded += 1
        self.progress.keys.append(key)
        return {"bucket": self.topology.bucket, "key": key, "product_id": product_id, "category": category}

    def object_status(self, key: str) -> Any:
        return asdict(self.object_states([key])[0])

    def products(self) -> list[dict[str, Any]]:
        """One entry per product uploaded through the local stack: its first image and ingest state."""
        first: dict[str, str] = {}
        for key in self.progress.keys:
            parts = key.removeprefix(KEY_PREFIX).split("/")
            if len(parts) >= 3:
                first.setdefault(parts[1], key)
        states = {state.key: state for state in self.object_states(list(first.values()))}
        return [
            {"product_id": product_id, "category": key.removeprefix(KEY_PREFIX).split("/")[0], "key": key}
            | {"state": states[key].state, "reason": states[key].reason}
            for product_id, key in first.items()
        ]

    def status(self) -> dict[str, Any]:
        states = self.object_states(self.progress.keys) if self.progress.keys else []
        counts = {
            name: sum(1 for state in states if state.state == name)
            for name in ("embedded", "rejected", "pending")
        }
        pump = self.pump.stats if self.pump is not None else None
        return {
            "uploaded": self.progress.uploaded,
            **counts,
            "batches": pump.batches if pump else 0,
            "retries_pending": pump.failed if pump else 0,
        }

    # -- a search through HTTP, as a client would -----------------------------------------------
    def search_over_http(self, photo: bytes, content_type: str = "image/jpeg") -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
            f"{self.url}/search", data=photo, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
