"""Unfreezing the last backbone blocks: the tune run's bridge to the export environment.

The head-only trainer (lookalike_tuning.fit) needs no autograd framework; training backbone
blocks does, and torch is build-time only (the `.venv-export` environment of `make
export-model`). So this module prepares the training views with the production preprocessing,
runs scripts/unfreeze_backbone.py in that environment, and hands back its backbone graph (outputs
`embedding`, tuned, and `base_embedding`, frozen: the base model's, or with `trunk_base` the pooled
output of the frozen trunk) and its linear head for lookalike_tuning.compose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lookalike_tuning.datasets import LabelledImage, label_indices
from lookalike_tuning.features import view_images
from lookalike_tuning.fit import TrainingConfig, TrainingResult
from lookalike_tuning.production import Embedder
from lookalike_tuning.train import Head

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPORT_PYTHON_VARIABLE = "LOOKALIKE_EXPORT_PYTHON"
DEFAULT_EXPORT_PYTHON = REPO_ROOT / ".venv-export" / "bin" / "python"
TRAINER = REPO_ROOT / "scripts" / "unfreeze_backbone.py"
# The weights the trainer loads are the committed base model's (scripts/export_model.py).
BASE_MODEL_VERSION = "efficientnet-lite0-imagenet-2026.11"
DEFAULT_BACKBONE_LEARNING_RATE = 5e-4
MAX_BLOCKS = 4  # the last stage of EfficientNet-Lite0 at 7x7: beyond it the cached trunk grows 4x


class UnfreezeError(RuntimeError):
    """The blocks cannot be unfrozen here (the message says what is missing)."""


@dataclass(frozen=True, slots=True)
class UnfreezeSettings:
    blocks: int
    backbone_learning_rate: float = DEFAULT_BACKBONE_LEARNING_RATE


def export_python() -> Path:
    """The export environment's interpreter ($LOOKALIKE_EXPORT_PYTHON, else .venv-export)."""
    configured = os.environ.get(EXPORT_PYTHON_VARIABLE)
    python = Path(configured) if configured else DEFAULT_EXPORT_PYTHON
    if not python.is_file():
        raise UnfreezeError(
            f"--unfreeze-blocks trains with torch, which lives only in the export environment: {python} "
            f"is missing (create it with `make export-env`, or set {EXPORT_PYTHON_VARIABLE})"
        )
    return python


def check_supported(
    settings: UnfreezeSettings, training: TrainingConfig, base_version: str, pairs: bool
) -> None:
    if not 1 <= settings.blocks <= MAX_BLOCKS:
        raise UnfreezeError(f"--unfreeze-blocks must be 1 to {MAX_BLOCKS}, got {settings.blocks}")
    if base_version != BASE_MODEL_VERSION:
        raise UnfreezeError(
            f"--unfreeze-blocks fine-tunes the packaged {BASE_MODEL_VERSION} weights; the base model "
            f"is {base_version}"
        )
    if training.hidden > 0:
        raise UnfreezeError("--unfreeze-blocks trains a linear head: add --hidden 0")
    if pairs:
        raise UnfreezeError("--unfreeze-blocks trains the category and instance terms only: drop --pairs")


def training_views(
    images: list[LabelledImage], embedder: Embedder, views: int, seed: int
) -> npt.NDArray[np.uint8]:
    """[images, views, 3, S, S] uint8: the model inputs of the cached-feature views
    (lookalike_tuning.features), before the mean/std step, which the trainer applies."""
    preprocessing = embedder.card.preprocessing
    size = preprocessing.size
    out = np.empty((len(images), views, 3, size, size), dtype=np.uint8)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[:, None, None]
    for index in range(len(images)):
        batch = embedder.preprocess(view_images(images, index, views, seed))
        out[index] = np.clip(np.rint(batch * std + mean), 0, 255).astype(np.uint8)
    return out


def train_unfrozen(
    images: list[LabelledImage],
    embedder: Embedder,
    training: TrainingConfig,
    settings: UnfreezeSettings,
    *,
    views: int,
    work: Path,
    threads: int,
    trunk_base: bool = False,
) -> tuple[Path, TrainingResult]:
    """Train the last blocks and a linear head in the export environment; the backbone graph is
    written into `work` (the caller deletes it after composing)."""
    python = export_python()
    started = time.perf_counter()
    categories, products = label_indices(images)
    views_file = work / "unfreeze-views.npz"
    np.savez(
        views_file,
        views=training_views(images, embedder, views, training.seed),
        categories=categories,
        products=products,
    )
    config_file = work / "unfreeze-config.json"
    config_file.write_text(
        json.dumps(
            training.as_card()
            | {"unfreeze_blocks": settings.blocks, "backbone_learning_rate": settings.backbone_learning_rate}
            | {"base_embedding": "trunk" if trunk_base else "network"}
        )
    )
    backbone, head_file = work / "unfrozen-backbone.onnx", work / "unfrozen-head.npz"
    command = [
        str(python),
        str(TRAINER),
        *("--views", str(views_file), "--config", str(config_file)),
        *("--backbone", str(backbone), "--head", str(head_file), "--threads", str(threads)),
    ]
    completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False)
    views_file.unlink()
    config_file.unlink()
    if completed.returncode != 0:
        raise UnfreezeError(f"{TRAINER.name} failed (exit {completed.returncode}): see its messages above")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    with np.load(head_file) as stored:
        head = linear_head({name: np.asarray(stored[name], dtype=np.float64) for name in stored.files})
    head_file.unlink()
    result = TrainingResult(
        head=head,
        steps=int(report["steps"]),
        first_loss=float(report["first_loss"]),
        last_loss=float(report["last_loss"]),
        seconds=time.perf_counter() - started,
    )
    return backbone, result


def linear_head(arrays: dict[str, npt.NDArray[np.float64]]) -> Head:
    """The trainer's z = x P + c as a Head without the MLP branch."""
    input_dim = arrays["P"].shape[0]
    output_dim = arrays["P"].shape[1]
    return Head(
        P=arrays["P"],
        c=arrays["c"],
        W1=np.zeros((input_dim, 0)),
        b1=np.zeros(0),
        W2=np.zeros((0, output_dim)),
        b2=np.zeros(output_dim),
        pca_projection=arrays["pca_projection"],
        pca_offset=arrays["pca_offset"],
    )
