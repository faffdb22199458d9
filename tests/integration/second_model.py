"""A second embedding model for tests: the base ONNX graph plus a fixed random orthogonal
projection to a smaller dimension (MatMul) and L2 normalisation, written as a model folder with
its own model_card.json. Its vectors live in another space than the base model's (another
dimension, rotated), so a ranking that mixed the two would be recognisable."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lookalike.model.card import MODEL_CARD_FILE, load_model_card


def projection(dimension_in: int, dimension_out: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """[in, out] with orthonormal columns (QR of a seeded Gaussian matrix)."""
    gaussian = np.random.default_rng(seed).standard_normal((dimension_in, dimension_out))
    q, _ = np.linalg.qr(gaussian)
    return q.astype(np.float32)


def build_projected_model(
    base_dir: Path,
    out_dir: Path,
    *,
    dimension: int = 256,
    seed: int = 7,
    model_version: str = "projected-test",
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write `out_dir` (model_card.json + <model_version>_fp32.onnx) and return it."""
    card = load_model_card(base_dir)
    graph_model = onnx.load(str(card.variant("fp32").path))
    graph = graph_model.graph
    base_output = card.embedding_output
    for node in graph.node:  # the base embedding, and whatever reads it (the logits head), renamed
        node.output[:] = [f"{name}_base" if name == base_output else name for name in node.output]
        node.input[:] = [f"{name}_base" if name == base_output else name for name in node.input]
    for info in graph.value_info:
        if info.name == base_output:
            info.name = f"{base_output}_base"
    matrix = projection(card.embedding_dim, dimension, seed)
    graph.initializer.append(numpy_helper.from_array(matrix, name="test_projection"))
    graph.node.append(helper.make_node("MatMul", [f"{base_output}_base", "test_projection"], ["projected"]))
    graph.node.append(helper.make_node("LpNormalization", ["projected"], [base_output], axis=1, p=2))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(base_output, onnx.TensorProto.FLOAT, ["N", dimension]))
    out_dir.mkdir(parents=True, exist_ok=True)
    file_name = f"{model_version}_fp32.onnx"
    onnx.save(graph_model, str(out_dir / file_name))
    raw = copy.deepcopy(card.raw)
    raw["model_version"] = model_version
    raw["description"] = f"test model: the base model projected to {dimension}-d (seed {seed})"
    raw["outputs"] = {"embedding": {"name": base_output, "shape": ["N", dimension]}}
    raw["default_variant"] = "fp32"
    digest = hashlib.sha256((out_dir / file_name).read_bytes()).hexdigest()
    raw["variants"] = {"fp32": {"file": file_name, "sha256": digest}}
    if evaluation is not None:
        raw["evaluation"] = evaluation
    (out_dir / MODEL_CARD_FILE).write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return out_dir


def model_dir_with_a_second_model(base_dir: Path, out_dir: Path, **options: Any) -> tuple[Path, Path]:
    """A MODEL_DIR as a model layer with two models would be: the base model's files (linked)
    at its top, the projected model in a subfolder. Returns (MODEL_DIR, the second model's folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in base_dir.iterdir():
        if path.is_file():
            (out_dir / path.name).symlink_to(path.resolve())
    return out_dir, build_projected_model(base_dir, out_dir / "projected", **options)
