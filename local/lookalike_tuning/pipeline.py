"""The tune run: data -> split by product -> cached features -> head -> ONNX files -> held-out
figures of base and tuned (through the production embedder, on the written files) -> model card.

Everything is written into a temporary folder next to the destination and renamed at the end:
a failure or a refusal leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike_tuning.augment import random_view
from lookalike_tuning.base_weight import DevelopmentRun, choose_base_weight
from lookalike_tuning.calibrate import CalibrationOptions
from lookalike_tuning.compose import compose, quantize_tuned_int8
from lookalike_tuning.datasets import (
    Dataset,
    LabelledImage,
    Pair,
    label_indices,
    read_labelled_folder,
    read_pairs_csv,
    split_by_product,
)
from lookalike_tuning.evaluate import MeasurementError, paired_ratio_interval
from lookalike_tuning.features import compute_features
from lookalike_tuning.fit import TrainingData, TrainingResult, fit
from lookalike_tuning.heldout import build_heldout_set, evaluate_model, int8_agreement, neardup_comparison
from lookalike_tuning.match_card import calibrate_model_folder
from lookalike_tuning.options import TuneOptions
from lookalike_tuning.production import (
    BASE_MODEL_DIR,
    Embedder,
    decode_full,
    load_model_card,
)
from lookalike_tuning.tuned_card import base_card_fields, data_fields, file_entry, training_fields, write_card
from lookalike_tuning.unfreeze import UnfreezeError, check_supported, train_unfrozen

# The base model's int8 gate (scripts/export_model.py). A tuned model's head spreads a catalogue
# of look-alike packshots over its whole output space, so its int8/fp32 cosine can fall below the
# gate while int8 ranks as well as fp32: then retrieval decides (int8_keeps_retrieval).
MIN_INT8_COSINE_MEAN = 0.97
# How much held-out category mAP@10 and near-duplicate recall@1 int8 may lose against fp32 and
# still be the default variant (the base model's int8 was kept by the same measure: docs/MODEL.md).
INT8_RETRIEVAL_TOLERANCE = 0.01
# Near-duplicate recall@1 may drop by at most this much before the model counts as worse.
NEARDUP_TOLERANCE = 0.005


class RefusedError(RuntimeError):
    """The tuned model is worse than the base on held-out data (figures attached)."""

    def __init__(self, reasons: list[str], summary: dict[str, Any]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.summary = summary


@dataclass(frozen=True, slots=True)
class TuneOutcome:
    summary: dict[str, Any]  # the JSON line
    base_embeddings: np.ndarray[Any, np.dtype[np.float32]]
    tuned_embeddings: np.ndarray[Any, np.dtype[np.float32]]
    heldout_labels: list[str]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def training_data(
    images: list[LabelledImage], features: np.ndarray[Any, Any], pairs: list[Pair]
) -> TrainingData:
    categories, products = label_indices(images)
    first: list[int] = []
    second: list[int] = []
    similar: list[bool] = []
    if pairs:
        position = {image.key: index for index, image in enumerate(images)}
        kept = [pair for pair in pairs if pair.key_a in position and pair.key_b in position]
        log(f"pairs: {len(kept)} of {len(pairs)} inside the training part (the rest touch held-out images)")
        first = [position[pair.key_a] for pair in kept]
        second = [position[pair.key_b] for pair in kept]
        similar = [pair.similar for pair in kept]
    return TrainingData(
        features=features,
        categories=categories,
        products=products,
        pair_first=np.array(first, dtype=np.int64),
        pair_second=np.array(second, dtype=np.int64),
        pair_similar=np.array(similar, dtype=bool),
    )


def extra_training_images(folder: Path | None) -> list[LabelledImage]:
    """The --extra-train folder's images, keys, classes and products under an `extra:` namespace
    (they never merge with the catalogue's own)."""
    if folder is None:
        return []
    extra = read_labelled_folder(folder)
    if extra.unreadable:
        log(
            f"--extra-train: skipped {len(extra.unreadable)} unreadable images: {', '.join(extra.unreadable)}"
        )
    return [
        LabelledImage(f"extra:{image.key}", f"extra:{image.category}", f"extra:{image.product}", image.path)
        for image in extra.images
    ]


def calibration_batch(
    images: list[LabelledImage], embedder: Embedder, count: int, seed: int
) -> np.ndarray[Any, Any]:
    """Preprocessed augmented training views: the activation ranges of the int8 variant."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
    views = [random_view(decode_full(images[int(i)].path.read_bytes()), rng) for i in chosen]
    return embedder.preprocess(views)


def int8_keeps_retrieval(fp32: dict[str, Any], int8: dict[str, Any]) -> bool:
    return all(
        int8[metric] >= fp32[metric] - INT8_RETRIEVAL_TOLERANCE
        for metric in ("category_map_at_10", "neardup_recall_at_1")
    )


def verdict(base: dict[str, Any], tuned: dict[str, Any], min_map_gain: float) -> list[str]:
    """Why the tuned model is worse than the base (empty: it is not)."""
    reasons = []
    if tuned["category_map_at_10"] < base["category_map_at_10"] + min_map_gain:
        reasons.append(
            f"category mAP@10 {tuned['category_map_at_10']:.4f} < base {base['category_map_at_10']:.4f}"
            + (f" + required gain {min_map_gain}" if min_map_gain else "")
        )
    if tuned["neardup_recall_at_1"] < base["neardup_recall_at_1"] - NEARDUP_TOLERANCE:
        reasons.append(
            f"near-duplicate recall@1 {tuned['neardup_recall_at_1']:.4f} more than {NEARDUP_TOLERANCE} "
            f"below base {base['neardup_recall_at_1']:.4f}"
        )
    return reasons


def tune(options: TuneOptions, now: Callable[[], float] = time.perf_counter) -> TuneOutcome:
    started = now()
    if options.out_dir.exists():
        raise FileExistsError(f"{options.out_dir} exists: choose a new folder (a model version is immutable)")
    dataset = read_labelled_folder(options.dataset_dir)
    if dataset.unreadable:
        log(f"skipped {len(dataset.unreadable)} unreadable images: {', '.join(dataset.unreadable)}")
    known = {image.key for image in dataset.images}
    pairs = read_pairs_csv(options.pairs_csv, known) if options.pairs_csv is not None else []
    split = split_by_product(
        dataset.images,
        test_fraction=options.test_fraction,
        seed=options.training.seed,
        holdout_classes=options.holdout_classes,
        measure_per_class=options.measure_per_class,
    )
    extra = extra_training_images(options.extra_train_dir)
    own_train = split.train
    split = dataclasses.replace(split, train=split.train + extra)
    log(
        f"dataset: {len(dataset.images)} images, {len(dataset.categories)} classes; "
        f"train {len(split.train)} ({len(extra)} of them from --extra-train), held out {len(split.test)}"
    )
    base_dir = options.base_model_dir or BASE_MODEL_DIR
    base_card = load_model_card(base_dir)
    # Trimming is part of the tuned model's preprocessing (its card says so), so the features it
    # is trained on are of trimmed views.
    base_embedder = Embedder(
        base_card, variant="fp32", threads=options.threads, trim_borders=options.trim_borders or None
    )
    if options.unfreeze is not None:
        check_supported(options.unfreeze, options.training, base_card.model_version, pairs=bool(pairs))
    elif options.base_part == "trunk":
        raise UnfreezeError(
            "--base-part trunk is the frozen trunk of --unfreeze-blocks: add it, or use pca or full"
        )
    options.out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{options.out_dir.name}.partial-", dir=options.out_dir.parent))
    try:
        feature_seconds: float | None = None  # unfrozen: the trainer's own, within train_seconds
        if options.unfreeze is None:
            feature_started = now()
            features = compute_features(
                split.train,
                base_embedder,
                views=options.views,
                seed=options.training.seed,
                cache_dir=options.cache_dir,
            )
            feature_seconds = now() - feature_started
        position = {image.key: index for index, image in enumerate(split.train)}

        def train_on(images: list[LabelledImage]) -> tuple[Path, TrainingResult]:
            if options.unfreeze is None:
                rows = features[[position[image.key] for image in images]]
                return base_card.variant("fp32").path, fit(
                    training_data(images, rows, pairs), options.training
                )
            return train_unfrozen(
                images,
                base_embedder,
                options.training,
                options.unfreeze,
                views=options.views,
                work=scratch,
                threads=options.threads,
                trunk_base=options.base_part == "trunk",
            )

        base_weight_choice: dict[str, Any] | None = None
        if options.base_weight == "auto":
            development = DevelopmentRun(
                test_fraction=options.test_fraction,
                seed=options.training.seed,
                neardup_originals=options.neardup_originals,
                base_part=options.base_part,
                tolerance=NEARDUP_TOLERANCE,
                holdout_class_count=len(options.holdout_classes),
            )
            base_weight_choice = choose_base_weight(
                own_train, extra, base_embedder, train_on, development, scratch, log
            )
            base_weight = float(base_weight_choice["weight"])
            if options.development_only:
                shutil.rmtree(scratch)
                development_summary: dict[str, Any] = {
                    "development_only": True,
                    "train_images": len(split.train),
                    "base_weight_choice": base_weight_choice,
                    "seconds": round(now() - started, 1),
                    "written": False,
                }
                empty = np.empty((0, 0), np.float32)
                return TuneOutcome(development_summary, empty, empty, [])
        else:
            base_weight = options.base_weight
        backbone, result = train_on(split.train)
        log(
            f"trained {result.steps} steps in {result.seconds:.1f} s, "
            f"loss {result.first_loss:.3f} -> {result.last_loss:.3f}"
        )
        fp32_path = scratch / f"{options.name}_fp32.onnx"
        int8_path = scratch / f"{options.name}_int8.onnx"
        dimension = compose(
            backbone, result.head, fp32_path, base_weight=base_weight, base_part=options.base_part
        )
        if backbone.parent == scratch:
            backbone.unlink()
        calibration = calibration_batch(
            split.train, base_embedder, options.calibration_views, options.training.seed
        )
        quantize_tuned_int8(fp32_path, int8_path, base_card.input_name, calibration)
        fp32_entry = file_entry(fp32_path)
        version = f"{base_card.model_version}+tuned-{fp32_entry['sha256'][:10]}"
        card: dict[str, Any] = {
            "model_version": version,
            "description": (
                f"{base_card.model_version} with a projection head tuned on {options.dataset_dir.name}"
            ),
            **base_card_fields(base_card, dimension, trim_borders=options.trim_borders),
            "variants": {"fp32": fp32_entry, "int8": file_entry(int8_path)},
            "default_variant": base_card.default_variant,
        }
        write_card(scratch, card)  # loadable now: the figures below run the written files

        heldout = build_heldout_set(
            split.test, neardup_count=options.neardup_originals, seed=options.training.seed
        )
        figures = {}
        embeddings = {}
        per_query = {}
        for label, folder in (("base", base_dir), ("tuned", scratch)):
            figures[label], embeddings[label], per_query[label] = evaluate_model(
                folder, heldout, variant="fp32", threads=options.threads, trim=options.trim_borders
            )
        agreement = int8_agreement(scratch, split.test, options.threads, seed=options.training.seed)
        card["variants"]["int8"]["quantization"] = {
            "method": "static QDQ",
            "per_channel": True,
            "calibration_images": len(calibration),
            "calibration_source": "augmented views of the training images (lookalike_tuning.augment)",
            **agreement,
        }
        if agreement["cosine_to_fp32_mean"] < MIN_INT8_COSINE_MEAN:
            figures["tuned_int8"], _, _ = evaluate_model(
                scratch, heldout, variant="int8", threads=options.threads, trim=options.trim_borders
            )
            kept = int8_keeps_retrieval(figures["tuned"], figures["tuned_int8"])
            card["variants"]["int8"]["quantization"]["default_because"] = (
                f"cosine to fp32 below {MIN_INT8_COSINE_MEAN}; held-out mAP@10 and near-duplicate recall@1 "
                + (f"within {INT8_RETRIEVAL_TOLERANCE} of fp32" if kept else "not within tolerance: fp32")
            )
            if not kept:
                card["default_variant"] = "fp32"
        card |= {
            "parent": {"model_version": base_card.model_version, "card_sha256": base_card.card_sha256},
            "embedding_dim": dimension,
            "data": data_fields(options, dataset, split, extra),
            "training": training_fields(options, result, base_weight, base_weight_choice),
            "heldout_metrics": figures,
        }
        write_card(scratch, card)
        loaded = load_model_card(scratch)
        if loaded.embedding_dim != dimension:
            raise RuntimeError("the written card does not load with the head's dimension")
        # Match levels of its default version, calibrated on the held-out images only (lookalike.matches).
        try:
            calibrate_model_folder(
                scratch,
                CalibrationOptions(datasets=()),
                threads=options.threads,
                command=f"scripts/tune.py: the held-out part of {options.dataset_dir.name}",
                datasets=[Dataset(options.dataset_dir, split.test, [])],
            )
        except MeasurementError as error:
            log(f"match levels not calibrated: {error}")
        reasons = verdict(figures["base"], figures["tuned"], options.min_map_gain)
        base_scores, tuned_scores = per_query["base"], per_query["tuned"]
        ratio_low, ratio_high = paired_ratio_interval(
            base_scores.average_precisions, tuned_scores.average_precisions
        )
        neardup = neardup_comparison(base_scores, tuned_scores)
        neardup_low, neardup_high = neardup["neardup_difference_ci95"]
        log(
            f"near-duplicate recall@1, tuned - base: 95 % interval {neardup_low:+.4f} to {neardup_high:+.4f} "
            f"(edited copies resampled by original photo); copies lost {neardup['neardup_lost']}, "
            f"gained {neardup['neardup_gained']} of {neardup['neardup_copies']}"
        )
        summary: dict[str, Any] = {
            "model_version": version,
            "out_dir": str(options.out_dir),
            "train_images": len(split.train),
            "heldout_images": len(split.test),
            "base": {k: v for k, v in figures["base"].items() if k != "neardup_recall_at_1_per_edit"},
            "tuned": {k: v for k, v in figures["tuned"].items() if k != "neardup_recall_at_1_per_edit"},
            "map_at_10_ratio": round(
                figures["tuned"]["category_map_at_10"] / figures["base"]["category_map_at_10"], 4
            ),
            "map_at_10_ratio_ci95": [round(ratio_low, 4), round(ratio_high, 4)],
            **neardup,
            "int8": agreement,
            "int8_heldout": {
                k: v for k, v in figures.get("tuned_int8", {}).items() if k != "neardup_recall_at_1_per_edit"
            }
            or None,
            "default_variant": card["default_variant"],
            "feature_seconds": None if feature_seconds is None else round(feature_seconds, 1),
            "train_seconds": round(result.seconds, 1),
            "base_weight": base_weight,
            "base_weight_choice": None
            if base_weight_choice is None
            else {
                key: base_weight_choice[key]
                for key in ("weight", "rule", "development_images", "base", "grid", "train_seconds")
            },
            "seconds": round(now() - started, 1),
            "written": not reasons or options.force,
            "refused_because": reasons,
        }
        if reasons and not options.force:
            raise RefusedError(reasons, summary)
        scratch.rename(options.out_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    labels = [image.category for image in split.test]
    return TuneOutcome(summary, embeddings["base"], embeddings["tuned"], labels)
