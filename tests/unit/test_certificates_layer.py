"""The certificates layer's CA file (DB_SSLROOTCERT): layers/certificates/build_bundle.py.

Real certificates (generated here with `cryptography`, loaded by OpenSSL through the script) and
the real certifi bundle; the script runs as the layer's Makefile runs it, in a subprocess.
"""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from pathlib import Path
from typing import cast

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYER = REPO_ROOT / "layers" / "certificates"
AMAZON_ROOTS = [f"Amazon Root CA {n}" for n in range(1, 5)]


def _ca(common_name: str, organization: str = "Amazon Web Services, Inc.") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _build(tmp_path: Path, rds_bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(LAYER / "build_bundle.py"),
            "--rds-bundle",
            str(rds_bundle),
            "--out",
            str(tmp_path / "out" / "certs" / "rds-ca-bundle.pem"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _subjects(path: Path) -> list[str]:
    """Common names of the CAs OpenSSL loads from the file, sorted (its store has no order)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(path))
    names = []
    for certificate in context.get_ca_certs():
        subject = cast("tuple[tuple[tuple[str, str], ...], ...]", certificate["subject"])
        names += [value for rdn in subject for key, value in rdn if key == "commonName"]
    return sorted(names)


def test_the_file_holds_the_rds_cas_and_the_amazon_roots_rds_proxy_needs(tmp_path: Path) -> None:
    rds = tmp_path / "global-bundle.pem"
    # AWS publishes the bundle with CRLF line ends on some downloads; both must load.
    rds.write_text(
        _ca("Amazon RDS eu-west-1 Root CA RSA2048 G1") + _ca("Amazon RDS eu-west-1 Root CA ECC384 G1"),
        newline="\r\n",
    )
    result = _build(tmp_path, rds)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "certs" / "rds-ca-bundle.pem"
    assert _subjects(out) == sorted(
        ["Amazon RDS eu-west-1 Root CA RSA2048 G1", "Amazon RDS eu-west-1 Root CA ECC384 G1", *AMAZON_ROOTS]
    )
    # The Amazon roots are certifi's own, byte for byte.
    certifi_text = Path(certifi.where()).read_text()
    written = out.read_text()
    assert written.count("-----BEGIN CERTIFICATE-----") == 6
    assert all(block.strip() in certifi_text for block in written.split("\n\n") if "Amazon Root" in block)
    assert "2 Amazon RDS CA certificates, 4 Amazon Trust Services roots" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<html><body>Access Denied</body></html>", "holds no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "OpenSSL"),
    ],
)
def test_a_download_that_is_no_certificate_fails_the_build(
    tmp_path: Path, content: str, message: str
) -> None:
    rds = tmp_path / "global-bundle.pem"
    rds.write_text(content)
    result = _build(tmp_path, rds)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "out" / "certs" / "rds-ca-bundle.pem").exists()


def test_a_ca_that_is_not_amazon_rds_is_refused(tmp_path: Path) -> None:
    rds = tmp_path / "global-bundle.pem"
    rds.write_text(_ca("Amazon RDS us-east-1 Root CA RSA2048 G1") + _ca("Totally Legit Root CA", "Evil"))
    result = _build(tmp_path, rds)
    assert result.returncode == 1
    assert "'Totally Legit Root CA' is not an Amazon RDS CA" in result.stderr


def test_without_the_rds_bundle_the_build_fails_unless_allowed(tmp_path: Path) -> None:
    missing = tmp_path / "global-bundle.pem"
    refused = _build(tmp_path, missing)
    assert refused.returncode == 1
    assert "does not exist" in refused.stderr
    assert "truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in refused.stderr
    allowed = _build(tmp_path, missing, "--allow-missing-rds")
    assert allowed.returncode == 0, allowed.stderr
    assert "has no Amazon RDS CA" in allowed.stderr
    assert _subjects(tmp_path / "out" / "certs" / "rds-ca-bundle.pem") == AMAZON_ROOTS


def test_the_makefile_builds_the_layer_like_sam_does(tmp_path: Path) -> None:
    """`sam build` runs this target with ARTIFACTS_DIR set; the file lands where Lambda's /opt is."""
    artifacts = tmp_path / "artifacts"
    result = subprocess.run(
        [
            "make",
            "-f",
            str(LAYER / "Makefile"),
            "build-CertificatesLayer",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
            f"RDS_CA_BUNDLE={tmp_path / 'absent.pem'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, "a missing RDS bundle must stop a deployment build"
    result = subprocess.run(
        [
            "make",
            "-f",
            str(LAYER / "Makefile"),
            "build-CertificatesLayer",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
            f"RDS_CA_BUNDLE={tmp_path / 'absent.pem'}",
            "ALLOW_MISSING_RDS_CA=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*")) == [
        "certs",
        "certs/rds-ca-bundle.pem",
    ]
