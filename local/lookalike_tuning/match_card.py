"""A calibration's place in the model card: the cut-offs with their provenance, written into the
folder's model_card.json under match_levels["<variant>/<resize mode>"] (lookalike.matches reads
them), for any model folder: the base model (scripts/calibrate_matches.py) or a tuned one
(lookalike_tuning.pipeline, on its held-out images)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lookalike_tuning.calibrate import LEVELS, TARGETS, Calibration, CalibrationOptions, calibrate
from lookalike_tuning.datasets import Dataset
from lookalike_tuning.production import (
    MATCH_LEVELS_FIELD,
    MODEL_CARD_FILE,
    Embedder,
    ResizeMode,
    calibration_key,
    load_model_card,
)


def card_entry(
    embedder: Embedder, result: Calibration, options: CalibrationOptions, command: str
) -> dict[str, Any]:
    """What the model card records of one calibration (the cut-offs and their provenance)."""
    return {
        "cutoffs": result.cutoffs,
        "variant_sha256": embedder.variant.sha256,
        "rule": (
            "top-10 result lists of edited copies (search by photo) and catalogue photos (similar by id); "
            "each level's cut-off is the lowest similarity at which the share of the pairs between it and "
            "the level above that keep its promise is at least "
            + ", ".join(f"{level} {TARGETS[level]}" for level in LEVELS)
            + " (duplicate: the copy's own original; very_similar, similar: the same category), "
            "per dataset, the highest of the datasets' cut-offs kept"
        ),
        "heldout": {
            level: {k: v for k, v in figures.items() if k != "per_edit"}
            for level, figures in result.heldout.items()
        },
        "data": {
            "datasets": result.data,
            "calibration_pairs": len(result.calibration_pairs.similarity),
            "heldout_pairs": len(result.heldout_pairs.similarity),
            "seed": options.seed,
            "split": "by product, each category's products halved: calibration / held-out",
        },
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_match_levels(model_dir: Path, key: str, entry: dict[str, Any]) -> None:
    """Add (or replace) one version's calibration in the folder's model card, atomically."""
    path = model_dir / MODEL_CARD_FILE
    card = json.loads(path.read_text(encoding="utf-8"))
    card.setdefault(MATCH_LEVELS_FIELD, {})[key] = entry
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)


def calibrate_model_folder(
    model_dir: Path,
    options: CalibrationOptions,
    *,
    variant: str | None = None,
    resize_mode: ResizeMode | None = None,
    threads: int = 1,
    command: str,
    write_card: bool = True,
    datasets: list[Dataset] | None = None,
) -> tuple[Calibration, dict[str, Any], str]:
    """Calibrate one model version of a folder (default: its card's default variant and mode) and,
    with write_card, record the cut-offs in its card. Returns the calibration, the card entry and
    the model version."""
    embedder = Embedder(load_model_card(model_dir), variant=variant, resize_mode=resize_mode, threads=threads)
    result = calibrate(embedder, options, datasets=datasets)
    entry = card_entry(embedder, result, options, command)
    if write_card:
        write_match_levels(model_dir, calibration_key(embedder.variant.name, embedder.resize_mode), entry)
    return result, entry, embedder.model_version
