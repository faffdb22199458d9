"""The training loop: batches of two random views per image, the combined loss, Adam steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from lookalike_tuning.train import Adam, Head, backward, forward, init_head, pair_loss, supcon_loss

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    output_dim: int = 256
    hidden: int = 512
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    cosine_decay: bool = False  # the learning rate falls along a half cosine to 0 at the last step
    temperature: float = 0.1  # of the category term
    instance_temperature: float = 0.1  # of the instance term: lower = harder look-alike negatives
    category_weight: float = 1.0  # SupCon, positives = same category
    instance_weight: float = 1.0  # SupCon, positives = same product (NT-Xent with one photo each)
    pair_weight: float = 1.0  # contrastive loss on the pairs CSV (when given)
    pair_margin: float = 0.5
    seed: int = 20261202

    def as_card(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrainingData:
    features: npt.NDArray[np.float32]  # [images, views, input_dim], unit rows
    categories: IntArray  # [images]
    products: IntArray  # [images]
    pair_first: IntArray  # [pairs] image indices
    pair_second: IntArray
    pair_similar: BoolArray


@dataclass(frozen=True, slots=True)
class TrainingResult:
    head: Head
    steps: int
    first_loss: float
    last_loss: float
    seconds: float


def two_views(
    features: npt.NDArray[np.float32], indices: IntArray, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """For each image index: two different cached views, stacked as [views of batch; other views]."""
    view_count = features.shape[1]
    first = rng.integers(0, view_count, size=len(indices))
    offset = rng.integers(1, view_count, size=len(indices)) if view_count > 1 else np.zeros_like(first)
    second = (first + offset) % view_count
    return np.concatenate([features[indices, first], features[indices, second]]).astype(np.float64)


def batch_loss(
    head: Head, data: TrainingData, indices: IntArray, config: TrainingConfig, rng: np.random.Generator
) -> tuple[float, dict[str, npt.NDArray[np.float64]]]:
    x = two_views(data.features, indices, rng)
    cache = forward(head, x)
    categories = np.concatenate([data.categories[indices]] * 2)
    products = np.concatenate([data.products[indices]] * 2)
    total = 0.0
    grad_y = np.zeros_like(cache.y)
    for weight, labels, temperature in (
        (config.category_weight, categories, config.temperature),
        (config.instance_weight, products, config.instance_temperature),
    ):
        if weight > 0:
            loss, grad = supcon_loss(cache.y, labels[:, None] == labels[None, :], temperature)
            total += weight * loss
            grad_y += weight * grad
    gradients = backward(head, cache, grad_y)
    if config.pair_weight > 0 and len(data.pair_first):
        chosen = rng.choice(len(data.pair_first), size=min(config.batch_size, len(data.pair_first)))
        images = np.concatenate([data.pair_first[chosen], data.pair_second[chosen]])
        view = rng.integers(0, data.features.shape[1], size=len(images))
        pair_cache = forward(head, data.features[images, view].astype(np.float64))
        count = len(chosen)
        loss, grad = pair_loss(
            pair_cache.y,
            np.arange(count),
            np.arange(count, 2 * count),
            data.pair_similar[chosen],
            config.pair_margin,
        )
        total += config.pair_weight * loss
        for name, value in backward(head, pair_cache, config.pair_weight * grad).items():
            gradients[name] = gradients[name] + value
    return total, gradients


def fit(
    data: TrainingData, config: TrainingConfig, after_epoch: Callable[[int, Head], None] | None = None
) -> TrainingResult:
    """Train the head. `after_epoch(epoch, head)` (1-based) sees the head as it is after each epoch:
    how the sweep scores several epoch counts with one training run."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    image_count, _, input_dim = data.features.shape
    head = init_head(
        data.features.reshape(-1, input_dim).astype(np.float64), config.output_dim, config.hidden, rng
    )
    optimiser = Adam(config.learning_rate)
    batch = min(config.batch_size, image_count)
    steps_per_epoch = max(1, image_count // batch)
    losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(image_count)
        for step in range(steps_per_epoch):
            indices = order[step * batch : (step + 1) * batch].astype(np.int64)
            loss, gradients = batch_loss(head, data, indices, config, rng)
            if not np.isfinite(loss):
                raise FloatingPointError(f"the loss diverged at step {optimiser.step_count + 1}")
            if config.cosine_decay:
                progress = optimiser.step_count / (config.epochs * steps_per_epoch)
                optimiser.learning_rate = config.learning_rate * 0.5 * (1 + float(np.cos(np.pi * progress)))
            optimiser.step(head, gradients)
            losses.append(loss)
        if after_epoch is not None:
            after_epoch(epoch, head)
    return TrainingResult(
        head=head,
        steps=optimiser.step_count,
        first_loss=losses[0] if losses else float("nan"),
        last_loss=float(np.mean(losses[-steps_per_epoch:])) if losses else float("nan"),
        seconds=time.perf_counter() - started,
    )
