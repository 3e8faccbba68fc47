"""SECS, the SGX enclave control structure (4096 B) — SGX-REFERENCE §3.1.

Invariants: ``from_bytes`` demands exactly 4096 bytes and zero in every reserved region,
including the 3834-byte tail at @262 where the CPU keeps hidden state (EID, PADDING, ...): a
SECS as software hands it to ECREATE never carries that state, so a non-zero tail is malformed.
Architectural checks of ECREATE (SIZE a power of two, BASEADDR aligned, XFRM legal) belong to
the emulated CPU, not to this parse.

SECS[48:262) is the enclave's identity block (:class:`IdentityBlock`): ATTRIBUTES, MRENCLAVE,
MRSIGNER, CONFIGID, ISVPRODID, ISVSVN, CONFIGSVN. EREPORT copies it into REPORTBODY[48:262),
which has the same layout, so both structures read and write it with the same code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from sgx_platform.arch.attributes import NO_ATTRIBUTES, Attributes
from sgx_platform.arch.binary import require_bytes, require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import ZERO_MEASUREMENT, Measurement

#: The identity block at @48 of both SECS and REPORTBODY (offsets are those in the structures).
_IDENTITY = struct.Struct(
    "<"
    "16s"  # 48   ATTRIBUTES
    "32s"  # 64   MRENCLAVE
    "32s"  # 96   reserved
    "32s"  # 128  MRSIGNER
    "32s"  # 160  reserved
    "64s"  # 192  CONFIGID
    "H"  # 256  ISVPRODID
    "H"  # 258  ISVSVN
    "H"  # 260  CONFIGSVN
)
assert _IDENTITY.size == 214
IDENTITY_OFFSET = 48

_SECS = struct.Struct(
    "<"
    "Q"  # 0    SIZE
    "Q"  # 8    BASEADDR
    "I"  # 16   SSAFRAMESIZE (pages)
    "I"  # 20   MISCSELECT
    "24s"  # 24   reserved (newer SDM: CET fields, UNVERIFIED)
    "214s"  # 48   identity block (IdentityBlock): ATTRIBUTES .. CONFIGSVN
    "3834s"  # 262  reserved / hidden state
)
assert _SECS.size == 4096


class _HasIdentity(Protocol):
    @property
    def attributes(self) -> Attributes: ...
    @property
    def mrenclave(self) -> Measurement: ...
    @property
    def mrsigner(self) -> Measurement: ...
    @property
    def configid(self) -> bytes: ...
    @property
    def isvprodid(self) -> int: ...
    @property
    def isvsvn(self) -> int: ...
    @property
    def configsvn(self) -> int: ...


class IdentityBlock(NamedTuple):
    """SECS[48:262) = REPORTBODY[48:262): the fields of the block, by their dataclass names."""

    attributes: Attributes
    mrenclave: Measurement
    mrsigner: Measurement
    configid: bytes
    isvprodid: int
    isvsvn: int
    configsvn: int

    @classmethod
    def of(cls, structure: _HasIdentity) -> IdentityBlock:
        return cls(
            structure.attributes,
            structure.mrenclave,
            structure.mrsigner,
            structure.configid,
            structure.isvprodid,
            structure.isvsvn,
            structure.configsvn,
        )

    @classmethod
    def unpack(cls, block: bytes, what: str) -> IdentityBlock:
        """Decode the 214-byte block of structure ``what``; its reserved bytes must be zero."""
        attributes, mrenclave, res1, mrsigner, res2, configid, prodid, svn, configsvn = (
            _IDENTITY.unpack(block)
        )
        require_zero(res1, f"{what} reserved @96")
        require_zero(res2, f"{what} reserved @160")
        return cls(
            Attributes.from_bytes(attributes),
            Measurement(mrenclave),
            Measurement(mrsigner),
            configid,
            prodid,
            svn,
            configsvn,
        )

    def check(self, what: str) -> None:
        """The field checks of the structure ``what`` (its ``__post_init__``)."""
        if not isinstance(self.attributes, Attributes):
            raise MalformedStructureError(f"{what}.ATTRIBUTES must be Attributes")
        for name in ("mrenclave", "mrsigner"):
            if not isinstance(getattr(self, name), Measurement):
                raise MalformedStructureError(f"{what}.{name.upper()} must be a Measurement")
        require_bytes(self.configid, 64, f"{what}.CONFIGID")
        require_uint(self.isvprodid, 16, f"{what}.ISVPRODID")
        require_uint(self.isvsvn, 16, f"{what}.ISVSVN")
        require_uint(self.configsvn, 16, f"{what}.CONFIGSVN")

    def pack(self) -> bytes:
        return _IDENTITY.pack(
            self.attributes.to_bytes(),
            self.mrenclave.value,
            bytes(32),
            self.mrsigner.value,
            bytes(32),
            self.configid,
            self.isvprodid,
            self.isvsvn,
            self.configsvn,
        )


@dataclass(frozen=True, slots=True)
class Secs:
    """The software-visible SECS fields."""

    size: int
    base_address: int = 0
    ssa_frame_size: int = 1
    miscselect: int = 0
    attributes: Attributes = NO_ATTRIBUTES
    mrenclave: Measurement = ZERO_MEASUREMENT
    mrsigner: Measurement = ZERO_MEASUREMENT
    configid: bytes = bytes(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0

    LAYOUT = _SECS
    SIZE = 4096

    def __post_init__(self) -> None:
        require_uint(self.size, 64, "SECS.SIZE")
        require_uint(self.base_address, 64, "SECS.BASEADDR")
        require_uint(self.ssa_frame_size, 32, "SECS.SSAFRAMESIZE")
        require_uint(self.miscselect, 32, "SECS.MISCSELECT")
        IdentityBlock.of(self).check("SECS")

    @classmethod
    def from_bytes(cls, data: bytes) -> Secs:
        require_length(data, cls.SIZE, "SECS")
        size, base, ssa, misc, res1, identity, res2 = _SECS.unpack(data)
        require_zero(res1, "SECS reserved @24")
        block = IdentityBlock.unpack(identity, "SECS")
        require_zero(res2, "SECS reserved @262")
        return cls(
            size=size, base_address=base, ssa_frame_size=ssa, miscselect=misc, **block._asdict()
        )

    def to_bytes(self) -> bytes:
        return _SECS.pack(
            self.size,
            self.base_address,
            self.ssa_frame_size,
            self.miscselect,
            bytes(24),
            IdentityBlock.of(self).pack(),
            bytes(3834),
        )
