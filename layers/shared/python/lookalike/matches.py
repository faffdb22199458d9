"""Match levels: what a similarity means for one model version, in words a shop can act on.

A model's card may hold, per variant and resize mode, the cosine cut-offs calibrated from data
(`scripts/calibrate_matches.py`; the rule and the measured precision and recall are in
docs/BENCHMARKS.md, "Match levels"). The same number means different things for different models,
so the levels of a result are always those of the model version that answered. A version whose
card has no calibration (or one made for other weights) has no levels: its results say `match`
null and a request for `min_match` above `weak` is refused (MatchLevelsUnavailableError).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

from lookalike.model.card import ModelCard, ModelCardError
from lookalike.model.catalog import ModelNotFoundError, locate_model
from lookalike.settings import get_settings

MatchLevel = Literal["duplicate", "very_similar", "similar", "weak"]
# Strongest first; `weak` is everything below the `similar` cut-off.
MATCH_LEVELS: Final[tuple[MatchLevel, ...]] = ("duplicate", "very_similar", "similar", "weak")
# The card's field: {"<variant>/<resize mode>": {"cutoffs": {...}, "variant_sha256": ..., ...}}.
CARD_FIELD: Final = "match_levels"


class MatchLevelsUnavailableError(LookupError):
    """A request filters by match level, but the answering model has no calibrated levels."""


@dataclass(frozen=True, slots=True)
class MatchCutoffs:
    """The lowest cosine similarity of each level but `weak`."""

    duplicate: float
    very_similar: float
    similar: float

    def __post_init__(self) -> None:
        if not -1.0 <= self.similar <= self.very_similar <= self.duplicate <= 1.0:
            raise ValueError(
                "match cut-offs must satisfy -1 <= similar <= very_similar <= duplicate <= 1, got "
                f"{self.similar}, {self.very_similar}, {self.duplicate}"
            )

    def level(self, similarity: float) -> MatchLevel:
        if similarity >= self.duplicate:
            return "duplicate"
        if similarity >= self.very_similar:
            return "very_similar"
        if similarity >= self.similar:
            return "similar"
        return "weak"

    def floor(self, level: MatchLevel) -> float | None:
        """The lowest similarity given `level` or a stronger one (None for `weak`: no floor)."""
        return None if level == "weak" else float(getattr(self, level))

    def as_dict(self) -> dict[str, float]:
        return {"duplicate": self.duplicate, "very_similar": self.very_similar, "similar": self.similar}


def at_least(level: MatchLevel, minimum: MatchLevel) -> bool:
    return MATCH_LEVELS.index(level) <= MATCH_LEVELS.index(minimum)


def calibration_key(variant: str, resize_mode: str) -> str:
    return f"{variant}/{resize_mode}"


def cutoffs_in_card(card: ModelCard, variant: str, resize_mode: str) -> MatchCutoffs | None:
    """The card's cut-offs for this variant and resize mode; None when it has none, or when they
    were calibrated on another file than the variant the card names now (a re-export)."""
    entry: Any = card.raw.get(CARD_FIELD, {}).get(calibration_key(variant, resize_mode))
    if entry is None:
        return None
    try:
        if entry["variant_sha256"] != card.variant(variant).sha256:
            return None
        values = entry["cutoffs"]
        return MatchCutoffs(
            float(values["duplicate"]), float(values["very_similar"]), float(values["similar"])
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelCardError(
            f"model card of {card.model_version}: {CARD_FIELD}.{calibration_key(variant, resize_mode)} "
            f"is malformed ({error})"
        ) from error


@cache
def _cutoffs(model_dir: Path, version: str) -> MatchCutoffs | None:
    try:
        location = locate_model(model_dir, version)
    except ModelNotFoundError:
        return None
    return cutoffs_in_card(location.card, location.variant, location.resize_mode)


def match_cutoffs(version: str) -> MatchCutoffs | None:
    """The cut-offs of a registered model version ("<card>/<variant>/<mode>") from its card under
    MODEL_DIR, read once per process (as its embedder is)."""
    return _cutoffs(get_settings().model_dir, version)
