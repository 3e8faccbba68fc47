"""Certificate revocation lists: the issuer's signature, freshness at a time, revoked serials.

Invariants:

* :func:`parse_crl` is a pure function of the DER bytes (cached by them). It reads the
  issuer, thisUpdate, nextUpdate and the set of revoked serial numbers, and nothing else.
* :func:`check_crl` re-runs on every call: the issuer name must be the expected CA's, the
  signature must verify under that CA's key (ECDSA-SHA256; the answer is cached by bytes),
  and ``thisUpdate <= at < nextUpdate``: at nextUpdate itself the next CRL is due, so this one
  is stale (as rustls-webpki, and so dcap-qvl, judge it). A CRL from after the verification
  time (``at < thisUpdate``) is refused too, which dcap-qvl does not check. A CRL without
  nextUpdate is refused: freshness that cannot be judged is not freshness.
* :func:`check_not_revoked` raises for a certificate whose serial the CRL lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import SignatureAlgorithmOID

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.certificates import Certificate, display_name
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.signatures import signature_valid
from sgx_verifier.verdict import Check, FailureCode


@dataclass(frozen=True, slots=True)
class Crl:
    """The parts of a CRL that revocation checking reads."""

    der: bytes
    issuer: bytes
    issuer_text: str
    this_update: int
    next_update: int | None
    revoked: frozenset[int]
    tbs: bytes
    signature: bytes
    ecdsa_sha256: bool


@lru_cache(maxsize=64)
def parse_crl(der: bytes) -> Crl:
    """Parse one DER CRL; raise :class:`MalformedStructureError` when it is not one."""
    try:
        crl = x509.load_der_x509_crl(der)
        next_update = crl.next_update_utc
        return Crl(
            der=der,
            issuer=crl.issuer.public_bytes(),
            issuer_text=display_name(crl.issuer),
            this_update=int(crl.last_update_utc.timestamp()),
            next_update=int(next_update.timestamp()) if next_update is not None else None,
            revoked=frozenset(entry.serial_number for entry in crl),
            tbs=crl.tbs_certlist_bytes,
            signature=crl.signature,
            ecdsa_sha256=crl.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        )
    except (ValueError, TypeError) as e:
        raise MalformedStructureError(f"not a valid DER CRL: {e}") from None


def check_crl(
    crl: Crl,
    issuer_subject: bytes,
    issuer_point: bytes,
    issuer_name: str,
    at: int,
    check: Check,
    what: str,
) -> None:
    """The CRL is issued and signed by the expected CA and fresh at ``at``."""
    if crl.issuer != issuer_subject:
        raise CheckFailedError(
            FailureCode.CRL_ISSUER_MISMATCH,
            check,
            f"{what} is issued by {crl.issuer_text!r}, expected {issuer_name!r}",
            f"supply the CRL of {issuer_name!r} (the Processor and Platform CA each have "
            "their own PCK CRL)",
        )
    if not crl.ecdsa_sha256 or not signature_valid(issuer_point, crl.tbs, crl.signature):
        raise CheckFailedError(
            FailureCode.CRL_SIGNATURE_INVALID,
            check,
            f"the signature on {what} does not verify under {issuer_name!r}",
            "the CRL was altered or signed by another key; fetch it again from the PCS/PCCS",
        )
    if at < crl.this_update:
        raise CheckFailedError(
            FailureCode.CRL_NOT_YET_VALID,
            check,
            f"{what} is not valid before {crl.this_update} (verification time {at})",
            "check the verification time (--at) and the system clock",
        )
    if crl.next_update is None:
        raise CheckFailedError(
            FailureCode.CRL_EXPIRED,
            check,
            f"{what} has no nextUpdate, its freshness cannot be judged",
            "fetch a current CRL from the PCS/PCCS",
        )
    if at >= crl.next_update:
        raise CheckFailedError(
            FailureCode.CRL_EXPIRED,
            check,
            f"{what} is stale: its nextUpdate {crl.next_update} is not after the verification "
            f"time {at}",
            "fetch a current CRL from the PCS/PCCS, or verify as of an earlier time with --at",
        )


def check_not_revoked(cert: Certificate, crl: Crl, check: Check, what: str) -> None:
    """Raise when ``crl`` lists ``cert``'s serial number."""
    if cert.serial in crl.revoked:
        raise CheckFailedError(
            FailureCode.CERT_REVOKED,
            check,
            f"{what} {cert.subject_text!r} (serial {cert.serial:x}) is revoked by "
            f"{crl.issuer_text!r}",
            "this certificate's key must no longer be trusted; the platform needs a new "
            "PCK certificate (or the collateral a new signer)",
        )
