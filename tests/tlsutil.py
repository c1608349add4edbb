"""Real TLS material for tests: a CA, server and client certificates, written
as PEM files (generated with ``cryptography``, ECDSA P-256 for speed)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CA:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_file: Path


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path
    der: bytes  # the certificate, as a peer sees it (SSLSocket.getpeercert(True))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: Path, name: str = "test-ca") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{name}.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(name, key, cert, cert_file)


def issue(
    ca: CA,
    directory: Path,
    common_name: str,
    *,
    server: bool,
    stem: str | None = None,
) -> Issued:
    """A leaf certificate signed by ``ca``: a server certificate for 127.0.0.1,
    ::1 and localhost, or a client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    stem = stem or common_name
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_key_pem(key))
    return Issued(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class PKI:
    """What a webhook test needs: the CA, a server pair and a client pair."""

    ca: CA
    server: Issued
    client: Issued
    directory: Path

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """A client context that trusts the test CA (and presents the client cert)."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_file))
        if with_cert:
            ctx.load_cert_chain(str(self.client.cert_file), str(self.client.key_file))
        return ctx


def make_pki(directory: Path) -> PKI:
    ca = make_ca(directory / "ca")
    server = issue(ca, directory / "server", "kube-audit-exporter", server=True, stem="tls")
    client = issue(ca, directory / "client", "kube-apiserver", server=False)
    return PKI(ca, server, client, directory)
