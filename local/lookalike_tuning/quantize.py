"""The int8 recipe of every model Lookalike ships: the base export (scripts/export_model.py) and
tuned models (compose.py) quantise through this one function.

Static QDQ with per-channel int8 weights and uint8 activations, activation ranges at the
99.999th percentile of real preprocessed views. Dynamic and per-tensor int8 drift too far from
fp32 for retrieval; the percentile and the activation type were chosen by measurement
(docs/MODEL.md, "int8").

Runs in both build environments (the project's and the export one, which may be an older
Python): ONNX Runtime's quantisation tools and numpy only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

CALIBRATION_PERCENTILE = 99.999


class ViewReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the calibration views one at a time, as ORT's calibrator expects."""

    def __init__(self, input_name: str, views: Sequence[npt.NDArray[np.float32]]) -> None:
        self._input_name = input_name
        self._views = views
        self._iter: Iterator[dict[str, npt.NDArray[np.float32]]] = iter([])
        self.rewind()

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter([{self._input_name: view[None]} for view in self._views])


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    input_name: str,
    views: Sequence[npt.NDArray[np.float32]],
    *,
    keep_float: Callable[[str], bool] = lambda node_name: False,
) -> None:
    """Write the int8 variant of `fp32_path`; nodes whose name `keep_float` accepts stay float.
    `views`: preprocessed [3, H, W] inputs, as the model sees real uploads."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        import onnx  # after pre-processing: its node names are the ones to exclude

        excluded = [node.name for node in onnx.load(str(prepared)).graph.node if keep_float(node.name)]
        quantize_static(
            str(prepared),
            str(int8_path),
            ViewReader(input_name, views),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
            nodes_to_exclude=excluded,
        )
