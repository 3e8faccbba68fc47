"""Fixtures for the verifier's tests: a tiny deterministic PKI for certificate and CRL checks,
and loaders for the real DCAP vector sets.

The PKI uses fixed private scalars, fixed dates and serials and deterministic ECDSA, so every
run builds the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def key(seed: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(0x5EED0000 + seed, ec.SECP256R1())


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgxemu tests"),
        ]
    )


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)


@dataclass
class MiniPki:
    """Builds certificates and CRLs; every argument that matters for a check is explicit."""

    serial: int = field(default=100)

    def issue(
        self,
        subject: str,
        *,
        seed: int,
        issuer: Issued | None = None,
        ca: bool | None = True,
        path_length: int | None = None,
        key_cert_sign: bool = True,
        digital_signature: bool = False,
        key_usage: bool = True,
        not_before: dt.datetime = T0,
        not_after: dt.datetime = T0 + dt.timedelta(days=3650),
        serial: int | None = None,
        issuer_name: x509.Name | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        own = key(seed)
        self.serial += 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(
                issuer_name
                if issuer_name is not None
                else (issuer.cert.subject if issuer else name(subject))
            )
            .public_key(own.public_key())
            .serial_number(serial if serial is not None else self.serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
            )
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=key_cert_sign,
                    crl_sign=key_cert_sign,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        signer = signing_key or (issuer.key if issuer else own)
        return Issued(builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True), own)

    def leaf(self, subject: str, *, seed: int, issuer: Issued, **kw: Any) -> Issued:
        kw.setdefault("ca", False)
        kw.setdefault("key_cert_sign", False)
        kw.setdefault("digital_signature", True)
        return self.issue(subject, seed=seed, issuer=issuer, **kw)

    @staticmethod
    def crl(
        issuer: Issued,
        *,
        revoked: tuple[int, ...] = (),
        this_update: dt.datetime = T0,
        next_update: dt.datetime | None = T0 + dt.timedelta(days=30),
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(this_update)
            .next_update(next_update or this_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        signer = signing_key or issuer.key
        der = builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True).public_bytes(
            Encoding.DER
        )
        if next_update is not None:
            return der
        # cryptography cannot build a CRL without nextUpdate; drop it and re-sign.
        parsed = asn1_crl.CertificateList.load(der)
        tbs = parsed["tbs_cert_list"]
        tbs["next_update"] = None
        tbs_der = tbs.dump(force=True)
        parsed["signature"] = asn1_core.OctetBitString(signer.sign(tbs_der, DETERMINISTIC))
        return bytes(parsed.dump(force=True))


@pytest.fixture
def mini_pki() -> MiniPki:
    return MiniPki()


@pytest.fixture(scope="session")
def vector_sets(real_vectors: Path) -> dict[str, Any]:
    sets: dict[str, Any] = json.loads((real_vectors / "sets.json").read_text())
    return sets
