"""`--base-weight auto`: choose the base part's cosine weight on a development part of the
training images, never on the held-out part.

The tuned part of an embedding groups a catalogue's categories; the base part (lookalike_tuning
.compose) keeps edited copies of a photo nearest to that photo. How much base part a catalogue
needs depends on how alike its photos are. So the run splits its training part once more, the
way its held-out part was split (by product; with --holdout-classes, by class), trains on the
rest and measures the development part at every weight of a grid. One composed graph gives them
all: cosine at weight w is w * cos(base part) + (1 - w) * cos(tuned
part), and a graph composed at PROBE_WEIGHT holds both unit parts. The weight chosen is the one
with the best category mAP@10 among those that lose at most the refusal tolerance of the
development part's edited copies: copies whose original the base model ranks first and the
composed model does not. Copies the base misses and the composed model finds are not counted
against those losses: how many there are to find depends on the photos (on the Tux Paint stamps
the base misses three times as many on the development part as on the held-out part, where the
refusal then sees the losses almost alone), while the losses are the tuned model's own. The
final model is then trained on the whole training part and composed at that weight.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lookalike_tuning.compose import BasePart, compose
from lookalike_tuning.datasets import DatasetError, LabelledImage, Split, split_by_product
from lookalike_tuning.fit import TrainingResult
from lookalike_tuning.heldout import (
    HeldOutSet,
    build_heldout_set,
    embed_heldout,
    heldout_figures,
    neardup_comparison,
)
from lookalike_tuning.production import Embedder, ModelCard, ModelVariantFile
from lookalike_tuning.tuned_card import file_entry

FloatArray = npt.NDArray[np.float32]
GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PROBE_WEIGHT = 0.5
RULE = (
    "best development mAP@10 among weights that lose at most the tolerance of the edited copies "
    "whose original the base ranks first"
)
# A trainer: images -> (the backbone graph to compose, the trained head).
Trainer = Callable[[list[LabelledImage]], tuple[Path, TrainingResult]]


@dataclass(frozen=True, slots=True)
class DevelopmentRun:
    """Where and how to measure: the tune run's own settings."""

    test_fraction: float
    seed: int
    neardup_originals: int
    base_part: BasePart
    tolerance: float
    # --holdout-classes: the development part holds out this many training classes (at least
    # 2), so the weight is chosen for classes never trained on, as the run is measured; 0: by product.
    holdout_class_count: int = 0


def at_weight(probe: FloatArray, base_dim: int, weight: float) -> FloatArray:
    """Vectors whose cosines are weight * cos(base part) + (1 - weight) * cos(tuned part), from
    vectors composed at PROBE_WEIGHT (base part first, as compose.compose concatenates)."""
    base_unit = probe[:, :base_dim] / math.sqrt(PROBE_WEIGHT)
    tuned_unit = probe[:, base_dim:] / math.sqrt(1 - PROBE_WEIGHT)
    return np.concatenate([math.sqrt(weight) * base_unit, math.sqrt(1 - weight) * tuned_unit], axis=1).astype(
        np.float32
    )


def choose(grid: list[dict[str, Any]], tolerance: float) -> float:
    """The best mAP@10 among weights that lose at most `tolerance` of the edited copies the base
    finds (ties: the smaller weight); none: the fewest copies lost (the run may then refuse)."""
    admissible = [row for row in grid if row["neardup_lost"] <= tolerance * row["neardup_copies"]]
    if admissible:
        best = max(admissible, key=lambda row: (row["category_map_at_10"], -row["weight"]))
    else:
        best = min(grid, key=lambda row: (row["neardup_lost"], row["weight"]))
    return float(best["weight"])


def probe_card(base_card: ModelCard, path: Path, dimension: int) -> ModelCard:
    """The base card pointed at a composed development graph (never written, never published)."""
    digest = file_entry(path)["sha256"]
    return dataclasses.replace(
        base_card,
        model_version=f"{base_card.model_version}+development-{digest[:10]}",
        embedding_dim=dimension,
        logits_output=None,
        default_variant="fp32",
        variants={"fp32": ModelVariantFile("fp32", path, digest)},
    )


def figures_row(weight: float | None, figures: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "category_map_at_10",
        "category_precision_at_1",
        "neardup_recall_at_1",
        "neardup_padded_recall_at_1",
    )
    return {"weight": weight} | {key: figures[key] for key in keys}


def development_split(train_images: list[LabelledImage], run: DevelopmentRun) -> Split:
    """The training part split once more, the way the held-out part was split (by product, or
    by class), with another seed than the held-out split's."""
    advice = "too few to choose a base weight on: give --base-weight a number instead"
    try:
        if run.holdout_class_count:
            classes = sorted({image.category for image in train_images})
            count = max(2, run.holdout_class_count)
            if len(classes) < count + 2:
                raise DatasetError(f"{len(classes)} training classes cannot spare {count} and keep 2")
            rng = np.random.default_rng(run.seed + 1)
            chosen = tuple(str(name) for name in rng.choice(classes, size=count, replace=False))
            split = split_by_product(
                train_images, test_fraction=run.test_fraction, seed=run.seed + 1, holdout_classes=chosen
            )
        else:
            split = split_by_product(train_images, test_fraction=run.test_fraction, seed=run.seed + 1)
    except DatasetError as error:
        raise DatasetError(f"--base-weight auto: the training part is {advice} ({error})") from None
    classes = sorted({image.category for image in split.test})
    if len(classes) < 2:
        raise DatasetError(
            f"--base-weight auto: the development part split from the training part has "
            f"{len(split.test)} images of {len(classes)} class, {advice}"
        )
    return split


def describe(figures: dict[str, Any]) -> str:
    return (
        f"mAP@10 {figures['category_map_at_10']:.4f}, near-dup {figures['neardup_recall_at_1']:.4f}, "
        f"padded {figures['neardup_padded_recall_at_1']:.4f}"
    )


def choose_base_weight(
    train_images: list[LabelledImage],
    extra_images: list[LabelledImage],
    base_embedder: Embedder,
    train: Trainer,
    run: DevelopmentRun,
    work: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train on the training part less a development part, measure the development part at every
    weight of GRID, with the base model as the run's `base_embedder` embeds (its threads, its
    trimming); the result, with the chosen `weight`, goes into the model card."""
    split = development_split(train_images, run)
    how = f"classes {', '.join(split.holdout_classes)}" if split.holdout_classes else "split by product"
    log(
        f"base weight: training on {len(split.train)} images, choosing on {len(split.test)} "
        f"development images ({how}, from the training part)"
    )
    backbone, result = train(split.train + extra_images)
    probe_path = work / "development_fp32.onnx"
    dimension = compose(backbone, result.head, probe_path, base_weight=PROBE_WEIGHT, base_part=run.base_part)
    if backbone.parent == work:
        backbone.unlink()
    base_dim = dimension - result.head.output_dim
    development: HeldOutSet = build_heldout_set(
        split.test, neardup_count=run.neardup_originals, seed=run.seed
    )
    probe_embedder = Embedder(
        probe_card(base_embedder.card, probe_path, dimension),
        variant="fp32",
        threads=base_embedder.threads,
        trim_borders=base_embedder.preprocessing.trim_borders,
    )
    base_figures, base_scores = heldout_figures(*embed_heldout(base_embedder, development), development)
    database, queries = embed_heldout(probe_embedder, development)
    probe_path.unlink()
    grid = []
    for weight in GRID:
        figures, scores = heldout_figures(
            at_weight(database, base_dim, weight), at_weight(queries, base_dim, weight), development
        )
        row = figures_row(weight, figures) | neardup_comparison(base_scores, scores)
        grid.append(row)
        log(
            f"  weight {weight:.1f}: {describe(row)}; copies lost {row['neardup_lost']}, "
            f"gained {row['neardup_gained']} of {row['neardup_copies']}"
        )
    chosen = choose(grid, run.tolerance)
    log(f"base weight {chosen}; the base model on the development part: {describe(base_figures)}")
    return {
        "weight": chosen,
        "rule": RULE,
        "development_images": len(split.test),
        "development_split": "classes " + ",".join(split.holdout_classes)
        if split.holdout_classes
        else "by product",
        "trained_images": len(split.train) + len(extra_images),
        "development_neardup_queries": len(development.query_bytes),
        "tolerance": run.tolerance,
        "base": figures_row(None, base_figures),
        "grid": grid,
        "train_seconds": round(result.seconds, 1),
    }
