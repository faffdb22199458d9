"""Where a registered model's files are: MODEL_DIR holds the default model (its model_card.json)
and may hold further model folders, one level down, each with its own model_card.json (the model
layer with several models, or a tuned model copied in by `make build`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lookalike.model.card import (
    MODEL_CARD_FILE,
    RESIZE_MODES,
    ModelCard,
    ModelCardError,
    ResizeMode,
    load_model_card,
    model_version_name,
)


class ModelNotFoundError(LookupError):
    """No model folder under MODEL_DIR has the card, variant and resize mode of this version."""


@dataclass(frozen=True, slots=True)
class ModelLocation:
    card: ModelCard
    variant: str
    resize_mode: ResizeMode

    @property
    def version(self) -> str:
        return model_version_name(self.card, self.variant, self.resize_mode)


def model_cards(model_dir: Path) -> list[ModelCard]:
    """The cards in MODEL_DIR and its immediate subfolders (unreadable cards are skipped: a
    folder that is not a model is no error)."""
    folders = [model_dir, *sorted(path for path in model_dir.iterdir() if path.is_dir())]
    cards = []
    for folder in folders:
        if (folder / MODEL_CARD_FILE).is_file():
            try:
                cards.append(load_model_card(folder))
            except ModelCardError:
                continue
    return cards


def locate_model(model_dir: Path, version: str) -> ModelLocation:
    """The card, variant and resize mode of a registered version ("<card>/<variant>/<mode>")."""
    card_version, _, rest = version.rpartition("/")
    card_version, _, variant = card_version.rpartition("/")
    resize_mode = rest
    for mode in RESIZE_MODES:
        if resize_mode == mode:
            for card in model_cards(model_dir):
                if card.model_version == card_version and variant in card.variants:
                    return ModelLocation(card, variant, mode)
    raise ModelNotFoundError(f"no model folder in {model_dir} (or one level down) provides {version!r}")
