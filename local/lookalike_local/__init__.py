"""Local tooling (never shipped to Lambda): the embedded database, sample photos, the local stack."""
