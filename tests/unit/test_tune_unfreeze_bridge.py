"""The unfrozen-backbone bridge without torch: what compose makes of a backbone with a frozen
`base_embedding` output, the base part's three forms, the checks that run before any training, and
the views the trainer is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from lookalike_tuning.compose import compose
from lookalike_tuning.datasets import LabelledImage
from lookalike_tuning.fit import TrainingConfig
from lookalike_tuning.production import BASE_MODEL_DIR, Embedder, load_model_card
from lookalike_tuning.train import head_output, init_head
from lookalike_tuning.unfreeze import (
    BASE_MODEL_VERSION,
    EXPORT_PYTHON_VARIABLE,
    UnfreezeError,
    UnfreezeSettings,
    check_supported,
    export_python,
    linear_head,
    training_views,
)

INPUT_DIM, OUTPUT_DIM = 12, 4
TRUNK_DIM = 7  # a pooled trunk is narrower than the backbone's embedding


def two_output_backbone(path: Path, tuned: np.ndarray, frozen: np.ndarray | None) -> None:
    """input [N, 5] -> embedding = input @ tuned (and base_embedding = input @ frozen)."""
    nodes = [helper.make_node("MatMul", ["input", "tuned_w"], ["embedding"])]
    initialisers = [numpy_helper.from_array(tuned.astype(np.float32), "tuned_w")]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", INPUT_DIM])]
    if frozen is not None:
        nodes.append(helper.make_node("MatMul", ["input", "frozen_w"], ["base_embedding"]))
        initialisers.append(numpy_helper.from_array(frozen.astype(np.float32), "frozen_w"))
        width = frozen.shape[1]
        outputs.append(helper.make_tensor_value_info("base_embedding", TensorProto.FLOAT, ["N", width]))
    graph = helper.make_graph(
        nodes,
        "backbone",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 5])],
        outputs,
        initialisers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["embedding"], {"input": x.astype(np.float32)})[0])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(5, INPUT_DIM)), rng.normal(size=(5, INPUT_DIM)), rng.normal(size=(16, 5))


@pytest.mark.parametrize("base_part", ["pca", "full", "trunk"])
def test_the_base_part_comes_from_the_frozen_output_when_the_backbone_has_one(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray, np.ndarray], base_part: str
) -> None:
    tuned, frozen, x = weights
    head = init_head(unit(x @ frozen), OUTPUT_DIM, 0, np.random.default_rng(0))
    head.P = head.P + np.random.default_rng(1).normal(0, 0.3, head.P.shape)  # not the PCA start
    if base_part == "trunk":
        frozen = frozen[:, :TRUNK_DIM]
    backbone, out = tmp_path / "backbone.onnx", tmp_path / "tuned.onnx"
    two_output_backbone(backbone, tuned, frozen)
    dimension = compose(backbone, head, out, base_weight=0.3, base_part=base_part)  # type: ignore[arg-type]

    composed = run(out, x)
    head_part = head_output(head, unit(x @ tuned).astype(np.float32))
    base = unit(x @ frozen)
    expected_base = base if base_part != "pca" else unit(base @ head.pca_projection + head.pca_offset)
    split = composed.shape[1] - OUTPUT_DIM
    assert composed.shape[1] == dimension
    assert split == {"pca": OUTPUT_DIM, "full": INPUT_DIM, "trunk": TRUNK_DIM}[base_part]
    np.testing.assert_allclose(composed[:, split:], np.sqrt(0.7) * head_part, atol=1e-5)
    np.testing.assert_allclose(composed[:, :split], np.sqrt(0.3) * expected_base, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(composed, axis=1), 1.0, atol=1e-5)


def test_without_a_frozen_output_the_full_base_part_is_the_backbone_embedding(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    tuned, _, x = weights
    head = init_head(unit(x @ tuned), OUTPUT_DIM, 8, np.random.default_rng(0))
    backbone, out = tmp_path / "backbone.onnx", tmp_path / "tuned.onnx"
    two_output_backbone(backbone, tuned, None)
    compose(backbone, head, out, base_weight=0.4, base_part="full")
    expected = head_output(head, unit(x @ tuned).astype(np.float32), 0.4, "full")
    assert expected.shape == (16, INPUT_DIM + OUTPUT_DIM)
    np.testing.assert_allclose(run(out, x), expected, atol=1e-5)


def test_the_trunk_base_part_needs_a_frozen_output(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    tuned, _, x = weights
    head = init_head(unit(x @ tuned), OUTPUT_DIM, 0, np.random.default_rng(0))
    backbone, out = tmp_path / "backbone.onnx", tmp_path / "tuned.onnx"
    two_output_backbone(backbone, tuned, None)
    with pytest.raises(ValueError, match="base part 'trunk' needs an unfrozen backbone"):
        compose(backbone, head, out, base_weight=0.4, base_part="trunk")
    assert not out.exists()


def test_the_trainers_arrays_make_a_linear_head() -> None:
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(size=(INPUT_DIM, OUTPUT_DIM)) for name in ("P", "pca_projection")}
    arrays |= {name: rng.normal(size=OUTPUT_DIM) for name in ("c", "pca_offset")}
    head = linear_head(arrays)
    assert (head.hidden, head.input_dim, head.output_dim) == (0, INPUT_DIM, OUTPUT_DIM)
    x = rng.normal(size=(3, INPUT_DIM))
    np.testing.assert_allclose(
        head_output(head, x.astype(np.float32)),
        unit(x.astype(np.float32) @ arrays["P"] + arrays["c"]),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("settings", "training", "version", "pairs", "message"),
    [
        (UnfreezeSettings(0), TrainingConfig(hidden=0), BASE_MODEL_VERSION, False, "must be 1 to"),
        (UnfreezeSettings(5), TrainingConfig(hidden=0), BASE_MODEL_VERSION, False, "must be 1 to"),
        (
            UnfreezeSettings(2),
            TrainingConfig(hidden=0),
            "some-other-model",
            False,
            "the base model is some-other",
        ),
        (UnfreezeSettings(2), TrainingConfig(hidden=512), BASE_MODEL_VERSION, False, "--hidden 0"),
        (UnfreezeSettings(2), TrainingConfig(hidden=0), BASE_MODEL_VERSION, True, "drop --pairs"),
    ],
)
def test_what_the_trainer_cannot_do_is_refused_before_any_work(
    settings: UnfreezeSettings, training: TrainingConfig, version: str, pairs: bool, message: str
) -> None:
    with pytest.raises(UnfreezeError, match=message):
        check_supported(settings, training, version, pairs)


def test_a_missing_export_environment_names_the_variable_and_the_make_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(EXPORT_PYTHON_VARIABLE, str(tmp_path / "no-python"))
    with pytest.raises(UnfreezeError, match=f"make export-env.*{EXPORT_PYTHON_VARIABLE}"):
        export_python()


def test_the_trainer_gets_exactly_the_model_inputs_before_the_mean_and_std_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = []
    for index in range(2):
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(rng.integers(0, 256, size=(90, 130, 3), dtype=np.uint8)).save(path)
        images.append(LabelledImage(f"k{index}", "c", f"p{index}", path))
    embedder = Embedder(load_model_card(BASE_MODEL_DIR), variant="fp32")
    views = training_views(images, embedder, 3, seed=7)
    assert views.shape == (2, 3, 3, 224, 224)
    assert views.dtype == np.uint8
    clean = embedder.preprocess([Image.open(images[1].path).convert("RGB")])[0]
    np.testing.assert_allclose((views[1, 0].astype(np.float32) - 127.0) / 128.0, clean, atol=1e-6)
    assert not np.array_equal(views[1, 1], views[1, 0])  # an augmented view
