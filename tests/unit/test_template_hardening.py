"""template.yaml's operational guards, read like CloudFormation reads them.

What the query function may read in S3, the API's throttling and the query function's
concurrency cap, TLS to the database, and an alarm topic CloudWatch can actually publish to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cloudformation import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
# PostgreSQL's default max_connections; RDS and Aurora derive theirs from memory, and the
# smallest classes land near it.
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert isinstance(resource, dict)
    return resource


def _properties(template: dict[str, Any], name: str) -> dict[str, Any]:
    properties = _resource(template, name).get("Properties") or {}
    assert isinstance(properties, dict)
    return properties


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in function.get("Policies") or []:
        assert isinstance(policy, dict), policy
        assert set(policy) == {"Statement"}, policy  # inline statements only
        statements += policy["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _default(template: dict[str, Any], reference: Any) -> Any:
    assert isinstance(reference, dict), f"not a parameter: {reference}"
    assert set(reference) == {"Ref"}, f"not a parameter: {reference}"
    return template["Parameters"][reference["Ref"]]["Default"]


# --- S3 read for POST /search {"s3_key"} ----------------------------------------------------------


def test_query_function_reads_photos_only_under_the_key_prefix(template: dict[str, Any]) -> None:
    query = _properties(template, "QueryFunction")
    assert query["Environment"]["Variables"]["BUCKET_NAME"] == {"Ref": "PhotoBucket"}
    statements = {s["Sid"]: s for s in _statements(query)}
    s3 = {sid: s for sid, s in statements.items() if any(a.startswith("s3:") for a in _actions(s))}
    assert set(s3) == {"ReadPhotosUnderPrefix", "ListPhotosUnderPrefix", "UploadAndReadSearchPhotos"}
    for statement in s3.values():
        assert statement["Effect"] == "Allow"
    # Catalogue photos: read exactly those under KeyPrefix, never the whole bucket; no write.
    read = s3["ReadPhotosUnderPrefix"]
    assert _actions(read) == {"s3:GetObject"}
    assert read["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${PhotoBucket}/${KeyPrefix}*"}
    assert "Condition" not in read
    # Search photos (POST /uploads): write and read only under QueryUploadPrefix.
    uploads = s3["UploadAndReadSearchPhotos"]
    assert _actions(uploads) == {"s3:PutObject", "s3:GetObject"}
    assert uploads["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${PhotoBucket}/${QueryUploadPrefix}*"
    }
    # Listing (a missing key answers 404, not 403): the bucket, only for those two prefixes.
    listing = s3["ListPhotosUnderPrefix"]
    assert _actions(listing) == {"s3:ListBucket"}
    assert listing["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${PhotoBucket}"}
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": [{"Fn::Sub": "${KeyPrefix}*"}, {"Fn::Sub": "${QueryUploadPrefix}*"}]}
    }
    # Nothing else was added: the secret stays the only other grant.
    others = [s for sid, s in statements.items() if sid not in s3]
    assert [_actions(s) for s in others] == [{"secretsmanager:GetSecretValue"}]


def test_the_query_reads_the_catalogue_as_the_ingest_function_does(template: dict[str, Any]) -> None:
    """Same prefix rule as the ingest function's (whose notifications cover KeyPrefix)."""
    ingest = {s["Sid"]: s for s in _statements(_properties(template, "IngestFunction"))}
    query = {s["Sid"]: s for s in _statements(_properties(template, "QueryFunction"))}
    assert query["ReadPhotosUnderPrefix"] == ingest["ReadPhotosUnderPrefix"]
    assert query["ReadDatabaseSecret"] == ingest["ReadDatabaseSecret"]


def test_search_photos_are_never_ingested_and_expire(template: dict[str, Any]) -> None:
    """The upload prefix is outside every notification's filter, and a lifecycle rule removes
    what it holds after a day; browsers may POST there (CORS)."""
    bucket = _properties(template, "PhotoBucket")
    filters = [
        configuration["Filter"]["S3Key"]["Rules"]
        for configuration in bucket["NotificationConfiguration"]["QueueConfigurations"]
    ]
    assert all(rules == [{"Name": "prefix", "Value": {"Ref": "KeyPrefix"}}] for rules in filters)
    uploads = _default(template, {"Ref": "QueryUploadPrefix"})
    assert not uploads.startswith(_default(template, {"Ref": "KeyPrefix"}))
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == {"Ref": "QueryUploadPrefix"}
    assert rule["ExpirationInDays"] == 1
    [cors] = bucket["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == ["POST"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["QUERY_UPLOAD_PREFIX"] == {"Ref": "QueryUploadPrefix"}


# --- throttling and concurrency --------------------------------------------------------------------


def test_the_http_api_is_throttled_by_parameters(template: dict[str, Any]) -> None:
    settings = _properties(template, "QueryApi")["DefaultRouteSettings"]
    rate = float(_default(template, settings["ThrottlingRateLimit"]))
    burst = int(_default(template, settings["ThrottlingBurstLimit"]))
    assert 0 < rate <= burst, (rate, burst)
    for key in ("ThrottlingRateLimit", "ThrottlingBurstLimit"):
        parameter = template["Parameters"][settings[key]["Ref"]]
        assert parameter["Type"] == "Number"
        assert int(parameter["MinValue"]) >= 1, "0 would refuse every request"


def test_query_concurrency_is_capped_unless_set_to_zero(template: dict[str, Any]) -> None:
    query = _properties(template, "QueryFunction")
    condition, capped, uncapped = query["ReservedConcurrentExecutions"]["Fn::If"]
    assert capped == {"Ref": "QueryReservedConcurrency"}
    assert uncapped == {"Ref": "AWS::NoValue"}, "0 must mean 'no reservation', not 'disabled'"
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "QueryReservedConcurrency"}, 0]}]
    }
    parameter = template["Parameters"]["QueryReservedConcurrency"]
    assert int(parameter["MinValue"]) == 0
    assert int(parameter["Default"]) >= 1, "capped by default"


def test_the_default_caps_bound_the_database_connections(template: dict[str, Any]) -> None:
    """One connection per concurrent instance: query cap + ingest cap + one migration."""
    query = int(template["Parameters"]["QueryReservedConcurrency"]["Default"])
    event = _properties(template, "IngestFunction")["Events"]["PhotoEvents"]["Properties"]
    ingest = int(_default(template, event["ScalingConfig"]["MaximumConcurrency"]))
    assert query + ingest + 1 <= POSTGRES_DEFAULT_MAX_CONNECTIONS // 2, (query, ingest)


# --- TLS to the database -----------------------------------------------------------------------------


def test_every_function_connects_with_verified_tls_by_default(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["DB_SSLMODE"] == {"Ref": "DatabaseSslMode"}
    mode = template["Parameters"]["DatabaseSslMode"]
    assert mode["Default"] == "verify-full"
    assert not {"disable", "allow", "prefer"} & set(mode["AllowedValues"]), "TLS is not optional"
    for name, function in template["Resources"].items():
        if function["Type"] == "AWS::Serverless::Function":
            own = ((function["Properties"].get("Environment") or {}).get("Variables")) or {}
            assert not {"DB_SSLMODE", "DB_SSLROOTCERT"} & set(own), f"{name} overrides the TLS settings"


def test_the_default_root_certificate_is_the_file_the_certificates_layer_builds(
    template: dict[str, Any],
) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["DB_SSLROOTCERT"] == {"Ref": "DatabaseSslRootCert"}
    path = template["Parameters"]["DatabaseSslRootCert"]["Default"]
    assert {"Ref": "CertificatesLayer"} in template["Globals"]["Function"]["Layers"]
    layer = _properties(template, "CertificatesLayer")
    assert _resource(template, "CertificatesLayer")["Metadata"]["BuildMethod"] == "makefile"
    makefile = (REPO_ROOT / layer["ContentUri"] / "Makefile").read_text()
    # A layer's files appear under /opt: ARTIFACTS_DIR/certs/x.pem is /opt/certs/x.pem.
    outputs = re.findall(r'--out "\$\(ARTIFACTS_DIR\)/([^"]+)"', makefile)
    assert [f"/opt/{output}" for output in outputs] == [path]


# --- alarms ---------------------------------------------------------------------------------------------


def test_cloudwatch_alarms_can_publish_to_the_encrypted_alarm_topic(template: dict[str, Any]) -> None:
    key_reference = _properties(template, "AlarmTopic").get("KmsMasterKeyId")
    if key_reference is None:
        return  # no SSE: nothing stands between the alarms and the topic
    assert not (isinstance(key_reference, str) and key_reference.startswith("alias/aws/")), (
        "an AWS-managed key's policy does not admit cloudwatch.amazonaws.com"
    )
    key = _resource(template, key_reference["Ref"])
    assert key["Type"] == "AWS::KMS::Key"
    properties = key["Properties"]
    assert properties["EnableKeyRotation"] is True
    statements = properties["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1
    assert cloudwatch[0]["Effect"] == "Allow"
    assert _actions(cloudwatch[0]) == {"kms:Decrypt", "kms:GenerateDataKey*"}, "no more than it needs"
    # The account keeps control of its key (otherwise it could not be managed or deleted).
    root = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    assert any(s.get("Principal") == root and _actions(s) == {"kms:*"} for s in statements)


def test_every_alarm_notifies_the_alarm_topic(template: dict[str, Any]) -> None:
    alarms = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
