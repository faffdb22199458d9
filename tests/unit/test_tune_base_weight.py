"""Choosing the base part's weight on a development part (lookalike_tuning.base_weight)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lookalike_tuning.base_weight import PROBE_WEIGHT, DevelopmentRun, at_weight, choose, development_split
from lookalike_tuning.datasets import DatasetError, LabelledImage

pytestmark = pytest.mark.unit


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("weight", [0.0, 0.2, 0.5, 0.8])
def test_vectors_at_a_weight_mix_the_two_cosines(weight: float) -> None:
    rng = np.random.default_rng(0)
    base, tuned = unit_rows(rng, 7, 5), unit_rows(rng, 7, 3)
    probe = np.concatenate([math.sqrt(PROBE_WEIGHT) * base, math.sqrt(1 - PROBE_WEIGHT) * tuned], axis=1)
    vectors = at_weight(probe.astype(np.float32), base_dim=5, weight=weight)
    expected = weight * (base @ base.T) + (1 - weight) * (tuned @ tuned.T)
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def row(weight: float, map_at_10: float, lost: int, copies: int = 1000) -> dict[str, object]:
    """A grid row: mAP@10 and the edited copies it loses against the base."""
    return {"weight": weight, "category_map_at_10": map_at_10, "neardup_lost": lost, "neardup_copies": copies}


def test_the_best_map_losing_at_most_the_tolerance_of_the_copies_wins() -> None:
    grid = [row(0.0, 0.62, 30), row(0.2, 0.60, 8), row(0.4, 0.58, 5), row(0.6, 0.50, 0)]
    assert choose(grid, tolerance=0.005) == 0.4  # 0.2 loses 8 of 1000 copies, 3 too many
    assert choose(grid, tolerance=0.01) == 0.2


def test_copies_gained_do_not_make_up_for_copies_lost() -> None:
    grid = [row(0.2, 0.60, 8) | {"neardup_gained": 20}, row(0.6, 0.50, 2)]
    assert choose(grid, tolerance=0.005) == 0.6


def test_ties_go_to_the_smaller_weight() -> None:
    grid = [row(0.1, 0.55, 1), row(0.3, 0.55, 0)]
    assert choose(grid, tolerance=0.005) == 0.1


def test_with_no_weight_within_the_tolerance_the_fewest_copies_lost_are_chosen() -> None:
    grid = [row(0.0, 0.62, 90), row(0.4, 0.58, 40), row(0.8, 0.45, 40)]
    assert choose(grid, tolerance=0.005) == 0.4


def images(classes: int, products: int) -> list[LabelledImage]:
    return [
        LabelledImage(f"c{c}/p{p}/{view}.png", f"c{c}", f"c{c}/p{p}", Path(f"c{c}/p{p}/{view}.png"))
        for c in range(classes)
        for p in range(products)
        for view in range(2)
    ]


def run(holdout_class_count: int = 0) -> DevelopmentRun:
    return DevelopmentRun(
        test_fraction=0.2,
        seed=7,
        neardup_originals=2,
        base_part="pca",
        tolerance=0.005,
        holdout_class_count=holdout_class_count,
    )


def test_the_development_part_is_split_by_product_like_the_held_out_part() -> None:
    split = development_split(images(4, 5), run())
    assert not {image.product for image in split.train} & {image.product for image in split.test}
    assert {image.category for image in split.test} == {"c0", "c1", "c2", "c3"}


def test_with_held_out_classes_the_development_part_holds_out_training_classes() -> None:
    split = development_split(images(6, 3), run(holdout_class_count=1))
    assert len(split.holdout_classes) == 2  # at least two: category retrieval needs them
    assert {image.category for image in split.test} == set(split.holdout_classes)
    assert not {image.category for image in split.train} & set(split.holdout_classes)


@pytest.mark.parametrize(("training", "development"), [((1, 5), run()), ((3, 2), run(holdout_class_count=2))])
def test_a_training_part_too_small_to_split_asks_for_a_number(
    training: tuple[int, int], development: DevelopmentRun
) -> None:
    with pytest.raises(DatasetError, match="give --base-weight a number instead"):
        development_split(images(*training), development)
