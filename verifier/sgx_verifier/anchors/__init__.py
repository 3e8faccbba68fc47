"""Named trust anchors, pinned by public key.

Invariants:

* An anchor is identified by its SubjectPublicKeyInfo, not by the bytes of one certificate: a
  chain whose top certificate is issued by (or is) any certificate carrying the anchor's key and
  subject chains to that anchor. That is how the 2033 legacy issuance of the Intel SGX Root CA
  (same key, same serial) is accepted as the same anchor as the 2049 issuance shipped here.
* The real Intel SGX Root CA ships as package data (``Intel_SGX_Root_CA_2049.der``) and is the
  only anchor of :meth:`AnchorSet.default`. Any other root (the emulator's, Intel's synthetic
  sample root) is trusted only when a caller adds it, and is marked non-production unless its
  key is Intel's.
* Anchors are P-256 CA certificates; anything else is refused with :class:`AnchorError`.
* Nothing is read at import time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sgx_verifier.errors import AnchorError
from sgx_verifier.verdict import AnchorRef

INTEL_SGX_ROOT_CA = "intel-sgx-root-ca"
_INTEL_ROOT_FILE = "Intel_SGX_Root_CA_2049.der"
#: SHA-256 of the Intel SGX Root CA's SubjectPublicKeyInfo (both issuances share it).
INTEL_SGX_ROOT_KEY_SHA256 = "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """A root of trust: a name, the key it pins and the certificate it was configured from."""

    name: str
    certificate_der: bytes
    spki_der: bytes
    public_point: bytes
    subject_der: bytes
    not_before: int
    not_after: int
    production: bool

    @property
    def key_sha256(self) -> str:
        return hashlib.sha256(self.spki_der).hexdigest()

    def ref(self) -> AnchorRef:
        return AnchorRef(name=self.name, key_sha256=self.key_sha256, production=self.production)

    @classmethod
    def from_certificate(cls, data: bytes, name: str, *, production: bool = False) -> TrustAnchor:
        """Build an anchor from a DER or PEM CA certificate."""
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
        except ValueError as e:
            raise AnchorError(f"anchor {name!r}: not an X.509 certificate: {e}") from None
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise AnchorError(f"anchor {name!r}: the key is not an ECDSA P-256 key")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise AnchorError(f"anchor {name!r}: no basicConstraints, not a CA") from None
        except ValueError as e:
            raise AnchorError(f"anchor {name!r}: unreadable extensions: {e}") from None
        if not constraints.ca:
            raise AnchorError(f"anchor {name!r}: basicConstraints says this is not a CA")
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return cls(
            name=name,
            certificate_der=cert.public_bytes(Encoding.DER),
            spki_der=spki,
            public_point=point,
            subject_der=cert.subject.public_bytes(),
            not_before=int(cert.not_valid_before_utc.timestamp()),
            not_after=int(cert.not_valid_after_utc.timestamp()),
            production=production or hashlib.sha256(spki).hexdigest() == INTEL_SGX_ROOT_KEY_SHA256,
        )


@lru_cache(maxsize=1)
def intel_sgx_root_ca() -> TrustAnchor:
    """The Intel SGX Root CA shipped with the project (the 2049 issuance).

    The shipped file is checked against the pinned key digest, so a swapped data file fails
    loudly instead of silently changing the default anchor.
    """
    data = resources.files(__name__).joinpath(_INTEL_ROOT_FILE).read_bytes()
    anchor = TrustAnchor.from_certificate(data, INTEL_SGX_ROOT_CA, production=True)
    if anchor.key_sha256 != INTEL_SGX_ROOT_KEY_SHA256:
        raise AnchorError(f"{_INTEL_ROOT_FILE}: not the Intel SGX Root CA key")
    return anchor


@dataclass(frozen=True, slots=True)
class AnchorSet:
    """An ordered set of anchors with distinct names and distinct keys."""

    anchors: tuple[TrustAnchor, ...]

    def __post_init__(self) -> None:
        if not self.anchors:
            raise AnchorError("at least one trust anchor is required")
        names = [a.name for a in self.anchors]
        keys = [a.spki_der for a in self.anchors]
        if len(set(names)) != len(names):
            raise AnchorError(f"duplicate trust anchor names: {names}")
        if len(set(keys)) != len(keys):
            raise AnchorError("two trust anchors pin the same key")

    @classmethod
    def default(cls) -> AnchorSet:
        """Only the real Intel SGX Root CA."""
        return cls((intel_sgx_root_ca(),))

    @classmethod
    def of(cls, anchors: Iterable[TrustAnchor]) -> AnchorSet:
        return cls(tuple(anchors))

    def __iter__(self) -> Iterator[TrustAnchor]:
        return iter(self.anchors)

    def by_key(self, spki_der: bytes) -> TrustAnchor | None:
        for anchor in self.anchors:
            if anchor.spki_der == spki_der:
                return anchor
        return None

    def by_subject(self, subject_der: bytes) -> tuple[TrustAnchor, ...]:
        return tuple(a for a in self.anchors if a.subject_der == subject_der)


def load_anchor(data: bytes, name: str) -> TrustAnchor:
    """An anchor from a DER or PEM file's bytes; Intel's key keeps Intel's name."""
    anchor = TrustAnchor.from_certificate(data, name)
    if anchor.key_sha256 == INTEL_SGX_ROOT_KEY_SHA256:
        intel = intel_sgx_root_ca()
        return TrustAnchor(
            name=INTEL_SGX_ROOT_CA,
            certificate_der=anchor.certificate_der,
            spki_der=anchor.spki_der,
            public_point=anchor.public_point,
            subject_der=anchor.subject_der,
            not_before=min(anchor.not_before, intel.not_before),
            not_after=max(anchor.not_after, intel.not_after),
            production=True,
        )
    return anchor
