"""The committed model card describes the committed model files, byte for byte.

The runtime trusts the card (file names, hashes, input/output names, preprocessing), so a
re-export that forgot to rewrite it, or a card edited by hand, must fail here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from lookalike.model.card import MODEL_CARD_FILE, ModelCardError, load_model_card

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def card() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MODEL_DIR / "model_card.json").read_text())
    return loaded


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def test_required_fields(card: dict[str, Any]) -> None:
    assert set(card) >= {
        "model_version",
        "description",
        "source",
        "input",
        "preprocessing",
        "outputs",
        "variants",
        "default_variant",
    }
    source = card["source"]
    for key in (
        "weights_package",
        "weights_package_version",
        "weights_file",
        "weights_sha256",
        "architecture_package",
        "architecture_package_version",
        "licence",
        "exported_with",
    ):
        assert source[key], key
    assert source["exported_with"]["opset"] == 18
    assert card["input"] == {
        "name": "input",
        "dtype": "float32",
        "layout": "NCHW",
        "shape": ["N", 3, 224, 224],
        "color": "RGB",
    }
    pre = card["preprocessing"]
    assert pre["size"] == 224
    assert pre["mean"] == [127.0] * 3
    assert pre["std"] == [128.0] * 3
    assert pre["resample"] == "bilinear"
    assert set(pre["resize_modes"]) == {"squash", "center_crop"}
    assert pre["default_resize_mode"] in pre["resize_modes"]
    assert 0 < pre["center_crop_fraction"] <= 1
    assert card["outputs"]["embedding"]["shape"] == ["N", 1280]
    assert card["outputs"]["logits"]["shape"] == ["N", 1000]
    assert card["default_variant"] in card["variants"]
    quantization = card["variants"]["int8"]["quantization"]
    assert quantization["method"] == "static QDQ"
    assert quantization["per_channel"] is True
    assert quantization["calibration_images"] > 0
    assert 0.9 < quantization["cosine_to_fp32_min"] <= quantization["cosine_to_fp32_mean"] <= 1.0


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_variant_file_matches_card(card: dict[str, Any], variant: str) -> None:
    entry = card["variants"][variant]
    path = MODEL_DIR / entry["file"]
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size == entry["bytes"]
    assert sha256_of(path) == entry["sha256"]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_graph_names_and_shapes_match_card(card: dict[str, Any], variant: str) -> None:
    path = MODEL_DIR / card["variants"][variant]["file"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == [card["input"]["name"]]
    assert inputs[0].type == "tensor(float)"
    assert inputs[0].shape == card["input"]["shape"]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert outputs == {spec["name"]: spec["shape"] for spec in card["outputs"].values()}


def test_class_names_if_present() -> None:
    path = MODEL_DIR / "imagenet_classes.json"
    if not path.exists():
        pytest.skip("imagenet_classes.json is not committed")
    names = json.loads(path.read_text())
    assert len(names) == 1000
    assert names[967] == "espresso"
    assert names[285] == "Egyptian cat"


@pytest.mark.parametrize(("value", "expected"), [(None, False), (True, True), (False, False), ("yes", None)])
def test_trim_borders_flag_is_read_strictly(
    card: dict[str, Any], tmp_path: Path, value: object, expected: bool | None
) -> None:
    edited = json.loads(json.dumps(card))
    if value is not None:
        edited["preprocessing"]["trim_borders"] = value
    (tmp_path / MODEL_CARD_FILE).write_text(json.dumps(edited))
    if expected is None:
        with pytest.raises(ModelCardError, match="trim_borders must be true or false"):
            load_model_card(tmp_path)
    else:
        assert load_model_card(tmp_path).preprocessing.trim_borders is expected
