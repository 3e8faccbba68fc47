"""ECDSA P-256 / SHA-256 signature checks, cached by the exact bytes they cover.

Invariants:

* The only cache is :func:`_ecdsa_p256_sha256_valid`, a pure function of (public key point,
  message, DER signature): its answer can never depend on time, CRLs or anchors, so a cached
  answer is always the answer. Every time, window and revocation check runs on every call.
* :func:`verify_p256` raises :class:`~sgx_verifier.errors.CheckFailedError`; it never returns a
  bool. Raw ``r || s`` signatures (quotes, Intel's JSON collateral) go through
  :func:`raw_signature_to_der` first, which refuses anything but 64 bytes.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.verdict import Check, FailureCode

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@lru_cache(maxsize=512)
def _public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


@lru_cache(maxsize=4096)
def _ecdsa_p256_sha256_valid(point: bytes, message: bytes, signature_der: bytes) -> bool:
    """Whether ``signature_der`` is a valid ECDSA-SHA256 signature of ``message`` by ``point``."""
    try:
        key = _public_key(point)
    except ValueError:
        return False
    try:
        key.verify(signature_der, message, _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        return False
    return True


def raw_signature_to_der(raw: bytes) -> bytes:
    """DER-encode a 64-byte ``r || s`` P-256 signature."""
    if len(raw) != 64:
        raise MalformedStructureError(f"ECDSA P-256 signature: expected 64 bytes, got {len(raw)}")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def raw_public_key_to_point(raw: bytes) -> bytes:
    """The SEC1 uncompressed point of a 64-byte ``x || y`` P-256 key (the attestation key)."""
    if len(raw) != 64:
        raise MalformedStructureError(f"ECDSA P-256 public key: expected 64 bytes, got {len(raw)}")
    return b"\x04" + raw


def signature_valid(point: bytes, message: bytes, signature_der: bytes) -> bool:
    """Cached predicate for path building, where a miss means "try the next candidate"."""
    return _ecdsa_p256_sha256_valid(bytes(point), bytes(message), bytes(signature_der))


def verify_p256(
    point: bytes,
    message: bytes,
    signature_der: bytes,
    *,
    code: FailureCode,
    check: Check,
    what: str,
    hint: str,
) -> None:
    """Raise :class:`CheckFailedError` unless the signature verifies."""
    if not _ecdsa_p256_sha256_valid(bytes(point), bytes(message), bytes(signature_der)):
        raise CheckFailedError(code, check, f"the signature over {what} does not verify", hint)


def cache_clear() -> None:
    """Forget every cached answer (benchmarks measure first sight with this)."""
    _ecdsa_p256_sha256_valid.cache_clear()
    _public_key.cache_clear()
