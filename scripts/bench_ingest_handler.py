"""Time per image inside the ingest handler: a batch of 10 JPEGs of ~1.5 MP, one thread.

Runs the real handler (`functions/ingest/app.py`, through `lambda_handler`) against moto's S3
server on 127.0.0.1 and a throwaway embedded PostgreSQL, INFERENCE_THREADS=1, and repeats the
batch N times (new keys each time, so every repetition really inserts). Prints one line per
repetition and, last, a JSON line with the median milliseconds per image, split into S3 read,
decode, inference, database write and total (the handler's wall time: parsing, logging and
metrics included).

    .venv/bin/python scripts/bench_ingest_handler.py [--repeat 9] [--megapixels 1.5]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--megapixels", type=float, default=1.5)
    arguments = parser.parse_args()

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "INFERENCE_THREADS": "1",
            "POWERTOOLS_METRICS_NAMESPACE": "LookalikeBench",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    import boto3
    from moto.server import ThreadedMotoServer
    from PIL import Image

    from lookalike.settings import get_settings
    from lookalike_aws.runtime import get_store, reset_runtime
    from lookalike_local.embedded_db import EmbeddedPostgres
    from lookalike_local.samples import sample_photos

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["S3_ENDPOINT_URL"] = endpoint
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    database = EmbeddedPostgres(scratch / "pg")
    os.environ["DATABASE_URL"] = database.start()
    get_settings.cache_clear()
    try:
        get_store().migrate()
        app = _load_handler()
        sink = io.StringIO()
        for handler in app.logger.handlers:
            handler.setStream(sink)

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = "bench-photos"
        s3.create_bucket(Bucket=bucket)
        jpegs = []
        for photo in sample_photos()[:BATCH]:
            image = photo.open_rgb()
            scale = (arguments.megapixels * 1e6 / (image.width * image.height)) ** 0.5
            image = image.resize(
                (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
            )
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            jpegs.append((photo.name, image.size, buffer.getvalue()))

        template = json.loads((REPO_ROOT / "events" / "powertools__s3SqsEvent.json").read_text())
        put = json.loads((REPO_ROOT / "events" / "sam-generated__s3_put.json").read_text())["Records"][0]
        runs: list[dict[str, float]] = []
        for repetition in range(arguments.repeat + 1):  # the first one warms caches: not counted
            records = []
            for index, (name, _, data) in enumerate(jpegs):
                key = f"products/bench/{name}/{repetition}.jpg"
                etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
                record = copy.deepcopy(put)
                record["s3"]["bucket"]["name"] = bucket
                record["s3"]["object"].update(
                    key=quote_plus(key, safe="/"),
                    size=len(data),
                    eTag=etag,
                    sequencer=f"{repetition * 100 + index + 1:018X}",
                )
                message = copy.deepcopy(template["Records"][0])
                message["messageId"] = str(uuid.uuid4())
                message["body"] = json.dumps({"Records": [record]})
                records.append(message)
            sink.seek(0)
            sink.truncate()
            started = time.perf_counter()
            with contextlib.redirect_stdout(sink):  # the metrics' EMF lines
                response = app.lambda_handler({"Records": records}, _Context())
            total_ms = (time.perf_counter() - started) * 1000
            assert response == {"batchItemFailures": []}, response
            summary = next(
                json.loads(line) for line in sink.getvalue().splitlines() if '"batch done"' in line
            )
            assert summary["images_in_inference"] == BATCH, summary
            phases = summary["timings_ms"]
            run = {name.removesuffix("_ms"): value / BATCH for name, value in phases.items()}
            run["total"] = total_ms / BATCH
            if repetition > 0:
                runs.append(run)
                print(
                    f"repetition {repetition}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()),
                    flush=True,
                )

        sizes = sorted({size for _, size, _ in jpegs})
        result: dict[str, Any] = {
            "batch": BATCH,
            "repeat": arguments.repeat,
            "inference_threads": 1,
            "model_version": app.get_embedder().model_version,
            "cpu_count": os.cpu_count(),
            "image_sizes": [f"{width}x{height}" for width, height in sizes],
            "mean_jpeg_bytes": round(statistics.mean(len(data) for _, _, data in jpegs)),
            "median_ms_per_image": {
                name: round(statistics.median(run[name] for run in runs), 2) for name in runs[0]
            },
        }
        print(json.dumps(result))
    finally:
        with contextlib.suppress(Exception):
            reset_runtime()
        database.stop()
        moto.stop()


class _Context:
    function_name = "lookalike-ingest-bench"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:lookalike-ingest-bench"
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _load_handler() -> Any:
    from lookalike_local.lambda_runtime import load_module

    return load_module(REPO_ROOT / "functions" / "ingest" / "app.py", "lookalike_ingest_app_bench")


if __name__ == "__main__":
    main()
