"""A small certificate authority for a lab or a scenario: ``fedbroker certs init``, and TLS files as bytes.

Every principal (an SP, a user's client) gets an ECDSA P-256 key and a certificate whose subject
common name is its id: that name is the TLS peer identity the broker reads from
``context.auth_context()`` and compares with a token's subject. SP certificates are valid for
server and client use (an SP calls its lower-SPs) and name the SP id, ``localhost`` and 127.0.0.1
(plus any extra host names given), so a client can verify a broker either by address or by
overriding the target name with the SP id.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """A principal's TLS material, read once: the CA to trust, its certificate chain and private key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def read(cls, ca: Path, cert: Path, key: Path) -> TlsFiles:
        """Read the three PEM files; ``FileNotFoundError`` names the missing one."""
        return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())

    @classmethod
    def in_folder(cls, folder: Path, name: str) -> TlsFiles:
        """``ca.crt``, ``NAME.crt`` and ``NAME.key`` in a folder made by ``fedbroker certs init``."""
        return cls.read(folder / CA_CERT, folder / f"{name}.crt", folder / f"{name}.key")


@dataclass(frozen=True)
class Authority:
    """A CA key and certificate that issue principal certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "fedbroker lab CA", valid_days: int = DEFAULT_VALID_DAYS) -> Authority:
        """A new self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, folder: Path) -> Authority:
        """The CA kept in ``folder`` (``ca.key``, ``ca.crt``)."""
        key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / CA_KEY}: expected an EC private key")
        return cls(key, x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes()))

    def save(self, folder: Path) -> None:
        """Write ``ca.crt`` and ``ca.key`` (0600)."""
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(folder / CA_KEY, _key_pem(self.key))
        (folder / CA_CERT).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        server: bool,
        hosts: Sequence[str] = (),
        valid_days: int = DEFAULT_VALID_DAYS,
    ) -> tuple[bytes, bytes]:
        """A key and certificate (PEM) for ``name``; a server certificate also names the local hosts."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        alt: list[x509.GeneralName] = [x509.DNSName(name)] if _dns_safe(name) else []
        if server:
            for host in ("localhost", "127.0.0.1", *hosts):
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    alt.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def issue_to(self, folder: Path, name: str, *, server: bool, hosts: Sequence[str] = (), stem: str = "") -> None:
        """Issue for ``name`` and write ``STEM.key`` (0600) and ``STEM.crt`` (stem: the name) into ``folder``."""
        key, cert = self.issue(name, server=server, hosts=hosts)
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(folder / f"{stem or name}.key", key)
        (folder / f"{stem or name}.crt").write_bytes(cert)


def load_or_create_authority(folder: Path) -> Authority:
    """The CA in ``folder``, created there first if it has none."""
    if (folder / CA_KEY).exists():
        return Authority.load(folder)
    ca = Authority.create()
    ca.save(folder)
    return ca


def common_name(cert_pem: bytes) -> str:
    """The subject common name of a PEM certificate (the identity it carries)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _dns_safe(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-." for c in name) and not name.startswith(("-", "."))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
