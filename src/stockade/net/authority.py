"""The installation's own certificate authority, which the egress proxy signs leaves with.

Made once per data directory: ``<data>/private/ca.key`` (EC P-256, 0600) and ``ca.crt``.
The sandboxes that hold secrets trust it through ``<data>/net/ca-bundle.pem``: the operator's
CA bundle followed by this certificate, bind-mounted as their system bundle. Leaf certificates
(one per host name, valid a day, one process-wide key) are minted in memory when first asked
for and kept while the engine runs.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_LEAVES = 1024
_PEM = serialization.Encoding.PEM


class Authority:
    """Load or create the CA; hand out server-side TLS contexts for host names."""

    def __init__(self, data_dir: Path, operator_bundle: Path | None) -> None:
        self.private = data_dir / "private"
        self.bundle = data_dir / "net" / "ca-bundle.pem"
        self.operator_bundle = operator_bundle
        self._ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self._ca is None:
            key_path, cert_path = self.private / "ca.key", self.private / "ca.crt"
            if not key_path.exists():
                self._create(key_path, cert_path)
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._ca = key, x509.load_pem_x509_certificate(cert_path.read_bytes())
        return self._ca

    def _create(self, key_path: Path, cert_path: Path) -> None:
        self.private.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "Stockade egress CA"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade"),
            ]
        )
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        _write(cert_path, cert.public_bytes(_PEM), 0o644)
        _write(
            key_path,
            key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            0o600,
        )

    def certificate(self) -> bytes:
        """The CA certificate (PEM)."""
        return self._load()[1].public_bytes(_PEM)

    def sandbox_bundle(self) -> Path:
        """The bundle a sandbox with secrets trusts (written when missing or stale)."""
        parts = [self.operator_bundle.read_bytes()] if self.operator_bundle else []
        wanted = b"\n".join(parts + [self.certificate()])
        if not self.bundle.exists() or self.bundle.read_bytes() != wanted:
            self.bundle.parent.mkdir(parents=True, exist_ok=True)
            _write(self.bundle, wanted, 0o644)
        return self.bundle

    def context(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a leaf for ``host`` (HTTP/1.1 only)."""
        ctx = self._contexts.get(host)
        if ctx is None:
            if len(self._contexts) >= MAX_LEAVES:
                self._contexts.pop(next(iter(self._contexts)))
            ctx = self._contexts[host] = self._mint(host)
        return ctx

    def _mint(self, host: str) -> ssl.SSLContext:
        ca_key, ca_cert = self._load()
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_alpn_protocols(["http/1.1"])
        # ssl loads a chain from files only: a private temporary file, removed at once.
        with tempfile.NamedTemporaryFile(dir=self.private, suffix=".pem") as f:
            os.chmod(f.name, 0o600)
            f.write(
                cert.public_bytes(_PEM)
                + self._leaf_key.private_bytes(
                    _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            f.flush()
            ctx.load_cert_chain(f.name)
        return ctx


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
