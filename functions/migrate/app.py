"""Schema migration on deploy: the handler behind the template's `Custom::Migration` resource.

CloudFormation sends Create/Update/Delete and waits for a reply PUT to the pre-signed
`ResponseURL`. Without a reply a stack waits until the resource's ServiceTimeout, so this
handler replies on every path: success, failure, an exception, and a migration that would
outlive the function (it stops waiting shortly before the timeout and reports FAILED).

`Store.migrate()` is idempotent (CREATE ... IF NOT EXISTS, serialised by an advisory lock), so
Create and Update both run it: a stack update that publishes a new shared layer (new SQL) migrates
again, and CloudFormation's retries or rollbacks repeat it harmlessly. Delete keeps the data: a
deleted stack must not drop a catalogue.

Invoked without a `ResponseURL` (a one-off `aws lambda invoke`) it migrates and returns the
result, raising on failure.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any, Literal
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lookalike_aws.runtime import get_store

logger = Logger()

# One schema per database: the same id on every reply, so CloudFormation never sees a
# replacement (which would send a Delete for the "old" resource).
PHYSICAL_RESOURCE_ID = "lookalike-schema"
# Time kept back from the function's timeout to send the reply.
REPLY_MARGIN_S = 10.0
# CloudFormation rejects replies over 4 KB; the reason is the part that can grow.
MAX_REASON_CHARS = 1000

Status = Literal["SUCCESS", "FAILED"]
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def migrate_schema() -> dict[str, str]:
    store = get_store()
    store.migrate()
    return {"Images": str(store.count_images())}


def _migrate_within(seconds: float) -> dict[str, str]:
    """Run the migration in a worker thread and wait at most `seconds` for it."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["data"] = migrate_schema()
        except BaseException as error:  # reported to CloudFormation, not lost in the thread
            outcome["error"] = error

    worker = threading.Thread(target=work, name="migrate", daemon=True)
    worker.start()
    worker.join(timeout=max(seconds, 1.0))
    if worker.is_alive():
        raise TimeoutError(
            f"the migration did not finish within {seconds:.0f} s (an index build on a large table?); "
            "raise the MigrationFunction timeout or run it once by hand, then update the stack"
        )
    if "error" in outcome:
        raise outcome["error"]
    data: dict[str, str] = outcome["data"]
    return data


def send_response(event: dict[str, Any], status: Status, reason: str, data: dict[str, str]) -> None:
    """The custom resource protocol's reply (what cfnresponse does), with the standard library."""
    url = str(event["ResponseURL"])
    parts = urlsplit(url)
    # CloudFormation's pre-signed S3 URLs are https; plain http only to this machine (tests).
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS)):
        raise ValueError(f"ResponseURL must be https, got {url[:40]!r}")
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:MAX_REASON_CHARS],
            "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_RESOURCE_ID,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": False,
            "Data": data,
        }
    ).encode()
    # The pre-signed URL was signed without a content type: send none.
    request = urllib.request.Request(  # noqa: S310 - https (or local http), checked above
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - checked above
        logger.info("replied to CloudFormation", extra={"status": status, "http_status": response.status})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request_type = event.get("RequestType", "Create")
    status: Status = "SUCCESS"
    reason = ""
    data: dict[str, str] = {}
    try:
        if request_type in {"Create", "Update"}:
            budget_s = context.get_remaining_time_in_millis() / 1000 - REPLY_MARGIN_S
            data = _migrate_within(budget_s)
            reason = "schema up to date"
            logger.info("schema migrated", extra=data)
        else:
            reason = "the schema and its data are kept when the stack is deleted"
    except Exception as error:
        logger.exception("migration failed")
        status, reason = "FAILED", f"{type(error).__name__}: {error}"
        if "ResponseURL" not in event:
            raise
    if "ResponseURL" in event:
        send_response(event, status, f"{reason} (log stream {context.log_stream_name})", data)
    return {"Status": status, "Reason": reason, "Data": data}
