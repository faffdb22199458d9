"""Ingest as Lambda scales out: N ingest handler processes against one database, images/s and
database connections per N.

    .venv/bin/python scripts/bench_ingest_scaling.py [--concurrency 1,2,4,8] [--images 80]

One moto server (S3 + SQS, provisioned like template.yaml: bucket notification -> ingest queue),
one embedded PostgreSQL. For each N: IMAGES distinct ~1 MP JPEGs are uploaded (S3 puts them on
the queue as ObjectCreated notifications), N worker processes start, each a Lambda execution
environment: it imports the real ingest function (`functions/ingest/app.py`, the template's
environment) and warms its model (the cold start, not timed), then drains the queue with the
local SQS event source (`lookalike_local.sqs_pump`: the template's BatchSize and batching
window). The clock runs from the moment every worker is warm until every image is stored; the
parent samples pg_stat_activity every 50 ms for the peak of client connections to the database.
Each worker is a separate process (Lambda runs one event at a time per environment, each with
its own connection), so on this machine they share its CPUs: the report says where images/s
stops growing.

Last line, JSON: {"cpus", "images", "results": [{"workers", "images_per_s", "peak_connections",
"connections_per_worker", ...}], ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))


def worker(
    environment: dict[str, str], queue_url: str, queue_arn: str, ready: Any, go: Event, stop: Event
) -> None:
    """One execution environment: import (cold start), warm up, then pump until told to stop."""
    os.environ.update(environment)
    from lookalike_local.lambda_runtime import LocalFunction, load_module
    from lookalike_local.moto_stack import sqs_client
    from lookalike_local.sqs_pump import SqsEventPump
    from lookalike_local.template import load_topology

    topology = load_topology(REPO_ROOT / "template.yaml")
    assert topology.ingest is not None
    module = load_module(topology.ingest.handler_file, "lookalike_ingest_app_scaling")
    sink = io.StringIO()
    for handler in module.logger.handlers:
        handler.setStream(sink)  # the per-batch log lines: not this report's
    module.get_embedder()  # the model session: part of the cold start
    function = LocalFunction(
        topology.ingest.logical_id,
        module.lambda_handler,
        memory_mb=topology.ingest.memory_mb,
        timeout_s=topology.ingest.timeout_s,
    )
    pump = SqsEventPump(
        sqs_client(environment["S3_ENDPOINT_URL"]),
        queue_url=queue_url,
        queue_arn=queue_arn,
        invoke=function.invoke,
        batch_size=topology.batch_size,
        batching_window_s=topology.batching_window_s,
        report_batch_item_failures=True,
    )
    ready.release()
    go.wait()
    with contextlib.redirect_stdout(sink):
        while not stop.is_set():
            pump.pump_once()
            sink.seek(0)
            sink.truncate()


def sample(monitor: psycopg.Connection[Any]) -> tuple[int, int]:
    """(images stored, client connections to the database), this monitor's own excluded."""
    row = monitor.execute(
        "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid())"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,2,4,8", help="worker processes per round")
    parser.add_argument("--images", type=int, default=80, help="images per round")
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    arguments = parser.parse_args(argv)
    rounds = [int(value) for value in arguments.concurrency.split(",") if value.strip()]

    from bench_ingest import make_jpegs

    from lookalike.settings import get_settings
    from lookalike_aws.runtime import get_store, reset_runtime
    from lookalike_local.catalogue import KEY_PREFIX
    from lookalike_local.embedded_db import EmbeddedPostgres
    from lookalike_local.moto_stack import MotoServer, provision, s3_client, use_local_aws
    from lookalike_local.template import load_topology

    load_average = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load_average[0]:.2f}", flush=True)
    topology = load_topology(REPO_ROOT / "template.yaml")
    assert topology.ingest is not None
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-scaling-"))
    moto = MotoServer()
    database = EmbeddedPostgres(scratch / "pg")
    results = []
    monitor: psycopg.Connection[Any] | None = None
    try:
        endpoint = moto.start()
        use_local_aws(endpoint)
        provisioned = provision(endpoint, topology)
        url = database.start()
        os.environ["DATABASE_URL"] = url
        os.environ.pop("DATABASE_SECRET_ARN", None)
        get_settings.cache_clear()
        get_store().migrate()
        reset_runtime()  # the parent holds no connection but the monitor's
        monitor = psycopg.connect(url, autocommit=True)
        row = monitor.execute("SELECT current_setting('max_connections')::int").fetchone()
        max_connections = int(row[0]) if row else 0
        environment = {
            **topology.ingest.environment,
            **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
            "S3_ENDPOINT_URL": endpoint,
            "DATABASE_URL": url,
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        environment.pop("DATABASE_SECRET_ARN", None)
        jpegs = make_jpegs(arguments.images, arguments.megapixels)
        s3 = s3_client(endpoint)
        context = multiprocessing.get_context("spawn")
        stored_before = 0
        for workers in rounds:
            for index, data in enumerate(jpegs):  # queued before the workers start (a backlog)
                key = f"{KEY_PREFIX}scaling/n{workers}/p{index:05d}.jpg"
                s3.put_object(Bucket=provisioned.bucket, Key=key, Body=data, ContentType="image/jpeg")
            ready, go, stop = context.Semaphore(0), context.Event(), context.Event()
            processes = [
                context.Process(
                    target=worker,
                    args=(environment, provisioned.queue_url, provisioned.queue_arn, ready, go, stop),
                )
                for _ in range(workers)
            ]
            cold_started = time.perf_counter()
            for process in processes:
                process.start()
            for _ in processes:
                if not ready.acquire(timeout=arguments.timeout):
                    raise SystemExit("a worker did not start")
            cold_s = time.perf_counter() - cold_started
            expected = stored_before + arguments.images
            peak = 0
            started = time.perf_counter()
            go.set()
            deadline = time.monotonic() + arguments.timeout
            while True:
                stored, connected = sample(monitor)
                peak = max(peak, connected)
                if stored >= expected:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out: {stored - stored_before} of {arguments.images} stored")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop.set()
            for process in processes:
                process.join(60)
            stored_before = expected
            entry = {
                "workers": workers,
                "images_per_s": round(arguments.images / elapsed, 2),
                "seconds": round(elapsed, 1),
                "peak_connections": peak,
                "connections_per_worker": round(peak / workers, 2),
                "cold_start_all_workers_s": round(cold_s, 1),
            }
            results.append(entry)
            print(json.dumps(entry), flush=True)
    finally:
        if monitor is not None:
            monitor.close()
        database.stop()
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    best = max(results, key=lambda entry: entry["images_per_s"])
    report = {
        "cpus": os.cpu_count(),
        "images": arguments.images,
        "megapixels": arguments.megapixels,
        "batch_size": topology.batch_size,
        "inference_threads": topology.ingest.environment.get("INFERENCE_THREADS"),
        "results": results,
        "peak_images_per_s": best["images_per_s"],
        "peak_at_workers": best["workers"],
        "max_connections_local": max_connections,
        "load_average_at_start": round(load_average[0], 2),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
