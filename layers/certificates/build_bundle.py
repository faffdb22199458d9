"""Write the CA file the functions verify the database's certificate with (DB_SSLROOTCERT).

The file holds two sets of certificates, so that one `sslrootcert` serves every AWS endpoint:

- Amazon RDS's CA bundle (`global-bundle.pem`, published by AWS; no PyPI or Debian package ships
  it): RDS instances and Aurora clusters present certificates issued by these private CAs.
- The Amazon Trust Services roots (Amazon Root CA 1-4), taken from certifi: RDS Proxy presents
  ACM certificates, which chain to these public roots and not to the RDS CAs.

Every certificate is loaded by OpenSSL (Python's ssl module) before it is written, and the RDS
file may hold only certificates whose subject names an Amazon RDS CA: a wrong download (an HTML
error page, another provider's bundle) fails the build instead of the first connection.

Usage: build_bundle.py --rds-bundle global-bundle.pem --out rds-ca-bundle.pem [--allow-missing-rds]
"""

from __future__ import annotations

import argparse
import re
import ssl
import sys
from pathlib import Path
from typing import cast

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)
_AMAZON_ROOTS = {f"Amazon Root CA {n}" for n in range(1, 5)}
DOWNLOAD_HINT = (
    "download Amazon RDS's CA bundle (docs/DEPLOYMENT.md, 'Database TLS'):\n"
    "  curl -fsS -o layers/certificates/global-bundle.pem "
    "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
)


class BundleError(Exception):
    pass


def _subject(pem: str) -> dict[str, str]:
    """The certificate's subject as OpenSSL reads it (a PEM it cannot load raises BundleError)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=pem)
    except ssl.SSLError as error:
        raise BundleError(f"not a certificate OpenSSL can load: {error}") from error
    (certificate,) = context.get_ca_certs()
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", certificate["subject"])
    return {name: value for rdn in subject for name, value in rdn}


def certificates(text: str) -> list[str]:
    return [match.group(0).replace("\r\n", "\n") + "\n" for match in _PEM.finditer(text)]


def rds_certificates(path: Path) -> list[str]:
    found = certificates(path.read_text(encoding="ascii", errors="replace"))
    if not found:
        raise BundleError(f"{path} holds no PEM certificate\n{DOWNLOAD_HINT}")
    for pem in found:
        name = _subject(pem).get("commonName", "")
        if not name.startswith("Amazon RDS"):
            raise BundleError(f"{path}: {name!r} is not an Amazon RDS CA\n{DOWNLOAD_HINT}")
    return found


def amazon_trust_services_roots() -> list[str]:
    import certifi  # the build's interpreter (the SAM CLI's) has it: requests needs it

    found = {}
    for pem in certificates(Path(certifi.where()).read_text(encoding="ascii")):
        subject = _subject(pem)
        if subject.get("organizationName") == "Amazon" and subject.get("commonName") in _AMAZON_ROOTS:
            found[subject["commonName"]] = pem
    if set(found) != _AMAZON_ROOTS:
        raise BundleError(f"certifi lacks {sorted(_AMAZON_ROOTS - set(found))}")
    return [found[name] for name in sorted(found)]


def build(rds_bundle: Path, out: Path, *, allow_missing_rds: bool) -> tuple[int, int]:
    """Write `out`; return (RDS CA certificates, Amazon Trust Services roots) written."""
    if rds_bundle.is_file():
        rds = rds_certificates(rds_bundle)
    elif allow_missing_rds:
        rds = []
    else:
        raise BundleError(f"{rds_bundle} does not exist\n{DOWNLOAD_HINT}")
    roots = amazon_trust_services_roots()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(rds + roots), encoding="ascii")
    return len(rds), len(roots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rds-bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--allow-missing-rds",
        action="store_true",
        help="build without the RDS CAs (test builds): verify-full then works through RDS Proxy only",
    )
    arguments = parser.parse_args(argv)
    try:
        rds, roots = build(arguments.rds_bundle, arguments.out, allow_missing_rds=arguments.allow_missing_rds)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if rds == 0:
        print(f"warning: {arguments.out} has no Amazon RDS CA\n{DOWNLOAD_HINT}", file=sys.stderr)
    print(f"{arguments.out}: {rds} Amazon RDS CA certificates, {roots} Amazon Trust Services roots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
