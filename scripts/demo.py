"""The local stack: the whole service on this machine, without Docker (`make demo`).

    .venv/bin/python scripts/demo.py [--port 3000] [--smoke] [--verbose] [--catalogue NAME]
    make demo                    # stays up until Ctrl-C; open http://127.0.0.1:3000
    make demo ARGS=--smoke       # one pass: upload, wait for ingest, search over HTTP, exit
    make demo ARGS="--catalogue fashion"   # a few hundred Fashion-MNIST packshots (or: stamps)

Starts the embedded PostgreSQL (data in $LOOKALIKE_DATA_DIR, default .data/), S3 + SQS on
127.0.0.1 (moto) wired like template.yaml, the event pump that delivers the queue to the ingest
handler like Lambda's SQS trigger, and the local API Gateway that turns HTTP requests into
HTTP API v2 events for the query handler. Then it uploads the sample catalogue through S3
(--catalogue fashion / stamps: a few hundred labelled images from the Debian packages the
evaluations use, fetched on first use; `lookalike_local.public_catalogues`).

--smoke prints a JSON last line {"uploaded", "embedded", "rejected", "search_ok", "seconds", ...}
and exits 0 when every object was embedded or rejected and the search found the expected product.
Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from lookalike_local.catalogue import CatalogueObject, catalogue, query_photo
from lookalike_local.public_catalogues import CATALOGUES, CatalogueUnavailableError, public_catalogue
from lookalike_local.stack import TEMPLATE, LocalStack


def _result_rows(payload: Any) -> list[dict[str, Any]]:
    """The result rows of a search response (a list, or the first list under a results-like key)."""
    if isinstance(payload, list):
        return [row for row in payload if isinstance(row, dict)]
    if isinstance(payload, dict):
        for key in ("results", "neighbours", "neighbors", "matches", "items"):
            if isinstance(payload.get(key), list):
                return [row for row in payload[key] if isinstance(row, dict)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="HTTP port of the API and the page (default 3000)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smoke", action="store_true", help="run the whole path once and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="--smoke: seconds to wait for ingest")
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE, help="the SAM template to copy the wiring from"
    )
    parser.add_argument("--verbose", action="store_true", help="the handlers' INFO logs and request logs")
    parser.add_argument(
        "--catalogue",
        choices=CATALOGUES,
        default="sample",
        help="what to upload: the small sample catalogue (default, quick), or a few hundred labelled "
        "images of Fashion-MNIST (fashion) or the Tux Paint stamps (stamps), fetched from Debian once",
    )
    args = parser.parse_args(argv)
    try:
        objects, query = load_catalogue(args.catalogue)
    except CatalogueUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    stack = LocalStack(
        http_host=args.host,
        http_port=args.port,
        template=args.template,
        log_level="INFO" if args.verbose else "WARNING",
    )
    summary: dict[str, Any] | None = None
    try:
        stack.start()
        if stack.topology.defaults_used:
            print(
                "note: not read from template.yaml, local defaults used for: "
                + ", ".join(stack.topology.defaults_used),
                file=sys.stderr,
            )
        progress = stack.upload_catalogue(objects)
        print(
            f"Lookalike local stack: open {stack.url}\n"
            f"  API: POST {stack.url}/search (image body), GET {stack.url}/products/{{id}}/similar\n"
            f"  uploaded {progress.uploaded} {args.catalogue} catalogue objects "
            f"to s3://{stack.topology.bucket}/ "
            f"({progress.skipped} already embedded); data in {stack.data_dir}; Ctrl-C stops everything",
            flush=True,
        )
        if not args.smoke:
            stop.wait()
            return 0
        summary = smoke(stack, progress.keys, args.timeout, started, query)
    finally:
        stack.stop()
    # Printed after everything stopped, so that it is the last line.
    print(json.dumps(summary), flush=True)
    return 0 if summary["search_ok"] and summary["pending"] == 0 else 1


def load_catalogue(name: str) -> tuple[list[CatalogueObject], tuple[bytes, str]]:
    """The objects to upload and the smoke search's photo with the product it must find."""
    if name == "sample":
        return catalogue(), query_photo()
    chosen = public_catalogue(name)
    return chosen.objects, (chosen.query_photo, chosen.query_product)


def smoke(
    stack: LocalStack, keys: list[str], timeout_s: float, started: float, query: tuple[bytes, str]
) -> dict[str, Any]:
    states = stack.wait_until_ingested(keys, timeout_s=timeout_s)
    for state in states:
        if state.state == "rejected":
            print(
                f"rejected (as intended for the broken sample): {state.key}: {state.reason}", file=sys.stderr
            )
    photo, expected = query
    status, payload = stack.search_over_http(photo)
    top = [str(row.get("product_id")) for row in _result_rows(payload)[:3]]
    return {
        "uploaded": len(keys),
        "embedded": sum(1 for state in states if state.state == "embedded"),
        "rejected": sum(1 for state in states if state.state == "rejected"),
        "pending": sum(1 for state in states if state.state == "pending"),
        "search_status": status,
        "search_top": top,
        "search_ok": status == 200 and expected in top,
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
