"""scripts/eval_quality.py: --dataset on any labelled folder, and a fallback that cannot print a
wrong number (no copies of an original among the distractors, no single-image class)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from script_runs import run_script, sample_labelled_folder

from lookalike_local.catalogue import catalogue

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "eval_quality.py"


@pytest.fixture(scope="module")
def eval_quality() -> Iterator[ModuleType]:
    """The script as a module (registered while in use: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("eval_quality_under_test", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_fallback_distractors_hold_no_copy_of_an_original(eval_quality: ModuleType) -> None:
    labelled = eval_quality.catalogue_items()
    originals, queries = eval_quality.neardup_sets([])
    distractors = eval_quality.distractors_for(labelled, originals)
    original_files = {item.origin for item in originals}
    assert original_files >= {"chelsea.png", "coffee.png", "grace_hopper.jpg"}
    assert distractors, "the fallback still has distractors"
    # Before the fix, the catalogue's re-encoded front views of chelsea, coffee, ... were here.
    assert not [item.name for item in distractors if item.origin in original_files]
    assert {item.origin for item in distractors} >= {"moon.png", "brick.png"}
    assert len(queries) == 20 * len(originals)


def test_fallback_leaves_out_single_image_classes(eval_quality: ModuleType) -> None:
    labelled = eval_quality.catalogue_items()
    sizes = {label: sum(item.label == label for item in labelled) for label in {i.label for i in labelled}}
    assert min(sizes.values()) >= 2
    assert "collectibles" not in sizes  # the coin set is the only photo of its class


def test_padded_copies_are_added_on_request(eval_quality: ModuleType) -> None:
    _, plain = eval_quality.neardup_sets([])
    _, padded = eval_quality.neardup_sets([], padded=True)
    extra = {item.name.split("#", 1)[1] for item in padded} - {item.name.split("#", 1)[1] for item in plain}
    assert extra == {"pad60-dark", "pad60-white"}


def labelled_folder(root: Path, skip: set[str]) -> Path:
    return sample_labelled_folder(root, skip_categories=skip, keep_unreadable=False)


def test_dataset_mode_prints_the_figures_of_any_labelled_folder(tmp_path: Path) -> None:
    folder = labelled_folder(tmp_path / "data", skip={"collectibles"})
    code, result, stderr = run_script(SCRIPT, "--dataset", folder, "--variant", "fp32", timeout=240)
    assert code == 0, stderr[-3000:]
    assert set(result) == {
        "images",
        "classes",
        "map_at_10",
        "precision_at_10",
        "precision_at_1",
        "model_version",
    }
    assert result["images"] == len([o for o in catalogue() if o.category != "collectibles"]) - 1
    assert result["classes"] == 10
    assert 0.0 < result["map_at_10"] <= 1.0
    assert result["model_version"].endswith("/fp32/squash")


def test_dataset_mode_compares_with_a_baseline_model_on_the_same_images(tmp_path: Path) -> None:
    folder = labelled_folder(tmp_path / "data", skip={"collectibles"})
    baseline = REPO_ROOT / "layers" / "model" / "model"
    code, result, stderr = run_script(
        SCRIPT, "--dataset", folder, "--variant", "fp32", "--baseline-model-dir", baseline, timeout=240
    )
    assert code == 0, stderr[-3000:]
    # The same model as its own baseline: the same figure, a ratio of exactly 1 in every resample.
    assert result["baseline_map_at_10"] == result["map_at_10"]
    assert result["baseline_model_version"] == result["model_version"]
    assert result["map_at_10_ratio"] == 1.0
    assert result["map_at_10_ratio_ci95"] == [1.0, 1.0]


def test_dataset_mode_refuses_a_single_image_class(tmp_path: Path) -> None:
    folder = labelled_folder(tmp_path / "data", skip=set())  # collectibles: one photo
    code, _, stderr = run_script(SCRIPT, "--dataset", folder, timeout=240)
    assert code == 2
    assert "collectibles (1)" in stderr


def test_dataset_mode_refuses_a_missing_model_folder_with_a_message(tmp_path: Path) -> None:
    folder = labelled_folder(tmp_path / "data", skip={"collectibles"})
    for option in ("--model-dir", "--baseline-model-dir"):
        code, result, stderr = run_script(SCRIPT, "--dataset", folder, option, tmp_path / "nope", timeout=240)
        assert code == 2
        assert result == {}
        assert "cannot read the model card" in stderr
        assert "Traceback" not in stderr
