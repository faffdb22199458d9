"""The tuned model's card: the fields it takes from the base card and those that describe its
data and its training."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lookalike_tuning.datasets import Dataset, LabelledImage, Split
from lookalike_tuning.fit import TrainingResult
from lookalike_tuning.options import TuneOptions
from lookalike_tuning.production import MODEL_CARD_FILE, ModelCard


def file_entry(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    return {"file": path.name, "sha256": digest, "bytes": path.stat().st_size}


def write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")


def base_card_fields(base: ModelCard, output_dim: int, *, trim_borders: bool) -> dict[str, Any]:
    raw = base.raw
    return {
        "input": raw["input"],
        "preprocessing": raw["preprocessing"]
        | {"trim_borders": trim_borders or base.preprocessing.trim_borders},
        "outputs": {
            "embedding": {
                "name": "embedding",
                "shape": ["N", output_dim],
                "note": "tuned projection head on the base model's embedding, L2-normalised in the graph",
            }
        },
    }


def data_fields(
    options: TuneOptions, dataset: Dataset, split: Split, extra: list[LabelledImage]
) -> dict[str, Any]:
    return {
        "source": str(options.dataset_dir.name),
        "counts_per_class": dataset.counts(),
        "images": len(dataset.images),
        "training_list_sha256": dataset.list_sha256(),
        "train_images": len(split.train),
        "heldout_images": len(split.test),
        "heldout_split": "classes " + ",".join(split.holdout_classes)
        if split.holdout_classes
        else f"by product, {options.test_fraction:.0%} of each class's products"
        + (
            f", {options.measure_per_class} of them per class measured ({split.unmeasured} "
            "held-out images neither trained on nor measured)"
            if options.measure_per_class
            else ""
        ),
        "unreadable_skipped": dataset.unreadable,
        "pairs_csv": options.pairs_csv.name if options.pairs_csv else None,
        "extra_train": None
        if options.extra_train_dir is None
        else {
            "source": options.extra_train_dir.name,
            "images": len(extra),
            "training_list_sha256": Dataset(options.extra_train_dir, extra, []).list_sha256(),
        },
    }


def training_fields(
    options: TuneOptions,
    result: TrainingResult,
    base_weight: float,
    base_weight_choice: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "loss": "SupCon(category)*category_weight + SupCon(product/instance views)*instance_weight"
        + (" + pair contrastive*pair_weight" if options.pairs_csv else ""),
        "head": "z = x P + c + relu(x W1 + b1) W2 + b2, y = z/|z| (x: base embedding, L2-normalised)",
        "unfrozen_backbone": None
        if options.unfreeze is None
        else {
            "blocks": options.unfreeze.blocks,
            "backbone_learning_rate": options.unfreeze.backbone_learning_rate,
            "trainer": "scripts/unfreeze_backbone.py (torch, build-time)",
            "x": "the embedding of the tuned blocks",
        },
        "base_part": options.base_part if base_weight > 0 else None,
        "views_per_image": options.views,
        "base_weight": base_weight,
        "base_weight_choice": base_weight_choice,
        "trim_borders": options.trim_borders,
        "steps": result.steps,
        "loss_first": round(result.first_loss, 4),
        "loss_last": round(result.last_loss, 4),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **options.training.as_card(),
    }
