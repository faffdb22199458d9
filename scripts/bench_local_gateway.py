"""Latency the local API gateway adds to each keep-alive request: GET /health, p50/p90/p99.

By default four variants of the server run one after the other on 127.0.0.1, so one run
measures the fix: `separate_writes` is http.server's default (head and body written separately,
Nagle's algorithm on: the body waits for the client's delayed ACK), `one_write` the gateway's
handler (head and body in one write, and TCP_NODELAY); `separate_writes_nodelay` and
`one_write_nagle` apply each half of the fix alone. The function behind the gateway answers at
once, so the figures are the gateway's own cost. `--url` measures an already running local
gateway instead (e.g. `make demo`; loopback addresses only).

    .venv/bin/python scripts/bench_local_gateway.py [--requests 200] [--url http://127.0.0.1:8000]

Prints one line per variant and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from lookalike_local.http_api import LocalApiGateway, LocalHttpServer, LocalRequestHandler
from lookalike_local.template import HttpRoute

WARM_UP = 10
TIME_LIMIT_S = 120.0  # per variant: the run stops by itself whatever --requests says


class SeparateWrites(LocalRequestHandler):
    """http.server's defaults: an unbuffered writer (head, then body) and Nagle's algorithm."""

    disable_nagle_algorithm = False
    wbufsize = 0


class SeparateWritesNoDelay(SeparateWrites):
    """Head and body still written separately, but with TCP_NODELAY."""

    disable_nagle_algorithm = True


class OneWriteNagle(LocalRequestHandler):
    """Head and body in one write, Nagle's algorithm left on."""

    disable_nagle_algorithm = False


VARIANTS: dict[str, type[LocalRequestHandler]] = {
    "separate_writes": SeparateWrites,  # before the fix
    "separate_writes_nodelay": SeparateWritesNoDelay,
    "one_write_nagle": OneWriteNagle,
    "one_write": LocalRequestHandler,  # the gateway's handler: one write and TCP_NODELAY
}


class NoPageHelpers:
    """The page's helpers are not on the measured path (GET /health goes to the function)."""

    def _unused(self, *_: Any) -> Any:
        raise RuntimeError("not measured")

    thumbnail = upload = object_status = status = products = _unused


def health(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"status":"ok"}'}


def measure(host: str, port: int, path: str, requests: int) -> dict[str, Any]:
    """Milliseconds per request on one keep-alive connection."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    samples: list[float] = []
    started = time.monotonic()
    try:
        for index in range(WARM_UP + requests):
            begin = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            elapsed = (time.perf_counter() - begin) * 1000
            if response.status != 200:
                raise SystemExit(f"GET {path} answered {response.status}")
            if response.will_close:
                raise SystemExit("the server closed the connection: not a keep-alive measurement")
            if index >= WARM_UP:
                samples.append(elapsed)
            if time.monotonic() - started > TIME_LIMIT_S:
                break
    finally:
        connection.close()
    quantiles = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "requests": len(samples),
        "p50_ms": round(statistics.median(samples), 3),
        "p90_ms": round(quantiles[89], 3),
        "p99_ms": round(quantiles[98], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


def _loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = host == "localhost" or _is_loopback(host)
    if parts.scheme != "http" or not loopback:
        raise SystemExit(f"--url must be http:// on a loopback address, not {url!r}")
    return host, parts.port or 80


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per variant")
    parser.add_argument("--url", help="an already running local gateway (measures it alone)")
    arguments = parser.parse_args()
    if arguments.requests < 10:
        parser.error("--requests must be at least 10")

    results: dict[str, Any] = {}
    if arguments.url:
        host, port = _loopback(arguments.url)
        results["running"] = measure(host, port, "/health", arguments.requests)
    else:
        for name, handler in VARIANTS.items():
            gateway = LocalApiGateway(health, (HttpRoute("GET", "/health"),), NoPageHelpers())
            server = LocalHttpServer("127.0.0.1", 0, gateway, handler=handler)
            server.start()
            try:
                results[name] = measure(
                    "127.0.0.1", int(server.server_address[1]), "/health", arguments.requests
                )
            finally:
                server.stop()
    for name, figures in results.items():
        print(
            f"{name}: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, n={figures['requests']}",
            file=sys.stderr,
        )
    summary: dict[str, Any] = {"path": "/health", "keep_alive": True, "variants": results}
    if "separate_writes" in results:
        summary["p50_saved_ms"] = round(
            results["separate_writes"]["p50_ms"] - results["one_write"]["p50_ms"], 3
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
