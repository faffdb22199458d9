"""The training loop: its epoch hook (the sweep scores several epoch counts with one run) and
each loss term's own temperature."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from lookalike_tuning.datasets import DatasetError
from lookalike_tuning.fit import TrainingConfig, TrainingData, batch_loss, fit
from lookalike_tuning.sweep import train_and_score
from lookalike_tuning.train import Head, init_head

pytestmark = pytest.mark.unit


def tiny_data(images: int = 24, views: int = 2, dim: int = 16) -> TrainingData:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, dim))
    categories = np.arange(images, dtype=np.int64) % 3
    features = centres[categories][:, None, :] + rng.normal(0, 0.5, (images, views, dim))
    features /= np.linalg.norm(features, axis=2, keepdims=True)
    empty = np.zeros(0, dtype=np.int64)
    return TrainingData(
        features=features.astype(np.float32),
        categories=categories,
        products=np.arange(images, dtype=np.int64),
        pair_first=empty,
        pair_second=empty,
        pair_similar=np.zeros(0, dtype=bool),
    )


CONFIG = TrainingConfig(output_dim=4, hidden=8, epochs=4, batch_size=8, learning_rate=1e-2)


def test_after_epoch_sees_every_epoch_and_the_head_as_it_trains() -> None:
    seen: list[tuple[int, np.ndarray]] = []

    def record(epoch: int, head: Head) -> None:
        seen.append((epoch, head.P.copy()))

    result = fit(tiny_data(), CONFIG, after_epoch=record)
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4]
    assert np.array_equal(seen[-1][1], result.head.P)
    assert not np.array_equal(seen[0][1], result.head.P)  # it kept learning after epoch 1


def test_train_and_score_scores_each_checkpoint_and_the_end_once_per_mix() -> None:
    def scorer(head: Head, base_weight: float) -> dict[str, Any]:
        return {"map_at_10": float(np.abs(head.P).sum()), "base_weight_seen": base_weight}

    rows = train_and_score(tiny_data(), CONFIG, {"hidden": 8}, {2, 9}, [0.0, 0.3], scorer)
    assert [(row["config"]["epochs"], row["config"]["base_weight"]) for row in rows] == [
        (2, 0.0), (2, 0.3), (4, 0.0), (4, 0.3),
    ]  # fmt: skip
    assert rows[0]["train_seconds"] is None
    assert rows[-1]["train_seconds"] is not None
    assert rows[0]["map_at_10"] != rows[-1]["map_at_10"]  # the checkpoint scored the head of epoch 2
    assert all(row["config"]["hidden"] == 8 for row in rows)


def test_each_term_uses_its_own_temperature() -> None:
    data = tiny_data()
    indices = np.arange(8, dtype=np.int64)

    def loss(config: TrainingConfig) -> float:
        rng = np.random.default_rng(1)
        head = init_head(data.features.reshape(-1, 16).astype(np.float64), 4, 8, rng)
        return batch_loss(head, data, indices, config, np.random.default_rng(2))[0]

    instance_only = replace(CONFIG, category_weight=0.0, instance_weight=1.0)
    category_only = replace(CONFIG, category_weight=1.0, instance_weight=0.0)
    # The category temperature does not touch the instance term, and the other way round.
    assert loss(replace(instance_only, temperature=0.5)) == loss(instance_only)
    assert loss(replace(instance_only, instance_temperature=0.5)) != loss(instance_only)
    assert loss(replace(category_only, instance_temperature=0.5)) == loss(category_only)
    assert loss(replace(category_only, temperature=0.5)) != loss(category_only)


def test_too_few_training_views_for_the_head_are_a_usage_error_naming_the_option() -> None:
    # 4 images x 3 views cannot span a 256-dimensional projection: exit 2 with advice, not a traceback.
    features = np.random.default_rng(0).normal(size=(12, 1280))
    with pytest.raises(DatasetError, match=r"got 12: give --dim 12 or less, or more images"):
        init_head(features, 256, 0, np.random.default_rng(0))
