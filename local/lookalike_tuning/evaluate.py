"""Retrieval metrics on L2-normalised embeddings (cosine = dot product).

A metric that cannot be computed raises MeasurementError instead of printing a number: a class
of one image has nothing to retrieve, and dividing by its zero relevant items would print NaN
or, averaged away, a wrong figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class MeasurementError(ValueError):
    """The data cannot give this measurement (the message says why)."""


@dataclass(frozen=True, slots=True)
class CategoryMetrics:
    map_at_10: float
    precision_at_10: float
    precision_at_1: float
    queries: int  # queries with at least one relevant item: the ones averaged
    per_class_precision_at_10: dict[str, float]
    average_precisions: npt.NDArray[np.float64]  # AP@k of each averaged query, in query order


def category_metrics(
    embeddings: FloatArray, labels: list[str], *, k: int = 10, skip_unanswerable: bool = False
) -> CategoryMetrics:
    """Leave-one-out: every image queries all others. AP@k = sum over the top k of precision@i
    at each hit / min(relevant, k). A query whose class has no other image cannot be scored:
    an error, or (skip_unanswerable) left out and counted."""
    label_array = np.asarray(labels)
    if len(set(labels)) < 2:
        raise MeasurementError(f"category retrieval needs at least two classes, got {sorted(set(labels))}")
    relevant = np.array([np.sum(label_array == label) - 1 for label in labels])
    answerable = relevant > 0
    if not answerable.all() and not skip_unanswerable:
        lonely = sorted({labels[i] for i in np.flatnonzero(~answerable)})
        raise MeasurementError(f"classes with a single image cannot be scored: {', '.join(lonely)}")
    if not answerable.any():
        raise MeasurementError("no query has another image of its class")
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    depth = min(k, len(labels) - 1)
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :depth]
    hits = (label_array[top] == label_array[:, None])[answerable]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, depth + 1)
    average_precision = np.sum(precision_at * hits, axis=1) / np.minimum(relevant[answerable], depth)
    kept = label_array[answerable]
    return CategoryMetrics(
        map_at_10=float(np.mean(average_precision)),
        precision_at_10=float(np.mean(hits.mean(axis=1))),
        precision_at_1=float(np.mean(hits[:, 0])),
        queries=int(answerable.sum()),
        per_class_precision_at_10={
            str(label): round(float(np.mean(hits[kept == label].mean(axis=1))), 3)
            for label in sorted(set(kept.tolist()))
        },
        average_precisions=np.asarray(average_precision, dtype=np.float64),
    )


def paired_ratio_interval(
    baseline: npt.NDArray[np.float64],
    candidate: npt.NDArray[np.float64],
    *,
    rounds: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(candidate) / mean(baseline) over the same queries
    (per-query scores of two models, paired: one resample of queries serves both), e.g. of the
    mAP@10 ratio of a tuned model over its base. How sure a "1.3x" is on this many queries."""
    if baseline.shape != candidate.shape or baseline.ndim != 1 or len(baseline) < 2:
        raise MeasurementError(
            "a paired interval needs the same queries, at least two, scored by both models"
        )
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(baseline), size=(rounds, len(baseline)))
    base_means = baseline[resamples].mean(axis=1)
    if np.any(base_means <= 0):
        raise MeasurementError("the baseline scores 0 on some resample: no ratio to bound")
    ratios = candidate[resamples].mean(axis=1) / base_means
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference_interval(
    baseline: npt.NDArray[np.bool_],
    candidate: npt.NDArray[np.bool_],
    groups: IntArray,
    *,
    rounds: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(candidate) - mean(baseline) over the same queries,
    resampling whole groups (e.g. the edited copies of one original photo, which succeed or fail
    together), so that many copies of few photos do not pass for many independent queries."""
    if baseline.shape != candidate.shape or baseline.shape != groups.shape or baseline.ndim != 1:
        raise MeasurementError(
            "a paired interval needs the same queries, scored by both models, each in a group"
        )
    names, group_of = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        raise MeasurementError("a grouped interval needs queries from at least two groups")
    counts = np.bincount(group_of, minlength=len(names))
    differences = np.bincount(
        group_of, weights=candidate.astype(np.float64) - baseline.astype(np.float64), minlength=len(names)
    )
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(names), size=(rounds, len(names)))
    means = differences[resamples].sum(axis=1) / counts[resamples].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def product_recall_at_1(embeddings: FloatArray, products: list[str]) -> tuple[float, int] | None:
    """Share of photos whose nearest other photo shows the same product, over the photos whose
    product has several; None when no product has two photos (nothing to measure)."""
    product_array = np.asarray(products)
    counts = {name: int(np.sum(product_array == name)) for name in set(products)}
    queries = np.array([counts[name] > 1 for name in products])
    if not queries.any():
        return None
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argmax(similarity, axis=1)
    hits = product_array[nearest] == product_array
    return float(np.mean(hits[queries])), int(queries.sum())


@dataclass(frozen=True, slots=True)
class NearDuplicateMetrics:
    recall_at_1: float
    recall_at_5: float
    mean_reciprocal_rank: float
    ranks: IntArray


def neardup_metrics(queries: FloatArray, database: FloatArray, targets: IntArray) -> NearDuplicateMetrics:
    """recall@1/@5 and mAP (= mean reciprocal rank: one relevant item per query) of the original."""
    if len(queries) == 0:
        raise MeasurementError("no near-duplicate queries")
    similarity = queries @ database.T
    own = similarity[np.arange(len(queries)), targets]
    ranks = 1 + np.sum(similarity > own[:, None], axis=1)  # ties resolved in the original's favour
    return NearDuplicateMetrics(
        recall_at_1=float(np.mean(ranks == 1)),
        recall_at_5=float(np.mean(ranks <= 5)),
        mean_reciprocal_rank=float(np.mean(1.0 / ranks)),
        ranks=ranks.astype(np.int64),
    )


def same_vs_different_similarities(
    embeddings: FloatArray, labels: list[str], *, sample: int = 20000, seed: int = 0
) -> tuple[FloatArray, FloatArray]:
    """Cosine of same-class pairs and of different-class pairs (each sampled to at most `sample`)."""
    label_array = np.asarray(labels)
    similarity = embeddings @ embeddings.T
    upper = np.triu(np.ones(similarity.shape, dtype=bool), k=1)
    same_class = label_array[:, None] == label_array[None, :]
    rng = np.random.default_rng(seed)

    def draw(values: FloatArray) -> FloatArray:
        return values if len(values) <= sample else rng.choice(values, size=sample, replace=False)

    return draw(similarity[upper & same_class]), draw(similarity[upper & ~same_class])
