"""The scale benchmark's truth and catalogue (scripts/scale_exact.py, scripts/scale_vectors.py):
exact answers checked by hand, and the synthesised rows keeping what makes them realistic."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from lookalike_local.lambda_runtime import load_module

pytestmark = pytest.mark.unit
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def exact() -> ModuleType:
    return load_module(SCRIPTS / "scale_exact.py", "scale_exact_under_test")


@pytest.fixture(scope="module")
def vectors_module() -> ModuleType:
    return load_module(SCRIPTS / "scale_vectors.py", "scale_vectors_under_test")


def unit_points(*angles_degrees: float) -> np.ndarray:
    radians = np.radians(angles_degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float16)


def test_exact_answers_one_row_per_product_without_the_asked_one(exact: ModuleType) -> None:
    # Rows at 0, 5 (product 0), 10, 12 (product 1), 40 (product 2), 90 (product 3) degrees.
    vectors = unit_points(0, 5, 10, 12, 40, 90)
    product = np.array([0, 0, 1, 1, 2, 3])
    category = np.array([0, 0, 1, 1, 1, 0])
    index = exact.ExactProducts(vectors, product, category, lambda p: f"p{p}")
    # Product 0's query is the mean of 0 and 5 degrees (2.5): product 1 (10), then 2, then 3.
    assert index.top_products([0], k=3) == [["p1", "p2", "p3"]]
    # In category 0 only product 3 is left besides the asked one.
    assert index.top_products([0], k=3, category=0) == [["p3"]]
    # A free vector at 45 degrees: 2 (5 away), 1 (best row 12: 33 away), 0 (40 away), 3 (45 away).
    found = index.top_products_of_vector(np.array([1.0, 1.0], dtype=np.float32), k=4)
    assert found == [2, 1, 0, 3]


def test_perturbation_keeps_zero_channels_and_hits_the_asked_cosine(vectors_module: ModuleType) -> None:
    rng = np.random.default_rng(3)
    sample = np.maximum(rng.standard_normal((400, 64)).astype(np.float32), 0.0)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    sigma = vectors_module.sigma_for_cosine(sample, 0.9, rng)
    moved = vectors_module.perturbed(sample, np.full(len(sample), sigma, dtype=np.float32), rng)
    assert np.all(moved[sample == 0] == 0)
    assert np.all(moved >= 0)
    assert abs(float(np.median((moved * sample).sum(axis=1))) - 0.9) < 0.02


def test_synthesised_catalogue_states_its_make_up(vectors_module: ModuleType) -> None:
    rng = np.random.default_rng(5)
    base = np.maximum(rng.standard_normal((60, 32)).astype(np.float32), 0.0)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # 20 real images, each with two views.
    views = base[np.repeat(np.arange(20), 3)] + 0.05 * np.abs(rng.standard_normal((60, 32))).astype(
        np.float32
    )
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    real = vectors_module.RealSet(
        vectors=views.astype(np.float32),
        product=np.repeat(np.arange(20), 3),
        is_view=np.tile(np.array([False, True, True]), 20),
        source="test",
    )
    catalogue = vectors_module.synthesise(500, real, rng)
    composition = catalogue.composition
    assert composition["distinct_real_images"] == 20
    assert composition["augmented_views_of_real_images"] == 40
    assert composition["real_rows"] + composition["synthesised_rows"] == len(catalogue.vectors) == 500
    assert np.all(catalogue.vectors >= 0)
    assert np.allclose(np.linalg.norm(catalogue.vectors.astype(np.float32), axis=1), 1.0, atol=1e-2)
    # Every image of a product is in its product's category.
    for number in np.unique(catalogue.product):
        assert len(np.unique(catalogue.category[catalogue.product == number])) == 1
