"""Retrieval quality of the embedding, per model variant (fp32, int8) and resize mode (squash, centre crop).

    .venv/bin/python scripts/eval_quality.py [--stamps-dir DIR] [--out docs/bench/quality.json]
        [--padded] [--trim-borders] [--config fp32/squash ...]
    .venv/bin/python scripts/eval_quality.py --dataset DIR [--model-dir M] [--variant int8]

Two tasks, every image going through the production path (`decode_image` with its default JPEG
draft mode, `Embedder.preprocess`, ONNX Runtime, L2-normalised rows, cosine similarity):

1. Near-duplicate retrieval (Copydays-style). Originals: the real colour photos shipped in
   scikit-image / scikit-learn / matplotlib (`lookalike_local.samples`, Grace Hopper) plus the
   photographic stamps of the labelled set below. Each original gets EDITS (crops keeping 50-80 %
   of the area, JPEG quality 15-50, downscaling, rotation, mirror, colour / brightness / contrast,
   grayscale, added text, a border, and a combination). The database holds the originals plus
   every other image of the labelled set as distractors; each edited copy is a query.
   recall@1: the top hit is its original. mAP: mean average precision of finding the original;
   with one relevant item per query this is the mean reciprocal rank of the original.
2. Category retrieval on a labelled set of product-like photos: the Tux Paint stamps (Debian
   package `tuxpaint-stamps-default`, GPL-2; cut-out objects on a transparent background, flattened
   onto white like a shop's packshots), labelled by their folder (mammals, fruit, tools, musical
   instruments, ...). Leave-one-out: every image queries all others; precision@10 and mAP@10
   (AP@10 = sum over the top 10 of precision@k at each hit / min(relevant, 10)).
   Without the stamps (`make eval-data` fetches them) the script falls back to the sample
   catalogue grouped by category: tiny, and said so in its output. The fallback leaves out of
   the distractors every catalogue image made from one of the originals (they are copies of the
   answer under another name) and the classes of a single image; a class of one image reaching
   the metric is an error, never a NaN.

--padded adds padded copies (the photo at 60 % of a plain dark or white canvas) to the edits;
--trim-borders makes every embedder trim plain borders (`lookalike.model.borders`) as a model
card with `preprocessing.trim_borders` does (the padding robustness measurement: with and without).

--dataset DIR measures category retrieval of any model folder on any labelled folder
`DIR/<category>/[<product>/]<image>` and prints one JSON line
{"images", "classes", "map_at_10", "precision_at_10", "precision_at_1", "model_version"}.

Prints a table and, last, one JSON line for the default configuration (model_card.json's
`default_variant` and `preprocessing.default_resize_mode`):
{"neardup_recall_at_1", "neardup_map", "category_map_at_10", "variant", ...}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike.images import decode_image
from lookalike.model.card import ModelCardError, ResizeMode, load_model_card
from lookalike.model.embedder import Embedder
from lookalike_tuning.datasets import DatasetError, read_labelled_folder
from lookalike_tuning.edits import edits
from lookalike_tuning.evaluate import (
    MeasurementError,
    category_metrics,
    neardup_metrics,
    paired_ratio_interval,
)
from lookalike_tuning.sources import stamp_labels

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"
STAMPS_CANDIDATES = (
    REPO_ROOT / ".data" / "tuxpaint-stamps" / "usr" / "share" / "tuxpaint" / "stamps",  # make eval-data
    Path("/usr/share/tuxpaint/stamps"),  # apt-get install tuxpaint-stamps-default
)
# A stamp counts as a photograph (an original for the near-duplicate task) when its opaque
# pixels have this many distinct colours: clip art has a few hundred, photos tens of thousands.
PHOTO_MIN_COLOURS = 8000
LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}
CONFIGS: tuple[tuple[str, ResizeMode], ...] = (
    ("fp32", "squash"),
    ("fp32", "center_crop"),
    ("int8", "squash"),
    ("int8", "center_crop"),
)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    label: str  # category (labelled set) or original's name (near-duplicates)
    load: Callable[[], bytes]  # the file's bytes, as an upload would arrive
    origin: str = ""  # the source file it was made from, where known (sample catalogue, sample photos)


# --- data ------------------------------------------------------------------------------------


def returns(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def find_stamps(explicit: Path | None) -> Path | None:
    for candidate in (explicit,) if explicit is not None else STAMPS_CANDIDATES:
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def stamp_items(root: Path) -> list[Item]:
    """The labelled stamps (labelling: lookalike_tuning.sources.stamp_labels)."""
    return [
        Item(path.relative_to(root).as_posix(), label, path.read_bytes) for path, label in stamp_labels(root)
    ]


def catalogue_items() -> list[Item]:
    """Fallback labelled set: the demo catalogue's images with their product category, less the
    broken upload and the classes of a single image (nothing to retrieve for them)."""
    from lookalike_local.catalogue import PRODUCTS, catalogue

    source_file = {product.product_id: product.file for product in PRODUCTS}
    items = [
        Item(obj.key, obj.category, obj.body, origin=source_file[obj.product_id])
        for obj in catalogue()
        if "truncated" not in obj.filename
    ]
    sizes: dict[str, int] = {}
    for item in items:
        sizes[item.label] = sizes.get(item.label, 0) + 1
    dropped = sorted(label for label, size in sizes.items() if size < 2)
    if dropped:
        print(f"fallback: classes of a single image left out: {', '.join(dropped)}", file=sys.stderr)
    return [item for item in items if sizes[item.label] >= 2]


def distractors_for(labelled: list[Item], originals: list[Item]) -> list[Item]:
    """The labelled images that are not originals and not made from one (a re-encoded or cropped
    copy of an original under another name would be counted as a wrong answer)."""
    original_names = {item.name for item in originals}
    original_files = {item.origin for item in originals if item.origin}
    return [
        item for item in labelled if item.name not in original_names and item.origin not in original_files
    ]


def flat_rgb(data: bytes) -> Image.Image:
    """The full-resolution upright RGB picture (alpha on white), as the decoder makes it."""
    return decode_image(data, draft_size=None, **LIMITS).image


def is_photo(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as opened:
        rgba = np.asarray(opened.convert("RGBA"))
    opaque = rgba[rgba[..., 3] > 200][:, :3]
    if len(opaque) == 0:
        return False
    colours = np.unique(opaque.astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32))
    return len(colours) >= PHOTO_MIN_COLOURS


def neardup_sets(stamps: list[Item], *, padded: bool = False) -> tuple[list[Item], list[Item]]:
    """Originals (real photos) and the edited queries made from them."""
    from lookalike_local.catalogue import _package_dir
    from lookalike_local.samples import sample_photos

    originals = [
        Item(f"photo:{photo.name}", f"photo:{photo.name}", photo.path.read_bytes, origin=photo.path.name)
        for photo in sample_photos()
    ]
    hopper = _package_dir("matplotlib") / "grace_hopper.jpg"
    originals.append(Item("photo:grace_hopper", "photo:grace_hopper", hopper.read_bytes, origin=hopper.name))
    originals += [Item(item.name, item.name, item.load) for item in stamps if is_photo(item.load())]
    queries: list[Item] = []
    for index, original in enumerate(originals):
        image = flat_rgb(original.load())
        for edit, data in edits(image, seed=index, with_padding=padded):
            queries.append(Item(f"{original.name}#{edit}", original.name, returns(data)))
    return originals, queries


# --- embedding ------------------------------------------------------------------------------------


def embed_all(items: list[Item], embedders: dict[str, Embedder], chunk: int = 32) -> dict[str, FloatArray]:
    """Decode each image once (production decoder, draft mode on), embed with every configuration."""
    out: dict[str, list[FloatArray]] = {name: [] for name in embedders}
    for start in range(0, len(items), chunk):
        images = [decode_image(item.load(), **LIMITS).image for item in items[start : start + chunk]]
        for name, embedder in embedders.items():
            out[name].append(embedder.embed(images).vectors)
    return {name: np.concatenate(parts) for name, parts in out.items()}


# --- metrics --------------------------------------------------------------------------------------


def similarity_histogram_data(
    queries: FloatArray, database: FloatArray, query_targets: npt.NDArray[np.int64]
) -> dict[str, list[float]]:
    similarity = queries @ database.T
    own = similarity[np.arange(len(queries)), query_targets]
    mask = np.ones_like(similarity, dtype=bool)
    mask[np.arange(len(queries)), query_targets] = False
    others = similarity[mask]
    rng = np.random.default_rng(0)
    sample = rng.choice(others, size=min(len(others), 20000), replace=False)
    best_other = np.where(mask, similarity, -np.inf).max(axis=1)
    return {
        "same": [round(float(v), 4) for v in own],
        "different_sample": [round(float(v), 4) for v in sample],
        "best_different": [round(float(v), 4) for v in best_other],
    }


# --- main ------------------------------------------------------------------------------------------


def evaluate_dataset(arguments: argparse.Namespace) -> int:
    """--dataset: category retrieval of one model folder on a labelled folder."""
    try:
        dataset = read_labelled_folder(arguments.dataset)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if dataset.unreadable:
        print(
            f"skipped {len(dataset.unreadable)} unreadable images: {', '.join(dataset.unreadable)}",
            file=sys.stderr,
        )

    def embedder_of(model_dir: Path) -> Embedder:
        return Embedder(
            load_model_card(model_dir),
            variant=arguments.variant,
            threads=arguments.threads,
            trim_borders=True if arguments.trim_borders else None,
        )

    try:
        embedders = {"model": embedder_of(arguments.model_dir)}
        if arguments.baseline_model_dir is not None:
            embedders["baseline"] = embedder_of(arguments.baseline_model_dir)
    except ModelCardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    items = [Item(image.key, image.category, image.path.read_bytes) for image in dataset.images]
    embeddings = embed_all(items, embedders)  # each image decoded once for both models
    labels = [item.label for item in items]
    category = category_metrics(embeddings["model"], labels)
    result: dict[str, object] = {
        "images": len(items),
        "classes": len(dataset.categories),
        "map_at_10": round(category.map_at_10, 4),
        "precision_at_10": round(category.precision_at_10, 4),
        "precision_at_1": round(category.precision_at_1, 4),
        "model_version": embedders["model"].model_version,
    }
    if "baseline" in embedders:
        baseline = category_metrics(embeddings["baseline"], labels)
        low, high = paired_ratio_interval(baseline.average_precisions, category.average_precisions)
        result |= {
            "baseline_model_version": embedders["baseline"].model_version,
            "baseline_map_at_10": round(baseline.map_at_10, 4),
            "map_at_10_ratio": round(category.map_at_10 / baseline.map_at_10, 4),
            "map_at_10_ratio_ci95": [round(low, 4), round(high, 4)],
        }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stamps-dir", type=Path, help="the Tux Paint stamps folder (default: see make eval-data)"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="write all results to this JSON file")
    parser.add_argument("--padded", action="store_true", help="add padded copies to the edits")
    parser.add_argument("--trim-borders", action="store_true", help="trim plain borders before embedding")
    parser.add_argument(
        "--config",
        action="append",
        choices=[f"{variant}/{mode}" for variant, mode in CONFIGS],
        help="measure only these configurations (repeatable; default: all four)",
    )
    parser.add_argument("--dataset", type=Path, help="a labelled folder DIR/<category>/[<product>/]<image>")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="with --dataset: the model folder")
    parser.add_argument("--variant", help="with --dataset: fp32 or int8 (default: the card's)")
    parser.add_argument(
        "--baseline-model-dir",
        type=Path,
        help="with --dataset: also measure this model (e.g. the base) on the same images and print "
        "the mAP@10 ratio with its paired bootstrap 95 %% interval",
    )
    arguments = parser.parse_args(argv)
    if arguments.dataset is not None:
        return evaluate_dataset(arguments)
    started_at = datetime.now(UTC)
    started = time.perf_counter()

    card = load_model_card(MODEL_DIR)
    default_name = f"{card.default_variant}/{card.preprocessing.default_resize_mode}"
    chosen = arguments.config or [f"{variant}/{mode}" for variant, mode in CONFIGS]
    if default_name not in chosen:
        default_name = chosen[0]
    embedders = {
        f"{variant}/{mode}": Embedder(
            card,
            variant=variant,
            resize_mode=mode,
            threads=arguments.threads,
            trim_borders=True if arguments.trim_borders else None,
        )
        for variant, mode in CONFIGS
        if f"{variant}/{mode}" in chosen
    }

    stamps_dir = find_stamps(arguments.stamps_dir)
    if stamps_dir is not None:
        labelled = stamp_items(stamps_dir)
        dataset = {
            "name": "Tux Paint stamps (Debian tuxpaint-stamps-default)",
            "path": str(stamps_dir),
            "licence": "GPL-2 (debian/copyright: Files: * Copyright 2002-2022 Bill Kendrick, License: GPL-2)",
            "small_fallback": False,
        }
    else:
        print(
            "Tux Paint stamps not found (make eval-data fetches them): category retrieval falls back to "
            "the sample catalogue grouped by category, a TINY set (~35 images)",
            file=sys.stderr,
        )
        labelled = catalogue_items()
        dataset = {"name": "sample catalogue (lookalike_local.catalogue)", "small_fallback": True}
    labels = [item.label for item in labelled]
    classes = sorted(set(labels))
    dataset |= {"images": len(labelled), "classes": {c: labels.count(c) for c in classes}}
    print(f"labelled set: {len(labelled)} images in {len(classes)} classes", flush=True)

    originals, queries = neardup_sets(labelled if stamps_dir is not None else [], padded=arguments.padded)
    distractors = distractors_for(labelled, originals)
    database = originals + distractors
    target_index = {item.name: index for index, item in enumerate(originals)}
    query_targets = np.array([target_index[item.label] for item in queries], dtype=np.int64)
    edit_names = [item.name.split("#", 1)[1] for item in queries]
    print(
        f"near-duplicates: {len(originals)} originals, {len(queries)} edited queries, "
        f"{len(distractors)} distractors",
        flush=True,
    )

    trim = arguments.trim_borders
    labelled_embeddings = embed_all(labelled, embedders)
    by_name = {item.name: index for index, item in enumerate(labelled)}
    extra = [item for item in originals if item.name not in by_name]
    extra_embeddings = embed_all(extra, embedders)
    query_embeddings = embed_all(queries, embedders)

    results: dict[str, Any] = {}
    histogram: dict[str, list[float]] = {}
    for name in embedders:
        lookup = {item_name: labelled_embeddings[name][index] for item_name, index in by_name.items()}
        lookup |= {item.name: extra_embeddings[name][index] for index, item in enumerate(extra)}
        db = np.stack([lookup[item.name] for item in database])
        near = neardup_metrics(query_embeddings[name], db, query_targets)
        per_edit = {
            edit: round(float(np.mean(near.ranks[np.array(edit_names) == edit] == 1)), 3)
            for edit in dict.fromkeys(edit_names)
        }
        category = category_metrics(labelled_embeddings[name], labels)
        results[name] = {
            "neardup_recall_at_1": round(near.recall_at_1, 4),
            "neardup_recall_at_5": round(near.recall_at_5, 4),
            "neardup_map": round(near.mean_reciprocal_rank, 4),
            "neardup_recall_at_1_per_edit": per_edit,
            "category_precision_at_10": round(category.precision_at_10, 4),
            "category_map_at_10": round(category.map_at_10, 4),
            "category_precision_at_1": round(category.precision_at_1, 4),
            "category_per_class_precision_at_10": category.per_class_precision_at_10,
        }
        if name == default_name:
            histogram = similarity_histogram_data(query_embeddings[name], db, query_targets)

    print(
        f"\n{'configuration':20} {'nd R@1':>7} {'nd R@5':>7} {'nd mAP':>7} {'cat P@10':>9} {'cat mAP@10':>10}"
    )
    for name, row in results.items():
        marker = "  (default)" if name == default_name else ""
        print(
            f"{name:20} {row['neardup_recall_at_1']:7.3f} {row['neardup_recall_at_5']:7.3f} "
            f"{row['neardup_map']:7.3f} {row['category_precision_at_10']:9.3f} "
            f"{row['category_map_at_10']:10.3f}{marker}"
        )
    print("\nnear-duplicate recall@1 per edit:")
    for edit in results[default_name]["neardup_recall_at_1_per_edit"]:
        print(
            f"  {edit:22} "
            + "  ".join(
                f"{name} {results[name]['neardup_recall_at_1_per_edit'][edit]:.3f}" for name in results
            )
        )
    same = np.asarray(histogram["same"])
    best_other = np.asarray(histogram["best_different"])
    print(
        f"\n{default_name}: cosine to own original median {np.median(same):.3f} (min {same.min():.3f}); "
        f"best other image median {np.median(best_other):.3f} (max {best_other.max():.3f})"
    )
    best_name = max(results, key=lambda n: results[n]["neardup_map"] + results[n]["category_map_at_10"])
    print(f"best by near-duplicate mAP + category mAP@10: {best_name}", flush=True)

    default = results[default_name]
    summary = {
        "neardup_recall_at_1": default["neardup_recall_at_1"],
        "neardup_map": default["neardup_map"],
        "category_map_at_10": default["category_map_at_10"],
        "category_precision_at_10": default["category_precision_at_10"],
        "variant": default_name,
        "dataset": cast(str, dataset["name"]),
    }
    if arguments.padded or trim:
        padded_edits = [edit for edit in default["neardup_recall_at_1_per_edit"] if edit.startswith("pad")]
        summary |= {
            "padded_recall_at_1": {
                edit: default["neardup_recall_at_1_per_edit"][edit] for edit in padded_edits
            },
            "trim_borders": trim,
        }
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "date": started_at.isoformat(timespec="seconds"),
            "command": "scripts/eval_quality.py " + " ".join(sys.argv[1:]),
            "seconds": round(time.perf_counter() - started, 1),
            "dataset": dataset,
            "neardup": {
                "originals": [item.name for item in originals],
                "queries": len(queries),
                "distractors": len(distractors),
                "edits": list(dict.fromkeys(edit_names)),
            },
            "default": default_name,
            "results": results,
            "histogram_default": histogram,
            "summary": summary,
        }
        arguments.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MeasurementError as error:
        print(f"error: the measurement cannot be made: {error}", file=sys.stderr)
        sys.exit(1)
