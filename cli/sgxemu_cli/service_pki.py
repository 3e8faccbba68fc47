"""The local service CA that ``sgxemu init`` creates: one TLS certificate per service and an
admin client certificate, all ECDSA P-256.

Invariants: private keys are written 0600 and atomically; the CA key stays in ``tls/`` and is
used only by ``init``; the admin certificate's common name is :data:`ADMIN_COMMON_NAME`, which
the services' authorization interceptors map to the admin role. Service certificates name
``localhost`` and ``127.0.0.1`` so clients verify them on loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sgxemu_cli.io import write_atomic

ADMIN_COMMON_NAME = "sgxemu-admin"
CA_COMMON_NAME = "sgxemu service CA"
VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    """Where the TLS material of one identity lives."""

    certificate: Path
    private_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgxemu"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    *,
    server: bool,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # Services also call each other over mTLS (quoting -> platform), so their certificates
    # serve both purposes; the admin certificate is a client certificate only.
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def create_service_pki(tls_dir: Path, services: tuple[str, ...]) -> dict[str, TlsFiles]:
    """Write the CA, one server certificate per service and the admin client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(CA_COMMON_NAME)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(tls_dir / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    write_atomic(tls_dir / "ca.key", _key_pem(ca_key), mode=0o600)
    issued: dict[str, TlsFiles] = {}
    for name in (*services, "admin"):
        is_server = name != "admin"
        cn = f"sgxemu-{name}" if is_server else ADMIN_COMMON_NAME
        cert, key = _issue(cn, ca_key, ca_name, server=is_server, now=now)
        files = TlsFiles(tls_dir / f"{name}.pem", tls_dir / f"{name}.key")
        write_atomic(files.certificate, cert.public_bytes(serialization.Encoding.PEM))
        write_atomic(files.private_key, _key_pem(key), mode=0o600)
        issued[name] = files
    return issued
