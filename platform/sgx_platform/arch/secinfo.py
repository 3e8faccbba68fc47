"""SECINFO (64 B), PAGEINFO (32 B) and EPC page types — SGX-REFERENCE §3.2.

Invariants: SECINFO.FLAGS carries the permission bits R/W/X, PENDING, MODIFIED, PR (bits 0-5)
and the page type in bits 15:8; every other FLAGS bit and the 56 trailing bytes are reserved and
must be zero; the page type must be one of :class:`PageType`. ``SecInfo.flags`` holds only the
low permission/state bits, ``page_type`` the type; ``raw_flags`` is the architectural u64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from sgx_platform.arch.binary import require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError


class PageType(IntEnum):
    """EPCM page types (K-ASM ``sgx_page_type``)."""

    SECS = 0
    TCS = 1
    REG = 2
    VA = 3
    TRIM = 4


class SecInfoFlags(IntFlag):
    """SECINFO.FLAGS bits 0-5."""

    R = 0x1
    W = 0x2
    X = 0x4
    PENDING = 0x8
    MODIFIED = 0x10
    PR = 0x20


NO_FLAGS = SecInfoFlags(0)
PERMISSION_MASK = int(SecInfoFlags.R | SecInfoFlags.W | SecInfoFlags.X)
_FLAG_BITS = 0x3F
_PT_SHIFT = 8
_PT_MASK = 0xFF << _PT_SHIFT

_SECINFO = struct.Struct("<Q56s")
assert _SECINFO.size == 64


@dataclass(frozen=True, slots=True)
class SecInfo:
    """A page's type and permissions as declared to EADD/EAUG/EMODPR/EACCEPT."""

    page_type: PageType
    flags: SecInfoFlags = NO_FLAGS

    LAYOUT = _SECINFO
    SIZE = 64

    def __post_init__(self) -> None:
        if not isinstance(self.page_type, PageType):
            raise MalformedStructureError("SECINFO page type must be a PageType")
        if not isinstance(self.flags, int) or int(self.flags) & ~_FLAG_BITS:
            raise MalformedStructureError("SECINFO flags: only bits 0-5 are defined")
        object.__setattr__(self, "flags", SecInfoFlags(int(self.flags)))

    @classmethod
    def from_raw_flags(cls, raw: int) -> SecInfo:
        """Decode the architectural FLAGS u64, rejecting reserved bits and unknown types."""
        require_uint(raw, 64, "SECINFO.FLAGS")
        if raw & ~(_FLAG_BITS | _PT_MASK):
            raise MalformedStructureError(f"SECINFO.FLAGS {raw:#x}: reserved bits set")
        pt = (raw & _PT_MASK) >> _PT_SHIFT
        try:
            page_type = PageType(pt)
        except ValueError:
            raise MalformedStructureError(
                f"SECINFO.FLAGS {raw:#x}: unknown page type {pt}"
            ) from None
        return cls(page_type, SecInfoFlags(raw & _FLAG_BITS))

    @classmethod
    def from_bytes(cls, data: bytes) -> SecInfo:
        require_length(data, cls.SIZE, "SECINFO")
        raw, reserved = _SECINFO.unpack(data)
        require_zero(reserved, "SECINFO reserved @8")
        return cls.from_raw_flags(raw)

    @property
    def raw_flags(self) -> int:
        return int(self.flags) | (int(self.page_type) << _PT_SHIFT)

    @property
    def permissions(self) -> SecInfoFlags:
        return SecInfoFlags(int(self.flags) & PERMISSION_MASK)

    def measured_flags(self) -> int:
        """FLAGS as EADD measures them: a TCS is measured with R/W/X zeroed (SDM EADD)."""
        if self.page_type is PageType.TCS:
            return self.raw_flags & ~PERMISSION_MASK
        return self.raw_flags

    def to_bytes(self) -> bytes:
        return _SECINFO.pack(self.raw_flags, bytes(56))


_PAGEINFO = struct.Struct("<QQQQ")
assert _PAGEINFO.size == 32


@dataclass(frozen=True, slots=True)
class PageInfo:
    """PAGEINFO: linear address, source page, SECINFO (or PCMD) and SECS addresses."""

    linaddr: int
    srcpge: int
    secinfo: int
    secs: int

    LAYOUT = _PAGEINFO
    SIZE = 32

    def __post_init__(self) -> None:
        for name in ("linaddr", "srcpge", "secinfo", "secs"):
            require_uint(getattr(self, name), 64, f"PAGEINFO.{name.upper()}")

    @classmethod
    def from_bytes(cls, data: bytes) -> PageInfo:
        require_length(data, cls.SIZE, "PAGEINFO")
        return cls(*_PAGEINFO.unpack(data))

    def to_bytes(self) -> bytes:
        return _PAGEINFO.pack(self.linaddr, self.srcpge, self.secinfo, self.secs)
