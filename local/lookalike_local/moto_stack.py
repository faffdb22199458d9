"""S3 + SQS on 127.0.0.1 (moto's server mode) with the bucket, queues and notification of the template.

moto keeps its state in memory: every start is a fresh account, which is why the demo uploads
the sample catalogue again on each run (the store skips what it already has).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from lookalike_local.template import LOCAL_REGION, Topology

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


class MotoServer:
    """moto's ThreadedMotoServer on 127.0.0.1 (port 0: any free port)."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        # werkzeug logs every S3/SQS request at INFO: only problems belong on the demo's console.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.endpoint_url = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        if self.endpoint_url:
            self._server.stop()
            self.endpoint_url = ""


def use_local_aws(endpoint_url: str) -> None:
    """Point every boto3 client of this process (ours and the handlers') at the local endpoint."""
    os.environ.update(TEST_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url  # honoured by botocore for every service
    os.environ["S3_ENDPOINT_URL"] = endpoint_url  # the handlers' explicit setting


def s3_client(endpoint_url: str) -> S3Client:
    # Path-style addressing: bucket.127.0.0.1 does not resolve.
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=LOCAL_REGION, config=config)


def sqs_client(endpoint_url: str) -> SQSClient:
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=LOCAL_REGION)


@dataclass(frozen=True, slots=True)
class Provisioned:
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str


def _queue_arn(sqs: SQSClient, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return attributes["QueueArn"]


def notification_configuration(topology: Topology, queue_arn: str) -> dict[str, Any]:
    """The template's QueueConfigurations in the S3 API's shape (CloudFormation: one event each)."""
    configurations = []
    for rule in topology.notifications:
        configuration: dict[str, Any] = {"QueueArn": queue_arn, "Events": [rule.event]}
        filters = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", rule.prefix), ("suffix", rule.suffix))
            if value
        ]
        if filters:
            configuration["Filter"] = {"Key": {"FilterRules": filters}}
        configurations.append(configuration)
    return {"QueueConfigurations": configurations}


def provision(endpoint_url: str, topology: Topology, *, notify: bool = True) -> Provisioned:
    """Create the DLQ, the ingest queue (redrive after maxReceiveCount) and the bucket.

    notify=False leaves the bucket notification out: `enable_notifications` adds it later, so
    objects the store already has can be put back into the (in-memory) bucket silently.
    """
    sqs = sqs_client(endpoint_url)
    dlq_url = sqs.create_queue(QueueName=topology.dlq)["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    queue_url = sqs.create_queue(
        QueueName=topology.queue,
        Attributes={
            "VisibilityTimeout": str(topology.visibility_timeout_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(topology.max_receive_count)}
            ),
        },
    )["QueueUrl"]
    provisioned = Provisioned(
        bucket=topology.bucket,
        queue_url=queue_url,
        queue_arn=_queue_arn(sqs, queue_url),
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
    )
    s3 = s3_client(endpoint_url)
    s3.create_bucket(Bucket=topology.bucket)
    if topology.cors_rules:
        s3.put_bucket_cors(
            Bucket=topology.bucket,
            CORSConfiguration={"CORSRules": [dict(rule) for rule in topology.cors_rules]},  # type: ignore[misc]
        )
    if notify:
        enable_notifications(endpoint_url, topology, provisioned)
    return provisioned


def enable_notifications(endpoint_url: str, topology: Topology, provisioned: Provisioned) -> None:
    s3_client(endpoint_url).put_bucket_notification_configuration(
        Bucket=provisioned.bucket,
        NotificationConfiguration=notification_configuration(topology, provisioned.queue_arn),  # type: ignore[arg-type]
    )
