"""The raw P-256 encodings DCAP uses, and their conversion to and from X.509/DER forms.

DCAP writes ECDSA-P256 signatures as 64 bytes ``r || s`` (each 32 bytes, big-endian) — in
quotes (quote signature, QE report signature) and in Intel's signed JSON (hex) — and public keys
as 64 bytes ``x || y`` (the attestation key in a quote). X.509 and ``cryptography`` use DER
``ECDSA-Sig-Value`` and key objects.

Invariants: :func:`raw_rs_to_der` and :func:`der_to_raw_rs` are inverses on valid input;
``r`` and ``s`` must be in ``1 .. n-1`` (n the P-256 group order) and DER must be canonical
(it re-encodes to the same bytes), anything else raises
:class:`~sgx_platform.arch.errors.MalformedStructureError`. A raw public key must be a point on
P-256. Nothing here verifies a signature.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sgx_platform.arch.binary import require_bytes
from sgx_platform.arch.errors import MalformedStructureError

RAW_SIGNATURE_SIZE = 64
RAW_PUBLIC_KEY_SIZE = 64

#: The order of the P-256 group.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _check_scalar(value: int, what: str) -> None:
    if not 0 < value < P256_ORDER:
        raise MalformedStructureError(f"ECDSA signature: {what} out of range")


def raw_rs_to_der(signature: bytes) -> bytes:
    """Convert a 64-byte ``r || s`` signature to DER ``ECDSA-Sig-Value``."""
    require_bytes(signature, RAW_SIGNATURE_SIZE, "ECDSA r||s signature")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    _check_scalar(r, "r")
    _check_scalar(s, "s")
    return encode_dss_signature(r, s)


def der_to_raw_rs(der: bytes) -> bytes:
    """Convert a canonical DER ``ECDSA-Sig-Value`` to 64 bytes ``r || s``."""
    if not isinstance(der, bytes):
        raise MalformedStructureError("ECDSA DER signature: must be bytes")
    try:
        r, s = decode_dss_signature(der)
    except ValueError as e:
        raise MalformedStructureError(f"ECDSA DER signature: {e}") from e
    _check_scalar(r, "r")
    _check_scalar(s, "s")
    if encode_dss_signature(r, s) != der:
        raise MalformedStructureError("ECDSA DER signature: not canonical DER")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_key_from_raw(xy: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 public key whose uncompressed point is ``x || y`` (64 bytes)."""
    require_bytes(xy, RAW_PUBLIC_KEY_SIZE, "P-256 public key x||y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)
    except ValueError as e:
        raise MalformedStructureError(f"P-256 public key: not a point on the curve: {e}") from e


def public_key_to_raw(key: ec.EllipticCurvePublicKey) -> bytes:
    """``x || y`` (64 bytes) of a P-256 public key."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise MalformedStructureError(f"public key: expected P-256, got {key.curve.name}")
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
