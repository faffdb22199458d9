"""The ONNX Runtime session wrapper: decoded RGB images in, L2-normalised float32 embeddings out.

One `Embedder` (one ONNX session) per process and model: `get_embedder()` builds the configured
one lazily and reuses it for every later invocation of a warm Lambda container;
`get_embedder(version)` does the same for any registered model version found under MODEL_DIR.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache, cached_property

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from lookalike.model.card import ModelCard, ModelCardError, ResizeMode, load_model_card, model_version_name
from lookalike.model.catalog import locate_model
from lookalike.model.preprocess import to_model_input
from lookalike.settings import get_settings

FloatArray = npt.NDArray[np.float32]

# Batches are split into chunks of this many images: activations grow linearly with the batch,
# and this size bounds the peak memory of one call (docs/BENCHMARKS.md, "Embedding speed").
MAX_BATCH = 32

# x86 CPUs with AVX2 but without VNNI saturate int16 sums in ONNX Runtime's uint8 x int8 kernels:
# the int8 variant's vectors drift from fp32's (docs/MODEL.md, "int8 on x86 without VNNI"). This
# option takes slower kernels that do not saturate there; elsewhere (arm64 Lambda, x86 with
# VNNI) it changes nothing.
X64_QUANT_PRECISION = "session.x64quantprecision"


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: FloatArray  # [N, dim], unit length
    logits: FloatArray | None = None  # [N, classes]: only when asked for, and only a classifier has them


def l2_normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An all-zero vector stays zero instead of becoming NaN (the store refuses it).
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


class Embedder:
    def __init__(
        self,
        card: ModelCard,
        *,
        variant: str | None = None,
        resize_mode: ResizeMode | None = None,
        threads: int = 1,
        trim_borders: bool | None = None,
    ) -> None:
        """`trim_borders` overrides the card's flag: for measuring what trimming would do (the
        tools); the functions always follow the card."""
        self.card = card
        self.variant = card.variant(variant)
        self.resize_mode: ResizeMode = resize_mode or card.preprocessing.default_resize_mode
        self.threads = threads
        self.preprocessing = card.preprocessing
        if trim_borders is not None:
            self.preprocessing = replace(card.preprocessing, trim_borders=trim_borders)

    @cached_property
    def session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        # Explicit: ORT would otherwise size its pool from the host's cores, not the vCPUs
        # this function is given.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn billed CPU between the short inference calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry(X64_QUANT_PRECISION, "1")
        return ort.InferenceSession(
            str(self.variant.path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def model_version(self) -> str:
        """What the store records: embeddings from different versions are not comparable (nor
        are those made with a trimming the card does not prescribe)."""
        name = model_version_name(self.card, self.variant.name, self.resize_mode)
        if self.preprocessing.trim_borders != self.card.preprocessing.trim_borders:
            name += "/trimmed" if self.preprocessing.trim_borders else "/untrimmed"
        return name

    @property
    def dimension(self) -> int:
        return self.card.embedding_dim

    @property
    def loaded(self) -> bool:
        return "session" in vars(self)

    def warm_up(self) -> None:
        """Build the session and run one inference, so that the first request pays neither
        (call it during a Lambda's init phase, which is not billed the same way)."""
        size = self.card.preprocessing.size
        self.infer(np.zeros((1, 3, size, size), dtype=np.float32))

    def preprocess(self, images: list[Image.Image]) -> FloatArray:
        return to_model_input(images, self.preprocessing, self.resize_mode)

    def infer(self, batch: FloatArray, *, logits: bool = False) -> Embeddings:
        """Run a preprocessed NCHW batch through the graph (in chunks of MAX_BATCH)."""
        if logits and self.card.logits_output is None:
            raise ModelCardError(f"model {self.card.model_version} has no logits output")
        outputs = [self.card.embedding_output]
        if logits and self.card.logits_output is not None:
            outputs.append(self.card.logits_output)
        vectors: list[FloatArray] = []
        classes: list[FloatArray] = []
        for start in range(0, len(batch), MAX_BATCH):
            chunk = np.ascontiguousarray(batch[start : start + MAX_BATCH])
            results = self.session.run(outputs, {self.card.input_name: chunk})
            vectors.append(np.asarray(results[0], dtype=np.float32))
            if logits:
                classes.append(np.asarray(results[1], dtype=np.float32))
        if not vectors:
            return Embeddings(np.empty((0, self.dimension), np.float32))
        return Embeddings(l2_normalise(np.concatenate(vectors)), np.concatenate(classes) if logits else None)

    def embed(self, images: list[Image.Image], *, logits: bool = False) -> Embeddings:
        """Embed decoded RGB images (from `decode_image`) in one batched call."""
        return self.infer(self.preprocess(images), logits=logits)


@cache
def get_embedder(version: str | None = None) -> Embedder:
    """The process's embedder of a registered model version (None: the configured default model,
    MODEL_DIR + MODEL_VARIANT + RESIZE_MODE), built on first use and kept (one session each).
    Raises `ModelNotFoundError` when no folder under MODEL_DIR provides the version."""
    settings = get_settings()
    if version is None:
        return Embedder(
            load_model_card(settings.model_dir),
            variant=settings.model_variant,
            resize_mode=settings.resize_mode,
            threads=settings.inference_threads,
        )
    default = get_embedder()
    if default.model_version == version:
        return default
    location = locate_model(settings.model_dir, version)
    return Embedder(
        location.card,
        variant=location.variant,
        resize_mode=location.resize_mode,
        threads=settings.inference_threads,
    )
