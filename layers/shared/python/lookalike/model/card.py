"""The model card: the single source of truth for a model's files, input spec and preprocessing.

The export (and tuning) tools write it next to the .onnx files; the runtime reads it instead of
repeating constants, so a new model cannot silently disagree with its preprocessing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

MODEL_CARD_FILE = "model_card.json"

# How an image becomes the model's square input (lookalike.model.preprocess does it). Here, with
# the card and without numpy or Pillow, so that the settings can name the modes cheaply.
ResizeMode = Literal["squash", "center_crop"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("squash", "center_crop")


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """The card's `preprocessing` block: input size, normalisation, resize modes, and whether
    plain borders are trimmed first (`lookalike.model.borders`; absent in a card: no)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_fraction: float
    default_resize_mode: ResizeMode
    trim_borders: bool = False


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
    directory: Path
    card_sha256: str  # of model_card.json itself: what the model registry records
    input_name: str
    embedding_output: str
    embedding_dim: int
    logits_output: str | None  # only the ImageNet base model has a classifier head
    preprocessing: Preprocessing
    default_variant: str
    variants: dict[str, ModelVariantFile]
    raw: dict[str, Any]  # the whole card, for fields only some tools read (metrics, training)

    def variant(self, name: str | None) -> ModelVariantFile:
        chosen = name or self.default_variant
        if chosen not in self.variants:
            raise ModelCardError(f"model variant {chosen!r} is not in the card ({', '.join(self.variants)})")
        return self.variants[chosen]


def _triple(values: Any, field: str) -> tuple[float, float, float]:
    if not isinstance(values, list) or len(values) != 3:
        raise ModelCardError(f"model card field preprocessing.{field} must be a list of 3 numbers")
    return (float(values[0]), float(values[1]), float(values[2]))


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ModelCardError(f"model card field preprocessing.{field} must be true or false")
    return value


def _preprocessing(block: dict[str, Any], path: Path) -> Preprocessing:
    mode = block["default_resize_mode"]
    if mode not in get_args(ResizeMode):
        raise ModelCardError(f"unknown default_resize_mode {mode!r} in {path}")
    return Preprocessing(
        size=int(block["size"]),
        mean=_triple(block["mean"], "mean"),
        std=_triple(block["std"], "std"),
        crop_fraction=float(block["center_crop_fraction"]),
        default_resize_mode=mode,
        trim_borders=_flag(block.get("trim_borders", False), "trim_borders"),
    )


def load_model_card(model_dir: Path) -> ModelCard:
    path = model_dir / MODEL_CARD_FILE
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ModelCardError(f"cannot read the model card {path}: {error.strerror or error}") from None
    try:
        raw = cast(dict[str, Any], json.loads(text))
        outputs = raw["outputs"]
        logits = outputs.get("logits")
        return ModelCard(
            model_version=str(raw["model_version"]),
            directory=model_dir,
            card_sha256=hashlib.sha256(text).hexdigest(),
            input_name=str(raw["input"]["name"]),
            embedding_output=str(outputs["embedding"]["name"]),
            embedding_dim=int(outputs["embedding"]["shape"][1]),
            logits_output=str(logits["name"]) if logits else None,
            preprocessing=_preprocessing(raw["preprocessing"], path),
            default_variant=str(raw["default_variant"]),
            variants={
                name: ModelVariantFile(name=name, path=model_dir / entry["file"], sha256=entry["sha256"])
                for name, entry in raw["variants"].items()
            },
            raw=raw,
        )
    except ModelCardError:
        raise
    except ValueError as error:  # not JSON, or a number that is not one
        raise ModelCardError(f"model card {path} is malformed: {error}") from error
    except (KeyError, TypeError, IndexError) as error:
        raise ModelCardError(f"model card {path} lacks field {error}") from error


def model_version_name(card: ModelCard, variant: str, resize_mode: str) -> str:
    """What the store records for embeddings of this card, variant and resize mode: vectors of
    different versions are not comparable."""
    return f"{card.model_version}/{variant}/{resize_mode}"


def verify_variant(card: ModelCard, variant: str | None) -> ModelVariantFile:
    """The variant's file, after checking that its sha256 is the card's; ModelCardError if the
    file is missing or differs (a card that does not describe the files beside it)."""
    chosen = card.variant(variant)
    try:
        with chosen.path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise ModelCardError(f"cannot read {chosen.path}: {error.strerror or error}") from None
    if digest != chosen.sha256:
        raise ModelCardError(
            f"{chosen.path.name} does not match the model card "
            f"(sha256 {digest}, the card says {chosen.sha256})"
        )
    return chosen
