"""The projection head and its losses, in NumPy with hand-written gradients and Adam.

The backbone is frozen, so only the head learns, on cached backbone features: no autograd
framework is needed (tests/unit/test_tune_gradients.py checks every gradient against finite
differences).

Head, on the base model's L2-normalised embedding x:
    z = x @ P + c  +  relu(x @ W1 + b1) @ W2 + b2          (the MLP branch only when hidden > 0)
    y = z / |z|
P starts as the PCA projection of the training features (centred by c), so the untrained head
already keeps what the base model sees, near-duplicates included; the MLP branch starts near zero.

Losses (weights combine them):
- SupCon (Khosla et al. 2020) with positives = same category;
- SupCon with positives = same product (two views of one photo, or several photos of a product):
  with one photo per product this is SimCLR's NT-Xent, the instance-level term that keeps
  near-duplicate retrieval from collapsing under the category term;
- contrastive loss on explicit pairs: similar pairs pulled to cosine 1, different pairs pushed
  below a margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lookalike_tuning.datasets import DatasetError

Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
PARAMETER_NAMES = ("P", "c", "W1", "b1", "W2", "b2")


@dataclass
class Head:
    P: Array  # [input, output]
    c: Array  # [output]
    W1: Array  # [input, hidden]   (hidden may be 0)
    b1: Array  # [hidden]
    W2: Array  # [hidden, output]
    b2: Array  # [output]
    pca_projection: Array  # the PCA projection P started from (kept fixed: the optional base part)
    pca_offset: Array

    @property
    def hidden(self) -> int:
        return int(self.W1.shape[1])

    @property
    def input_dim(self) -> int:
        return int(self.P.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.P.shape[1])

    def parameters(self) -> dict[str, Array]:
        return {name: getattr(self, name) for name in PARAMETER_NAMES}


@dataclass(frozen=True, slots=True)
class Forward:
    x: Array
    pre_relu: Array
    hidden: Array
    norm: Array  # [N, 1]
    y: Array  # [N, D], unit rows


def init_head(features: Array, output_dim: int, hidden: int, rng: np.random.Generator) -> Head:
    """P = the top principal directions of the training features; the MLP starts near zero."""
    input_dim = features.shape[1]
    if output_dim > min(input_dim, len(features)):
        raise DatasetError(
            f"a {output_dim}-dimensional head needs at least {output_dim} training views of "
            f"{input_dim}-dimensional features, got {len(features)}: give --dim "
            f"{min(input_dim, len(features))} or less, or more images"
        )
    mean = features.mean(axis=0)
    _, _, components = np.linalg.svd(features - mean, full_matrices=False)
    projection = components[:output_dim].T.copy()
    return Head(
        P=projection,
        c=-(mean @ projection),
        W1=rng.normal(0.0, np.sqrt(2.0 / input_dim), (input_dim, hidden)),
        b1=np.zeros(hidden),
        W2=rng.normal(0.0, 0.01 / np.sqrt(max(hidden, 1)), (hidden, output_dim)),
        b2=np.zeros(output_dim),
        pca_projection=projection.copy(),
        pca_offset=-(mean @ projection),
    )


def forward(head: Head, x: Array) -> Forward:
    pre_relu = x @ head.W1 + head.b1
    hidden = np.maximum(pre_relu, 0.0)
    z = x @ head.P + head.c + hidden @ head.W2 + head.b2
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return Forward(x, pre_relu, hidden, norm, z / norm)


def head_output(
    head: Head, x: npt.NDArray[np.float32], base_weight: float = 0.0, base_part: str = "pca"
) -> npt.NDArray[np.float32]:
    """What the composed ONNX graph computes from the base embedding x (compose.compose): the head's
    unit output, or with base_weight > 0 its weighted concatenation with the fixed PCA part or
    (base_part "full") the unit base embedding itself."""
    y = forward(head, x.astype(np.float64)).y
    if base_weight <= 0:
        return y.astype(np.float32)
    base = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    if base_part == "pca":
        base = base @ head.pca_projection + head.pca_offset
        base /= np.linalg.norm(base, axis=1, keepdims=True)
    return np.concatenate([np.sqrt(base_weight) * base, np.sqrt(1 - base_weight) * y], axis=1).astype(
        np.float32
    )


def backward(head: Head, cache: Forward, grad_y: Array) -> dict[str, Array]:
    """Gradients of the loss with respect to every parameter, given dLoss/dy."""
    y = cache.y
    grad_z = (grad_y - y * np.sum(grad_y * y, axis=1, keepdims=True)) / cache.norm
    grad_hidden = grad_z @ head.W2.T
    grad_pre = grad_hidden * (cache.pre_relu > 0)
    return {
        "P": cache.x.T @ grad_z,
        "c": grad_z.sum(axis=0),
        "W1": cache.x.T @ grad_pre,
        "b1": grad_pre.sum(axis=0),
        "W2": cache.hidden.T @ grad_z,
        "b2": grad_z.sum(axis=0),
    }


def supcon_loss(y: Array, positives: BoolArray, temperature: float) -> tuple[float, Array]:
    """Supervised contrastive loss (the "L_out" form) and its gradient with respect to y.

    positives[i, j]: j is a positive of anchor i (the diagonal is ignored). Anchors without a
    positive are left out of the mean; with none at all the loss is 0."""
    count = len(y)
    off_diagonal = ~np.eye(count, dtype=bool)
    positives = positives & off_diagonal
    positive_counts = positives.sum(axis=1)
    anchors = positive_counts > 0
    if not anchors.any():
        return 0.0, np.zeros_like(y)
    logits = (y @ y.T) / temperature
    logits = np.where(off_diagonal, logits, -np.inf)
    row_max = logits.max(axis=1, keepdims=True)
    exp = np.exp(logits - row_max)
    softmax = exp / exp.sum(axis=1, keepdims=True)
    log_prob = logits - row_max - np.log(exp.sum(axis=1, keepdims=True))
    safe_counts = np.maximum(positive_counts, 1)
    per_anchor = -np.sum(np.where(positives, log_prob, 0.0), axis=1) / safe_counts
    loss = float(per_anchor[anchors].mean())
    grad_logits = (softmax - positives / safe_counts[:, None]) * anchors[:, None] / anchors.sum()
    grad_logits = np.where(off_diagonal, grad_logits, 0.0)
    grad_y = (grad_logits + grad_logits.T) @ y / temperature
    return loss, grad_y


def pair_loss(
    y: Array, first: IntArray, second: IntArray, similar: BoolArray, margin: float
) -> tuple[float, Array]:
    """Contrastive loss on pairs of rows of y: similar -> 1 - cos, different -> max(0, cos - margin)^2."""
    cosine = np.sum(y[first] * y[second], axis=1)
    excess = np.maximum(cosine - margin, 0.0)
    losses = np.where(similar, 1.0 - cosine, excess**2)
    grad_cosine = np.where(similar, -1.0, 2.0 * excess) / len(cosine)
    grad_y = np.zeros_like(y)
    np.add.at(grad_y, first, grad_cosine[:, None] * y[second])
    np.add.at(grad_y, second, grad_cosine[:, None] * y[first])
    return float(losses.mean()), grad_y


@dataclass
class Adam:
    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    step_count: int = 0
    moments: dict[str, tuple[Array, Array]] = field(default_factory=dict)

    def step(self, head: Head, gradients: dict[str, Array]) -> None:
        self.step_count += 1
        for name, gradient in gradients.items():
            first, second = self.moments.get(name, (np.zeros_like(gradient), np.zeros_like(gradient)))
            first = self.beta1 * first + (1 - self.beta1) * gradient
            second = self.beta2 * second + (1 - self.beta2) * gradient**2
            self.moments[name] = (first, second)
            corrected_first = first / (1 - self.beta1**self.step_count)
            corrected_second = second / (1 - self.beta2**self.step_count)
            parameter = getattr(head, name)
            parameter -= self.learning_rate * corrected_first / (np.sqrt(corrected_second) + self.epsilon)
