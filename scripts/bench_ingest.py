"""Ingest throughput through the local stack: S3 upload -> SQS -> event pump -> ingest handler -> Postgres.

    .venv/bin/python scripts/bench_ingest.py [--images 500] [--megapixels 1.0] [--batch-size 10]
                                             [--threads 1] [--variant fp32] [--out docs/bench/ingest.json]

Starts `lookalike_local.stack.LocalStack` (moto S3 + SQS wired like template.yaml, the Lambda-like
SQS event pump, the real `functions/ingest/app.py`, a throwaway embedded PostgreSQL in a scratch
folder) and pushes IMAGES distinct ~1 MP JPEGs (real photos from scikit-image / scikit-learn, each
cropped, mirrored and recoloured differently, made before the clock starts) through it twice:

1. drain: the pump is paused while the images are uploaded (S3 -> SQS notifications queue up),
   then it is started and the clock runs until every image is in the store. This is the ingest
   side's capacity: SQS receive, the handler (S3 GET, decode, one ONNX call per batch, upsert),
   SQS delete.
2. end to end: another IMAGES images (new keys) are uploaded while the pump runs; the clock runs
   from the first PUT to the last row stored. Uploads compete for the same 2 vCPUs here, which a
   real deployment's clients would not.

Per-stage medians come from the handler's own "batch done" log line (Powertools JSON; its
timings_ms per phase are divided by the images in the batch). The handler runs with the template's
settings (BatchSize, batching window, INFERENCE_THREADS, MODEL_VARIANT) unless overridden.
Last line, JSON: {"images", "drain_images_per_s", "end_to_end_images_per_s",
"stage_median_ms_per_image", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_jpegs(count: int, megapixels: float, seed: int = 7) -> list[bytes]:
    """Distinct ~megapixels JPEGs: a random crop of a real photo, maybe mirrored, recoloured."""
    from lookalike_local.samples import sample_photos

    photos = [photo.open_rgb() for photo in sample_photos()]
    rng = np.random.default_rng(seed)
    jpegs = []
    for index in range(count):
        image = photos[index % len(photos)]
        side = float(rng.uniform(0.6, 1.0)) ** 0.5
        width, height = round(image.width * side), round(image.height * side)
        left = int(rng.integers(0, image.width - width + 1))
        top = int(rng.integers(0, image.height - height + 1))
        view = image.crop((left, top, left + width, top + height))
        if rng.random() < 0.5:
            view = ImageOps.mirror(view)
        view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.8, 1.2)))
        scale = (megapixels * 1e6 / (view.width * view.height)) ** 0.5
        view = view.resize((round(view.width * scale), round(view.height * scale)), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        view.save(buffer, format="JPEG", quality=int(rng.integers(85, 93)))
        jpegs.append(buffer.getvalue())
    return jpegs


class BatchLog(io.StringIO):
    """The ingest handler's log stream: keeps the "batch done" summaries, drops the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if '"batch done"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    self.batches.append(json.loads(line))
        return len(text)


def stage_medians(batches: list[dict[str, Any]]) -> dict[str, float]:
    per_image: dict[str, list[float]] = {}
    for batch in batches:
        images = batch.get("images_in_inference") or 0
        if not images:
            continue
        for name, value in batch["timings_ms"].items():
            per_image.setdefault(name.removesuffix("_ms"), []).append(value / images)
    return {name: round(statistics.median(values), 2) for name, values in per_image.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, help="SQS BatchSize (default: the template's)")
    parser.add_argument("--batching-window", type=float, help="seconds (default: the template's)")
    parser.add_argument("--threads", type=int, help="INFERENCE_THREADS (default: the template's)")
    parser.add_argument("--variant", choices=("fp32", "int8"), help="MODEL_VARIANT (default: the template's)")
    parser.add_argument("--upload-threads", type=int, default=4, help="concurrent PUTs (end-to-end phase)")
    parser.add_argument(
        "--upload-rate",
        type=float,
        help="end-to-end phase: PUTs per second, paced (default: as fast as the upload threads go)",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    started_at = datetime.now(UTC)

    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ["LOOKALIKE_DATA_DIR"] = str(scratch)  # a throwaway embedded PostgreSQL, stopped at the end
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # EMF lines are CloudWatch's business

    from lookalike.settings import get_settings
    from lookalike_aws.runtime import get_store
    from lookalike_local.catalogue import KEY_PREFIX
    from lookalike_local.lambda_runtime import LocalFunction
    from lookalike_local.stack import LocalStack

    get_settings.cache_clear()
    print(
        f"making {arguments.images} JPEGs of ~{arguments.megapixels} MP (each is uploaded twice) ...",
        flush=True,
    )
    jpegs = make_jpegs(arguments.images, arguments.megapixels)
    stack = LocalStack(http_port=0, log_level="INFO")
    topology = stack.topology
    if arguments.batch_size is not None:
        topology = dataclasses.replace(topology, batch_size=arguments.batch_size)
    if arguments.batching_window is not None:
        topology = dataclasses.replace(topology, batching_window_s=arguments.batching_window)
    if topology.ingest is not None and (arguments.threads or arguments.variant):
        environment = dict(topology.ingest.environment)
        if arguments.threads:
            environment["INFERENCE_THREADS"] = str(arguments.threads)
        if arguments.variant:
            environment["MODEL_VARIANT"] = arguments.variant
        topology = dataclasses.replace(
            topology, ingest=dataclasses.replace(topology.ingest, environment=environment)
        )
    stack.topology = topology

    stack.start()
    try:
        assert stack.pump is not None
        assert stack.ingest is not None
        log = BatchLog()
        ingest_module = sys.modules["lookalike_ingest_app"]
        for handler in ingest_module.logger.handlers:
            handler.setStream(log)
        embedder = ingest_module.get_embedder()
        # The handler's own wall time per invocation (Powertools, parsing, logging included): the
        # rest of the drain time is the event pump's SQS receive/delete and moto serving them.
        handler_ms: list[tuple[int, float]] = []
        invoke = stack.pump._invoke

        def timed_invoke(event: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return invoke(event)
            finally:
                handler_ms.append((len(event["Records"]), (time.perf_counter() - started) * 1000))

        stack.pump._invoke = timed_invoke
        bucket = topology.bucket
        stack.upload_catalogue([])  # switches the S3 -> SQS notification on

        def stored() -> int:
            with LocalFunction.exclusive():
                return int(get_store().count_images())

        def put(index: int, phase: str) -> None:
            key = f"{KEY_PREFIX}bench/p{index // 4:05d}/{phase}-{index:05d}.jpg"
            stack.s3.put_object(Bucket=bucket, Key=key, Body=jpegs[index], ContentType="image/jpeg")

        def wait_for(count: int) -> float:
            deadline = time.monotonic() + arguments.timeout
            while stored() < count:
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out: {stored()} of {count} images stored")
                time.sleep(0.05)
            return time.perf_counter()

        # 1. drain
        stack.pump.stop()
        upload_started = time.perf_counter()
        for index in range(arguments.images):
            put(index, "drain")
        upload_s = time.perf_counter() - upload_started
        log.batches.clear()
        handler_ms.clear()
        pump_stats_before = dataclasses.replace(stack.pump.stats)
        drain_started = time.perf_counter()
        stack.pump.start()
        drain_s = wait_for(arguments.images) - drain_started
        drain_batches = list(log.batches)
        drain_handler = list(handler_ms)
        drain_invocations = stack.pump.stats.batches - pump_stats_before.batches
        rate = arguments.images / drain_s
        print(
            f"drain: {arguments.images} images in {drain_s:.2f} s = {rate:.1f} images/s "
            f"({drain_invocations} invocations; uploading them took {upload_s:.2f} s, "
            f"{arguments.images / upload_s:.0f} PUT/s)",
            flush=True,
        )

        # 2. end to end, uploads while the pump runs
        from concurrent.futures import ThreadPoolExecutor

        log.batches.clear()
        handler_ms.clear()
        e2e_started = time.perf_counter()
        if arguments.upload_rate:
            # Paced like a steady stream of uploads: the queue stays shallow when ingest keeps up.
            for index in range(arguments.images):
                delay = e2e_started + index / arguments.upload_rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                put(index, "e2e")
        else:
            with ThreadPoolExecutor(arguments.upload_threads) as pool:
                list(pool.map(lambda index: put(index, "e2e"), range(arguments.images)))
        e2e_uploaded = time.perf_counter() - e2e_started
        e2e_s = wait_for(2 * arguments.images) - e2e_started
        e2e_batches = list(log.batches)
        rate = arguments.images / e2e_s
        print(
            f"end to end: {arguments.images} images in {e2e_s:.2f} s = {rate:.1f} images/s "
            f"(uploads done after {e2e_uploaded:.2f} s)",
            flush=True,
        )
        failed = stack.pump.stats.failed
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    drain_stages = stage_medians(drain_batches)
    handler_total_ms = sum(ms for _, ms in drain_handler)
    drain_stages["handler_total"] = round(statistics.median(ms / count for count, ms in drain_handler), 2)
    # Drain time outside the handler, per image: SQS receive + delete through moto, pump waits.
    drain_stages["outside_handler"] = round((drain_s * 1000 - handler_total_ms) / arguments.images, 2)
    e2e_stages = stage_medians(e2e_batches)
    batch_sizes = [batch.get("images_in_inference", 0) for batch in drain_batches + e2e_batches]
    print(f"drain stage medians, ms per image: {drain_stages}", flush=True)
    print(f"end-to-end stage medians, ms per image: {e2e_stages}", flush=True)
    result: dict[str, Any] = {
        "images": arguments.images,
        "megapixels": arguments.megapixels,
        "mean_jpeg_kb": round(statistics.mean(len(data) for data in jpegs) / 1024, 1),
        "batch_size": topology.batch_size,
        "batching_window_s": topology.batching_window_s,
        "model_version": embedder.model_version,
        "inference_threads": embedder.threads,
        "drain_images_per_s": round(arguments.images / drain_s, 1),
        "end_to_end_images_per_s": round(arguments.images / e2e_s, 1),
        "median_images_per_invocation": statistics.median(batch_sizes) if batch_sizes else None,
        "stage_median_ms_per_image": drain_stages,
        "end_to_end_stage_median_ms_per_image": e2e_stages,
        "messages_failed": failed,
        "upload_rate": arguments.upload_rate,
    }
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": started_at.isoformat(timespec="seconds"),
            "command": "scripts/bench_ingest.py " + " ".join(sys.argv[1:]),
            "cpu_count": os.cpu_count(),
            "load_average_after": os.getloadavg(),
            "upload_puts_per_s_pump_paused": round(arguments.images / upload_s, 1),
            "result": result,
        }
        arguments.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
