"""The model registry from the command line: list, add, activate, roll back, retire.

    .venv/bin/python scripts/models.py list [--json]
    .venv/bin/python scripts/models.py add MODEL_DIR [--variant int8] [--resize-mode squash]
    .venv/bin/python scripts/models.py activate VERSION [--allow-partial] [--force]
    .venv/bin/python scripts/models.py rollback
    .venv/bin/python scripts/models.py retire VERSION

The lifecycle (docs/MODELS.md): `add` registers a model folder as building (ingest embeds new
uploads with it from the next batch on), `scripts/backfill.py --model VERSION` fills its vectors
of the catalogue, `activate` switches every query to it (refused unless it covers every image
and its card's held-out metrics are at least the active model's), `rollback` switches back to
the previous model (kept up to date meanwhile), `retire` drops a model's vectors and index.

DATABASE_URL names the database (unset: the embedded local one is started), as for
scripts/backfill.py. Exit codes: 0 done, 1 refused (the message says why; nothing was changed),
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike.model.card import RESIZE_MODES, ModelCardError
from lookalike.model_versions import add_model
from lookalike.settings import MODEL_VARIANTS
from lookalike.store import Activation, ModelRegistry, RegisteredModel, RegistryError, Store
from lookalike_aws.runtime import get_store
from lookalike_local.embedded_db import ensure_database_url


def _table(models: list[RegisteredModel]) -> str:
    header = ("version", "dim", "state", "coverage", "created", "activated")
    rows = [
        (
            model.version,
            str(model.dimension),
            model.state,
            f"{model.coverage:.1%} ({model.images_embedded}/{model.images_stored})",
            model.created_at.strftime("%Y-%m-%d %H:%M"),
            model.activated_at.strftime("%Y-%m-%d %H:%M") if model.activated_at else "-",
        )
        for model in models
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    )


def _switched(activation: Activation) -> str:
    lines = [f"active: {activation.model.version}"]
    if activation.previous is not None:
        lines.append(f"standby: {activation.previous.version} (kept up to date for `rollback`)")
    if activation.uncovered:
        lines.append(
            f"warning: {activation.uncovered} images have no vector of it and cannot be found, e.g.:"
        )
        lines += [f"  s3://{ref.bucket}/{ref.key}" for ref in activation.uncovered_sample]
    return "\n".join(lines)


def run(store: Store, args: argparse.Namespace) -> str:
    registry = ModelRegistry(store)
    if args.command == "list":
        models = registry.models()
        if args.json:
            return json.dumps([model.as_dict() for model in models], indent=2)
        return _table(models) if models else "no model registered yet"
    if args.command == "add":
        model = add_model(store, args.model_dir, variant=args.variant, resize_mode=args.resize_mode)
        return (
            f"added {model.version} ({model.dimension}-d), state building: ingest embeds new "
            "uploads with it; fill the catalogue with: "
            f"scripts/backfill.py --bucket BUCKET --model {model.version}"
        )
    if args.command == "activate":
        return _switched(registry.activate(args.version, allow_partial=args.allow_partial, force=args.force))
    if args.command == "rollback":
        return _switched(registry.rollback())
    if args.command == "retire":
        model = registry.retire(args.version)
        return f"retired {model.version}: its vectors and index are dropped"
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every model with its state and coverage")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    add = commands.add_parser("add", help="register a model folder (model_card.json + files) as building")
    add.add_argument("model_dir", type=Path)
    add.add_argument("--variant", choices=MODEL_VARIANTS, help="default: the card's default variant")
    add.add_argument("--resize-mode", choices=RESIZE_MODES, help="default: the card's default resize mode")
    activate = commands.add_parser("activate", help="switch every query to this model")
    activate.add_argument("version")
    activate.add_argument(
        "--allow-partial", action="store_true", help="activate although images lack its vector"
    )
    activate.add_argument("--force", action="store_true", help="skip the held-out metrics comparison")
    commands.add_parser("rollback", help="switch back to the previously active model")
    retire = commands.add_parser("retire", help="drop a model's vectors and index")
    retire.add_argument("version")
    args = parser.parse_args(argv)

    ensure_database_url()
    store = get_store()
    store.migrate()
    try:
        print(run(store, args))
    except (RegistryError, ModelCardError) as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
