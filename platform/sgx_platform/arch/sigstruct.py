"""SIGSTRUCT, the enclave signature structure (1808 B) — SGX-REFERENCE §3.4, §5.1 step 2-4.

Invariants:

* ``from_bytes`` is a pure parse: exact length, the two header constants and zero in every
  reserved region (violations raise :class:`MalformedStructureError`). It never checks the
  signature, the vendor or the exponent, which are fields.
* :meth:`Sigstruct.verify` checks, in EINIT order, VENDOR ∈ {0, 0x8086}, EXPONENT = 3, a
  3072-bit modulus (these raise :class:`MalformedStructureError`: SGX_INVALID_SIG_STRUCT), then
  the RSASSA-PKCS1-v1_5/SHA-256 signature over ``[0:128) || [900:1028)``, then Q1, then Q2 (each
  a :class:`SignatureError` with its own message and :attr:`SigstructSignatureError.check`).
* Big integers (MODULUS, SIGNATURE, Q1, Q2) are stored little-endian, 384 bytes each.
* MRSIGNER = SHA-256 of the 384 MODULUS bytes as stored.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from sgx_platform.arch.attributes import Attributes
from sgx_platform.arch.binary import require_bytes, require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError, SignatureError
from sgx_platform.arch.measurement import Measurement

SIGSTRUCT_HEADER = bytes.fromhex("06000000E10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
VENDOR_OTHER = 0
VENDOR_INTEL = 0x8086
SIGSTRUCT_EXPONENT = 3
MODULUS_SIZE = 384
MODULUS_BITS = 3072

#: SHA-256 DigestInfo prefix of PKCS#1 v1.5 (RFC 8017 §9.2 note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

_SIGSTRUCT = struct.Struct(
    "<"
    "16s"  # 0    HEADER
    "I"  # 16   VENDOR
    "I"  # 20   DATE (BCD yyyymmdd)
    "16s"  # 24   HEADER2
    "I"  # 40   SWDEFINED
    "84s"  # 44   reserved
    "384s"  # 128  MODULUS (LE)
    "I"  # 512  EXPONENT
    "384s"  # 516  SIGNATURE (LE)
    "I"  # 900  MISCSELECT
    "I"  # 904  MISCMASK
    "B"  # 908  CET_ATTRIBUTES
    "B"  # 909  CET_ATTRIBUTES_MASK
    "2s"  # 910  reserved
    "16s"  # 912  ISVFAMILYID
    "16s"  # 928  ATTRIBUTES
    "16s"  # 944  ATTRIBUTEMASK
    "32s"  # 960  ENCLAVEHASH
    "16s"  # 992  reserved
    "16s"  # 1008 ISVEXTPRODID
    "H"  # 1024 ISVPRODID
    "H"  # 1026 ISVSVN
    "12s"  # 1028 reserved
    "384s"  # 1040 Q1 (LE)
    "384s"  # 1424 Q2 (LE)
)
assert _SIGSTRUCT.size == 1808

SIGNED_HEADER = slice(0, 128)
SIGNED_BODY = slice(900, 1028)


class SigstructSignatureError(SignatureError):
    """A SIGSTRUCT whose RSA signature, Q1 or Q2 is wrong; :attr:`check` names which."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


def bcd_date(year: int, month: int, day: int) -> int:
    """SIGSTRUCT.DATE: the date as BCD ``yyyymmdd`` in a u32 (e.g. 2016-12-14 → 0x20161214)."""
    if not (0 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= 31):
        raise MalformedStructureError(f"date {year}-{month}-{day} out of range")
    return int(f"{year:04d}{month:02d}{day:02d}", 16)


def pkcs1v15_sha256_encoding(digest: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 encoding of a SHA-256 ``digest`` for a 3072-bit modulus (384 bytes).

    The SDM's HARDCODED_PKCS1_5_PADDING is this encoding without the digest.
    """
    require_bytes(digest, 32, "SHA-256 digest")
    pad = MODULUS_SIZE - 3 - len(_SHA256_DIGEST_INFO) - len(digest)
    return b"\x00\x01" + b"\xff" * pad + b"\x00" + _SHA256_DIGEST_INFO + digest


def compute_q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    """EINIT's helper values: ``q1 = s² // n`` and ``q2 = (s³ - q1·s·n) // n``."""
    q1 = signature * signature // modulus
    q2 = (signature**3 - q1 * signature * modulus) // modulus
    return q1, q2


@dataclass(frozen=True, slots=True)
class Sigstruct:
    """The parsed fields of a SIGSTRUCT. Integers as stored; big integers as LE byte strings."""

    vendor: int
    date: int
    swdefined: int
    modulus: bytes
    exponent: int
    signature: bytes
    miscselect: int
    miscmask: int
    cet_attributes: int
    cet_attributes_mask: int
    isvfamilyid: bytes
    attributes: Attributes
    attribute_mask: Attributes
    enclave_hash: Measurement
    isvextprodid: bytes
    isvprodid: int
    isvsvn: int
    q1: bytes
    q2: bytes

    LAYOUT = _SIGSTRUCT
    SIZE = 1808

    def __post_init__(self) -> None:
        for name in ("vendor", "date", "swdefined", "exponent", "miscselect", "miscmask"):
            require_uint(getattr(self, name), 32, f"SIGSTRUCT.{name.upper()}")
        require_uint(self.cet_attributes, 8, "SIGSTRUCT.CET_ATTRIBUTES")
        require_uint(self.cet_attributes_mask, 8, "SIGSTRUCT.CET_ATTRIBUTES_MASK")
        require_uint(self.isvprodid, 16, "SIGSTRUCT.ISVPRODID")
        require_uint(self.isvsvn, 16, "SIGSTRUCT.ISVSVN")
        for name in ("modulus", "signature", "q1", "q2"):
            require_bytes(getattr(self, name), MODULUS_SIZE, f"SIGSTRUCT.{name.upper()}")
        require_bytes(self.isvfamilyid, 16, "SIGSTRUCT.ISVFAMILYID")
        require_bytes(self.isvextprodid, 16, "SIGSTRUCT.ISVEXTPRODID")
        if not isinstance(self.attributes, Attributes) or not isinstance(
            self.attribute_mask, Attributes
        ):
            raise MalformedStructureError("SIGSTRUCT.ATTRIBUTES/ATTRIBUTEMASK must be Attributes")
        if not isinstance(self.enclave_hash, Measurement):
            raise MalformedStructureError("SIGSTRUCT.ENCLAVEHASH must be a Measurement")

    # -- encoding ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Sigstruct:
        require_length(data, cls.SIZE, "SIGSTRUCT")
        (
            header,
            vendor,
            date,
            header2,
            swdefined,
            res1,
            modulus,
            exponent,
            signature,
            miscselect,
            miscmask,
            cet,
            cet_mask,
            res2,
            isvfamilyid,
            attributes,
            attribute_mask,
            enclave_hash,
            res3,
            isvextprodid,
            isvprodid,
            isvsvn,
            res4,
            q1,
            q2,
        ) = _SIGSTRUCT.unpack(data)
        if header != SIGSTRUCT_HEADER:
            raise MalformedStructureError(f"SIGSTRUCT: bad HEADER {header.hex()}")
        if header2 != SIGSTRUCT_HEADER2:
            raise MalformedStructureError(f"SIGSTRUCT: bad HEADER2 {header2.hex()}")
        require_zero(res1, "SIGSTRUCT reserved @44")
        require_zero(res2, "SIGSTRUCT reserved @910")
        require_zero(res3, "SIGSTRUCT reserved @992")
        require_zero(res4, "SIGSTRUCT reserved @1028")
        return cls(
            vendor=vendor,
            date=date,
            swdefined=swdefined,
            modulus=modulus,
            exponent=exponent,
            signature=signature,
            miscselect=miscselect,
            miscmask=miscmask,
            cet_attributes=cet,
            cet_attributes_mask=cet_mask,
            isvfamilyid=isvfamilyid,
            attributes=Attributes.from_bytes(attributes),
            attribute_mask=Attributes.from_bytes(attribute_mask),
            enclave_hash=Measurement(enclave_hash),
            isvextprodid=isvextprodid,
            isvprodid=isvprodid,
            isvsvn=isvsvn,
            q1=q1,
            q2=q2,
        )

    def to_bytes(self) -> bytes:
        return _SIGSTRUCT.pack(
            SIGSTRUCT_HEADER,
            self.vendor,
            self.date,
            SIGSTRUCT_HEADER2,
            self.swdefined,
            bytes(84),
            self.modulus,
            self.exponent,
            self.signature,
            self.miscselect,
            self.miscmask,
            self.cet_attributes,
            self.cet_attributes_mask,
            bytes(2),
            self.isvfamilyid,
            self.attributes.to_bytes(),
            self.attribute_mask.to_bytes(),
            self.enclave_hash.value,
            bytes(16),
            self.isvextprodid,
            self.isvprodid,
            self.isvsvn,
            bytes(12),
            self.q1,
            self.q2,
        )

    def signed_data(self) -> bytes:
        """The 256 signed bytes: SIGSTRUCT[0:128] || SIGSTRUCT[900:1028]."""
        raw = self.to_bytes()
        return raw[SIGNED_HEADER] + raw[SIGNED_BODY]

    # -- identity ---------------------------------------------------------------------------

    @property
    def mrenclave(self) -> Measurement:
        """The MRENCLAVE this SIGSTRUCT vouches for (ENCLAVEHASH)."""
        return self.enclave_hash

    @property
    def mrsigner(self) -> Measurement:
        """SHA-256 of the 384 MODULUS bytes as stored (little-endian)."""
        return Measurement(hashlib.sha256(self.modulus).digest())

    @property
    def modulus_int(self) -> int:
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        return int.from_bytes(self.signature, "little")

    # -- verification -----------------------------------------------------------------------

    def verify_structure(self) -> None:
        """The SGX_INVALID_SIG_STRUCT checks not already enforced by :meth:`from_bytes`."""
        if self.vendor not in (VENDOR_OTHER, VENDOR_INTEL):
            raise MalformedStructureError(
                f"SIGSTRUCT: VENDOR {self.vendor:#x} is neither 0 nor 0x8086"
            )
        if self.exponent != SIGSTRUCT_EXPONENT:
            raise MalformedStructureError(f"SIGSTRUCT: EXPONENT is {self.exponent}, must be 3")
        self._checked_modulus()

    def _checked_modulus(self) -> int:
        n = self.modulus_int
        if n.bit_length() != MODULUS_BITS or n % 2 == 0:
            raise MalformedStructureError("SIGSTRUCT: MODULUS is not an odd 3072-bit integer")
        return n

    def verify_signature(self) -> None:
        """RSASSA-PKCS1-v1_5 with SHA-256 and e=3 over :meth:`signed_data`."""
        n = self._checked_modulus()
        s = self.signature_int
        if s >= n:
            raise SigstructSignatureError("signature", "SIGSTRUCT: SIGNATURE is not below MODULUS")
        em = pow(s, SIGSTRUCT_EXPONENT, n).to_bytes(MODULUS_SIZE, "big")
        expected = pkcs1v15_sha256_encoding(hashlib.sha256(self.signed_data()).digest())
        if not hmac.compare_digest(em, expected):
            raise SigstructSignatureError(
                "signature", "SIGSTRUCT: RSA signature does not verify over the signed fields"
            )

    def verify_q1(self) -> None:
        q1, _ = compute_q1_q2(self.signature_int, self._checked_modulus())
        if int.from_bytes(self.q1, "little") != q1:
            raise SigstructSignatureError("q1", "SIGSTRUCT: Q1 is not floor(s^2 / n)")

    def verify_q2(self) -> None:
        """Q2 against the correct Q1 (not the stored one), so Q1 and Q2 are judged separately."""
        _, q2 = compute_q1_q2(self.signature_int, self._checked_modulus())
        if int.from_bytes(self.q2, "little") != q2:
            raise SigstructSignatureError("q2", "SIGSTRUCT: Q2 is not floor((s^3 - q1*s*n) / n)")

    def verify(self) -> None:
        """Every check EINIT makes on a SIGSTRUCT by itself; raises on the first failure."""
        self.verify_structure()
        self.verify_signature()
        self.verify_q1()
        self.verify_q2()
