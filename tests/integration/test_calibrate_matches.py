"""scripts/calibrate_matches.py on a real labelled folder (the sample catalogue's photos) with the
real model: cut-offs chosen on one half, measured on the other, written into the model card where
the query path finds them; too little data is an error that writes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from script_runs import run_script

from lookalike.matches import MatchCutoffs, cutoffs_in_card
from lookalike.model.card import load_model_card
from lookalike_local.catalogue import catalogue

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "calibrate_matches.py"
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"
SMALL = ["--originals-per-half", "20", "--edits-per-original", "4", "--threads", "2"]


def labelled_folder(root: Path) -> Path:
    """DIR/<category>/<product>/<photo>: each catalogue photo, and two crops of it as two more
    products of its category (the catalogue alone has too few products per category to halve)."""
    for obj in catalogue():
        if "truncated" in obj.filename:
            continue
        with Image.open(io.BytesIO(obj.body())) as opened:
            photo = opened.convert("RGB")
        width, height = photo.size
        crops = {
            "": photo,
            "-left": photo.crop((0, 0, width * 6 // 10, height * 6 // 10)),
            "-right": photo.crop((width * 4 // 10, height * 4 // 10, width, height)),
        }
        for suffix, image in crops.items():
            path = root / obj.category / f"{obj.product_id}{suffix}" / "photo.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return root


def uncalibrated_model(folder: Path) -> Path:
    """The base model's files, its card without match_levels (as a fresh export writes it)."""
    folder.mkdir()
    for path in MODEL_DIR.iterdir():
        if path.name != "model_card.json":
            (folder / path.name).symlink_to(path)
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    card.pop("match_levels")
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    return folder


def run(*arguments: str | Path) -> tuple[int, dict[str, Any], str]:
    return run_script(SCRIPT, *arguments, timeout=600)


def test_calibration_writes_cutoffs_the_query_path_reads(tmp_path: Path) -> None:
    model = uncalibrated_model(tmp_path / "model")
    assert cutoffs_in_card(load_model_card(model), "int8", "squash") is None
    plot = tmp_path / "levels.png"
    code, summary, stderr = run(
        "--model-dir", model, "--dataset", labelled_folder(tmp_path / "data"), "--write-card",
        "--plot", plot, "--cache-dir", tmp_path / "cache", *SMALL,
    )  # fmt: skip
    assert code == 0, stderr
    card = load_model_card(model)
    cutoffs = cutoffs_in_card(card, "int8", "squash")
    assert cutoffs == MatchCutoffs(**summary["cutoffs"])
    entry = card.raw["match_levels"]["int8/squash"]
    assert entry["variant_sha256"] == card.variant("int8").sha256
    assert entry["command"].startswith("scripts/calibrate_matches.py --model-dir ")
    assert summary["data"]["datasets"][0]["calibration_products"] > 0
    assert summary["data"]["datasets"][0]["heldout_products"] > 0
    duplicate = summary["heldout"]["duplicate"]
    assert duplicate["pairs"] > 0
    assert 0.0 < duplicate["precision"] <= 1.0
    assert 0.0 < duplicate["recall"] <= 1.0
    # Every other field of the card is as it was: the card still describes the same files.
    base = json.loads((MODEL_DIR / "model_card.json").read_text())
    assert {k: v for k, v in card.raw.items() if k != "match_levels"} == {
        k: v for k, v in base.items() if k != "match_levels"
    }
    assert plot.stat().st_size > 10_000
    assert "precision" in stderr  # the table


def test_too_few_images_is_an_error_and_the_card_is_untouched(tmp_path: Path) -> None:
    model = uncalibrated_model(tmp_path / "model")
    before = (model / "model_card.json").read_bytes()
    data = tmp_path / "tiny"
    source = next(obj for obj in catalogue() if obj.filename.endswith(".jpg"))
    for category in ("mugs", "lamps"):  # 3 products each: 3 per half, too few to calibrate on
        for name in ("a", "b", "c"):
            (data / category / name).mkdir(parents=True)
            (data / category / name / "photo.jpg").write_bytes(source.body())
    code, _, stderr = run(
        "--model-dir", model, "--dataset", data, "--write-card", "--cache-dir", tmp_path, *SMALL
    )
    assert code == 2
    assert "too few images to calibrate" in stderr
    assert (model / "model_card.json").read_bytes() == before


def test_a_missing_dataset_names_the_fetch_command(tmp_path: Path) -> None:
    code, _, stderr = run("--dataset", tmp_path / "nothing-here")
    assert code == 2
    assert "no dataset folder" in stderr


def test_tuning_calibrates_the_tuned_model_on_its_heldout_part(tmp_path: Path) -> None:
    """scripts/tune.py on a folder whose held-out part is large enough: the tuned card carries
    match levels for its default version, calibrated on held-out images only."""
    out = tmp_path / "tuned"
    code, _, stderr = run_script(
        REPO_ROOT / "scripts" / "tune.py",
        "--dataset", labelled_folder(tmp_path / "data"), "--out", out, "--force",
        "--test-fraction", "0.5", "--dim", "32", "--hidden", "64", "--epochs", "10", "--views", "2",
        "--neardup-originals", "2", "--calibration-views", "4", "--threads", "2",
        timeout=600,
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    card = load_model_card(out)
    key = f"{card.default_variant}/{card.preprocessing.default_resize_mode}"
    entry = card.raw["match_levels"][key]
    assert cutoffs_in_card(
        card, card.default_variant, card.preprocessing.default_resize_mode
    ) == MatchCutoffs(**entry["cutoffs"])
    assert entry["command"].startswith("scripts/tune.py: the held-out part of ")
    heldout_products = sum(
        d["calibration_products"] + d["heldout_products"] for d in entry["data"]["datasets"]
    )
    assert heldout_products == card.raw["data"]["heldout_images"]  # one photo per product here
