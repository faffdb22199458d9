"""Retrieval metrics: hand-checked values, and loud failures where a figure cannot be computed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lookalike_tuning.evaluate import (
    MeasurementError,
    category_metrics,
    neardup_metrics,
    paired_difference_interval,
    paired_ratio_interval,
    product_recall_at_1,
    same_vs_different_similarities,
)
from lookalike_tuning.heldout import PerQuery, neardup_comparison

pytestmark = pytest.mark.unit


def points(*angles_degrees: float) -> npt.NDArray[np.float32]:
    """Unit vectors on a circle: neighbours by angle, easy to reason about."""
    radians = np.radians(angles_degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_category_metrics_on_a_hand_checked_example() -> None:
    # a a b b: b0 (at 100 deg) is nearer to a1 (at 10) and a0 than to b1 (at 210).
    embeddings = points(0, 10, 100, 210)
    metrics = category_metrics(embeddings, ["a", "a", "b", "b"])
    # Neighbour order: a0: a1,b0,b1  a1: a0,b0,b1  b0: a1,a0,b1  b1: b0,a0,a1
    # AP: a0 1, a1 1, b0 (hit at rank 3: 1/3) / 1, b1 1 -> mAP = (3 + 1/3) / 4
    assert metrics.map_at_10 == pytest.approx((3 + 1 / 3) / 4)
    assert metrics.precision_at_1 == pytest.approx(3 / 4)
    assert metrics.queries == 4
    assert metrics.average_precisions.tolist() == pytest.approx([1, 1, 1 / 3, 1])


def test_a_single_image_class_fails_loudly_instead_of_printing_nan() -> None:
    embeddings = points(0, 10, 100)
    with pytest.raises(MeasurementError, match="single image cannot be scored: b"):
        category_metrics(embeddings, ["a", "a", "b"])
    # Held-out evaluation may leave such queries out, counted, when others remain.
    skipped = category_metrics(embeddings, ["a", "a", "b"], skip_unanswerable=True)
    assert skipped.queries == 2
    assert np.isfinite(skipped.map_at_10)


def test_one_class_or_no_answerable_query_fails() -> None:
    with pytest.raises(MeasurementError, match="two classes"):
        category_metrics(points(0, 10), ["a", "a"])
    with pytest.raises(MeasurementError, match="no query"):
        category_metrics(points(0, 10), ["a", "b"], skip_unanswerable=True)


def test_product_recall_counts_only_products_with_several_photos() -> None:
    embeddings = points(0, 5, 50, 120, 125)
    # p1: 0, 50 (nearest of 0 is 5: a miss; of 50 is 5: a miss); p2: 120, 125 (hits); q: 5 alone.
    result = product_recall_at_1(embeddings, ["p1", "q", "p1", "p2", "p2"])
    assert result == (pytest.approx(0.5), 4)
    assert product_recall_at_1(embeddings, ["a", "b", "c", "d", "e"]) is None


def test_neardup_ranks_and_recall() -> None:
    database = points(0, 90, 180)
    queries = points(10, 80, 150)  # third query is nearer 180 (its target) than 90
    result = neardup_metrics(queries, database, np.array([0, 1, 1]))
    assert result.ranks.tolist() == [1, 1, 2]
    assert result.recall_at_1 == pytest.approx(2 / 3)
    assert result.mean_reciprocal_rank == pytest.approx((1 + 1 + 0.5) / 3)
    with pytest.raises(MeasurementError):
        neardup_metrics(queries[:0], database, np.array([], dtype=np.int64))


def test_same_and_different_class_similarities_split_every_pair() -> None:
    embeddings = points(0, 10, 100, 110)
    same, different = same_vs_different_similarities(embeddings, ["a", "a", "b", "b"])
    assert len(same) == 2
    assert len(different) == 4
    assert same.min() > different.max()


def test_paired_ratio_interval_brackets_the_ratio_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    few_base = rng.uniform(0.4, 0.8, 50)
    many_base = rng.uniform(0.4, 0.8, 5000)
    few_low, few_high = paired_ratio_interval(few_base, few_base * 1.3)
    assert few_low == pytest.approx(1.3)  # every query gains 1.3x: every resample says so
    assert few_high == pytest.approx(1.3)
    few_tuned = np.clip(few_base * 1.3 + rng.normal(0, 0.2, 50), 0, 1)
    noisy_few = paired_ratio_interval(few_base, few_tuned)
    noisy_many = paired_ratio_interval(many_base, np.clip(many_base * 1.3 + rng.normal(0, 0.2, 5000), 0, 1))
    assert noisy_few[0] < few_tuned.mean() / few_base.mean() < noisy_few[1]
    assert noisy_many[1] - noisy_many[0] < (noisy_few[1] - noisy_few[0]) / 4  # 100x the queries


def test_paired_ratio_interval_refuses_unpaired_scores() -> None:
    with pytest.raises(MeasurementError, match="same queries"):
        paired_ratio_interval(np.ones(5), np.ones(6))
    with pytest.raises(MeasurementError, match="baseline scores 0"):
        paired_ratio_interval(np.zeros(5), np.ones(5))


def test_paired_difference_interval_resamples_whole_groups() -> None:
    groups = np.repeat(np.arange(60), 20)  # 20 edited copies of each of 60 originals
    base = np.ones(1200, dtype=bool)
    assert paired_difference_interval(base, base.copy(), groups) == (0.0, 0.0)
    # Two originals lose all their copies: -40/1200. Resampling whole originals, some resamples
    # hold neither of them and some hold them twice or more: the interval reaches 0 and below -2x.
    tuned = base.copy()
    tuned[groups < 2] = False
    low, high = paired_difference_interval(base, tuned, groups)
    assert low < -2 * 40 / 1200
    assert high == 0.0
    # The same 40 misses spread one per copy over 40 originals look far surer: a narrower interval.
    spread = base.copy()
    spread[np.arange(40) * 20] = False
    spread_low, spread_high = paired_difference_interval(base, spread, groups)
    assert low < spread_low <= -40 / 1200 <= spread_high < 0
    assert spread_high - spread_low < (high - low) / 2


def test_paired_difference_interval_refuses_unpaired_or_single_group_scores() -> None:
    hits = np.ones(4, dtype=bool)
    with pytest.raises(MeasurementError, match="same queries"):
        paired_difference_interval(hits, np.ones(5, dtype=bool), np.zeros(4, dtype=np.int64))
    with pytest.raises(MeasurementError, match="at least two groups"):
        paired_difference_interval(hits, hits, np.zeros(4, dtype=np.int64))


def scores(hits: list[bool]) -> PerQuery:
    return PerQuery(
        average_precisions=np.zeros(1),
        neardup_hits=np.asarray(hits, dtype=bool),
        neardup_originals=np.arange(len(hits), dtype=np.int64) // 2,
    )


def test_near_duplicate_comparison_counts_copies_lost_and_gained_apart() -> None:
    base = scores([True, True, True, False, False, True])
    tuned = scores([True, False, False, True, False, True])
    comparison = neardup_comparison(base, tuned)
    assert (comparison["neardup_lost"], comparison["neardup_gained"]) == (2, 1)
    assert comparison["neardup_copies"] == 6
    low, high = comparison["neardup_difference_ci95"]
    assert low <= (1 - 2) / 6 <= high


def test_near_duplicate_comparison_refuses_other_copies() -> None:
    with pytest.raises(MeasurementError, match="same queries"):
        neardup_comparison(scores([True, True]), scores([True]))
