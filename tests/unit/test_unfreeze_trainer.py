"""The torch trainer of scripts/unfreeze_backbone.py against the head-only trainer's definitions.

Needs torch, which lives only in the export environment: elsewhere the module skips. Run it there
with `make test-export` (--noconftest: the suite's conftest needs the runtime environment).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SKIP_REASON = "torch is not installed: the unfreeze trainer is checked only in the export environment"
torch = pytest.importorskip("torch", reason=SKIP_REASON)
pytest.importorskip("efficientnet_lite_pytorch", reason=SKIP_REASON)

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO_ROOT / "local"), str(REPO_ROOT / "scripts")]

from lookalike_tuning.train import supcon_loss  # noqa: E402

pytestmark = pytest.mark.unit


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trainer() -> ModuleType:
    return load_script("unfreeze_backbone")


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_and_its_gradient_match_the_numpy_trainer(trainer: ModuleType, temperature: float) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(10, 6))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0, 4])  # label 2 and 4: anchors without a positive
    expected_loss, expected_grad = supcon_loss(y, labels[:, None] == labels[None, :], temperature)
    tensor = torch.tensor(y, requires_grad=True)
    loss = trainer.supcon(tensor, torch.tensor(labels), temperature)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-9)
    np.testing.assert_allclose(tensor.grad.numpy(), expected_grad, atol=1e-9)


def test_trunk_then_tail_is_the_base_network(trainer: ModuleType) -> None:
    """Split at any block count, the two parts compute the exported base model's embedding."""
    network = trainer.load_network(trainer.weights_file())
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, size=(2, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        expected = network.extract_features(x).mean(dim=(2, 3))
        for blocks in (1, 2, 4):
            pooled = trainer.Tail(network, blocks)(trainer.Trunk(network, blocks)(x))
            torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


def test_trunk_features_from_onnx_runtime_equal_the_torch_trunk(trainer: ModuleType) -> None:
    network = trainer.load_network(trainer.weights_file())
    trunk = trainer.Trunk(network, 2).eval()
    views = np.random.default_rng(2).integers(0, 256, size=(3, 2, 3, 224, 224), dtype=np.uint8)
    features = trainer.trunk_features(trunk, views, threads=2)
    with torch.no_grad():
        expected = trunk(
            (torch.from_numpy(views.reshape(6, 3, 224, 224)).float() - trainer.MEAN) / trainer.STD
        )
    assert tuple(features.shape) == (3, 2, *expected.shape[1:])
    torch.testing.assert_close(features.flatten(0, 1), expected, atol=1e-4, rtol=1e-4)


def test_the_trunk_benchmark_runs_and_both_engines_agree(capsys: pytest.CaptureFixture[str]) -> None:
    """A small run of scripts/bench_unfreeze_trunk.py, so that it cannot rot."""
    module = load_script("bench_unfreeze_trunk")
    assert module.main(["--views", "4", "--rounds", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["views"] == 4
    assert set(result["median_seconds"]) == {"onnxruntime", "torch"}
    assert result["max_abs_difference"] < 1e-3
