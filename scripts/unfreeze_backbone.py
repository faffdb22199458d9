"""Fine-tune the last backbone blocks together with a linear projection head (build-time, torch).

    .venv-export/bin/python scripts/unfreeze_backbone.py --views VIEWS.npz --config CONFIG.json \
        --backbone OUT.onnx --head OUT_HEAD.npz

Called by `scripts/tune.py --unfreeze-blocks K` (lookalike_tuning.unfreeze), which prepares the
training views with the production preprocessing and composes, quantises and measures what this
script writes; run it by hand only to debug. It lives beside export_model.py because it needs
what that script needs: torch and the packaged EfficientNet-Lite0 weights, in the export
environment (Python 3.11, requirements-export.txt), never in a Lambda layer.

- The network up to the last K blocks stays frozen: its output for every training view is
  computed once, by ONNX Runtime on that trunk's own export (several times faster than torch on
  the CPU: docs/TUNING.md). The last K blocks, the 1x1 head convolution and its batch norm are trained
  (batch norms keep their ImageNet statistics: eval mode), with a linear head z = x P + c on the
  L2-normalised pooled features, P started from their principal directions, y = z / |z|.
- Loss: SupCon over categories + instance_weight * SupCon over products (two random views of
  each image per batch), the head-only trainer's terms (lookalike_tuning.train) with autograd.
- Output: an ONNX graph with the base model's input and two outputs: `embedding`, the fine-tuned
  pooled features, and `base_embedding` (the optional base part of lookalike_tuning.compose): the
  frozen base model's pooled features, or with config `base_embedding: "trunk"` the frozen trunk's
  own output, pooled (no second copy of the last blocks: the graph costs what the base model
  costs), plus the head's parameters as NumPy arrays.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from export_model import EMBEDDING_DIM, MEAN, STD, export_graph, load_network, session, weights_file

TRUNK_CHUNK = 64


class Tail(torch.nn.Module):
    """The last blocks, the head convolution, its batch norm, the activation and the average pool."""

    def __init__(self, network: torch.nn.Module, blocks: int) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(list(network._blocks)[-blocks:])
        self.conv_head = network._conv_head
        self.bn = network._bn1
        self.activation = network._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.activation(self.bn(self.conv_head(x))).mean(dim=(2, 3))


class Trunk(torch.nn.Module):
    """The frozen part: stem and every block but the last K."""

    def __init__(self, network: torch.nn.Module, blocks: int) -> None:
        super().__init__()
        self.conv_stem = network._conv_stem
        self.bn = network._bn0
        self.activation = network._swish
        self.blocks = torch.nn.ModuleList(list(network._blocks)[:-blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.bn(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


class PooledTrunk(torch.nn.Module):
    """The frozen trunk's output, average-pooled: the base part that adds no computation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class TwoEmbeddings(torch.nn.Module):
    """The exported graph: one trunk, the tuned tail (`embedding`) and the frozen base part
    (`base_embedding`: the base tail, or the pooled trunk)."""

    def __init__(self, trunk: Trunk, tuned: Tail, base: torch.nn.Module) -> None:
        super().__init__()
        self.trunk, self.tuned, self.base = trunk, tuned, base

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return self.tuned(features), self.base(features)


def supcon(y: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon's L_out form, as lookalike_tuning.train.supcon_loss (anchors without a positive left out)."""
    count = len(y)
    diagonal = torch.eye(count, dtype=torch.bool)
    logits = (y @ y.T / temperature).masked_fill(diagonal, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~diagonal
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(diagonal, 0.0)
    counts = positives.sum(dim=1)
    anchors = counts > 0
    if not bool(anchors.any()):
        return y.sum() * 0.0
    per_anchor = -(log_prob * positives).sum(dim=1)[anchors] / counts[anchors]
    return per_anchor.mean()


def normalised(views: np.ndarray) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> the model's input (the mean/std step)."""
    return (torch.from_numpy(views).float() - MEAN) / STD


def run_trunk(trunk_session: ort.InferenceSession, flat_views: np.ndarray) -> np.ndarray:
    """The exported trunk's output of uint8 [N, 3, S, S] views, in chunks."""
    parts = [
        trunk_session.run(["trunk"], {"input": normalised(flat_views[start : start + TRUNK_CHUNK]).numpy()})[
            0
        ]
        for start in range(0, len(flat_views), TRUNK_CHUNK)
    ]
    return np.concatenate(parts)


def trunk_features(trunk: Trunk, views: np.ndarray, threads: int) -> torch.Tensor:
    """[images, views, C, H, W] frozen trunk outputs of the uint8 [images, views, 3, S, S] views."""
    images, view_count = views.shape[:2]
    flat = views.reshape(images * view_count, *views.shape[2:])
    with tempfile.TemporaryDirectory(prefix="unfreeze-trunk-") as folder:
        path = Path(folder) / "trunk.onnx"
        export_graph(trunk, normalised(flat[:2]), path, ["trunk"])
        features = torch.from_numpy(run_trunk(session(path, threads), flat))
    return features.reshape(images, view_count, *features.shape[1:])


def pca_start(pooled: torch.Tensor, output_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P = the top principal directions of the unit pooled features, c = -mean P."""
    mean = pooled.mean(dim=0)
    _, _, components = torch.linalg.svd(pooled - mean, full_matrices=False)
    projection = components[:output_dim].T.contiguous()
    return projection, -(mean @ projection)


def train(
    config: dict[str, float],
    views: np.ndarray,
    categories: np.ndarray,
    products: np.ndarray,
    threads: int,
    *,
    trunk_base: bool = False,
) -> dict[str, object]:
    torch.manual_seed(int(config["seed"]))
    generator = torch.Generator().manual_seed(int(config["seed"]))
    blocks = int(config["unfreeze_blocks"])
    network = load_network(weights_file())
    trunk = Trunk(network, blocks).eval()
    base = Tail(network, blocks).eval()
    tuned = copy.deepcopy(base).eval()  # eval: batch norms keep their statistics
    for parameter in [*trunk.parameters(), *base.parameters()]:
        parameter.requires_grad_(False)
    started = time.perf_counter()
    features = trunk_features(trunk, views, threads)
    print(f"trunk features {tuple(features.shape)} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with torch.inference_mode():
        pooled = torch.nn.functional.normalize(base(features.flatten(0, 1)), dim=1)
    projection, offset = pca_start(pooled, int(config["output_dim"]))
    head = torch.nn.Linear(EMBEDDING_DIM, int(config["output_dim"]))
    with torch.no_grad():
        head.weight.copy_(projection.T)
        head.bias.copy_(offset)
    optimiser = torch.optim.Adam(
        [
            {"params": head.parameters(), "lr": config["learning_rate"]},
            {"params": tuned.parameters(), "lr": config["backbone_learning_rate"]},
        ]
    )
    category_labels = torch.from_numpy(categories.astype(np.int64))
    product_labels = torch.from_numpy(products.astype(np.int64))
    images, view_count = features.shape[:2]
    batch = min(int(config["batch_size"]), images)
    losses: list[float] = []
    steps = 0
    started = time.perf_counter()
    for epoch in range(1, int(config["epochs"]) + 1):
        order = torch.randperm(images, generator=generator)
        epoch_losses = []
        for start in range(0, images - batch + 1, batch):
            chosen = order[start : start + batch]
            first = torch.randint(0, view_count, (batch,), generator=generator)
            second = (
                first + torch.randint(1, max(view_count, 2), (batch,), generator=generator)
            ) % view_count
            x = torch.cat([features[chosen, first], features[chosen, second]])
            y = torch.nn.functional.normalize(head(torch.nn.functional.normalize(tuned(x), dim=1)), dim=1)
            loss = config["category_weight"] * supcon(
                y, category_labels[chosen].repeat(2), config["temperature"]
            ) + config["instance_weight"] * supcon(
                y, product_labels[chosen].repeat(2), config["instance_temperature"]
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss diverged at step {steps + 1}")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            epoch_losses.append(float(loss.detach()))
        losses.extend(epoch_losses)
        print(f"epoch {epoch}: loss {np.mean(epoch_losses):.3f}", file=sys.stderr, flush=True)
    return {
        "model": TwoEmbeddings(trunk, tuned, PooledTrunk() if trunk_base else base).eval(),
        "P": head.weight.detach().T.double().numpy(),
        "c": head.bias.detach().double().numpy(),
        "pca_projection": projection.double().numpy(),
        "pca_offset": offset.double().numpy(),
        "steps": steps,
        "first_loss": losses[0] if losses else float("nan"),
        "last_loss": float(np.mean(losses[-max(1, images // batch) :])) if losses else float("nan"),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--views", type=Path, required=True, help="npz: views uint8, categories, products")
    parser.add_argument("--config", type=Path, required=True, help="JSON: the training settings")
    parser.add_argument("--backbone", type=Path, required=True, help="the ONNX file to write")
    parser.add_argument("--head", type=Path, required=True, help="the head's npz to write")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    config = json.loads(arguments.config.read_text())
    trunk_base = config.pop("base_embedding", "network") == "trunk"
    with np.load(arguments.views) as stored:
        views, categories, products = stored["views"], stored["categories"], stored["products"]
    result = train(config, views, categories, products, arguments.threads, trunk_base=trunk_base)
    example = normalised(views[:2, 0])
    export_graph(result.pop("model"), example, arguments.backbone, ["embedding", "base_embedding"])
    arrays = {name: result.pop(name) for name in ("P", "c", "pca_projection", "pca_offset")}
    np.savez(arguments.head, **arrays)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
