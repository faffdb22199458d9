"""Batched ONNX Runtime inference: RGB images in, L2-normalised float32 embeddings out.

One `Embedder` (one ONNX session) per process: `get_embedder()` builds it lazily on first use
and reuses it for every later invocation of a warm Lambda container; `reset_embedder()` drops
it (tests, or after changing settings).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from lookalike.images import ResizeMode, to_model_input
from lookalike.model_card import ModelCard, load_model_card
from lookalike.settings import get_settings

FloatArray = npt.NDArray[np.float32]

# Batches are split into chunks of this many images: a whole SQS batch in one ONNX call is
# fastest, but activations grow linearly with N; 32 images keep peak memory ~200 MB.
MAX_BATCH = 32


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    embeddings: FloatArray  # [N, dim], unit length
    logits: FloatArray  # [N, 1000]


def l2_normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An all-zero vector (never seen from this model) stays zero instead of becoming NaN.
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


class Embedder:
    def __init__(
        self,
        card: ModelCard,
        *,
        variant: str | None = None,
        resize_mode: ResizeMode | None = None,
        threads: int = 1,
    ) -> None:
        self.card = card
        self.variant = card.variant(variant)
        self.resize_mode: ResizeMode = resize_mode or card.default_resize_mode
        self.threads = threads

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
        return ort.InferenceSession(
            str(self.variant.path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def model_version(self) -> str:
        """What the store records: embeddings from different versions are not comparable."""
        return f"{self.card.model_version}/{self.variant.name}/{self.resize_mode}"

    def warm_up(self) -> None:
        """Build the session and run one inference, so that the first request pays neither
        (call it during a Lambda's init phase, which is not billed the same way)."""
        size = self.card.size
        self.run(np.zeros((1, 3, size, size), dtype=np.float32))

    def preprocess(self, images: list[Image.Image]) -> FloatArray:
        return to_model_input(
            images,
            size=self.card.size,
            mean=self.card.mean,
            std=self.card.std,
            mode=self.resize_mode,
            crop_fraction=self.card.crop_fraction,
        )

    def run(self, batch: FloatArray) -> EmbeddingResult:
        """Infer a preprocessed NCHW batch (chunked to MAX_BATCH)."""
        embeddings: list[FloatArray] = []
        logits: list[FloatArray] = []
        outputs = [self.card.embedding_output, self.card.logits_output]
        for start in range(0, len(batch), MAX_BATCH):
            chunk = np.ascontiguousarray(batch[start : start + MAX_BATCH])
            embedding, logit = self.session.run(outputs, {self.card.input_name: chunk})
            embeddings.append(np.asarray(embedding, dtype=np.float32))
            logits.append(np.asarray(logit, dtype=np.float32))
        if not embeddings:
            return EmbeddingResult(np.empty((0, 0), np.float32), np.empty((0, 0), np.float32))
        return EmbeddingResult(l2_normalise(np.concatenate(embeddings)), np.concatenate(logits))

    def embed_images(self, images: list[Image.Image]) -> EmbeddingResult:
        """Embed RGB images (from `decode_image`) in one batched call."""
        return self.run(self.preprocess(images))

    def embed(self, images: list[Image.Image]) -> FloatArray:
        return self.embed_images(images).embeddings


_lock = threading.Lock()
_embedder: Embedder | None = None


def get_embedder() -> Embedder:
    """The process's embedder, configured from settings and built on first use."""
    global _embedder
    with _lock:
        if _embedder is None:
            settings = get_settings()
            _embedder = Embedder(
                load_model_card(settings.model_dir),
                variant=settings.model_variant,
                resize_mode=settings.resize_mode,
                threads=settings.inference_threads,
            )
        return _embedder


def reset_embedder() -> None:
    global _embedder
    with _lock:
        _embedder = None
