"""Reading uploaded objects with boto3: the `ObjectSource` of the ingest use case.

One client per container (created on first use, reused by warm invocations). S3_ENDPOINT_URL
points it at any S3-compatible store (moto in tests, MinIO, ...); unset, boto3's own resolution
applies (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS). Retries: botocore's standard mode
(exponential backoff with jitter on throttling, 5xx and connection errors); what is still
failing after that is a `TransientError`, so the message goes back to the queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lookalike.ports import (
    FetchedObject,
    FetchResult,
    ListedObject,
    ObjectGone,
    ObjectTooLarge,
    TransientError,
)
from lookalike.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# ListObjectsV2 returns at most 1000 keys a page; the backfill's store check is one query per page.
LIST_PAGE_SIZE = 1000
S3_MAX_ATTEMPTS = 3  # standard mode: the first call plus two retries
_GONE_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion"}


def s3_client_config(endpoint_url: str | None) -> Config:
    return Config(
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=3,
        read_timeout=10,
        # Custom endpoints (moto on 127.0.0.1, MinIO) cannot resolve bucket.host names.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )


@cache
def get_s3_client() -> S3Client:
    """The container's S3 client (boto3 clients are thread-safe; reads run in a small pool)."""
    endpoint_url = get_settings().s3_endpoint_url
    return boto3.client("s3", endpoint_url=endpoint_url, config=s3_client_config(endpoint_url))


class S3ObjectSource:
    """Reads an object's bytes, user metadata, ETag and size."""

    def __init__(self, client: S3Client | None = None) -> None:
        self._client = client

    @property
    def client(self) -> S3Client:
        return self._client or get_s3_client()

    def fetch(self, bucket: str, key: str, *, max_bytes: int) -> FetchResult:
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _GONE_CODES:
                return ObjectGone()  # deleted since the event: its delete event tombstones it
            raise TransientError(f"GetObject s3://{bucket}/{key}: {error}") from error
        except BotoCoreError as error:
            raise TransientError(f"GetObject s3://{bucket}/{key}: {error}") from error

        body = response["Body"]
        try:
            length = int(response.get("ContentLength", 0))
            if length > max_bytes:
                # Refuse from the header: closing the stream leaves the rest undownloaded.
                return ObjectTooLarge(length)
            # Never trust the header alone: read one byte past the limit at most.
            data = body.read(max_bytes + 1)
        except BotoCoreError as error:  # the stream broke (timeout, reset, short read)
            raise TransientError(f"reading s3://{bucket}/{key}: {error}") from error
        finally:
            body.close()
        if len(data) > max_bytes:
            return ObjectTooLarge(len(data))
        etag = response.get("ETag")
        return FetchedObject(
            data=data,
            size=len(data),
            etag=etag.strip('"') if etag else None,
            metadata=dict(response.get("Metadata", {})),
        )

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _GONE_CODES:
                return False  # no current version (deleted, or a delete marker is current)
            raise TransientError(f"HeadObject s3://{bucket}/{key}: {error}") from error
        except BotoCoreError as error:
            raise TransientError(f"HeadObject s3://{bucket}/{key}: {error}") from error
        return True


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """An HTML-form POST straight to S3: send `fields` and then the file as `file`."""

    url: str
    fields: dict[str, str]


def presigned_upload(bucket: str, key: str, *, max_bytes: int, expires_s: int) -> PresignedUpload:
    """A presigned POST for one key; S3 itself refuses a file over `max_bytes`."""
    post = get_s3_client().generate_presigned_post(
        bucket, key, Conditions=[["content-length-range", 1, max_bytes]], ExpiresIn=expires_s
    )
    return PresignedUpload(url=post["url"], fields=dict(post["fields"]))


class S3ObjectLister:
    """ListObjectsV2, a page at a time, in key order: the backfill's `ObjectLister`.

    Folder markers (keys ending in "/", zero bytes: what the console's "Create folder" makes) are
    not objects to embed and are left out. Errors propagate: a backfill stops and resumes later.
    """

    def __init__(self, client: S3Client | None = None, *, page_size: int = LIST_PAGE_SIZE) -> None:
        self._client = client
        self.page_size = page_size

    @property
    def client(self) -> S3Client:
        return self._client or get_s3_client()

    def list_pages(
        self, bucket: str, prefix: str, *, start_after: str | None = None
    ) -> Iterator[list[ListedObject]]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket,
            Prefix=prefix,
            StartAfter=start_after or "",
            PaginationConfig={"PageSize": self.page_size},
        )
        for page in pages:
            listed = [
                ListedObject(
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=item["ETag"].strip('"') if item.get("ETag") else None,
                    last_modified=item["LastModified"],
                )
                for item in page.get("Contents", [])
                if not item["Key"].endswith("/")
            ]
            if listed:
                yield listed


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
