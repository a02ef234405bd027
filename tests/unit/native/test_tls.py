"""The private CA of a native stack's internal listeners: made once, reused, private key
private, and a working mutual-TLS pair on loopback that no other certificate gets into."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mlflow_stack.native.tls import TlsFiles, ensure_internal_tls


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The modes asserted below are the files' own, under the usual umask."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_internal_certificates_chain_to_a_ca_whose_key_was_discarded(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.crt",
        "node.crt",
        "node.key",
    ]
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    node = x509.load_pem_x509_certificate(files.cert.read_bytes())
    node.verify_directly_issued_by(ca)
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert ensure_internal_tls(tmp_path / "tls") == files
    assert files.cert.read_bytes() == node.public_bytes(serialization.Encoding.PEM)  # kept


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_is_private_and_the_certificates_public(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    assert mode_of(tmp_path / "tls") == 0o700
    assert (mode_of(files.ca), mode_of(files.cert), mode_of(files.key)) == (0o644, 0o644, 0o600)
    os.umask(0o000)  # a careless umask does not open the key up
    again = ensure_internal_tls(tmp_path / "loose")
    assert mode_of(again.key) == 0o600


def test_the_files_are_made_once_and_reused_untouched(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in vars(files).values()}
    assert ensure_internal_tls(tmp_path / "tls") == files
    after = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in vars(files).values()}
    assert after == before


def test_a_missing_file_means_a_whole_new_set(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    old_ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    old_cert = files.cert.read_bytes()
    files.key.unlink()  # the certificate is useless without it, and the CA's key is gone
    ensure_internal_tls(tmp_path / "tls")
    new_ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    node = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert files.cert.read_bytes() != old_cert
    assert new_ca.serial_number != old_ca.serial_number
    node.verify_directly_issued_by(new_ca)
    with pytest.raises(InvalidSignature):  # same name, another key
        node.verify_directly_issued_by(old_ca)


def test_a_rewritten_key_is_private_whatever_the_file_was_before(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    files.key.chmod(0o644)
    files.ca.unlink()
    ensure_internal_tls(tmp_path / "tls")
    assert mode_of(files.key) == 0o600


def test_a_ca_that_signs_one_leaf_for_127_0_0_1_as_server_and_client(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls", days=30)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    node = x509.load_pem_x509_certificate(files.cert.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    usage = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    lifetime = node.not_valid_after_utc - node.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30, minutes=5)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.public_key() == node.public_key()


class MutualTlsServer:
    """A TLS server on 127.0.0.1 with the node certificate, demanding one from the CA."""

    def __init__(self, files: TlsFiles) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(files.cert, files.key)
        self.context.load_verify_locations(files.ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not)
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def exchange(port: int, trust: Path, identity: TlsFiles | None, host: str = "127.0.0.1") -> bytes:
    """What a client trusting ``trust`` and presenting ``identity`` gets; b"" when refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(trust)
    if identity is not None:
        context.load_cert_chain(identity.cert, identity.key)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return tls.recv(2)
    except (ssl.SSLError, OSError):
        return b""


def test_mutual_tls_on_loopback_admits_only_certificates_of_this_ca(tmp_path: Path) -> None:
    files = ensure_internal_tls(tmp_path / "tls")
    stranger = ensure_internal_tls(tmp_path / "another-stack")  # same names, another CA
    server = MutualTlsServer(files)
    try:
        assert exchange(server.port, files.ca, files) == b"ok"
        assert exchange(server.port, files.ca, files, host="localhost") == b"ok"
        assert exchange(server.port, files.ca, None) == b""  # no client certificate
        assert exchange(server.port, files.ca, stranger) == b""  # one from another CA
        assert exchange(server.port, stranger.ca, files) == b""  # the client checks, too
    finally:
        server.close()
