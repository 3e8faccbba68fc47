"""The emulated provisioning certification service's certificate hierarchy.

Laid out like Intel's (compared field by field with the real certificates in
``../shared/vectors/real`` by ``tests/quoting/test_pcs_structure.py``)::

    sgxemu Root CA                      self-signed, CA:TRUE pathlen:1
    |-- sgxemu PCK Platform CA          CA:TRUE pathlen:0
    |   `-- sgxemu PCK Certificate      end entity, SGX extension 1.2.840.113741.1.13.1
    |-- sgxemu PCK Processor CA         CA:TRUE pathlen:0
    |   `-- sgxemu PCK Certificate
    `-- sgxemu TCB Signing              end entity: signs TCB Info and QE Identity

Invariants (Intel's profile):

* every key is ECDSA P-256 and every signature ECDSA-with-SHA256, and every signature here is
  deterministic (RFC 6979), so the same keys, names, dates and serials give the same bytes;
* names are CN, O, L, ST, C in that order (UTF8String, C a PrintableString), with the sgxemu
  organization in place of Intel's;
* extensions in Intel's order: authorityKeyIdentifier (key identifier only), cRLDistributionPoints
  (one full-name URI), subjectKeyIdentifier, keyUsage (critical), basicConstraints (critical),
  then, on PCK certificates only, the non-critical SGX extension;
* a CA certificate's serial number and its subject key identifier are the same 20 bytes, as in
  Intel's CA certificates; end-entity certificates have their own serial and an SKI that is the
  SHA-1 of the public key (RFC 5280 4.2.1.2, method 1);
* serial numbers are positive and at most 159 bits (RFC 5280 allows 20 octets; Intel's may need a
  21st for the sign, which X.509 builders refuse, so the top bit is cleared);
* CRLs are v2 with cRLNumber and authorityKeyIdentifier, and each revoked entry carries the
  keyCompromise reason, like Intel's PCK CRLs.

Keys are derived from a seed (:func:`derive_private_key`), so a fixed seed gives a reproducible
hierarchy; ``sgxemu init`` passes a fresh random seed and keeps only the keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from sgx_platform.arch.errors import SignatureError
from sgx_quoting.errors import PcsInputError

#: The subject fields every sgxemu PCS certificate shares with its CN (Intel: O=Intel
#: Corporation, L=Santa Clara, ST=CA, C=US).
ORGANIZATION = "sgxemu"
LOCALITY = "Localhost"
STATE_OR_PROVINCE = "Emulated"
COUNTRY = "ZZ"

ROOT_CA_NAME = "sgxemu Root CA"
PLATFORM_CA_NAME = "sgxemu PCK Platform CA"
PROCESSOR_CA_NAME = "sgxemu PCK Processor CA"
TCB_SIGNING_NAME = "sgxemu TCB Signing"
PCK_CERTIFICATE_NAME = "sgxemu PCK Certificate"

#: Where the CRLs would be published (``.invalid``: RFC 2606, never resolves).
ROOT_CA_CRL_URL = "https://certificates.sgxemu.invalid/SgxemuRootCA.der"
PCK_CRL_URL_TEMPLATE = "https://api.sgxemu.invalid/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"

#: The OID of Intel's SGX extension in PCK certificates.
SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")

#: Validity, as Intel's: the root until the end of 2049, the PCK CAs 15 years, TCB Signing and
#: PCK certificates 7 years.
ROOT_CA_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
PCK_CA_YEARS = 15
TCB_SIGNING_YEARS = 7
PCK_CERTIFICATE_YEARS = 7

SERIAL_BYTES = 20
_CURVE = ec.SECP256R1()
_SIGNATURE = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
RAW_SIGNATURE_SIZE = 64


class PckCa(StrEnum):
    """The two PCK CAs, spelled as Intel's ``ca=`` query parameter spells them."""

    PROCESSOR = "processor"
    PLATFORM = "platform"

    @property
    def common_name(self) -> str:
        return PROCESSOR_CA_NAME if self is PckCa.PROCESSOR else PLATFORM_CA_NAME

    @property
    def crl_url(self) -> str:
        return PCK_CRL_URL_TEMPLATE.format(ca=self.value)

    @classmethod
    def parse(cls, value: str) -> PckCa:
        try:
            return cls(value.lower())
        except ValueError:
            raise PcsInputError(
                f"unknown PCK CA {value!r}; expected 'processor' or 'platform'"
            ) from None

    @classmethod
    def of_issuer(cls, issuer: x509.Name) -> PckCa:
        """Which CA issued a PCK certificate, from the issuer's common name (Intel's or ours)."""
        names = issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else ""
        if cn.endswith("PCK Processor CA"):
            return cls.PROCESSOR
        if cn.endswith("PCK Platform CA"):
            return cls.PLATFORM
        raise PcsInputError(f"{cn!r} is not a PCK Platform or Processor CA")


def subject_name(common_name: str) -> x509.Name:
    """CN, O, L, ST, C: the layout of every Intel SGX PCS name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.LOCALITY_NAME, LOCALITY),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, STATE_OR_PROVINCE),
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
        ]
    )


# -- derivation ------------------------------------------------------------------------------


def _derive(seed: bytes, label: str) -> bytes:
    return hashlib.sha256(b"sgxemu-pcs\x00" + seed + b"\x00" + label.encode()).digest()


def derive_private_key(seed: bytes, label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key determined by ``seed`` and ``label`` (scalar in ``1 .. n-1``)."""
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(_derive(seed, "key:" + label), "big") % (n - 1) + 1
    return ec.derive_private_key(scalar, _CURVE)


def derive_serial(seed: bytes, label: str) -> int:
    """A positive serial number of at most 159 bits determined by ``seed`` and ``label``."""
    return serial_from_bytes(_derive(seed, "serial:" + label)[:SERIAL_BYTES])


def serial_from_bytes(data: bytes) -> int:
    """A serial number from 20 bytes: the top bit cleared, never zero."""
    if len(data) != SERIAL_BYTES:
        raise PcsInputError(f"a serial number needs {SERIAL_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big") & ((1 << (8 * SERIAL_BYTES - 1)) - 1)
    return value or 1


def key_identifier(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 5280 method 1: SHA-1 of the subjectPublicKey bits (used for end entities)."""
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return hashlib.sha1(point, usedforsecurity=False).digest()


def add_years(when: dt.datetime, years: int) -> dt.datetime:
    """The same instant ``years`` later (29 February becomes 28 February)."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return when.replace(year=when.year + years, day=28)


def utc_seconds(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC with whole seconds (X.509 and Intel's JSON carry no fractions)."""
    if when.tzinfo is None:
        raise PcsInputError("times must be timezone-aware")
    return when.astimezone(dt.UTC).replace(microsecond=0)


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate with its private key; the key must match the certificate."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.private_key.public_key():
            raise PcsInputError(
                f"the private key does not belong to {self.certificate.subject.rfc4514_string()}"
            )

    @property
    def key_identifier(self) -> bytes:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ski.value.digest

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _builder(
    *,
    subject: str,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    authority_key_id: bytes,
    crl_url: str,
    subject_key_id: bytes,
    ca_path_length: int | None,
    is_ca: bool,
) -> x509.CertificateBuilder:
    if not 0 < serial < (1 << (8 * SERIAL_BYTES - 1)):
        raise PcsInputError("a serial number must be positive and at most 159 bits")
    start, end = utc_seconds(not_before), utc_seconds(not_after)
    if end <= start:
        raise PcsInputError("a certificate's notAfter must follow its notBefore")
    key_usage = x509.KeyUsage(
        digital_signature=not is_ca,
        content_commitment=not is_ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )
    distribution_point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.AuthorityKeyIdentifier(authority_key_id, None, None), critical=False)
        .add_extension(x509.CRLDistributionPoints([distribution_point]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier(subject_key_id), critical=False)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)


def issue_root_ca(
    key: ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> CertifiedKey:
    """The self-signed "sgxemu Root CA" (pathlen 1, SKI = AKI = serial)."""
    ski = serial.to_bytes(SERIAL_BYTES, "big")
    builder = _builder(
        subject=ROOT_CA_NAME,
        issuer=subject_name(ROOT_CA_NAME),
        public_key=key.public_key(),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        authority_key_id=ski,
        crl_url=ROOT_CA_CRL_URL,
        subject_key_id=ski,
        ca_path_length=1,
        is_ca=True,
    )
    return CertifiedKey(_sign(builder, key), key)


def issue_pck_ca(
    root: CertifiedKey,
    key: ec.EllipticCurvePrivateKey,
    ca: PckCa,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> CertifiedKey:
    """A PCK Platform or Processor CA under ``root`` (pathlen 0, SKI = serial)."""
    builder = _builder(
        subject=ca.common_name,
        issuer=root.certificate.subject,
        public_key=key.public_key(),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        authority_key_id=root.key_identifier,
        crl_url=ROOT_CA_CRL_URL,
        subject_key_id=serial.to_bytes(SERIAL_BYTES, "big"),
        ca_path_length=0,
        is_ca=True,
    )
    return CertifiedKey(_sign(builder, root.private_key), key)


def issue_tcb_signing(
    root: CertifiedKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> CertifiedKey:
    """The "sgxemu TCB Signing" certificate (end entity; SKI = serial, as Intel's)."""
    builder = _builder(
        subject=TCB_SIGNING_NAME,
        issuer=root.certificate.subject,
        public_key=key.public_key(),
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        authority_key_id=root.key_identifier,
        crl_url=ROOT_CA_CRL_URL,
        subject_key_id=serial.to_bytes(SERIAL_BYTES, "big"),
        ca_path_length=None,
        is_ca=False,
    )
    return CertifiedKey(_sign(builder, root.private_key), key)


def issue_pck_certificate(
    issuer: CertifiedKey,
    public_key: ec.EllipticCurvePublicKey,
    sgx_extension: bytes,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """An "sgxemu PCK Certificate" for ``public_key`` carrying ``sgx_extension`` (its DER).

    ``issuer`` must be one of the PCK CAs; the CRL distribution point names it.
    """
    ca = PckCa.of_issuer(issuer.certificate.subject)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise PcsInputError("a PCK key must be an ECDSA P-256 public key")
    builder = _builder(
        subject=PCK_CERTIFICATE_NAME,
        issuer=issuer.certificate.subject,
        public_key=public_key,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        authority_key_id=issuer.key_identifier,
        crl_url=ca.crl_url,
        subject_key_id=key_identifier(public_key),
        ca_path_length=None,
        is_ca=False,
    ).add_extension(x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx_extension), critical=False)
    return _sign(builder, issuer.private_key)


# -- CRLs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate: its serial and when it was revoked (reason keyCompromise)."""

    serial: int
    revoked_at: dt.datetime


def issue_crl(
    issuer: CertifiedKey,
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
    crl_number: int = 1,
    revoked: Sequence[Revocation] = (),
) -> x509.CertificateRevocationList:
    """A v2 CRL by ``issuer`` in Intel's layout (cRLNumber, AKI; entries with keyCompromise)."""
    start, end = utc_seconds(this_update), utc_seconds(next_update)
    if end <= start:
        raise PcsInputError("a CRL's nextUpdate must follow its thisUpdate")
    if crl_number < 0:
        raise PcsInputError("a CRL number cannot be negative")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(issuer.key_identifier, None, None), critical=False
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(utc_seconds(entry.revoked_at))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return builder.sign(issuer.private_key, hashes.SHA256(), ecdsa_deterministic=True)


# -- raw signatures (TCB Info, QE Identity, QE reports) --------------------------------------


def sign_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """Deterministic ECDSA-P256-SHA256 over ``message``, as 64 bytes r||s (Intel's format)."""
    r, s = decode_dss_signature(key.sign(message, _SIGNATURE))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` (r||s) signs ``message``."""
    if len(signature) != RAW_SIGNATURE_SIZE:
        raise SignatureError(f"a raw ECDSA signature is {RAW_SIGNATURE_SIZE} bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("the ECDSA signature does not verify") from None


# -- the hierarchy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PcsPki:
    """The PCS's four keys and certificates."""

    root: CertifiedKey
    platform_ca: CertifiedKey
    processor_ca: CertifiedKey
    tcb_signing: CertifiedKey

    @classmethod
    def generate(cls, seed: bytes, *, not_before: dt.datetime) -> PcsPki:
        """The whole hierarchy from ``seed``: keys and serials derived, validity from
        ``not_before`` (root until the end of 2049, PCK CAs 15 years, TCB Signing 7)."""
        if len(seed) < 16:
            raise PcsInputError("a PKI seed needs at least 16 bytes")
        start = utc_seconds(not_before)
        root = issue_root_ca(
            derive_private_key(seed, "root-ca"),
            serial=derive_serial(seed, "root-ca"),
            not_before=start,
            not_after=ROOT_CA_NOT_AFTER,
        )
        cas = {
            ca: issue_pck_ca(
                root,
                derive_private_key(seed, f"{ca.value}-ca"),
                ca,
                serial=derive_serial(seed, f"{ca.value}-ca"),
                not_before=start,
                not_after=add_years(start, PCK_CA_YEARS),
            )
            for ca in PckCa
        }
        tcb = issue_tcb_signing(
            root,
            derive_private_key(seed, "tcb-signing"),
            serial=derive_serial(seed, "tcb-signing"),
            not_before=start,
            not_after=add_years(start, TCB_SIGNING_YEARS),
        )
        return cls(root, cas[PckCa.PLATFORM], cas[PckCa.PROCESSOR], tcb)

    def pck_ca(self, ca: PckCa) -> CertifiedKey:
        return self.processor_ca if ca is PckCa.PROCESSOR else self.platform_ca

    @property
    def root_ca_der(self) -> bytes:
        return self.root.der

    def pck_issuer_chain_pem(self, ca: PckCa) -> str:
        """The PCK CA then the root, PEM: Intel's ``SGX-PCK-CRL-Issuer-Chain``."""
        return self.pck_ca(ca).pem + self.root.pem

    def tcb_issuer_chain_pem(self) -> str:
        """TCB Signing then the root, PEM: Intel's ``TCB-Info-Issuer-Chain``."""
        return self.tcb_signing.pem + self.root.pem

    def sign_collateral(self, text: str) -> bytes:
        """Sign the exact text of a TCB Info or QE Identity body with the TCB Signing key."""
        return sign_raw(self.tcb_signing.private_key, text.encode("utf-8"))

    def issue_pck(
        self,
        ca: PckCa,
        public_key: ec.EllipticCurvePublicKey,
        sgx_extension: bytes,
        *,
        serial: int,
        not_before: dt.datetime,
        not_after: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A PCK certificate under ``ca`` (default validity: 7 years from ``not_before``)."""
        start = utc_seconds(not_before)
        end = not_after if not_after is not None else add_years(start, PCK_CERTIFICATE_YEARS)
        return issue_pck_certificate(
            self.pck_ca(ca),
            public_key,
            sgx_extension,
            serial=serial,
            not_before=start,
            not_after=end,
        )

    def root_crl(
        self,
        *,
        this_update: dt.datetime,
        next_update: dt.datetime,
        crl_number: int = 1,
        revoked: Sequence[Revocation] = (),
    ) -> bytes:
        """The root CA's CRL (DER)."""
        crl = issue_crl(
            self.root,
            this_update=this_update,
            next_update=next_update,
            crl_number=crl_number,
            revoked=revoked,
        )
        return crl.public_bytes(serialization.Encoding.DER)

    def pck_crl(
        self,
        ca: PckCa,
        *,
        this_update: dt.datetime,
        next_update: dt.datetime,
        crl_number: int = 1,
        revoked: Sequence[Revocation] = (),
    ) -> bytes:
        """A PCK CA's CRL (DER)."""
        crl = issue_crl(
            self.pck_ca(ca),
            this_update=this_update,
            next_update=next_update,
            crl_number=crl_number,
            revoked=revoked,
        )
        return crl.public_bytes(serialization.Encoding.DER)
