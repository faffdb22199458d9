"""The database's connection string built from an RDS secret's JSON."""

from __future__ import annotations

import json

import psycopg
import pytest

from lookalike.settings import SettingsError
from lookalike_aws.secrets import database_url_from_secret_json


def test_rds_secret_fields_become_a_connection_string_with_every_part_quoted() -> None:
    secret = {
        "username": "app user",
        "password": "p@ss:w/rd+%",
        "host": "db.example.internal",
        "port": 6543,
        "dbname": "lookalike",
    }
    url = database_url_from_secret_json(json.dumps(secret))
    parts = psycopg.conninfo.conninfo_to_dict(url)
    assert (parts["user"], parts["password"], parts["host"], parts["port"], parts["dbname"]) == (
        "app user",
        "p@ss:w/rd+%",
        "db.example.internal",
        "6543",
        "lookalike",
    )


def test_defaults_for_port_and_database() -> None:
    parts = psycopg.conninfo.conninfo_to_dict(
        database_url_from_secret_json(json.dumps({"username": "u", "password": "p", "host": "h"}))
    )
    assert (parts["port"], parts["dbname"]) == ("5432", "postgres")


@pytest.mark.parametrize("secret", ["not json", "[]", json.dumps({"username": "u", "password": "p"})])
def test_a_malformed_secret_names_the_variable(secret: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_SECRET_ARN"):
        database_url_from_secret_json(secret)


def test_rds_proxy_endpoint_replaces_the_secrets_host() -> None:
    secret = json.dumps({"username": "u", "password": "p", "host": "cluster.internal", "port": 5432})
    url = database_url_from_secret_json(secret, host_override="proxy.internal")
    assert psycopg.conninfo.conninfo_to_dict(url)["host"] == "proxy.internal"
