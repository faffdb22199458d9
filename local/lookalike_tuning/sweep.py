"""Choose the head and loss weights by held-out figures: train several configurations on the same
cached features and score each on the same held-out part, with the head applied in NumPy (the
tune run's own figures then come from the written ONNX files).

    .venv/bin/python -m lookalike_tuning.sweep --dataset DIR [--holdout-classes A,B]
        --grid 'hidden=0,512;instance_weight=0,1' [--score-epochs 10,20] [--mix 0,0.3]

Prints one line per configuration and, last, a JSON line with every configuration's figures.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lookalike_tuning.datasets import read_labelled_folder, split_by_product
from lookalike_tuning.evaluate import category_metrics, neardup_metrics, product_recall_at_1
from lookalike_tuning.features import compute_features
from lookalike_tuning.fit import TrainingConfig, TrainingData, fit
from lookalike_tuning.heldout import HeldOutSet, build_heldout_set, embed_bytes
from lookalike_tuning.pipeline import extra_training_images, training_data
from lookalike_tuning.production import BASE_MODEL_DIR, Embedder, load_model_card
from lookalike_tuning.train import Head, head_output

FloatArray = npt.NDArray[np.float32]


def cached_query_features(embedder: Embedder, heldout: HeldOutSet, cache_dir: Path) -> FloatArray:
    digest = hashlib.sha256(embedder.card.card_sha256.encode())
    for blob in heldout.query_bytes:
        digest.update(hashlib.sha256(blob).digest())
    path = cache_dir / f"queries-{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    vectors = embed_bytes(embedder, heldout.query_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def score(
    database: FloatArray,
    queries: FloatArray,
    heldout: HeldOutSet,
    head: Head | None,
    base_weight: float = 0.0,
) -> dict[str, Any]:
    if head is not None:
        database = head_output(head, database, base_weight)
        queries = head_output(head, queries, base_weight)
    category = category_metrics(database, [i.category for i in heldout.images], skip_unanswerable=True)
    product = product_recall_at_1(database, [i.product for i in heldout.images])
    near = neardup_metrics(queries, database, heldout.query_targets)
    edit_names = np.asarray(heldout.query_edits)
    padded = np.char.startswith(edit_names, "pad")
    missed = {
        edit: int(np.sum(near.ranks[edit_names == edit] != 1)) for edit in dict.fromkeys(heldout.query_edits)
    }
    return {
        "map_at_10": round(category.map_at_10, 4),
        "precision_at_1": round(category.precision_at_1, 4),
        "product_recall_at_1": None if product is None else round(product[0], 4),
        "neardup_recall_at_1": round(float(np.mean(near.ranks[~padded] == 1)), 4),
        "padded_recall_at_1": round(float(np.mean(near.ranks[padded] == 1)), 4),
        "neardup_missed_per_edit": {edit: count for edit, count in missed.items() if count},
    }


def train_and_score(
    data: TrainingData,
    config: TrainingConfig,
    label: dict[str, Any],
    checkpoints: set[int],
    mixes: list[float],
    scorer: Callable[[Head, float], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One training run, scored after its last epoch and after each checkpoint epoch before it,
    once per base weight in `mixes`. Each row is also printed to stderr as it comes."""
    rows: list[dict[str, Any]] = []

    def report(head: Head, epochs: int, seconds: float | None) -> None:
        for base_weight in mixes:
            row = {
                "config": label | {"epochs": epochs, "base_weight": base_weight},
                "train_seconds": None if seconds is None else round(seconds, 1),
                **scorer(head, base_weight),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    def checkpoint(epoch: int, head: Head) -> None:
        if epoch in checkpoints and epoch < config.epochs:
            report(head, epoch, None)

    result = fit(data, config, after_epoch=checkpoint)
    report(result.head, config.epochs, result.seconds)
    return rows


def parse_grid(text: str) -> list[dict[str, float]]:
    axes: dict[str, list[float]] = {}
    for part in filter(None, text.split(";")):
        name, values = part.split("=", 1)
        axes[name.strip()] = [float(value) for value in values.split(",")]
    return [dict(zip(axes, combination, strict=True)) for combination in itertools.product(*axes.values())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--holdout-classes", default="")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--measure-per-class", type=int, help="as scripts/tune.py --measure-per-class")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--neardup-originals", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path(".data/tune-cache"))
    parser.add_argument("--grid", default="", help="'name=v1,v2;name=v1' over TrainingConfig fields")
    parser.add_argument(
        "--score-epochs", default="", help="also score the head after these epochs (one training run)"
    )
    parser.add_argument("--mix", default="0", help="base weights of the PCA-part concatenation to score")
    parser.add_argument("--extra-train", type=Path, help="as scripts/tune.py --extra-train")
    arguments = parser.parse_args(argv)
    base = TrainingConfig()
    dataset = read_labelled_folder(arguments.dataset)
    split = split_by_product(
        dataset.images,
        test_fraction=arguments.test_fraction,
        seed=base.seed,
        holdout_classes=tuple(filter(None, arguments.holdout_classes.split(","))),
        measure_per_class=arguments.measure_per_class,
    )
    split = replace(split, train=split.train + extra_training_images(arguments.extra_train))
    embedder = Embedder(load_model_card(BASE_MODEL_DIR), variant="fp32", threads=arguments.threads)
    features = compute_features(
        split.train, embedder, views=arguments.views, seed=base.seed, cache_dir=arguments.cache_dir
    )
    database = compute_features(split.test, embedder, views=1, seed=base.seed, cache_dir=arguments.cache_dir)[
        :, 0
    ]
    heldout = build_heldout_set(split.test, neardup_count=arguments.neardup_originals, seed=base.seed)
    queries = cached_query_features(embedder, heldout, arguments.cache_dir)
    data = training_data(split.train, features, [])
    rows: list[dict[str, Any]] = [{"config": "base", **score(database, queries, heldout, None)}]
    print(json.dumps(rows[0]), file=sys.stderr, flush=True)
    checkpoints = {int(value) for value in filter(None, arguments.score_epochs.split(","))}
    mixes = [float(value) for value in arguments.mix.split(",")]
    for overrides in parse_grid(arguments.grid) or [{}]:
        typed = {k: type(getattr(base, k))(v) for k, v in overrides.items()}
        rows += train_and_score(
            data,
            replace(base, **typed),
            typed,
            checkpoints,
            mixes,
            lambda head, base_weight: score(database, queries, heldout, head, base_weight),
        )
    print(
        json.dumps(
            {
                "dataset": arguments.dataset.name,
                "train": len(split.train),
                "heldout": len(split.test),
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
