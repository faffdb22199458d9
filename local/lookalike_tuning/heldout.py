"""Held-out figures of one model folder, through the production embedder on the written files.

Category mAP@10 / precision@10 / precision@1 (leave-one-out inside the held-out part), same-product
recall@1 (where a product has several photos), and near-duplicate recall@1: edited copies (the
eval_quality edit suite plus padded copies) of some held-out photos query the held-out photos.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike_tuning.datasets import LabelledImage
from lookalike_tuning.edits import edits
from lookalike_tuning.evaluate import (
    category_metrics,
    neardup_metrics,
    paired_difference_interval,
    product_recall_at_1,
)
from lookalike_tuning.production import (
    Embedder,
    decode_file_bytes,
    decode_full,
    load_model_card,
)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class HeldOutSet:
    images: list[LabelledImage]
    query_bytes: list[bytes]  # edited copies
    query_targets: npt.NDArray[np.int64]  # index into images of each copy's original
    query_edits: list[str]


def neardup_originals(images: list[LabelledImage], count: int, seed: int) -> list[int]:
    """Which held-out photos get edited copies: a seeded sample spread over the categories."""
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_category[image.category].append(index)
    shuffled = {category: list(rng.permutation(indices)) for category, indices in by_category.items()}
    chosen: list[int] = []
    while len(chosen) < min(count, len(images)):
        for indices in shuffled.values():
            if indices and len(chosen) < count:
                chosen.append(int(indices.pop()))
    return sorted(chosen)


def build_heldout_set(images: list[LabelledImage], *, neardup_count: int, seed: int) -> HeldOutSet:
    query_bytes: list[bytes] = []
    targets: list[int] = []
    names: list[str] = []
    for index in neardup_originals(images, neardup_count, seed):
        photo = decode_full(images[index].path.read_bytes())
        for edit, data in edits(photo, seed=seed + index, with_padding=True):
            query_bytes.append(data)
            targets.append(index)
            names.append(edit)
    return HeldOutSet(images, query_bytes, np.asarray(targets, dtype=np.int64), names)


def embed_bytes(embedder: Embedder, blobs: list[bytes], *, chunk: int = 32) -> FloatArray:
    parts: list[FloatArray] = []
    for start in range(0, len(blobs), chunk):
        decoded: list[Image.Image] = [decode_file_bytes(blob) for blob in blobs[start : start + chunk]]
        parts.append(embedder.embed(decoded).vectors)
    if not parts:
        return np.empty((0, embedder.dimension), dtype=np.float32)
    return np.concatenate(parts)


def embed_heldout(embedder: Embedder, heldout: HeldOutSet) -> tuple[FloatArray, FloatArray]:
    """(held-out photos, their edited copies) embedded by one model."""
    database = embed_bytes(embedder, [image.path.read_bytes() for image in heldout.images])
    return database, embed_bytes(embedder, heldout.query_bytes)


@dataclass(frozen=True, slots=True)
class PerQuery:
    """One model's per-query scores on a held-out set, for paired comparisons of two models."""

    average_precisions: npt.NDArray[np.float64]  # each category query's AP@10
    neardup_hits: npt.NDArray[np.bool_]  # each unpadded edited copy: its original ranked first
    neardup_originals: npt.NDArray[np.int64]  # ... and which original it is a copy of


def neardup_comparison(base: PerQuery, candidate: PerQuery) -> dict[str, Any]:
    """Candidate against base on the same edited copies: copies lost (the base ranks the original
    first, the candidate does not), copies gained (the other way round), and the 95 % interval of
    the difference in near-duplicate recall@1, which is (gained - lost) / copies."""
    low, high = paired_difference_interval(base.neardup_hits, candidate.neardup_hits, base.neardup_originals)
    return {
        "neardup_copies": len(base.neardup_hits),
        "neardup_lost": int(np.sum(base.neardup_hits & ~candidate.neardup_hits)),
        "neardup_gained": int(np.sum(~base.neardup_hits & candidate.neardup_hits)),
        "neardup_difference_ci95": [round(low, 4), round(high, 4)],
    }


def heldout_figures(
    database: FloatArray, queries: FloatArray, heldout: HeldOutSet
) -> tuple[dict[str, Any], PerQuery]:
    """The figures of one model's embeddings of a held-out set, and its per-query scores."""
    category = category_metrics(
        database, [image.category for image in heldout.images], skip_unanswerable=True
    )
    product = product_recall_at_1(database, [image.product for image in heldout.images])
    near = neardup_metrics(queries, database, heldout.query_targets)
    edit_names = np.asarray(heldout.query_edits)
    padded = np.char.startswith(edit_names, "pad")
    per_edit = {
        edit: round(float(np.mean(near.ranks[edit_names == edit] == 1)), 4)
        for edit in dict.fromkeys(heldout.query_edits)
    }
    figures: dict[str, Any] = {
        "category_map_at_10": round(category.map_at_10, 4),
        "category_precision_at_10": round(category.precision_at_10, 4),
        "category_precision_at_1": round(category.precision_at_1, 4),
        "category_queries": category.queries,
        "product_recall_at_1": None if product is None else round(product[0], 4),
        "product_queries": 0 if product is None else product[1],
        "neardup_recall_at_1": round(float(np.mean(near.ranks[~padded] == 1)), 4),
        "neardup_padded_recall_at_1": round(float(np.mean(near.ranks[padded] == 1)), 4),
        "neardup_queries": len(near.ranks),
        "neardup_recall_at_1_per_edit": per_edit,
    }
    per_query = PerQuery(
        average_precisions=category.average_precisions,
        neardup_hits=near.ranks[~padded] == 1,
        neardup_originals=heldout.query_targets[~padded],
    )
    return figures, per_query


def evaluate_model(
    model_dir: Path, heldout: HeldOutSet, *, variant: str, threads: int, trim: bool = False
) -> tuple[dict[str, Any], FloatArray, PerQuery]:
    """The figures of one model folder on the held-out set, the held-out embeddings and the
    per-query scores (for paired comparisons of two models). `trim`: trim plain borders even
    where the card does not say so (the base model, measured trimmed)."""
    embedder = Embedder(
        load_model_card(model_dir), variant=variant, threads=threads, trim_borders=True if trim else None
    )
    database, queries = embed_heldout(embedder, heldout)
    figures, per_query = heldout_figures(database, queries, heldout)
    return {"model_version": embedder.model_version, **figures}, database, per_query


def int8_agreement(
    model_dir: Path, images: list[LabelledImage], threads: int, *, limit: int = 200, seed: int = 0
) -> dict[str, float | int]:
    """Cosine of int8 vs fp32 embeddings of (at most `limit`, seeded) held-out photos, as the base
    model's card records it."""
    card = load_model_card(model_dir)
    if len(images) > limit:
        chosen = np.random.default_rng(seed).choice(len(images), size=limit, replace=False)
        images = [images[int(index)] for index in sorted(chosen)]
    blobs = [image.path.read_bytes() for image in images]
    fp32 = embed_bytes(Embedder(card, variant="fp32", threads=threads), blobs)
    int8 = embed_bytes(Embedder(card, variant="int8", threads=threads), blobs)
    cosine = np.sum(fp32 * int8, axis=1)
    return {
        "cosine_to_fp32_mean": round(float(cosine.mean()), 4),
        "cosine_to_fp32_min": round(float(cosine.min()), 4),
        "images": len(images),
    }
