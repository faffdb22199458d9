"""scripts/tune.py --unfreeze-blocks: the last backbone blocks trained in the export environment.

Without that environment (torch is build-time only) the option is a clear exit 2 that writes
nothing, which runs everywhere. The whole path (views -> torch trainer -> composed graph -> int8 ->
held-out figures -> card) needs `.venv-export` (make export-env) and skips elsewhere, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from script_runs import run_script, sample_labelled_folder

from lookalike.images import decode_image
from lookalike.model.card import load_model_card
from lookalike.model.embedder import Embedder
from lookalike_local.catalogue import catalogue
from lookalike_tuning.unfreeze import DEFAULT_EXPORT_PYTHON, EXPORT_PYTHON_VARIABLE

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TUNE = REPO_ROOT / "scripts" / "tune.py"
FAST = [
    "--dim", "16", "--hidden", "0", "--epochs", "1", "--batch-size", "16", "--views", "2",
    "--neardup-originals", "2", "--calibration-views", "4", "--test-fraction", "0.3", "--threads", "2",
]  # fmt: skip
EXPORT_PYTHON = Path(os.environ.get(EXPORT_PYTHON_VARIABLE, str(DEFAULT_EXPORT_PYTHON)))


@pytest.fixture(scope="module")
def catalogue_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_labelled_folder(
        tmp_path_factory.mktemp("catalogue"), skip_categories={"collectibles"}, keep_unreadable=False
    )


def test_without_the_export_environment_it_exits_2_and_writes_nothing(
    catalogue_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models" / "unfrozen"
    code, summary, stderr = run_script(
        TUNE,
        *("--dataset", catalogue_folder, "--out", out, "--unfreeze-blocks", "1", *FAST),
        timeout=120,
        env={EXPORT_PYTHON_VARIABLE: str(tmp_path / "no-such-python")},
    )
    assert code == 2, stderr
    assert "make export-env" in summary["error"]
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no partial folder left behind


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["--unfreeze-blocks", "1", "--hidden", "32"], "--hidden 0"),  # an MLP head
        (["--base-weight", "0.3", "--base-part", "trunk"], "--unfreeze-blocks"),  # no trunk to pool
    ],
)
def test_settings_the_trainer_cannot_train_exit_2(
    catalogue_folder: Path, tmp_path: Path, settings: list[str], named: str
) -> None:
    out = tmp_path / "unfrozen"
    code, summary, _ = run_script(
        TUNE, "--dataset", catalogue_folder, "--out", out, *FAST, *settings, timeout=120
    )
    assert code == 2
    assert named in summary["error"]
    assert not out.exists()


def pooled_trunk(base_fp32: Path, blocks: int, inputs: np.ndarray) -> np.ndarray:
    """The base graph's own activations entering its last `blocks` blocks, average-pooled: read
    from the exported base model, independently of the trainer's torch trunk."""
    model = onnx.load(str(base_fp32))
    first_tail_block = 16 - blocks  # EfficientNet-Lite0 has 16 blocks
    weight = f"network._blocks.{first_tail_block}._expand_conv.weight"
    (entering,) = [node.input[0] for node in model.graph.node if list(node.input[1:2]) == [weight]]
    model.graph.node.append(helper.make_node("GlobalAveragePool", [entering], ["trunk_pooled"]))
    model.graph.output.append(helper.make_empty_tensor_value_info("trunk_pooled"))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pooled = np.asarray(session.run(["trunk_pooled"], {"input": inputs})[0])
    return pooled.reshape(len(pooled), -1)


@pytest.mark.skipif(
    not EXPORT_PYTHON.is_file(),
    reason=f"the export environment ({EXPORT_PYTHON}) is not there: make export-env (torch, build-time only)",
)
@pytest.mark.parametrize("base_part", ["full", "trunk"])
def test_the_unfrozen_model_is_written_loads_and_records_how_it_was_trained(
    catalogue_folder: Path, tmp_path: Path, base_part: str
) -> None:
    out = tmp_path / "unfrozen"
    code, summary, stderr = run_script(
        TUNE,
        *("--dataset", catalogue_folder, "--out", out, "--unfreeze-blocks", "1", *FAST),
        *("--base-weight", "0.3", "--base-part", base_part, "--force"),
        timeout=900,
    )
    assert code == 0, stderr
    assert summary["written"] is True
    card = load_model_card(out)
    # the head and the whole frozen base embedding, or the pooled trunk (192 channels enter the last block)
    base_width = {"full": 1280, "trunk": 192}[base_part]
    assert card.embedding_dim == 16 + base_width
    assert sorted(path.name for path in out.iterdir()) == [
        "model_card.json",
        "tuned_fp32.onnx",
        "tuned_int8.onnx",
    ]
    training = card.raw["training"]
    assert training["unfrozen_backbone"]["blocks"] == 1
    assert training["base_part"] == base_part
    photos = [decode_image(obj.body(), max_bytes=10**8, max_pixels=10**8).image for obj in catalogue()[:4]]
    base_card = load_model_card(REPO_ROOT / "layers" / "model" / "model")
    base_embedder = Embedder(base_card, variant="fp32")
    if base_part == "full":
        frozen = base_embedder.embed(photos).vectors
    else:
        pooled = pooled_trunk(base_card.variant("fp32").path, 1, base_embedder.preprocess(photos))
        frozen = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    tuned = Embedder(card, variant="fp32").embed(photos).vectors
    # The base part is the frozen model's own embedding (or its pooled trunk), weighted by
    # sqrt(0.3): the tuned blocks never touch it.
    np.testing.assert_allclose(tuned[:, :base_width], np.sqrt(0.3) * frozen, atol=1e-4)
    assert np.abs(tuned[:, base_width:]).sum() > 0
