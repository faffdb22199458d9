"""The database's connection string from a Secrets Manager secret (DATABASE_SECRET_ARN), for RDS.

The secret is the JSON RDS and `AWS::SecretsManager::SecretTargetAttachment` write: username,
password, host, port, dbname. Powertools' parameters utility caches it for SECRET_MAX_AGE_S and
then reads it again, so a rotated password reaches a warm container without a redeploy.
"""

from __future__ import annotations

import json
from typing import Final

from aws_lambda_powertools.utilities import parameters
from psycopg.conninfo import make_conninfo

from lookalike.settings import Settings, SettingsError

SECRET_MAX_AGE_S: Final = 300


def database_url_from_secret_json(secret: str, *, host_override: str | None = None) -> str:
    """A libpq connection string from an RDS secret's JSON.

    `host_override` (DATABASE_HOST) replaces the secret's host: behind RDS Proxy the secret
    names the cluster, but connections must go to the proxy's endpoint."""
    try:
        fields = json.loads(secret)
        username, password, host = fields["username"], fields["password"], fields["host"]
    except (ValueError, KeyError, TypeError) as error:
        raise SettingsError(
            f"DATABASE_SECRET_ARN: the secret must be JSON with username, password, host ({error!r})"
        ) from None
    return make_conninfo(
        user=str(username),
        password=str(password),
        host=host_override or str(host),
        port=str(fields.get("port") or 5432),
        dbname=str(fields.get("dbname") or "postgres"),
    )


def database_url(settings: Settings) -> str:
    """DATABASE_URL if set, else the connection string of the DATABASE_SECRET_ARN secret; with
    DB_SSLMODE / DB_SSLROOTCERT applied to either (they win over the URL's own)."""
    return _with_tls(_source_url(settings), settings)


def _with_tls(url: str, settings: Settings) -> str:
    if settings.db_sslmode is None:
        return url
    tls = {"sslmode": settings.db_sslmode}
    if settings.db_sslrootcert is not None:
        tls["sslrootcert"] = str(settings.db_sslrootcert)
    return make_conninfo(url, **tls)


def _source_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url
    if settings.database_secret_arn is None:
        raise SettingsError(
            "DATABASE_URL is not set (in Lambda: set it or DATABASE_SECRET_ARN; locally: the local "
            "stack starts the embedded PostgreSQL and sets it)"
        )
    secret = parameters.get_secret(settings.database_secret_arn, max_age=SECRET_MAX_AGE_S)
    return database_url_from_secret_json(str(secret), host_override=settings.database_host)
