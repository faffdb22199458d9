"""Match levels: the rule that turns a similarity into a level, the card's calibration, the API's
`min_match` parameter and `match` field as documented."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lookalike.matches import MATCH_LEVELS, MatchCutoffs, at_least, cutoffs_in_card
from lookalike.model.card import ModelCardError, load_model_card

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"

pytestmark = pytest.mark.unit

CUTOFFS = MatchCutoffs(duplicate=0.9, very_similar=0.8, similar=0.6)


@pytest.mark.parametrize(
    ("similarity", "level"),
    [
        (1.0, "duplicate"),
        (0.9, "duplicate"),
        (0.8999, "very_similar"),
        (0.8, "very_similar"),
        (0.7999, "similar"),
        (0.6, "similar"),
        (0.5999, "weak"),
        (-1.0, "weak"),
    ],
)
def test_each_level_starts_at_its_cutoff(similarity: float, level: str) -> None:
    assert CUTOFFS.level(similarity) == level


def test_floors_and_order() -> None:
    assert [CUTOFFS.floor(level) for level in MATCH_LEVELS] == [0.9, 0.8, 0.6, None]
    assert at_least("duplicate", "similar")
    assert at_least("similar", "similar")
    assert not at_least("weak", "similar")
    assert not at_least("very_similar", "duplicate")
    assert at_least("weak", "weak")


@pytest.mark.parametrize("values", [(0.8, 0.9, 0.6), (0.9, 0.6, 0.8), (1.2, 0.8, 0.6), (0.9, 0.8, -1.5)])
def test_cutoffs_out_of_order_are_refused(values: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="must satisfy"):
        MatchCutoffs(*values)


def _card_copy(tmp_path: Path, edit: dict[str, object] | None) -> Path:
    """The committed card (beside links to the model files) with its match_levels replaced."""
    for path in MODEL_DIR.iterdir():
        (tmp_path / path.name).symlink_to(path)
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    (tmp_path / "model_card.json").unlink()
    if edit is None:
        card.pop("match_levels", None)
    else:
        card["match_levels"] = edit
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    return tmp_path


def test_the_committed_card_is_calibrated_for_its_default_version() -> None:
    card = load_model_card(MODEL_DIR)
    cutoffs = cutoffs_in_card(card, card.default_variant, card.preprocessing.default_resize_mode)
    assert cutoffs is not None, "run scripts/calibrate_matches.py --write-card"
    entry = card.raw["match_levels"][f"{card.default_variant}/{card.preprocessing.default_resize_mode}"]
    assert entry["command"].startswith("scripts/calibrate_matches.py")
    assert entry["data"]["calibration_pairs"] > 0
    assert entry["data"]["heldout_pairs"] > 0
    for level in ("duplicate", "very_similar", "similar"):
        assert entry["heldout"][level]["pairs"] > 0
        assert 0 < entry["heldout"][level]["precision"] <= 1


def test_a_card_without_calibration_has_no_levels(tmp_path: Path) -> None:
    card = load_model_card(_card_copy(tmp_path, None))
    assert cutoffs_in_card(card, "int8", "squash") is None


def test_a_calibration_of_other_weights_is_not_used(tmp_path: Path) -> None:
    entry = {"cutoffs": {"duplicate": 0.9, "very_similar": 0.8, "similar": 0.6}, "variant_sha256": "0" * 64}
    card = load_model_card(_card_copy(tmp_path, {"int8/squash": entry}))
    assert cutoffs_in_card(card, "int8", "squash") is None


def test_a_calibration_for_another_resize_mode_is_not_used(tmp_path: Path) -> None:
    sha = load_model_card(MODEL_DIR).variant("int8").sha256
    entry = {"cutoffs": {"duplicate": 0.9, "very_similar": 0.8, "similar": 0.6}, "variant_sha256": sha}
    card = load_model_card(_card_copy(tmp_path, {"int8/center_crop": entry}))
    assert cutoffs_in_card(card, "int8", "squash") is None
    assert cutoffs_in_card(card, "int8", "center_crop") == CUTOFFS


@pytest.mark.parametrize(
    "cutoffs",
    [{"duplicate": 0.9, "similar": 0.6}, {"duplicate": 0.5, "very_similar": 0.8, "similar": 0.6}, "0.9"],
)
def test_a_malformed_calibration_is_a_card_error(tmp_path: Path, cutoffs: object) -> None:
    sha = load_model_card(MODEL_DIR).variant("int8").sha256
    card = load_model_card(_card_copy(tmp_path, {"int8/squash": {"cutoffs": cutoffs, "variant_sha256": sha}}))
    with pytest.raises(ModelCardError, match=r"match_levels\.int8/squash is malformed"):
        cutoffs_in_card(card, "int8", "squash")


def test_copying_the_model_folder_keeps_its_levels(tmp_path: Path) -> None:
    copied = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copied)
    card = load_model_card(copied)
    base = load_model_card(MODEL_DIR)
    assert cutoffs_in_card(card, "int8", "squash") == cutoffs_in_card(base, "int8", "squash")
