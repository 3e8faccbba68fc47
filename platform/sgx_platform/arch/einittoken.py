"""EINITTOKEN (304 B) — SGX-REFERENCE §3.5, §5.1 steps 13-17.

Invariants: ``from_bytes`` demands exactly 304 bytes, VALID with only bit 0 possibly set and
zero reserved regions (SDM: token reserved space ≠ 0 → SGX_INVALID_EINITTOKEN; a caller on the
EINIT path maps this :class:`MalformedStructureError` to that code). The MAC is AES-128-CMAC
under the EINITTOKEN key over :meth:`EinitToken.mac_body`, bytes [0:192).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sgx_platform.arch.attributes import NO_ATTRIBUTES, Attributes
from sgx_platform.arch.binary import require_bytes, require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import ZERO_MEASUREMENT, Measurement

_TOKEN = struct.Struct(
    "<"
    "I"  # 0   VALID
    "44s"  # 4   reserved
    "16s"  # 48  ATTRIBUTES
    "32s"  # 64  MRENCLAVE
    "32s"  # 96  reserved
    "32s"  # 128 MRSIGNER
    "32s"  # 160 reserved
    "16s"  # 192 CPUSVNLE
    "H"  # 208 ISVPRODIDLE
    "H"  # 210 ISVSVNLE
    "24s"  # 212 reserved
    "I"  # 236 MASKEDMISCSELECTLE
    "16s"  # 240 MASKEDATTRIBUTESLE
    "32s"  # 256 KEYID
    "16s"  # 288 MAC
)
assert _TOKEN.size == 304

MAC_BODY_SIZE = 192


@dataclass(frozen=True, slots=True)
class EinitToken:
    """A launch token; ``valid=False`` with everything zero is what Linux passes."""

    valid: bool = False
    attributes: Attributes = NO_ATTRIBUTES
    mrenclave: Measurement = ZERO_MEASUREMENT
    mrsigner: Measurement = ZERO_MEASUREMENT
    cpusvn_le: bytes = bytes(16)
    isvprodid_le: int = 0
    isvsvn_le: int = 0
    masked_miscselect_le: int = 0
    masked_attributes_le: Attributes = NO_ATTRIBUTES
    key_id: bytes = bytes(32)
    mac: bytes = bytes(16)

    LAYOUT = _TOKEN
    SIZE = 304

    def __post_init__(self) -> None:
        if not isinstance(self.valid, bool):
            raise MalformedStructureError("EINITTOKEN.VALID must be a bool")
        for name in ("attributes", "masked_attributes_le"):
            if not isinstance(getattr(self, name), Attributes):
                raise MalformedStructureError(f"EINITTOKEN.{name.upper()} must be Attributes")
        for name in ("mrenclave", "mrsigner"):
            if not isinstance(getattr(self, name), Measurement):
                raise MalformedStructureError(f"EINITTOKEN.{name.upper()} must be a Measurement")
        require_bytes(self.cpusvn_le, 16, "EINITTOKEN.CPUSVNLE")
        require_uint(self.isvprodid_le, 16, "EINITTOKEN.ISVPRODIDLE")
        require_uint(self.isvsvn_le, 16, "EINITTOKEN.ISVSVNLE")
        require_uint(self.masked_miscselect_le, 32, "EINITTOKEN.MASKEDMISCSELECTLE")
        require_bytes(self.key_id, 32, "EINITTOKEN.KEYID")
        require_bytes(self.mac, 16, "EINITTOKEN.MAC")

    @classmethod
    def from_bytes(cls, data: bytes) -> EinitToken:
        require_length(data, cls.SIZE, "EINITTOKEN")
        (
            valid,
            res1,
            attributes,
            mrenclave,
            res2,
            mrsigner,
            res3,
            cpusvn,
            isvprodid,
            isvsvn,
            res4,
            misc,
            masked_attributes,
            key_id,
            mac,
        ) = _TOKEN.unpack(data)
        if valid & ~1:
            raise MalformedStructureError(f"EINITTOKEN: VALID {valid:#x} has reserved bits set")
        require_zero(res1, "EINITTOKEN reserved @4")
        require_zero(res2, "EINITTOKEN reserved @96")
        require_zero(res3, "EINITTOKEN reserved @160")
        require_zero(res4, "EINITTOKEN reserved @212")
        return cls(
            valid=bool(valid),
            attributes=Attributes.from_bytes(attributes),
            mrenclave=Measurement(mrenclave),
            mrsigner=Measurement(mrsigner),
            cpusvn_le=cpusvn,
            isvprodid_le=isvprodid,
            isvsvn_le=isvsvn,
            masked_miscselect_le=misc,
            masked_attributes_le=Attributes.from_bytes(masked_attributes),
            key_id=key_id,
            mac=mac,
        )

    def to_bytes(self) -> bytes:
        return _TOKEN.pack(
            int(self.valid),
            bytes(44),
            self.attributes.to_bytes(),
            self.mrenclave.value,
            bytes(32),
            self.mrsigner.value,
            bytes(32),
            self.cpusvn_le,
            self.isvprodid_le,
            self.isvsvn_le,
            bytes(24),
            self.masked_miscselect_le,
            self.masked_attributes_le.to_bytes(),
            self.key_id,
            self.mac,
        )

    def mac_body(self) -> bytes:
        """The bytes the MAC covers: EINITTOKEN[0:192] ("only 192 bytes are CMACed")."""
        return self.to_bytes()[:MAC_BODY_SIZE]
