"""DATABASE_URL from a Secrets Manager secret (DATABASE_SECRET_ARN), for deployments on RDS.

The secret is the JSON RDS and `AWS::SecretsManager::SecretTargetAttachment` write: username,
password, host, port, dbname. It is read once per container; a rotated password reaches new
containers (and this one after `reset_database_secret()`).
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any, Protocol, cast
from urllib.parse import quote

import boto3

from lookalike.settings import SettingsError, reset_settings

SECRET_ARN_VARIABLE = "DATABASE_SECRET_ARN"  # noqa: S105 - a variable name, not a secret


class _SecretsClient(Protocol):
    def get_secret_value(self, *, SecretId: str) -> dict[str, Any]: ...  # noqa: N803 - the boto3 name


def database_url_from_secret_json(secret: str, *, host_override: str | None = None) -> str:
    """postgresql:// URL from an RDS secret's JSON (user and password percent-encoded).

    `host_override` (DATABASE_HOST) replaces the secret's host: behind RDS Proxy the secret
    names the cluster, but connections must go to the proxy's endpoint."""
    try:
        fields = json.loads(secret)
        username, password, host = fields["username"], fields["password"], fields["host"]
    except (ValueError, KeyError, TypeError) as error:
        raise SettingsError(
            f"{SECRET_ARN_VARIABLE}: the secret must be JSON with username, password, host ({error!r})"
        ) from None
    host = host_override or host
    port = int(fields.get("port") or 5432)
    dbname = fields.get("dbname") or "postgres"
    # Every part percent-encoded: passwords hold any character; a host may be a socket folder.
    user_info = f"{quote(str(username), safe='')}:{quote(str(password), safe='')}"
    return f"postgresql://{user_info}@{quote(str(host), safe='')}:{port}/{quote(str(dbname), safe='')}"


@cache
def database_url_from_secret(secret_arn: str, host_override: str | None = None) -> str:
    client = cast(_SecretsClient, boto3.client("secretsmanager"))
    secret = str(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    return database_url_from_secret_json(secret, host_override=host_override)


def resolve_database_url() -> None:
    """If DATABASE_URL is unset and DATABASE_SECRET_ARN is set, export the secret's URL as
    DATABASE_URL, so that `get_settings()` / `get_store()` see it like any other setting."""
    if os.environ.get("DATABASE_URL", "").strip():
        return
    secret_arn = os.environ.get(SECRET_ARN_VARIABLE, "").strip()
    if not secret_arn:
        return
    host_override = os.environ.get("DATABASE_HOST", "").strip() or None
    os.environ["DATABASE_URL"] = database_url_from_secret(secret_arn, host_override)
    reset_settings()


def reset_database_secret() -> None:
    database_url_from_secret.cache_clear()
