"""Embed every image of a bucket (or prefix) that the store lacks, or lacks a model's vector of.

    .venv/bin/python scripts/backfill.py --bucket B [--prefix products/] [--batch-size 32]
    .venv/bin/python scripts/backfill.py --bucket B --model VERSION     (fill a building model)
    .venv/bin/python scripts/backfill.py --bucket B --enqueue QUEUE_URL     (fan out to Lambda)

Objects are embedded with every maintained model (active, building, standby: docs/MODELS.md);
--model VERSION fills only that model's vectors of the objects the store already holds (objects
it does not hold yet get every model's). The registry's coverage is printed at the end.

Same code for the local stack and AWS: S3_ENDPOINT_URL points at moto/MinIO (unset: AWS),
DATABASE_URL at the database (unset: the embedded local one is started). Interrupted runs resume
(the store skips finished objects; a checkpoint file under LOOKALIKE_DATA_DIR skips finished
listing pages). The progress bar goes to stderr, the summary as JSON to stdout; the exit code is
1 if some objects failed transiently (run it again), else 0.

--enqueue sends S3-notification-shaped messages to the ingest queue instead of embedding here;
the store is consulted to skip finished objects only when DATABASE_URL is set (otherwise every
listed object is sent: the ingest function's guard makes repeats harmless, but they cost a
Lambda invocation each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tqdm import tqdm  # type: ignore[import-untyped]

from lookalike.backfill import (
    DEFAULT_BATCH_SIZE,
    BackfillModels,
    BackfillSummary,
    BatchWork,
    Checkpoint,
    EmbedLocally,
    count_objects,
    run_backfill,
)
from lookalike.ingest import IngestLimits
from lookalike.model_versions import ensure_active_model, maintained_embedders
from lookalike.settings import get_settings
from lookalike.store import ModelRegistry, RegistryError, Store
from lookalike_aws.enqueue import EnqueueForIngest
from lookalike_aws.runtime import get_store
from lookalike_aws.s3 import S3ObjectLister, S3ObjectSource
from lookalike_local.embedded_db import ensure_database_url
from lookalike_local.settings import data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bucket", required=True)
    parser.add_argument(
        "--prefix", default="", help="only keys under this prefix (default: the whole bucket)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per inference call"
    )
    parser.add_argument("--enqueue", metavar="QUEUE_URL", help="send the keys to the ingest queue instead")
    parser.add_argument("--model", metavar="VERSION", help="fill only this registered model's vectors")
    parser.add_argument("--limit", type=int, help="stop after this many objects (a partial run; resumable)")
    parser.add_argument("--restart", action="store_true", help="ignore the checkpoint: list from the top")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    settings = get_settings()
    store: Store | None
    work: BatchWork
    if args.enqueue:
        store = get_store() if settings.database_url is not None else None
        work = EnqueueForIngest(args.enqueue)
        if store is None:
            print("DATABASE_URL is not set: every listed object is enqueued", file=sys.stderr)
    else:
        ensure_database_url()
        store = get_store()
        store.migrate()
        ensure_active_model(store, settings)
    models = BackfillModels({})
    if store is not None:
        try:
            models = _models(store, args.model)
        except RegistryError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if not args.enqueue:
        assert store is not None
        for embedder in models.embedders.values():
            embedder.warm_up()
        work = EmbedLocally(
            source=S3ObjectSource(),
            store=store,
            models=models,
            limits=IngestLimits(settings.max_image_bytes, settings.max_image_pixels),
            layout=settings.key_layout,
        )

    checkpoint = Checkpoint(data_dir() / "backfill", args.bucket, args.prefix, models.label)
    if args.restart:
        checkpoint.clear()
    lister = S3ObjectLister()
    total = count_objects(lister, args.bucket, args.prefix, start_after=checkpoint.load())
    bar = tqdm(
        total=total,
        unit="img",
        desc=f"{work.verb} s3://{args.bucket}/{args.prefix}",
        file=sys.stderr,
        disable=args.no_progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )

    def progress(count: int, summary: BackfillSummary) -> None:
        bar.update(count)
        bar.set_postfix(
            {
                work.verb: summary.done,
                "skipped": summary.skipped,
                "rejected": sum(summary.rejected.values()),
                "failed": len(summary.failed),
            },
            refresh=False,
        )

    try:
        summary = run_backfill(
            bucket=args.bucket,
            prefix=args.prefix,
            lister=lister,
            work=work,
            models=models,
            store=store,
            batch_size=args.batch_size,
            checkpoint=checkpoint,
            limit=args.limit,
            progress=progress,
        )
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    bar.close()
    print(_human(summary), file=sys.stderr)
    if store is not None:
        for model in ModelRegistry(store).models():
            if model.state != "retired":
                print(
                    f"coverage {model.version} ({model.state}): "
                    f"{model.images_embedded}/{model.images_stored} ({model.coverage:.1%})",
                    file=sys.stderr,
                )
    print(json.dumps(summary.as_dict(), indent=2))
    return 1 if summary.failed else 0


def _models(store: Store, version: str | None) -> BackfillModels:
    """The maintained models' embedders; `version` (--model) must be one of them."""
    embedders = maintained_embedders(store)
    if version is None:
        return BackfillModels(embedders)
    model = ModelRegistry(store).get(version)  # RegistryError: unknown
    if model.id not in embedders:
        raise RegistryError(
            f"{version!r} ({model.state}) cannot be back-filled: it is retired, or no folder under "
            "MODEL_DIR holds its files"
        )
    return BackfillModels(embedders, target=model.id)


def _human(summary: BackfillSummary) -> str:
    rate = f" ({summary.done / summary.elapsed_s:.1f}/s)" if summary.elapsed_s > 0 and summary.done else ""
    lines = [
        f"{summary.verb}: {summary.done}{rate}, skipped (up to date): {summary.skipped}, "
        f"stale: {summary.stale}, gone: {summary.gone}, "
        f"rejected: {sum(summary.rejected.values())}, failed: {len(summary.failed)} "
        f"of {summary.listed} listed in {summary.elapsed_s:.1f} s"
    ]
    lines += [f"  rejected {key}: {reason} ({detail})" for key, reason, detail in summary.rejected_keys]
    lines += [f"  failed {key}: {detail}" for key, detail in summary.failed]
    if summary.resumed_after:
        lines.append(f"  resumed after {summary.resumed_after}")
    if summary.stopped_early:
        lines.append("  stopped at --limit: run again to continue")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "lookalike-backfill")
    sys.exit(main())
