"""The model card: the single source of truth for files, input spec and preprocessing.

The export script writes it next to the .onnx files; the runtime reads it instead of
repeating constants, so a new export cannot silently disagree with its preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lookalike.images import ResizeMode

MODEL_CARD_FILE = "model_card.json"


class ModelCardError(ValueError):
    """The model card is missing a field or names a file that is not there."""


@dataclass(frozen=True, slots=True)
class ModelVariantFile:
    name: str
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelCard:
    model_version: str
    input_name: str
    embedding_output: str
    logits_output: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_fraction: float
    default_resize_mode: ResizeMode
    default_variant: str
    variants: dict[str, ModelVariantFile]

    def variant(self, name: str | None) -> ModelVariantFile:
        chosen = name or self.default_variant
        if chosen not in self.variants:
            raise ModelCardError(f"model variant {chosen!r} is not in the card ({', '.join(self.variants)})")
        return self.variants[chosen]


def _triple(values: Any, field: str) -> tuple[float, float, float]:
    if not isinstance(values, list) or len(values) != 3:
        raise ModelCardError(f"model card field preprocessing.{field} must be a list of 3 numbers")
    return (float(values[0]), float(values[1]), float(values[2]))


def load_model_card(model_dir: Path) -> ModelCard:
    path = model_dir / MODEL_CARD_FILE
    try:
        raw = cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
        pre = raw["preprocessing"]
        mode = pre["default_resize_mode"]
        if mode not in ("squash", "center_crop"):
            raise ModelCardError(f"unknown default_resize_mode {mode!r} in {path}")
        variants = {
            name: ModelVariantFile(name=name, path=model_dir / entry["file"], sha256=entry["sha256"])
            for name, entry in raw["variants"].items()
        }
        return ModelCard(
            model_version=str(raw["model_version"]),
            input_name=str(raw["input"]["name"]),
            embedding_output=str(raw["outputs"]["embedding"]["name"]),
            logits_output=str(raw["outputs"]["logits"]["name"]),
            size=int(pre["size"]),
            mean=_triple(pre["mean"], "mean"),
            std=_triple(pre["std"], "std"),
            crop_fraction=float(pre["center_crop_fraction"]),
            default_resize_mode=mode,
            default_variant=str(raw["default_variant"]),
            variants=variants,
        )
    except (KeyError, TypeError) as error:
        raise ModelCardError(f"model card {path} lacks field {error}") from error
