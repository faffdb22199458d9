"""The only imports of the production package `lookalike`: the tuning tools decode, preprocess and
embed with exactly the code that ingest and queries run (re-point these names if it moves)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lookalike.images import decode_image
from lookalike.matches import CARD_FIELD as MATCH_LEVELS_FIELD
from lookalike.matches import MatchCutoffs, calibration_key, cutoffs_in_card
from lookalike.model.borders import trim_uniform_border
from lookalike.model.card import (
    MODEL_CARD_FILE,
    ModelCard,
    ModelCardError,
    ModelVariantFile,
    ResizeMode,
    load_model_card,
)
from lookalike.model.embedder import Embedder

# The base model: the committed model layer folder.
BASE_MODEL_DIR = Path(__file__).resolve().parents[2] / "layers" / "model" / "model"
# Upload limits for the decoder: generous, the training data is the user's own.
DECODE_LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}


def decode_file_bytes(data: bytes) -> Image.Image:
    """An upload's bytes -> the upright RGB image the production decoder makes (draft mode on)."""
    return decode_image(data, **DECODE_LIMITS).image


def decode_full(data: bytes) -> Image.Image:
    """Full-resolution decode (no JPEG draft): the source for augmentations and edits."""
    return decode_image(data, draft_size=None, **DECODE_LIMITS).image


__all__ = [
    "BASE_MODEL_DIR",
    "MATCH_LEVELS_FIELD",
    "MODEL_CARD_FILE",
    "Embedder",
    "MatchCutoffs",
    "ModelCard",
    "ModelCardError",
    "ModelVariantFile",
    "ResizeMode",
    "calibration_key",
    "cutoffs_in_card",
    "decode_file_bytes",
    "decode_full",
    "load_model_card",
    "trim_uniform_border",
]
