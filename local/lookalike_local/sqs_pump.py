"""Delivers the ingest queue to the ingest handler the way Lambda's SQS event source mapping does.

- Polls (short polls, 0.2 s apart when idle) and gathers a batch of up to BatchSize messages, waiting at most
  MaximumBatchingWindowInSeconds after the first message (Lambda's batching window).
- Invokes the handler with the real SQS event shape (`{"Records": [...]}`: messageId,
  receiptHandle, body, attributes incl. ApproximateReceiveCount, eventSourceARN, ...).
- Success: deletes the batch. With ReportBatchItemFailures it deletes only the messages not
  listed in `batchItemFailures`; a handler error, or a failure entry that names no message of the
  batch, fails the whole batch (as Lambda does).
- Failed messages are not touched: they reappear after the queue's visibility timeout, and the
  queue's redrive policy (enforced by moto on receive) moves them to the DLQ after maxReceiveCount.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lookalike_local.template import LOCAL_REGION

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger(__name__)

# An SQS ReceiveMessage returns at most 10 messages; Lambda polls repeatedly to fill larger batches.
_MAX_PER_RECEIVE = 10
# Lambda's synchronous invocation payload limit: a batch is closed before it would exceed it.
_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


@dataclass(slots=True)
class PumpStats:
    batches: int = 0
    delivered: int = 0  # messages handed to the handler (a retried message counts again)
    deleted: int = 0
    failed: int = 0  # messages left on the queue for a retry
    handler_errors: int = 0  # invocations that raised (whole batch failed)


def sqs_record(message: MessageTypeDef, queue_arn: str) -> dict[str, Any]:
    """One record of the Lambda SQS event, from a ReceiveMessage result."""
    body = message.get("Body", "")
    attributes = dict(message.get("Attributes", {}))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {
            name: attributes[name]
            for name in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "MessageGroupId",
                "MessageDeduplicationId",
                "SequenceNumber",
            )
            if name in attributes
        },
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": LOCAL_REGION,
    }


class SqsEventPump:
    """A background thread: receive -> invoke -> delete, until stopped."""

    def __init__(
        self,
        sqs: SQSClient,
        *,
        queue_url: str,
        queue_arn: str,
        invoke: Callable[[dict[str, Any]], Any],
        batch_size: int,
        batching_window_s: float,
        report_batch_item_failures: bool,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._invoke = invoke
        self.batch_size = max(1, batch_size)
        self.batching_window_s = max(0.0, batching_window_s)
        self.report_batch_item_failures = report_batch_item_failures
        self._poll_interval_s = poll_interval_s
        self.stats = PumpStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqs-event-pump", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in flight, then stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump_once()
            except Exception:  # the pump must outlive a flaky poll; Lambda's poller does too
                logger.exception("event pump: poll failed; retrying")
                self._stop.wait(1.0)

    # -- one batch ------------------------------------------------------------------------------
    def receive_batch(self) -> list[MessageTypeDef]:
        """Gather up to batch_size messages, closing the batch when the window after the first ends.

        Short polls (WaitTimeSeconds=0) with a pause in between: moto's long poll can hang when
        its redrive policy moves a message to the DLQ during the wait.
        """
        messages: list[MessageTypeDef] = []
        payload = 0
        window_ends: float | None = None
        while len(messages) < self.batch_size and not self._stop.is_set():
            response = self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(_MAX_PER_RECEIVE, self.batch_size - len(messages)),
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            for message in received:
                payload += len(message.get("Body", "")) + 1024  # body + record envelope
                messages.append(message)
            if payload >= _MAX_PAYLOAD_BYTES:
                break
            if window_ends is None:
                if not received:
                    break  # nothing there: the caller pauses before the next poll
                window_ends = time.monotonic() + self.batching_window_s
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            if not received:
                self._stop.wait(min(self._poll_interval_s, remaining))
        return messages

    def pump_once(self) -> int:
        """Receive one batch and deliver it; returns the number of messages delivered."""
        messages = self.receive_batch()
        if not messages:
            self._stop.wait(self._poll_interval_s)
            return 0
        self.deliver(messages)
        return len(messages)

    def deliver(self, messages: list[MessageTypeDef]) -> None:
        event = {"Records": [sqs_record(message, self.queue_arn) for message in messages]}
        self.stats.batches += 1
        self.stats.delivered += len(messages)
        try:
            response = self._invoke(event)
        except Exception:
            # Lambda: a function error fails the whole batch; the messages reappear later.
            logger.exception("ingest handler failed; the batch of %d will be retried", len(messages))
            self.stats.handler_errors += 1
            self.stats.failed += len(messages)
            return
        failed_ids = self._failed_message_ids(response, messages)
        succeeded = [message for message in messages if message["MessageId"] not in failed_ids]
        self.stats.failed += len(messages) - len(succeeded)
        self._delete(succeeded)

    def _failed_message_ids(self, response: Any, messages: list[MessageTypeDef]) -> set[str]:
        if not self.report_batch_item_failures or not isinstance(response, dict):
            return set()
        failures = response.get("batchItemFailures")
        if not failures:
            return set()
        batch_ids = {message["MessageId"] for message in messages}
        failed: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in batch_ids:
                # Lambda treats a malformed or unknown identifier as a failure of the whole batch.
                logger.warning("batchItemFailures names %r, not a message of the batch", identifier)
                return batch_ids
            failed.add(str(identifier))
        return failed

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        for start in range(0, len(messages), _MAX_PER_RECEIVE):
            chunk = messages[start : start + _MAX_PER_RECEIVE]
            result = self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            self.stats.deleted += len(result.get("Successful", []))
            for failure in result.get("Failed", []):
                logger.warning("could not delete message %s: %s", failure["Id"], failure.get("Message"))
