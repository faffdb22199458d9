"""Which models the backfill embeds an object with, and where a registered version's files are."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from lookalike.backfill import BackfillModels
from lookalike.model.catalog import ModelNotFoundError, locate_model
from lookalike.model.embedder import Embedder
from lookalike.ports import ListedObject
from lookalike.settings import get_settings
from lookalike.store import StoredVersion

T0 = datetime(2026, 11, 1, tzinfo=UTC)
LISTED = ListedObject("k.jpg", 10, "etag-1", T0)


def models(target: int | None = None) -> BackfillModels:
    # The ids are what `needed` works on; the embedders are never called here.
    return BackfillModels(cast(dict[int, Embedder], {1: object(), 2: object()}), target=target)


def stored(
    status: Any = "embedded", etag: str = "etag-1", ids: frozenset[int] = frozenset(), at: datetime = T0
) -> StoredVersion:
    return StoredVersion(status=status, etag=etag, model_ids=ids, event_time=at)


def test_a_new_or_changed_object_gets_every_model_even_when_one_is_targeted() -> None:
    assert models().needed(LISTED, None) == {1, 2}
    assert models(target=2).needed(LISTED, None) == {1, 2}  # never an upload without the active model
    assert models(target=2).needed(LISTED, stored(etag="older", ids=frozenset({1, 2}))) == {1, 2}


def test_the_same_object_version_gets_only_the_vectors_it_lacks() -> None:
    assert models().needed(LISTED, stored(ids=frozenset({1}))) == {2}
    assert models(target=2).needed(LISTED, stored(ids=frozenset({1}))) == {2}
    assert models(target=1).needed(LISTED, stored(ids=frozenset({1}))) == set()
    assert models().needed(LISTED, stored(ids=frozenset({1, 2}))) == set()


def test_rejections_and_tombstones() -> None:
    assert models().needed(LISTED, stored("rejected", at=T0)) == set()  # the same bytes: rejected again
    assert models().needed(LISTED, stored("rejected", at=T0 - timedelta(seconds=1))) == {1, 2}
    assert models().needed(LISTED, stored("deleted")) == {1, 2}


def test_a_registered_version_is_found_in_model_dir_or_one_level_down(tmp_path: Path) -> None:
    base = get_settings().model_dir
    (tmp_path / "model_card.json").symlink_to(base / "model_card.json")
    card = json.loads((base / "model_card.json").read_text())
    card["model_version"] = "tuned-test"
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "model_card.json").write_text(json.dumps(card))
    (tmp_path / "not-a-model").mkdir()

    found = locate_model(tmp_path, "tuned-test/int8/center_crop")
    assert (found.card.directory, found.variant, found.resize_mode) == (
        tmp_path / "tuned",
        "int8",
        "center_crop",
    )
    assert found.version == "tuned-test/int8/center_crop"
    assert locate_model(tmp_path, f"{base_version(base)}/fp32/squash").card.directory == tmp_path
    for missing in ("tuned-test/int4/squash", "tuned-test/int8/stretch", "other/int8/squash", "garbage"):
        with pytest.raises(ModelNotFoundError, match="provides"):
            locate_model(tmp_path, missing)


def base_version(base: Path) -> str:
    return str(json.loads((base / "model_card.json").read_text())["model_version"])
