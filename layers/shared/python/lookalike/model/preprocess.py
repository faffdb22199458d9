"""The model's preprocessing, as the model card prescribes it: small transform functions.

Decoded RGB images (`lookalike.images.decode_image`) go in; the NCHW float32 batch the ONNX graph
takes comes out. Each step is a plain function so that ingest, queries, the benchmarks and the
tuning tools all run exactly the same code.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike.model.borders import trim_uniform_border
from lookalike.model.card import Preprocessing, ResizeMode


def resize_for_model(image: Image.Image, size: int, mode: ResizeMode, crop_fraction: float) -> Image.Image:
    """Resize an RGB image to size x size as the resize mode says.

    `center_crop` means: scale the short side to size / crop_fraction, keep the central
    size x size. The same square is cut from the source first and only it is resampled, so the
    work is bounded by the output size whatever the aspect ratio (a 1 x 4000 strip would otherwise
    be scaled to 256 x 1,024,000 pixels before the crop).
    """
    if mode == "squash":
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    width, height = image.size
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=3.0
    )


def to_model_input(
    images: list[Image.Image], preprocessing: Preprocessing, mode: ResizeMode
) -> npt.NDArray[np.float32]:
    """Stack RGB images into the model's NCHW float32 batch: trim plain borders if the card says
    so, resize, then (x - mean) / std. Ingest, queries and the tools all come through here."""
    size = preprocessing.size
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    mean = np.asarray(preprocessing.mean, dtype=np.float32).reshape(3, 1, 1)
    inverse_std = (1.0 / np.asarray(preprocessing.std, dtype=np.float32)).reshape(3, 1, 1)
    for index, image in enumerate(images):
        framed = trim_uniform_border(image) if preprocessing.trim_borders else image
        resized = resize_for_model(framed, size, mode, preprocessing.crop_fraction)
        pixels = np.asarray(resized, dtype=np.float32)
        batch[index] = (pixels.transpose(2, 0, 1) - mean) * inverse_std
    return batch
