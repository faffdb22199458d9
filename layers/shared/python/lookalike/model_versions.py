"""The model lifecycle's use cases over the registry (lookalike.store.registry) and the model
files (lookalike.model): register a model folder, bootstrap a new deployment, and pick the
embedders a batch of uploads is embedded with.

A deployment that has never switched models behaves as before: its configured model (MODEL_DIR +
MODEL_VARIANT + RESIZE_MODE) is registered and activated the first time no model is active
(`ensure_active_model`), and it is the only one ingest embeds with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from lookalike.model.card import ResizeMode, load_model_card, model_version_name, verify_variant
from lookalike.model.catalog import ModelNotFoundError
from lookalike.model.embedder import Embedder, get_embedder
from lookalike.settings import Settings
from lookalike.store import ModelRef, ModelRegistry, ModelSpec, RegisteredModel, RegistryError, Store
from lookalike.store.database import active_model

# How long a cold start waits for another one that is registering the first model (its index
# build on an empty table is quick), and how often it looks.
BOOTSTRAP_WAIT_S: Final = 60.0
BOOTSTRAP_POLL_S: Final = 0.2


def model_spec(
    model_dir: Path, *, variant: str | None = None, resize_mode: ResizeMode | None = None
) -> ModelSpec:
    """What the registry records of a model folder, after checking the variant file's sha256
    against its card (`ModelCardError` otherwise)."""
    card = load_model_card(model_dir)
    chosen = verify_variant(card, variant)
    return ModelSpec(
        version=model_version_name(card, chosen.name, resize_mode or card.preprocessing.default_resize_mode),
        dimension=card.embedding_dim,
        card_sha256=card.card_sha256,
        card=card.raw,
    )


def add_model(
    store: Store, model_dir: Path, *, variant: str | None = None, resize_mode: ResizeMode | None = None
) -> RegisteredModel:
    """Register a model folder as `building` (ingest starts embedding new uploads with it)."""
    return ModelRegistry(store).add(model_spec(model_dir, variant=variant, resize_mode=resize_mode))


def ensure_active_model(store: Store, settings: Settings, *, wait_s: float = BOOTSTRAP_WAIT_S) -> ModelRef:
    """The active model; when none is (a new deployment), the configured one is registered if
    missing and activated (no metrics to compare with: nothing was active). One cheap query when
    a model is active (every cold start).

    Concurrent cold starts of a new deployment agree: the registry serialises them, and one
    that finds the model registered by another but not yet activatable (its index still being
    built) waits for that one, at most `wait_s`, then retries the activation itself.
    """
    active = store.run(active_model, vector=False)
    if active is not None:
        return active
    registry = ModelRegistry(store)
    spec = model_spec(settings.model_dir, variant=settings.model_variant, resize_mode=settings.resize_mode)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if not any(model.version == spec.version for model in registry.models()):
                registry.add(spec)
            return registry.activate(spec.version, force=True).model.ref
        except RegistryError:
            # Another process registered or activated it meanwhile, or is still building its index.
            active = store.run(active_model, vector=False)
            if active is not None:
                return active
            if time.monotonic() >= deadline:
                raise
            time.sleep(BOOTSTRAP_POLL_S)


def maintained_embedders(store: Store) -> dict[int, Embedder]:
    """Model id -> embedder for every model new uploads are embedded with (active, building,
    standby). A building or standby model whose files this process lacks is left out (its
    backfill fills the gap); the active model's files must be here (`ModelNotFoundError`)."""
    embedders: dict[int, Embedder] = {}
    active = store.run(active_model, vector=False)
    for model in ModelRegistry(store).maintained():
        try:
            embedders[model.id] = get_embedder(model.version)
        except ModelNotFoundError:
            if active is not None and model.id == active.id:
                raise
    return embedders
