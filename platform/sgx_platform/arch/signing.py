"""SIGSTRUCT signing with an RSA-3072, e=3 key — SGX-REFERENCE §3.4.

Invariants: only RSA keys with a 3072-bit modulus and public exponent 3 sign or identify
enclaves (anything else raises :class:`MalformedStructureError`). The signature is
RSASSA-PKCS1-v1_5 with SHA-256 over ``SIGSTRUCT[0:128] || SIGSTRUCT[900:1028]``; MODULUS,
SIGNATURE, Q1 and Q2 are stored little-endian. Every SIGSTRUCT this module returns has passed
:meth:`Sigstruct.verify`.

Default attributes follow Intel's signing tool and DESIGN.md ``sign``: ATTRIBUTES = MODE64BIT
with XFRM = 3 (x87, SSE); ATTRIBUTEMASK = every flag except DEBUG (so the enclave launches with
or without DEBUG) and XFRM mask 0xFFFFFFFFFFFFFF1B (the tool's value, seen in the Fortanix test
SIGSTRUCT: AVX and AVX-512 state may be enabled at launch, MPX and all unknown bits must match).
``no_debug`` adds DEBUG to the mask with DEBUG = 0, so the enclave cannot launch in debug mode.
MISCSELECT 0 with MISCMASK 0xFFFFFFFF.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sgx_platform.arch.attributes import (
    U32_MAX,
    U64_MAX,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
)
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.sigstruct import (
    MODULUS_BITS,
    MODULUS_SIZE,
    SIGSTRUCT_EXPONENT,
    VENDOR_OTHER,
    Sigstruct,
    bcd_date,
    compute_q1_q2,
)

#: XFRM mask of Intel's signing tool: x87/SSE (bits 0-1), MPX (3-4) and bits 8+ must match.
DEFAULT_XFRM_MASK = 0xFFFF_FFFF_FFFF_FF1B
DEFAULT_ATTRIBUTES = Attributes(int(AttributeFlags.MODE64BIT), XFRM_LEGACY)
DEFAULT_ATTRIBUTE_MASK = Attributes(U64_MAX & ~int(AttributeFlags.DEBUG), DEFAULT_XFRM_MASK)
NO_DEBUG_ATTRIBUTE_MASK = Attributes(U64_MAX, DEFAULT_XFRM_MASK)
DEFAULT_MISCMASK = U32_MAX


def signing_attributes(*, no_debug: bool = False) -> tuple[Attributes, Attributes]:
    """(ATTRIBUTES, ATTRIBUTEMASK) for ``sgxemu sign`` (see the module docstring)."""
    return DEFAULT_ATTRIBUTES, NO_DEBUG_ATTRIBUTE_MASK if no_debug else DEFAULT_ATTRIBUTE_MASK


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-3072 key with public exponent 3, as SGX requires."""
    return rsa.generate_private_key(public_exponent=SIGSTRUCT_EXPONENT, key_size=MODULUS_BITS)


def check_signing_key(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> None:
    """Raise unless ``key`` is an RSA key with a 3072-bit modulus and exponent 3."""
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise MalformedStructureError("enclave signing key must be an RSA key")
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    numbers = public.public_numbers()
    if numbers.n.bit_length() != MODULUS_BITS or numbers.e != SIGSTRUCT_EXPONENT:
        raise MalformedStructureError(
            f"enclave signing key must be RSA-3072 with e=3, got RSA-{numbers.n.bit_length()} "
            f"with e={numbers.e}"
        )


def modulus_le(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    """The key's modulus as SIGSTRUCT stores it: 384 bytes, little-endian."""
    check_signing_key(key)
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_numbers().n.to_bytes(MODULUS_SIZE, "little")


def mrsigner_of_public_key(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> Measurement:
    """MRSIGNER of an enclave signed by ``key``: SHA-256 of its little-endian modulus."""
    return Measurement(hashlib.sha256(modulus_le(key)).digest())


def _date_field(date: int | datetime.date | None) -> int:
    if date is None:
        date = datetime.datetime.now(datetime.UTC).date()
    if isinstance(date, datetime.date):
        return bcd_date(date.year, date.month, date.day)
    return date


def sign_sigstruct(
    key: rsa.RSAPrivateKey,
    enclave_hash: Measurement,
    *,
    attributes: Attributes = DEFAULT_ATTRIBUTES,
    attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK,
    miscselect: int = 0,
    miscmask: int = DEFAULT_MISCMASK,
    isvprodid: int = 0,
    isvsvn: int = 0,
    vendor: int = VENDOR_OTHER,
    date: int | datetime.date | None = None,
    swdefined: int = 0,
    isvfamilyid: bytes = bytes(16),
    isvextprodid: bytes = bytes(16),
) -> Sigstruct:
    """Build and sign a SIGSTRUCT for ``enclave_hash`` (MRENCLAVE).

    ``date`` is a BCD ``yyyymmdd`` int or a date; ``None`` means today (UTC). The result has
    been verified (signature, Q1, Q2) before it is returned.
    """
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MalformedStructureError("signing needs an RSA private key")
    check_signing_key(key)
    unsigned = Sigstruct(
        vendor=vendor,
        date=_date_field(date),
        swdefined=swdefined,
        modulus=modulus_le(key),
        exponent=SIGSTRUCT_EXPONENT,
        signature=bytes(MODULUS_SIZE),
        miscselect=miscselect,
        miscmask=miscmask,
        cet_attributes=0,
        cet_attributes_mask=0,
        isvfamilyid=isvfamilyid,
        attributes=attributes,
        attribute_mask=attribute_mask,
        enclave_hash=enclave_hash,
        isvextprodid=isvextprodid,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        q1=bytes(MODULUS_SIZE),
        q2=bytes(MODULUS_SIZE),
    )
    signature_be = key.sign(unsigned.signed_data(), padding.PKCS1v15(), hashes.SHA256())
    s = int.from_bytes(signature_be, "big")
    q1, q2 = compute_q1_q2(s, key.public_key().public_numbers().n)
    signed = dataclasses.replace(
        unsigned,
        signature=s.to_bytes(MODULUS_SIZE, "little"),
        q1=q1.to_bytes(MODULUS_SIZE, "little"),
        q2=q2.to_bytes(MODULUS_SIZE, "little"),
    )
    signed.verify()
    return signed
