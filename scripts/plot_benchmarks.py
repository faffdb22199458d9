"""The plots of docs/BENCHMARKS.md, drawn from the benchmarks' JSON files (matplotlib, Agg backend).

    .venv/bin/python scripts/plot_benchmarks.py embed quality query

embed    docs/bench/embed.json   (make bench-embed)   -> docs/img/embed_latency.png
quality  docs/bench/quality.json (make eval-quality)  -> docs/img/neardup_similarity.png
query    docs/bench/query.json   (make bench-query)   -> docs/img/recall_vs_ef_search.png

Each plot's title names the command and date of the run it shows.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "docs" / "bench"
IMG = REPO_ROOT / "docs" / "img"


class MissingResultsError(Exception):
    """The benchmark behind a plot has not been run yet."""


def _load(name: str) -> dict[str, Any]:
    path = BENCH / f"{name}.json"
    if not path.is_file():
        raise MissingResultsError(f"{path.relative_to(REPO_ROOT)} is missing: run its benchmark first")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def plot_embed() -> Path:
    data = _load("embed")
    series = {
        "ONNX Runtime int8": data["samples_ms"]["ort_int8_b1_t1"],
        "ONNX Runtime fp32": data["samples_ms"]["ort_fp32_b1_t1"],
    }
    if "torch_b1_t1" in data["samples_ms"]:
        series["PyTorch eager fp32"] = data["samples_ms"]["torch_b1_t1"]
    everything = np.concatenate([np.asarray(values) for values in series.values()])
    bins = [
        float(edge) for edge in np.geomspace(max(0.5, everything.min() * 0.9), everything.max() * 1.1, 80)
    ]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for (label, values), colour in zip(series.items(), ("tab:green", "tab:blue", "tab:red"), strict=False):
        median = float(np.median(values))
        axis.hist(values, bins=bins, alpha=0.55, color=colour, label=f"{label}: median {median:.1f} ms")
        axis.axvline(median, color=colour, linestyle="--", linewidth=1)
    axis.set_xscale("log")
    ticks = [t for t in (2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 200) if bins[0] <= t <= bins[-1]]
    axis.set_xticks(ticks, [str(t) for t in ticks])
    axis.minorticks_off()
    axis.set_xlabel("milliseconds per image (batch 1, 1 thread, 224x224), log scale")
    axis.set_ylabel("calls")
    axis.set_title(
        f"EfficientNet-Lite0 inference latency, interleaved, shared 2-vCPU {data['machine']['cpu']}\n"
        f"make bench-embed ({data['date'][:10]})",
        fontsize=10,
    )
    axis.legend()
    figure.tight_layout()
    return _save(figure, "embed_latency.png")


def plot_quality() -> Path:
    data = _load("quality")
    histogram = data["histogram_default"]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    bins = [float(edge) for edge in np.linspace(-0.1, 1.0, 111)]
    axis.hist(
        histogram["different_sample"],
        bins=bins,
        density=True,
        alpha=0.5,
        color="tab:gray",
        label="query vs a different image (random sample)",
    )
    axis.hist(
        histogram["best_different"],
        bins=bins,
        density=True,
        alpha=0.5,
        color="tab:orange",
        label="query vs its most similar different image",
    )
    axis.hist(
        histogram["same"],
        bins=bins,
        density=True,
        alpha=0.6,
        color="tab:blue",
        label="edited copy vs its own original",
    )
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("density")
    summary = data["summary"]
    axis.set_title(
        f"Near-duplicates ({summary['variant']}): {data['neardup']['queries']} edited copies of "
        f"{len(data['neardup']['originals'])} originals, {data['neardup']['distractors']} distractors; "
        f"recall@1 {summary['neardup_recall_at_1']:.3f}\nmake eval-quality ({data['date'][:10]})",
        fontsize=10,
    )
    axis.legend(loc="upper left")
    figure.tight_layout()
    return _save(figure, "neardup_similarity.png")


def plot_query() -> Path:
    data = _load("query")
    sweep = data["sweep"]
    ef = [row["ef_search"] for row in sweep]
    figure, recall_axis = plt.subplots(figsize=(8, 4.5))
    recall_axis.plot(ef, [row["recall_at_10"] for row in sweep], "o-", color="tab:blue", label="recall@10")
    recall_axis.set_xlabel("hnsw.ef_search")
    recall_axis.set_ylabel("recall@10 vs exact search", color="tab:blue")
    latency_axis = recall_axis.twinx()
    latency_axis.plot(ef, [row["p50_ms"] for row in sweep], "s--", color="tab:red", label="p50 latency")
    latency_axis.set_ylabel("p50 ms (GET /products/{id}/similar, handler)", color="tab:red")
    # bench_query.py's file has no date field: the file's modification time stands for its run.
    when = data.get("date") or datetime.fromtimestamp((BENCH / "query.json").stat().st_mtime, UTC).isoformat()
    date = f" ({when[:10]})"
    recall_axis.set_title(
        f"HNSW recall and latency vs ef_search, {data['n']:,} rows (halfvec 1280)\nmake bench-query{date}",
        fontsize=10,
    )
    figure.tight_layout()
    return _save(figure, "recall_vs_ef_search.png")


def _save(figure: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path.relative_to(REPO_ROOT)}")
    return path


PLOTS = {"embed": plot_embed, "quality": plot_quality, "query": plot_query}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("plots", nargs="+", choices=sorted(PLOTS))
    for name in parser.parse_args().plots:
        try:
            PLOTS[name]()
        except MissingResultsError as missing:
            # e.g. eval-quality before anyone ran bench-query: skip that plot, draw the others.
            print(f"skipped the {name} plot: {missing}")


if __name__ == "__main__":
    main()
