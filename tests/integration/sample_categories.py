"""The category each sample photo (lookalike_local.samples) is filed under in the tests that build
a categorised catalogue from them: ingest, queries, suggested categories."""

from __future__ import annotations

CATEGORY_OF = {
    "chelsea": "animals",
    "coffee": "food",
    "astronaut": "people",
    "rocket": "vehicles",
    "motorcycle": "vehicles",
    "hubble": "space",
    "retina": "medical",
    "ihc": "medical",
    "china": "places",
    "flower": "nature",
}
