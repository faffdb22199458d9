"""The model layer's build: the repository's model, plus EXTRA_MODELS folders one level down with
their card and only the variant the functions load (docs/MODELS.md, "Model files in Lambda")."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = REPO_ROOT / "layers" / "model" / "Makefile"


def build(artifacts: Path, *extra: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-f", str(MAKEFILE), "build-ModelLayer", f"ARTIFACTS_DIR={artifacts}", "PYTHON=python3"]
        + ([f"EXTRA_MODELS={' '.join(str(folder) for folder in extra)}"] if extra else []),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tuned_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    card = {
        "default_variant": "int8",
        "variants": {"int8": {"file": f"{name}_int8.onnx"}, "fp32": {"file": f"{name}_fp32.onnx"}},
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / f"{name}_int8.onnx").write_bytes(b"int8 weights")
    (folder / f"{name}_fp32.onnx").write_bytes(b"fp32 weights, four times larger")
    return folder


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_extra_models_go_one_level_down_with_their_loaded_variant_only(tmp_path: Path) -> None:
    folder = tuned_folder(tmp_path, "tuned-shoes")
    result = build(tmp_path / "out", folder)
    assert result.returncode == 0, result.stderr
    layer = tmp_path / "out" / "model"
    assert (layer / "model_card.json").is_file()  # the repository's default model stays on top
    assert sorted(path.name for path in (layer / "tuned-shoes").iterdir()) == [
        "model_card.json",
        "tuned-shoes_int8.onnx",
    ]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_folder_without_a_card_fails_the_build(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = build(tmp_path / "out", empty)
    assert result.returncode != 0
    assert "no model_card.json" in result.stderr
