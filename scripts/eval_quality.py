"""Retrieval quality of the embedding, per model variant (fp32, int8) and resize mode (squash, centre crop).

    .venv/bin/python scripts/eval_quality.py [--stamps-dir DIR] [--out docs/bench/quality.json]

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
   catalogue grouped by category: tiny, and said so in its output.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from lookalike.images import decode_image
from lookalike.model.card import load_model_card
from lookalike.model.embedder import Embedder
from lookalike.model.preprocess import ResizeMode

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"
STAMPS_CANDIDATES = (
    REPO_ROOT / ".data" / "tuxpaint-stamps" / "usr" / "share" / "tuxpaint" / "stamps",  # make eval-data
    Path("/usr/share/tuxpaint/stamps"),  # apt-get install tuxpaint-stamps-default
)
# Folders that are not kinds of objects (letters, signs, holiday themes) are left out.
EXCLUDED_FOLDERS = ("symbols", "seasonal", "town/roadsigns", "town/flags", "naturalforces", "people")
MIN_CLASS_SIZE = 8
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


# --- data ------------------------------------------------------------------------------------


def returns(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def find_stamps(explicit: Path | None) -> Path | None:
    for candidate in (explicit,) if explicit is not None else STAMPS_CANDIDATES:
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def stamp_items(root: Path) -> list[Item]:
    """The labelled stamps: label = second-level folder when it has >= MIN_CLASS_SIZE images,
    else the top-level folder; mirrored copies (`*_mirror.png`) are dropped."""
    files = sorted(
        path
        for path in root.rglob("*.png")
        if not path.stem.endswith("_mirror")
        and not any(path.relative_to(root).as_posix().startswith(f"{folder}/") for folder in EXCLUDED_FOLDERS)
    )
    counts: dict[str, int] = {}
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) >= 3:
            counts["/".join(parts[:2])] = counts.get("/".join(parts[:2]), 0) + 1
    items = []
    for path in files:
        parts = path.relative_to(root).parts
        second = "/".join(parts[:2])
        label = second if len(parts) >= 3 and counts[second] >= MIN_CLASS_SIZE else parts[0]
        items.append(Item(path.relative_to(root).as_posix(), label, path.read_bytes))
    sizes: dict[str, int] = {}
    for item in items:
        sizes[item.label] = sizes.get(item.label, 0) + 1
    return [item for item in items if sizes[item.label] >= MIN_CLASS_SIZE]


def catalogue_items() -> list[Item]:
    """Fallback labelled set: the demo catalogue's images with their product category."""
    from lookalike_local.catalogue import catalogue

    return [Item(obj.key, obj.category, obj.body) for obj in catalogue() if "truncated" not in obj.filename]


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


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def crop_area(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """A crop keeping `fraction` of the area, same aspect ratio, at a random position."""
    side = fraction**0.5
    width, height = round(image.width * side), round(image.height * side)
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def with_text(image: Image.Image) -> Image.Image:
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    size = max(12, image.height // 8)
    font = ImageFont.load_default(size=size)
    draw.text((image.width // 20, image.height // 2), "SALE -50% lookalike", fill=(255, 0, 0), font=font)
    return edited


def with_border(image: Image.Image) -> Image.Image:
    border = max(4, min(image.size) // 10)
    return ImageOps.expand(image, border=border, fill=(20, 20, 20))


def edits(image: Image.Image, seed: int) -> Iterator[tuple[str, bytes]]:
    """Copydays-style edited copies, each as the JPEG an uploader would send."""
    rng = np.random.default_rng(seed)
    for fraction in (0.8, 0.65, 0.5):
        yield f"crop{round(fraction * 100)}", jpeg(crop_area(image, fraction, rng))
    for quality in (50, 30, 15):
        yield f"jpeg{quality}", jpeg(image, quality)
    for scale in (0.5, 0.25):
        small = image.resize(
            (max(16, round(image.width * scale)), max(16, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
        yield f"resize{round(scale * 100)}", jpeg(small)
    yield (
        "rotate10",
        jpeg(image.rotate(10, Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))),
    )
    yield "rotate90", jpeg(image.rotate(90, expand=True))
    yield "mirror", jpeg(ImageOps.mirror(image))
    yield "brighter", jpeg(ImageEnhance.Brightness(image).enhance(1.5))
    yield "darker", jpeg(ImageEnhance.Brightness(image).enhance(0.6))
    yield "contrast", jpeg(ImageEnhance.Contrast(image).enhance(1.6))
    yield "saturation", jpeg(ImageEnhance.Color(image).enhance(0.3))
    hue = np.asarray(image.convert("HSV")).copy()
    hue[..., 0] = (hue[..., 0].astype(np.int16) + 40) % 256
    yield "hue", jpeg(Image.fromarray(hue, mode="HSV").convert("RGB"))
    yield "grayscale", jpeg(ImageOps.grayscale(image))
    yield "text", jpeg(with_text(image))
    yield "border", jpeg(with_border(image))
    combined = ImageEnhance.Brightness(crop_area(image, 0.7, rng)).enhance(1.3)
    yield "crop70+bright+jpeg30", jpeg(combined, 30)


def neardup_sets(stamps: list[Item]) -> tuple[list[Item], list[Item]]:
    """Originals (real photos) and the edited queries made from them."""
    from lookalike_local.catalogue import _package_dir
    from lookalike_local.samples import sample_photos

    originals = [
        Item(f"photo:{photo.name}", f"photo:{photo.name}", photo.path.read_bytes) for photo in sample_photos()
    ]
    hopper = _package_dir("matplotlib") / "grace_hopper.jpg"
    originals.append(Item("photo:grace_hopper", "photo:grace_hopper", hopper.read_bytes))
    originals += [Item(item.name, item.name, item.load) for item in stamps if is_photo(item.load())]
    queries: list[Item] = []
    for index, original in enumerate(originals):
        image = flat_rgb(original.load())
        for edit, data in edits(image, seed=index):
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


def neardup_metrics(
    queries: FloatArray, database: FloatArray, query_targets: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """recall@1 and mAP (= mean reciprocal rank: one relevant item per query) of the original."""
    similarity = queries @ database.T
    own = similarity[np.arange(len(queries)), query_targets]
    ranks = 1 + np.sum(similarity > own[:, None], axis=1)  # ties resolved in the original's favour
    return {
        "recall_at_1": float(np.mean(ranks == 1)),
        "recall_at_5": float(np.mean(ranks <= 5)),
        "map": float(np.mean(1.0 / ranks)),
        "ranks": ranks,
    }


def category_metrics(embeddings: FloatArray, labels: list[str], k: int = 10) -> dict[str, Any]:
    """Leave-one-out precision@k, mAP@k and precision@1 over the labelled set."""
    label_array = np.asarray(labels)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    top = np.argsort(-similarity, axis=1)[:, :k]
    hits = label_array[top] == label_array[:, None]
    relevant = np.array([np.sum(label_array == label) - 1 for label in labels])
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    average_precision = np.sum(precision_at * hits, axis=1) / np.minimum(relevant, k)
    per_class = {
        label: round(float(np.mean(hits[label_array == label].mean(axis=1))), 3)
        for label in sorted(set(labels))
    }
    return {
        "precision_at_10": float(np.mean(hits.mean(axis=1))),
        "map_at_10": float(np.mean(average_precision)),
        "precision_at_1": float(np.mean(hits[:, 0])),
        "per_class_precision_at_10": per_class,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stamps-dir", type=Path, help="the Tux Paint stamps folder (default: see make eval-data)"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="write all results to this JSON file")
    arguments = parser.parse_args()
    started_at = datetime.now(UTC)
    started = time.perf_counter()

    card = load_model_card(MODEL_DIR)
    default_name = f"{card.default_variant}/{card.preprocessing.default_resize_mode}"
    embedders = {
        f"{variant}/{mode}": Embedder(card, variant=variant, resize_mode=mode, threads=arguments.threads)
        for variant, mode in CONFIGS
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

    originals, queries = neardup_sets(labelled if stamps_dir is not None else [])
    original_names = {item.name for item in originals}
    distractors = [item for item in labelled if item.name not in original_names]
    database = originals + distractors
    target_index = {item.name: index for index, item in enumerate(originals)}
    query_targets = np.array([target_index[item.label] for item in queries], dtype=np.int64)
    edit_names = [item.name.split("#", 1)[1] for item in queries]
    print(
        f"near-duplicates: {len(originals)} originals, {len(queries)} edited queries, "
        f"{len(distractors)} distractors",
        flush=True,
    )

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
            edit: round(float(np.mean(near["ranks"][np.array(edit_names) == edit] == 1)), 3)
            for edit in dict.fromkeys(edit_names)
        }
        category = category_metrics(labelled_embeddings[name], labels)
        results[name] = {
            "neardup_recall_at_1": round(near["recall_at_1"], 4),
            "neardup_recall_at_5": round(near["recall_at_5"], 4),
            "neardup_map": round(near["map"], 4),
            "neardup_recall_at_1_per_edit": per_edit,
            "category_precision_at_10": round(category["precision_at_10"], 4),
            "category_map_at_10": round(category["map_at_10"], 4),
            "category_precision_at_1": round(category["precision_at_1"], 4),
            "category_per_class_precision_at_10": category["per_class_precision_at_10"],
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


if __name__ == "__main__":
    main()
