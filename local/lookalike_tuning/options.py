"""The settings of one tune run (scripts/tune.py builds them from its command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lookalike_tuning.compose import BasePart
from lookalike_tuning.fit import TrainingConfig
from lookalike_tuning.unfreeze import UnfreezeSettings


@dataclass(frozen=True, slots=True)
class TuneOptions:
    dataset_dir: Path
    out_dir: Path
    name: str = "tuned"
    pairs_csv: Path | None = None
    holdout_classes: tuple[str, ...] = ()
    test_fraction: float = 0.2
    measure_per_class: int | None = None  # split_by_product: held-out products measured per class
    views: int = 3
    neardup_originals: int = 60
    calibration_views: int = 50
    threads: int = 2
    cache_dir: Path | None = None
    trim_borders: bool = False
    min_map_gain: float = 0.0
    # > 0: concatenate the base part (compose.compose); "auto": choose it on a development part
    # of the training images (lookalike_tuning.base_weight).
    base_weight: float | Literal["auto"] = 0.0
    base_part: BasePart = "pca"
    force: bool = False
    base_model_dir: Path | None = None
    # Another labelled folder added to the training part only (never held out, never measured):
    # more of the same kind of pictures when the catalogue is small. Its classes stay its own.
    extra_train_dir: Path | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # Train the last backbone blocks with a linear head (torch, in the export environment).
    unfreeze: UnfreezeSettings | None = None
    # With base_weight "auto": stop after the development part's figures (settings compared
    # without looking at the held-out part); nothing is written.
    development_only: bool = False
