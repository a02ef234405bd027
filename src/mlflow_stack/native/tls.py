"""A private certificate authority for one native stack's internal listeners (mutual TLS).

SeaweedFS's components talk gRPC and HTTP on loopback ports; without TLS any local user could
use them. One leaf certificate, valid for 127.0.0.1 as server and as client, is signed by a CA
whose key is thrown away at once, so nobody can mint another certificate the servers accept.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def ensure_internal_tls(directory: Path, *, days: int = 3650) -> TlsFiles:
    """Create the CA certificate and the leaf certificate and key once; reuse them after.

    The same files serve gRPC and HTTPS, as server and as client, so that a data dir made
    before the HTTP listeners required them keeps its certificates.
    """
    files = TlsFiles(directory / "ca.crt", directory / "node.crt", directory / "node.key")
    if all(path.is_file() for path in (files.ca, files.cert, files.key)):
        return files

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlflow-stack native CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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

    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    del ca_key  # never written anywhere

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.cert, node_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(
        files.key,
        node_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with a new file of ``mode``, whatever the mode of the one it replaces
    (and whoever has that one open does not get to read the new data)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
