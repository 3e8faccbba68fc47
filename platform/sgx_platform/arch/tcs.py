"""TCS, the thread control structure (4096 B) — SGX-REFERENCE §3.3.

Invariants: ``from_bytes`` demands exactly 4096 bytes, FLAGS without reserved bits (only
DBGOPTIN bit 0 and AEXNOTIFY bit 1 are defined) and a zero 4024-byte reserved tail (SDM EADD
requires it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag

from sgx_platform.arch.binary import require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError


class TcsFlags(IntFlag):
    DBGOPTIN = 0x1
    AEXNOTIFY = 0x2


_KNOWN_TCS_FLAGS = int(TcsFlags.DBGOPTIN | TcsFlags.AEXNOTIFY)

_TCS = struct.Struct(
    "<"
    "Q"  # 0  STATE
    "Q"  # 8  FLAGS
    "Q"  # 16 OSSA
    "I"  # 24 CSSA
    "I"  # 28 NSSA
    "Q"  # 32 OENTRY
    "Q"  # 40 AEP
    "Q"  # 48 OFSBASE
    "Q"  # 56 OGSBASE
    "I"  # 64 FSLIMIT
    "I"  # 68 GSLIMIT
    "4024s"  # 72 reserved
)
assert _TCS.size == 4096


@dataclass(frozen=True, slots=True)
class Tcs:
    """Thread control structure; offsets (OSSA, OENTRY, OFSBASE, OGSBASE) are enclave-relative."""

    ossa: int
    nssa: int
    oentry: int
    state: int = 0
    flags: int = 0
    cssa: int = 0
    aep: int = 0
    ofsbase: int = 0
    ogsbase: int = 0
    fslimit: int = 0xFFFF_FFFF
    gslimit: int = 0xFFFF_FFFF

    LAYOUT = _TCS
    SIZE = 4096

    def __post_init__(self) -> None:
        for name in ("state", "flags", "ossa", "oentry", "aep", "ofsbase", "ogsbase"):
            require_uint(getattr(self, name), 64, f"TCS.{name.upper()}")
        for name in ("cssa", "nssa", "fslimit", "gslimit"):
            require_uint(getattr(self, name), 32, f"TCS.{name.upper()}")
        if self.flags & ~_KNOWN_TCS_FLAGS:
            raise MalformedStructureError(f"TCS.FLAGS {self.flags:#x}: reserved bits set")

    @classmethod
    def from_bytes(cls, data: bytes) -> Tcs:
        require_length(data, cls.SIZE, "TCS")
        (state, flags, ossa, cssa, nssa, oentry, aep, ofs, ogs, fsl, gsl, reserved) = _TCS.unpack(
            data
        )
        require_zero(reserved, "TCS reserved @72")
        return cls(
            ossa=ossa,
            nssa=nssa,
            oentry=oentry,
            state=state,
            flags=flags,
            cssa=cssa,
            aep=aep,
            ofsbase=ofs,
            ogsbase=ogs,
            fslimit=fsl,
            gslimit=gsl,
        )

    def to_bytes(self) -> bytes:
        return _TCS.pack(
            self.state,
            self.flags,
            self.ossa,
            self.cssa,
            self.nssa,
            self.oentry,
            self.aep,
            self.ofsbase,
            self.ogsbase,
            self.fslimit,
            self.gslimit,
            bytes(4024),
        )
