"""ATTRIBUTES, XFRM and MISCSELECT (SGX-REFERENCE §3.9, §1.6) and the KEYREQUEST enums (§3.8).

Invariants: :class:`Attributes` holds two unsigned 64-bit integers (FLAGS, XFRM) and encodes to
exactly 16 little-endian bytes. No bit is rejected here: which bits are legal depends on the
context (ECREATE, a SIGSTRUCT mask, a KEYREQUEST mask) and is checked there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from sgx_platform.arch.binary import require_length
from sgx_platform.arch.errors import MalformedStructureError

U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
U32_MAX = 0xFFFF_FFFF


class AttributeFlags(IntFlag):
    """SECS.ATTRIBUTES.FLAGS bits (K-ASM, SDK ``sgx_attributes.h``)."""

    INIT = 0x1
    DEBUG = 0x2
    MODE64BIT = 0x4
    PROVISIONKEY = 0x10
    EINITTOKEN_KEY = 0x20
    CET = 0x40
    KSS = 0x80
    AEXNOTIFY = 0x400


#: Bits of FLAGS that ECREATE accepts (everything else is reserved; K-ASM SGX_ATTR_RESERVED_MASK
#: is the complement of these plus INIT, which only EINIT sets).
KNOWN_ATTRIBUTE_FLAGS = int(
    AttributeFlags.INIT
    | AttributeFlags.DEBUG
    | AttributeFlags.MODE64BIT
    | AttributeFlags.PROVISIONKEY
    | AttributeFlags.EINITTOKEN_KEY
    | AttributeFlags.CET
    | AttributeFlags.KSS
    | AttributeFlags.AEXNOTIFY
)

#: SDK ``SGX_FLAGS_NON_CHECK_BITS``.
FLAGS_NON_CHECK_BITS = 0x00FF_0000_0000_0000


class Xfrm(IntFlag):
    """XFRM (XSAVE feature request mask) components (SDK names)."""

    X87 = 0x1
    SSE = 0x2
    AVX = 0x4
    BNDREGS = 0x8
    BNDCSR = 0x10
    OPMASK = 0x20
    ZMM_HI256 = 0x40
    HI16_ZMM = 0x80
    PKRU = 0x200
    XTILECFG = 0x20000
    XTILEDATA = 0x40000


#: SDK ``SGX_XFRM_LEGACY``: x87 and SSE, mandatory for every enclave (ECREATE #GP otherwise).
XFRM_LEGACY = 0x3


class MiscSelect(IntFlag):
    """MISCSELECT bits: EXINFO (bit 0); CPINFO (bit 1, newer SDM, UNVERIFIED)."""

    EXINFO = 0x1
    CPINFO = 0x2


class KeyPolicy(IntFlag):
    """KEYREQUEST.KEYPOLICY bits (SGX-REFERENCE §3.8); bits 6-15 are reserved."""

    MRENCLAVE = 0x1
    MRSIGNER = 0x2
    NOISVPRODID = 0x4
    CONFIGID = 0x8
    ISVFAMILYID = 0x10
    ISVEXTPRODID = 0x20


#: Policy bits that need SECS.ATTRIBUTES.KSS (SDM EGETKEY: ``KEYPOLICY & 0x003C``).
KEYPOLICY_KSS_BITS = 0x003C
KNOWN_KEYPOLICY_BITS = 0x003F


class KeyName(IntEnum):
    """KEYREQUEST.KEYNAME values (SGX-REFERENCE §3.8)."""

    EINITTOKEN = 0
    PROVISION = 1
    PROVISION_SEAL = 2
    REPORT = 3
    SEAL = 4


_ATTRIBUTES = struct.Struct("<QQ")
assert _ATTRIBUTES.size == 16


@dataclass(frozen=True, slots=True)
class Attributes:
    """SGX ATTRIBUTES: FLAGS u64 then XFRM u64 (16 bytes, little-endian)."""

    flags: int = 0
    xfrm: int = 0

    SIZE = 16

    def __post_init__(self) -> None:
        for name, value in (("flags", self.flags), ("xfrm", self.xfrm)):
            if not isinstance(value, int) or not 0 <= value <= U64_MAX:
                raise MalformedStructureError(f"attributes: {name} is not an unsigned 64-bit int")

    @classmethod
    def from_bytes(cls, data: bytes) -> Attributes:
        require_length(data, cls.SIZE, "ATTRIBUTES")
        flags, xfrm = _ATTRIBUTES.unpack(data)
        return cls(flags, xfrm)

    def to_bytes(self) -> bytes:
        return _ATTRIBUTES.pack(self.flags, self.xfrm)

    def has(self, flag: AttributeFlags) -> bool:
        """True when every bit of ``flag`` is set in FLAGS."""
        return self.flags & flag == flag

    @property
    def debug(self) -> bool:
        return self.has(AttributeFlags.DEBUG)

    def __and__(self, mask: Attributes) -> Attributes:
        """The 128-bit AND used by EINIT and EGETKEY (``ATTRIBUTES & ATTRIBUTEMASK``)."""
        return Attributes(self.flags & mask.flags, self.xfrm & mask.xfrm)


#: ATTRIBUTES with no bit set (a default for unset fields and masks).
NO_ATTRIBUTES = Attributes(0, 0)
