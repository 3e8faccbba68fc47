"""X.509 certificates and chain validation to a pinned anchor, with ``cryptography``.

Invariants:

* :func:`parse_certificate` is a pure function of the DER bytes (cached by them); it extracts
  only what validation needs and never trusts anything.
* :func:`validate_chain` builds the path from the leaf through the supplied certificates, in
  whatever order they came (Fortanix quotes carry leaf, root, intermediate), until a
  certificate is issued by an anchor's *key* under the anchor's subject. A root certificate in
  the supplied set is never trusted for itself: only its key matters, so the 2033 and 2049
  issuances of Intel's root are one anchor, and a look-alike root with another key is refused.
* Every call re-checks, at the given time: each certificate's and the anchor's validity window,
  basicConstraints and keyUsage (CAs: CA=true and keyCertSign; leaf: not a CA, digitalSignature
  when keyUsage is present), path-length constraints. Only signature answers are cached.
* Every failure raises :class:`~sgx_verifier.errors.CheckFailedError` naming the certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import SignatureAlgorithmOID

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import AnchorSet, TrustAnchor
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.signatures import signature_valid
from sgx_verifier.verdict import Check, FailureCode

_MAX_PATH = 6
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class Certificate:
    """The parts of an X.509 certificate that chain validation reads."""

    der: bytes
    subject: bytes
    issuer: bytes
    subject_text: str
    serial: int
    not_before: int
    not_after: int
    spki_der: bytes
    public_point: bytes | None
    tbs: bytes
    signature: bytes
    ecdsa_sha256: bool
    is_ca: bool | None
    path_length: int | None
    key_cert_sign: bool | None
    crl_sign: bool | None
    digital_signature: bool | None

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer


def display_name(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if common and isinstance(common[0].value, str):
        return common[0].value
    return name.rfc4514_string()


@lru_cache(maxsize=512)
def parse_certificate(der: bytes) -> Certificate:
    """Parse one DER certificate; raise :class:`MalformedStructureError` when it is not one."""
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
        key = cert.public_key()
        point: bytes | None = None
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        is_ca: bool | None = None
        path_length: int | None = None
        try:
            bc = extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca, path_length = bc.ca, bc.path_length
        except x509.ExtensionNotFound:
            pass
        key_cert_sign = crl_sign = digital_signature = None
        try:
            ku = extensions.get_extension_for_class(x509.KeyUsage).value
            key_cert_sign, crl_sign, digital_signature = (
                ku.key_cert_sign,
                ku.crl_sign,
                ku.digital_signature,
            )
        except x509.ExtensionNotFound:
            pass
        return Certificate(
            der=der,
            subject=cert.subject.public_bytes(),
            issuer=cert.issuer.public_bytes(),
            subject_text=display_name(cert.subject),
            serial=cert.serial_number,
            not_before=int(cert.not_valid_before_utc.timestamp()),
            not_after=int(cert.not_valid_after_utc.timestamp()),
            spki_der=key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
            public_point=point,
            tbs=cert.tbs_certificate_bytes,
            signature=cert.signature,
            ecdsa_sha256=cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256,
            is_ca=is_ca,
            path_length=path_length,
            key_cert_sign=key_cert_sign,
            crl_sign=crl_sign,
            digital_signature=digital_signature,
        )
    except (ValueError, TypeError) as e:
        raise MalformedStructureError(f"not a valid X.509 certificate: {e}") from None


@lru_cache(maxsize=256)
def parse_pem_chain(data: bytes) -> tuple[Certificate, ...]:
    """Every certificate of a PEM bundle, in order. Text around the blocks and a trailing NUL
    (Intel's QE terminates the chain with one) are ignored; a bundle with none is refused."""
    if _PEM_BEGIN not in data:
        raise MalformedStructureError("no PEM certificate in the chain")
    try:
        loaded = x509.load_pem_x509_certificates(data.rstrip(b"\x00"))
    except ValueError as e:
        raise MalformedStructureError(f"unreadable PEM certificate chain: {e}") from None
    return tuple(parse_certificate(c.public_bytes(Encoding.DER)) for c in loaded)


def parse_der_concatenation(data: bytes) -> tuple[Certificate, ...]:
    """Certificates given as concatenated DER (Intel's TDX sample data does this)."""
    out: list[Certificate] = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x30 or pos + 2 > len(data):
            raise MalformedStructureError(f"concatenated DER: no certificate at offset {pos}")
        first = data[pos + 1]
        if first < 0x80:
            length, header = first, 2
        else:
            n = first & 0x7F
            if n == 0 or n > 3 or pos + 2 + n > len(data):
                raise MalformedStructureError(f"concatenated DER: bad length at offset {pos}")
            length, header = int.from_bytes(data[pos + 2 : pos + 2 + n], "big"), 2 + n
        end = pos + header + length
        if end > len(data):
            raise MalformedStructureError(f"concatenated DER: truncated certificate at {pos}")
        out.append(parse_certificate(data[pos:end]))
        pos = end
    if not out:
        raise MalformedStructureError("concatenated DER: no certificate")
    return tuple(out)


def parse_certificates(data: bytes) -> tuple[Certificate, ...]:
    """A PEM bundle or concatenated DER certificates."""
    if _PEM_BEGIN in data:
        return parse_pem_chain(bytes(data))
    return parse_der_concatenation(bytes(data))


@dataclass(frozen=True, slots=True)
class ValidatedChain:
    """A path from a leaf to an anchor that passed every check at one time.

    ``path`` runs from the leaf up to the certificate the anchor's key signed; it never holds a
    copy of the anchor itself.
    """

    path: tuple[Certificate, ...]
    anchor: TrustAnchor

    @property
    def leaf(self) -> Certificate:
        return self.path[0]

    def issuer_of(self, index: int) -> tuple[bytes, bytes]:
        """(subject, public point) of the issuer of ``path[index]``."""
        if index + 1 < len(self.path):
            parent = self.path[index + 1]
            assert parent.public_point is not None
            return parent.subject, parent.public_point
        return self.anchor.subject_der, self.anchor.public_point


def _signed_by(cert: Certificate, point: bytes | None) -> bool:
    return (
        point is not None and cert.ecdsa_sha256 and signature_valid(point, cert.tbs, cert.signature)
    )


def build_path(
    leaf: Certificate,
    pool: Sequence[Certificate],
    anchors: AnchorSet | Sequence[TrustAnchor],
    check: Check,
    what: str,
) -> ValidatedChain:
    """Find the path from ``leaf`` through ``pool`` to one of ``anchors`` (signatures only)."""
    path = [leaf]
    current = leaf
    for _ in range(_MAX_PATH):
        named_anchors = [a for a in anchors if a.subject_der == current.issuer]
        for anchor in named_anchors:
            if _signed_by(current, anchor.public_point):
                return ValidatedChain(tuple(path), anchor)
        if current.self_issued and _signed_by(current, current.public_point):
            if named_anchors:
                raise CheckFailedError(
                    FailureCode.CHAIN_UNTRUSTED,
                    check,
                    f"{what}: root {current.subject_text!r} has the name of trust anchor "
                    f"{named_anchors[0].name!r} but not its key",
                    "this chain comes from another PKI (a test or look-alike root); verify it "
                    "with --root-ca naming that root only if you trust it",
                )
            raise CheckFailedError(
                FailureCode.CHAIN_UNTRUSTED,
                check,
                f"{what}: root {current.subject_text!r} is not a configured trust anchor",
                "configure the root that issued this chain as an anchor (--root-ca) if you "
                "trust it",
            )
        candidates = [c for c in pool if c.subject == current.issuer and c not in path]
        parent = next((c for c in candidates if _signed_by(current, c.public_point)), None)
        if parent is None:
            if candidates or named_anchors:
                raise CheckFailedError(
                    FailureCode.CERT_SIGNATURE_INVALID,
                    check,
                    f"{what}: the signature on {current.subject_text!r} does not verify under "
                    "its issuer's key",
                    "the certificate was altered or issued by another key; obtain the "
                    "certificate chain again from its source",
                )
            raise CheckFailedError(
                FailureCode.CHAIN_INCOMPLETE,
                check,
                f"{what}: no issuer for {current.subject_text!r} among the supplied "
                "certificates or the trust anchors",
                "supply the full certificate chain (the intermediate CA is missing)",
            )
        path.append(parent)
        current = parent
    raise CheckFailedError(
        FailureCode.CHAIN_UNTRUSTED,
        check,
        f"{what}: no trust anchor within {_MAX_PATH} certificates",
        "supply a chain that ends at a configured trust anchor",
    )


def check_path(chain: ValidatedChain, at: int, check: Check, what: str) -> None:
    """Validity windows, CA constraints and key usage of every certificate, at ``at``."""
    anchor = chain.anchor
    if at < anchor.not_before:
        raise CheckFailedError(
            FailureCode.ANCHOR_NOT_YET_VALID,
            check,
            f"{what}: trust anchor {anchor.name!r} is not valid before {anchor.not_before}",
            "check the verification time (--at)",
        )
    if at > anchor.not_after:
        raise CheckFailedError(
            FailureCode.ANCHOR_EXPIRED,
            check,
            f"{what}: trust anchor {anchor.name!r} expired at {anchor.not_after}",
            "check the verification time (--at) or configure the anchor's new issuance",
        )
    for index, cert in enumerate(chain.path):
        if at < cert.not_before:
            raise CheckFailedError(
                FailureCode.CERT_NOT_YET_VALID,
                check,
                f"{what}: {cert.subject_text!r} is not valid before {cert.not_before} "
                f"(verification time {at})",
                "check the verification time (--at) and the system clock",
            )
        if at > cert.not_after:
            raise CheckFailedError(
                FailureCode.CERT_EXPIRED,
                check,
                f"{what}: {cert.subject_text!r} expired at {cert.not_after} "
                f"(verification time {at})",
                "fetch current certificates from the PCS/PCCS, or verify as of an earlier "
                "time with --at",
            )
        if index == 0:
            if cert.is_ca:
                raise CheckFailedError(
                    FailureCode.CERT_KEY_USAGE,
                    check,
                    f"{what}: the signing certificate {cert.subject_text!r} is a CA",
                    "the chain is in the wrong order or not a signing chain",
                )
            if cert.digital_signature is False:
                raise CheckFailedError(
                    FailureCode.CERT_KEY_USAGE,
                    check,
                    f"{what}: {cert.subject_text!r} does not allow digitalSignature",
                    "this certificate cannot sign; use the right signing certificate",
                )
            continue
        if cert.is_ca is not True:
            raise CheckFailedError(
                FailureCode.CERT_NOT_CA,
                check,
                f"{what}: issuer {cert.subject_text!r} is not a CA (basicConstraints)",
                "a non-CA certificate cannot issue others; the chain is forged or wrong",
            )
        if cert.key_cert_sign is not True:
            raise CheckFailedError(
                FailureCode.CERT_KEY_USAGE,
                check,
                f"{what}: issuer {cert.subject_text!r} lacks keyUsage keyCertSign",
                "a CA without keyCertSign cannot issue certificates; the chain is wrong",
            )
        below = index - 1
        if cert.path_length is not None and below > cert.path_length:
            raise CheckFailedError(
                FailureCode.CERT_KEY_USAGE,
                check,
                f"{what}: {cert.subject_text!r} allows {cert.path_length} CAs below it, "
                f"the chain has {below}",
                "the chain is longer than its issuers allow",
            )


def validate_chain(
    leaf: Certificate,
    pool: Sequence[Certificate],
    anchors: AnchorSet | Sequence[TrustAnchor],
    at: int,
    check: Check,
    what: str,
) -> ValidatedChain:
    """Build and check the path from ``leaf`` to an anchor at time ``at``."""
    chain = build_path(leaf, pool, anchors, check, what)
    check_path(chain, at, check, what)
    return chain
