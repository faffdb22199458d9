"""scripts/eval_suggestions.py on a small labelled folder made of real photos: it runs the
production embedding path, splits by product, and prints the JSON last line docs/BENCHMARKS.md
quotes ("Suggested categories"). The full-size run is `make eval-suggestions`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from script_runs import run_script

from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]


def views(image: Image.Image, count: int) -> list[Image.Image]:
    """Different crops and turns of one photo: products of one look, as a category's are."""
    width, height = image.size
    found = []
    for index in range(count):
        left, top = width * (index % 4) // 16, height * (index // 4) // 12
        crop = image.crop((left, top, left + width * 3 // 4, top + height * 3 // 4))
        found.append(crop.rotate(3 * index).resize((160, 120)))
    return found


@pytest.fixture
def labelled(tmp_path: Path, photos: list[SamplePhoto]) -> Path:
    root = tmp_path / "labelled"
    for name in ("chelsea", "coffee", "rocket"):
        photo = next(p for p in photos if p.name == name)
        (root / name).mkdir(parents=True)
        for index, view in enumerate(views(photo.open_rgb(), 8)):
            view.save(root / name / f"{index}.jpg", quality=85)
    return root


def test_a_small_run_measures_the_vote_and_the_imagenet_labels(labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "suggestions.json"
    code, line, stderr = run_script(
        REPO_ROOT / "scripts" / "eval_suggestions.py",
        "--dataset", labelled, "--seeds", "2", "--cache-dir", tmp_path / "cache", "--out", out,
        timeout=300,
    )  # fmt: skip
    assert code == 0, stderr[-3000:]
    assert {"k", "power", "confident_at", "target_precision", "command", "datasets"} <= set(line)
    (measured,) = line["datasets"]
    assert measured["dataset"] == "labelled"
    # Three clearly different photos: the neighbours' vote names each held-out crop's category.
    assert measured["top1_accuracy"] == 1.0
    assert measured["precision_at_threshold"] == 1.0
    assert 0.0 <= measured["imagenet_mean_purity"] <= 1.0
    assert 0.0 <= measured["imagenet_label_accuracy"] <= 1.0
    assert json.loads(out.read_text())["details"][0]["classes"] == 3
    assert list((tmp_path / "cache").glob("*.npz"))  # the embeddings were cached where asked
