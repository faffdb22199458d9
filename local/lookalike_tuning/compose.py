"""One ONNX graph = frozen backbone + trained head + L2 normalisation, and its int8 variant.

The base graph's `embedding` output (global average pool) is renamed and fed through
L2 normalisation (what the head was trained on), the head's MatMul/Add/Relu nodes and a final
L2 normalisation; the new output is called `embedding` again with shape [N, D], and the
ImageNet classifier (`logits`) is dropped. The int8 variant uses the base model's recipe
(lookalike_tuning.quantize): static QDQ, per-channel int8 weights, uint8
activations, percentile ranges, calibrated on real preprocessed training views; the head's own
nodes stay float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from lookalike_tuning.quantize import quantize_int8
from lookalike_tuning.train import Head

EMBEDDING = "embedding"
BACKBONE_OUTPUT = "backbone_embedding"
# The frozen base embedding beside the tuned one in an unfrozen backbone (scripts/unfreeze_backbone.py).
BASE_EMBEDDING = "base_embedding"
# "pca": the head's PCA view of the base embedding; "full": the base embedding itself; "trunk" (an
# unfrozen backbone only): its `base_embedding` is then the frozen trunk's pooled output.
BasePart = Literal["pca", "full", "trunk"]
# Every node of the head is named with this prefix: the int8 variant keeps them in float (below).
HEAD_NODE_PREFIX = "tuned_head/"


def _l2_normalise_node(source: str, target: str) -> onnx.NodeProto:
    return helper.make_node("LpNormalization", [source], [target], axis=1, p=2)


def _output_width(graph: onnx.GraphProto, name: str) -> int:
    """The static second dimension of the graph output `name`."""
    for output in graph.output:
        if output.name == name:
            dims = output.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    raise ValueError(f"the backbone graph has no output {name!r} of shape [N, D] with a fixed D")


def compose(
    base_fp32: Path, head: Head, out_path: Path, *, base_weight: float = 0.0, base_part: BasePart = "pca"
) -> int:
    """Write backbone + head as one fp32 ONNX file with the single output `embedding` [N, D];
    return D.

    base_weight > 0 concatenates the base model's view (which keeps near-duplicates apart) to the
    head's output, both unit length, weighted so that cosine = base_weight * cos(base part) +
    (1 - base_weight) * cos(head). The base part is the head's fixed PCA projection of the base
    embedding (base_part "pca": D doubles) or the whole unit base embedding ("full": D grows by
    the backbone's dimension). A backbone graph with a `base_embedding` output (an unfrozen one,
    lookalike_tuning.unfreeze) gives the base part from that frozen output; with base_part "trunk"
    that output is the pooled frozen trunk, used whole like "full" (D grows by its width).
    """
    model = onnx.load(str(base_fp32))
    graph = model.graph
    producers = [node for node in graph.node if EMBEDDING in node.output]
    if len(producers) != 1:
        raise ValueError(f"{base_fp32}: expected one node producing {EMBEDDING!r}")
    producer = producers[0]
    producer.output[list(producer.output).index(EMBEDDING)] = BACKBONE_OUTPUT
    for node in graph.node:  # the classifier and anything else reading the old output
        for index, name in enumerate(node.input):
            if name == EMBEDDING:
                node.input[index] = BACKBONE_OUTPUT
    frozen_output = any(BASE_EMBEDDING in node.output for node in graph.node)
    if base_part == "trunk" and not frozen_output:
        raise ValueError(f"{base_fp32}: base part 'trunk' needs an unfrozen backbone's {BASE_EMBEDDING!r}")
    if base_weight <= 0:
        dimension = head.output_dim
    elif base_part == "pca":
        dimension = 2 * head.output_dim
    else:  # the whole base part: the frozen output's width, else the backbone embedding's
        dimension = head.output_dim + (
            _output_width(graph, BASE_EMBEDDING) if frozen_output else head.input_dim
        )
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0].dim_param or "N"
    del graph.output[:]

    def weight(name: str, value: npt.NDArray[np.float64]) -> TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    initialisers = [weight("head_P", head.P), weight("head_bias", head.c + head.b2)]
    nodes = [
        _l2_normalise_node(BACKBONE_OUTPUT, "head_input"),
        helper.make_node("MatMul", ["head_input", "head_P"], ["head_linear"]),
    ]
    if head.hidden > 0:
        initialisers += [weight("head_W1", head.W1), weight("head_b1", head.b1), weight("head_W2", head.W2)]
        nodes += [
            helper.make_node("MatMul", ["head_input", "head_W1"], ["head_hidden_pre"]),
            helper.make_node("Add", ["head_hidden_pre", "head_b1"], ["head_hidden_biased"]),
            helper.make_node("Relu", ["head_hidden_biased"], ["head_hidden"]),
            helper.make_node("MatMul", ["head_hidden", "head_W2"], ["head_mlp"]),
            helper.make_node("Add", ["head_linear", "head_mlp"], ["head_sum"]),
        ]
        summed = "head_sum"
    else:
        summed = "head_linear"
    nodes.append(helper.make_node("Add", [summed, "head_bias"], ["head_output"]))
    if base_weight > 0:
        initialisers += [
            weight("base_part_cosine_weight", np.array(np.sqrt(base_weight))),
            weight("head_part_cosine_weight", np.array(np.sqrt(1 - base_weight))),
        ]
        nodes += [
            _l2_normalise_node("head_output", "head_unit"),
            helper.make_node("Mul", ["head_unit", "head_part_cosine_weight"], ["head_part"]),
        ]
        base_input = "head_input"
        if frozen_output:
            base_input = "base_part_input"
            nodes.append(_l2_normalise_node(BASE_EMBEDDING, base_input))
        if base_part == "pca":
            initialisers += [
                weight("base_part_P", head.pca_projection),
                weight("base_part_offset", head.pca_offset),
            ]
            nodes += [
                helper.make_node("MatMul", [base_input, "base_part_P"], ["base_part_projected"]),
                helper.make_node("Add", ["base_part_projected", "base_part_offset"], ["base_part_centred"]),
                _l2_normalise_node("base_part_centred", "base_part_unit"),
            ]
            base_unit = "base_part_unit"
        else:
            base_unit = base_input
        nodes += [
            helper.make_node("Mul", [base_unit, "base_part_cosine_weight"], ["base_part"]),
            helper.make_node("Concat", ["base_part", "head_part"], [EMBEDDING], axis=1),
        ]
    else:
        nodes.append(_l2_normalise_node("head_output", EMBEDDING))
    for index, node in enumerate(nodes):
        node.name = f"{HEAD_NODE_PREFIX}{index}_{node.op_type}"
    graph.node.extend(nodes)
    graph.initializer.extend(initialisers)
    graph.output.append(helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [batch_dim, dimension]))
    _prune_unused(graph)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out_path))
    return dimension


def _prune_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (the classifier), initialisers no node uses and
    the recorded intermediate shapes."""
    needed = {output.name for output in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
    # Stale shape annotations (the renamed output's) would mislead ORT's symbolic shape
    # inference in quant_pre_process: drop them all, they are recomputed.
    del graph.value_info[:]


def quantize_tuned_int8(
    fp32_path: Path, int8_path: Path, input_name: str, views: npt.NDArray[np.float32]
) -> None:
    """The base model's int8 recipe (lookalike_tuning.quantize) on the composed graph. The head
    stays float: it is a few small MatMuls next to the backbone's convolutions, and its centred
    projections lose their precision in 8 bits (int8 vs fp32 cosine collapses when they are
    quantised: docs/TUNING.md)."""
    quantize_int8(
        fp32_path,
        int8_path,
        input_name,
        list(views),
        keep_float=lambda name: name.startswith(HEAD_NODE_PREFIX),
    )
