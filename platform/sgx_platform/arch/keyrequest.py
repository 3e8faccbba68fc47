"""KEYREQUEST (512 B) — SGX-REFERENCE §3.8.

Invariants: ``from_bytes`` demands exactly 512 bytes, zero reserved regions (@6 and @78; the
SDM raises #GP) and no reserved KEYPOLICY bit (6-15, #GP). KEYNAME is kept as the raw u16: an
unknown value is not malformed input but EGETKEY's SGX_INVALID_KEYNAME, decided by the CPU
(:meth:`KeyRequest.key_name` returns ``None`` for it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sgx_platform.arch.attributes import (
    KNOWN_KEYPOLICY_BITS,
    NO_ATTRIBUTES,
    Attributes,
    KeyName,
    KeyPolicy,
)
from sgx_platform.arch.binary import require_bytes, require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError

__all__ = ["KeyName", "KeyPolicy", "KeyRequest"]

_KEYREQUEST = struct.Struct(
    "<"
    "H"  # 0  KEYNAME
    "H"  # 2  KEYPOLICY
    "H"  # 4  ISVSVN
    "2s"  # 6  reserved (newer SDM: CET_ATTRIBUTES_MASK, UNVERIFIED)
    "16s"  # 8  CPUSVN
    "16s"  # 24 ATTRIBUTEMASK
    "32s"  # 40 KEYID
    "I"  # 72 MISCMASK
    "H"  # 76 CONFIGSVN
    "434s"  # 78 reserved
)
assert _KEYREQUEST.size == 512


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """The input of EGETKEY."""

    keyname: int
    keypolicy: int = 0
    isvsvn: int = 0
    cpusvn: bytes = bytes(16)
    attribute_mask: Attributes = NO_ATTRIBUTES
    key_id: bytes = bytes(32)
    miscmask: int = 0
    configsvn: int = 0

    LAYOUT = _KEYREQUEST
    SIZE = 512

    def __post_init__(self) -> None:
        require_uint(self.keyname, 16, "KEYREQUEST.KEYNAME")
        require_uint(self.keypolicy, 16, "KEYREQUEST.KEYPOLICY")
        if self.keypolicy & ~KNOWN_KEYPOLICY_BITS:
            raise MalformedStructureError(
                f"KEYREQUEST.KEYPOLICY {self.keypolicy:#x}: reserved bits 6-15 set"
            )
        require_uint(self.isvsvn, 16, "KEYREQUEST.ISVSVN")
        require_bytes(self.cpusvn, 16, "KEYREQUEST.CPUSVN")
        if not isinstance(self.attribute_mask, Attributes):
            raise MalformedStructureError("KEYREQUEST.ATTRIBUTEMASK must be Attributes")
        require_bytes(self.key_id, 32, "KEYREQUEST.KEYID")
        require_uint(self.miscmask, 32, "KEYREQUEST.MISCMASK")
        require_uint(self.configsvn, 16, "KEYREQUEST.CONFIGSVN")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRequest:
        require_length(data, cls.SIZE, "KEYREQUEST")
        (keyname, policy, isvsvn, res1, cpusvn, mask, key_id, miscmask, configsvn, res2) = (
            _KEYREQUEST.unpack(data)
        )
        require_zero(res1, "KEYREQUEST reserved @6")
        require_zero(res2, "KEYREQUEST reserved @78")
        return cls(
            keyname=keyname,
            keypolicy=policy,
            isvsvn=isvsvn,
            cpusvn=cpusvn,
            attribute_mask=Attributes.from_bytes(mask),
            key_id=key_id,
            miscmask=miscmask,
            configsvn=configsvn,
        )

    def to_bytes(self) -> bytes:
        return _KEYREQUEST.pack(
            self.keyname,
            self.keypolicy,
            self.isvsvn,
            bytes(2),
            self.cpusvn,
            self.attribute_mask.to_bytes(),
            self.key_id,
            self.miscmask,
            self.configsvn,
            bytes(434),
        )

    def key_name(self) -> KeyName | None:
        """KEYNAME as an enum, or ``None`` when unknown (EGETKEY: SGX_INVALID_KEYNAME)."""
        try:
            return KeyName(self.keyname)
        except ValueError:
            return None

    @property
    def policy(self) -> KeyPolicy:
        return KeyPolicy(self.keypolicy)
