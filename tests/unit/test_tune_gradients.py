"""The head's hand-written gradients agree with finite differences, for every loss and parameter."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from lookalike_tuning.train import (
    PARAMETER_NAMES,
    Adam,
    Head,
    backward,
    forward,
    init_head,
    pair_loss,
    supcon_loss,
)

pytestmark = pytest.mark.unit
Array = npt.NDArray[np.float64]


def unit_rows(rng: np.random.Generator, count: int, dim: int) -> Array:
    x = rng.normal(size=(count, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def small_head(rng: np.random.Generator, hidden: int) -> Head:
    head = init_head(unit_rows(rng, 40, 12), output_dim=5, hidden=hidden, rng=rng)
    head.W2 += rng.normal(0, 0.3, head.W2.shape)  # away from the near-zero start, so it matters
    head.b1 += rng.normal(0, 0.3, head.b1.shape)
    return head


def numeric_gradient(loss: Callable[[], float], parameter: Array, epsilon: float = 1e-6) -> Array:
    gradient = np.zeros_like(parameter)
    for index in np.ndindex(parameter.shape):
        saved = parameter[index]
        parameter[index] = saved + epsilon
        plus = loss()
        parameter[index] = saved - epsilon
        minus = loss()
        parameter[index] = saved
        gradient[index] = (plus - minus) / (2 * epsilon)
    return gradient


LOSSES: dict[str, Callable[[Array], tuple[float, Array]]] = {
    "supcon_categories": lambda y: supcon_loss(
        y, np.equal.outer(np.arange(len(y)) % 3, np.arange(len(y)) % 3), temperature=0.2
    ),
    # One anchor (index 0 paired with nothing) has no positive: it must be left out, not break.
    "supcon_instances": lambda y: supcon_loss(
        y, np.equal.outer(np.r_[-1, np.arange(1, len(y)) // 2], np.r_[-2, np.arange(1, len(y)) // 2]), 0.1
    ),
    "pairs": lambda y: pair_loss(
        y,
        np.array([0, 1, 2, 3, 1]),
        np.array([4, 5, 6, 7, 4]),
        np.array([True, False, True, False, False]),
        margin=-0.5,  # below every cosine of these rows: the "different" term is active
    ),
}


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("hidden", [0, 7])
def test_gradients_match_finite_differences(loss_name: str, hidden: int) -> None:
    rng = np.random.default_rng(3)
    head = small_head(rng, hidden)
    x = unit_rows(rng, 10, 12)
    loss_of = LOSSES[loss_name]

    def loss() -> float:
        return loss_of(forward(head, x).y)[0]

    cache = forward(head, x)
    value, grad_y = loss_of(cache.y)
    assert np.isfinite(value)
    assert value > 0
    analytic = backward(head, cache, grad_y)
    for name in PARAMETER_NAMES:
        parameter = getattr(head, name)
        if parameter.size == 0:
            continue
        numeric = numeric_gradient(loss, parameter)
        assert np.abs(numeric).max() > 1e-6 or (name in {"b1", "W1"} and hidden == 0), name
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-4, atol=1e-7, err_msg=name)


def test_supcon_without_any_positive_is_zero_with_zero_gradient() -> None:
    y = unit_rows(np.random.default_rng(0), 6, 4)
    loss, grad = supcon_loss(y, np.eye(6, dtype=bool), temperature=0.1)
    assert loss == 0.0
    assert not grad.any()


def test_untrained_head_preserves_the_neighbours_of_the_features() -> None:
    # The PCA start: with as many output dimensions as the data spans, cosines barely move.
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(6, 30))
    x = rng.normal(size=(50, 6)) @ basis + 3.0 * rng.normal(size=30)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    head = init_head(x, output_dim=6, hidden=4, rng=rng)
    y = forward(head, x).y
    centred = x - x.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    expected = np.argsort(-(centred @ centred.T), axis=1)[:, 1]
    after = np.argsort(-(y @ y.T), axis=1)[:, 1]
    assert np.mean(after == expected) >= 0.9


def test_adam_descends_a_supcon_loss() -> None:
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 24, 12)
    labels = np.arange(24) % 3
    head = init_head(x, output_dim=5, hidden=8, rng=rng)
    optimiser = Adam(learning_rate=0.01)
    positives = np.equal.outer(labels, labels)
    first = supcon_loss(forward(head, x).y, positives, 0.2)[0]
    for _ in range(60):
        cache = forward(head, x)
        _, grad_y = supcon_loss(cache.y, positives, 0.2)
        optimiser.step(head, backward(head, cache, grad_y))
    assert supcon_loss(forward(head, x).y, positives, 0.2)[0] < 0.7 * first
