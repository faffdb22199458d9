"""Match levels through the query function's real handler, against the embedded PostgreSQL filled
with real embeddings of real photos (test_query's catalogue): each result says how good a match
it is by the answering model's calibrated cut-offs, and `min_match` filters by them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance
from test_query import call, catalogue, http_event, jpeg, photo_of, query_handler  # noqa: F401

from lookalike.matches import MATCH_LEVELS, at_least, match_cutoffs
from lookalike.model.embedder import get_embedder
from lookalike.settings import get_settings
from lookalike.store import Store
from lookalike_local.lambda_runtime import Handler
from lookalike_local.samples import SamplePhoto

pytestmark = pytest.mark.integration

MODEL_DIR = Path(__file__).resolve().parents[2] / "layers" / "model" / "model"


def lightly_edited(image: Image.Image) -> bytes:
    """The same photo as a shop would re-upload it: a little brighter, shrunk, re-encoded."""
    edited = ImageEnhance.Brightness(image).enhance(1.1)
    edited = edited.resize((edited.width * 3 // 4, edited.height * 3 // 4))
    return jpeg(Image.open(io.BytesIO(jpeg(edited, quality=60))).convert("RGB"))


def test_an_edited_copy_of_a_product_is_a_duplicate(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,  # noqa: F811
    photos: list[SamplePhoto],
) -> None:
    cutoffs = match_cutoffs(get_embedder().model_version)
    assert cutoffs is not None, "the committed model card has no match levels"
    # Photos whose light edit lands well above the cut-off: the cut-off is conservative (set by the
    # Fashion-MNIST packshots, docs/BENCHMARKS.md "Match levels"), and the cup's copy scores just
    # under it (a "very similar" copy, not a broken rule).
    for name in ("chelsea", "astronaut"):
        body = lightly_edited(photo_of(photos, name))
        status, payload = call(
            query_handler,
            http_event("POST", "/search", body=body, content_type="image/jpeg", query={"k": "12"}),
        )
        assert status == 200, payload
        assert payload["match_cutoffs"] == cutoffs.as_dict()
        top = payload["results"][0]
        assert (top["product_id"], top["match"]) == (name, "duplicate"), top
        # Every result is labelled, by the cut-offs the response names.
        for result in payload["results"]:
            assert result["match"] == cutoffs.level(result["similarity"]), result
        assert "weak" in {result["match"] for result in payload["results"]}


def test_min_match_keeps_only_that_level_and_better(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,  # noqa: F811
) -> None:
    status, everything = call(query_handler, http_event("GET", "/products/coffee/similar", query={"k": "20"}))
    assert status == 200
    levels = [result["match"] for result in everything["results"]]
    assert set(levels) <= set(MATCH_LEVELS)
    for minimum in ("similar", "very_similar", "duplicate"):
        status, payload = call(
            query_handler,
            http_event("GET", "/products/coffee/similar", query={"k": "20", "min_match": minimum}),
        )
        assert status == 200, payload
        kept = [result["product_id"] for result in payload["results"]]
        expected = [r["product_id"] for r in everything["results"] if at_least(r["match"], minimum)]
        assert kept == expected
        assert all(at_least(result["match"], minimum) for result in payload["results"])
    status, weak = call(
        query_handler, http_event("GET", "/products/coffee/similar", query={"k": "20", "min_match": "weak"})
    )
    assert weak["results"] == everything["results"]
    # The catalogue's rotated copy of the cup is no duplicate; the rest of the catalogue is unrelated.
    assert "weak" in levels
    assert len(everything["results"]) > len(expected)


def test_min_match_on_a_photo_search(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,  # noqa: F811
    photos: list[SamplePhoto],
) -> None:
    body = lightly_edited(photo_of(photos, "chelsea"))
    status, payload = call(
        query_handler,
        http_event(
            "POST",
            "/search",
            body=body,
            content_type="image/jpeg",
            query={"k": "20", "min_match": "duplicate"},
        ),
    )
    assert status == 200, payload
    assert [r["product_id"] for r in payload["results"]] == ["chelsea"]
    assert payload["results"][0]["match"] == "duplicate"


def test_an_unknown_level_is_a_400(query_handler: Handler, catalogue: Store) -> None:  # noqa: F811
    status, payload = call(
        query_handler, http_event("GET", "/products/coffee/similar", query={"min_match": "identical"})
    )
    assert (status, payload["error"]) == (400, "invalid_parameter")
    assert "min_match" in payload["message"]


def test_a_model_without_calibration_says_match_null(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same model files with a card that lacks match_levels (as a card written before
    calibration): results carry match null, and min_match above weak is refused, not ignored."""
    for path in MODEL_DIR.iterdir():
        if path.name != "model_card.json":
            (tmp_path / path.name).symlink_to(path)
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    card.pop("match_levels")
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    get_settings.cache_clear()

    status, payload = call(query_handler, http_event("GET", "/products/coffee/similar", query={"k": "5"}))
    assert status == 200, payload
    assert payload["match_cutoffs"] is None
    assert [result["match"] for result in payload["results"]] == [None] * 5
    status, payload = call(
        query_handler, http_event("GET", "/products/coffee/similar", query={"min_match": "similar"})
    )
    assert (status, payload["error"]) == (400, "match_levels_unavailable")
    assert "no calibrated match levels" in payload["message"]
    status, payload = call(
        query_handler, http_event("GET", "/products/coffee/similar", query={"min_match": "weak", "k": "5"})
    )
    assert (status, payload["count"]) == (200, 5)
