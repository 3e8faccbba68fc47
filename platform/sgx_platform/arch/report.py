"""REPORTBODY (384 B), REPORT (432 B) and TARGETINFO (512 B) — SGX-REFERENCE §3.6, §3.7.

Invariants: ``from_bytes`` demands the exact length and zero reserved bytes; ``to_bytes`` is
its exact inverse. The REPORT MAC covers the 384 body bytes only (not KEYID, not MAC).
TARGETINFO uses the SDK ``sgx_target_info_t`` layout (CONFIGSVN @50, MISCSELECT @52,
CONFIGID @64); bytes 48-49 (newer SDM: CET_ATTRIBUTES, UNVERIFIED) are reserved and must be zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sgx_platform.arch.attributes import NO_ATTRIBUTES, Attributes
from sgx_platform.arch.binary import require_bytes, require_length, require_uint, require_zero
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import ZERO_MEASUREMENT, Measurement
from sgx_platform.arch.secs import IdentityBlock

# RS Report / SDK sgx_report_body_t.
_BODY = struct.Struct(
    "<"
    "16s"  # 0   CPUSVN
    "I"  # 16  MISCSELECT
    "B"  # 20  CET_ATTRIBUTES (RS; SDK reserved)
    "11s"  # 21  reserved
    "16s"  # 32  ISVEXTPRODID
    "214s"  # 48  identity block as in the SECS (secs.IdentityBlock): ATTRIBUTES .. CONFIGSVN
    "42s"  # 262 reserved
    "16s"  # 304 ISVFAMILYID
    "64s"  # 320 REPORTDATA
)
assert _BODY.size == 384


@dataclass(frozen=True, slots=True)
class ReportBody:
    """The MACed part of a REPORT; also the ISV enclave report inside a DCAP quote."""

    cpusvn: bytes = bytes(16)
    miscselect: int = 0
    cet_attributes: int = 0
    isvextprodid: bytes = bytes(16)
    attributes: Attributes = NO_ATTRIBUTES
    mrenclave: Measurement = ZERO_MEASUREMENT
    mrsigner: Measurement = ZERO_MEASUREMENT
    configid: bytes = bytes(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    report_data: bytes = bytes(64)

    LAYOUT = _BODY
    SIZE = 384

    def __post_init__(self) -> None:
        require_bytes(self.cpusvn, 16, "REPORTBODY.CPUSVN")
        require_uint(self.miscselect, 32, "REPORTBODY.MISCSELECT")
        require_uint(self.cet_attributes, 8, "REPORTBODY.CET_ATTRIBUTES")
        require_bytes(self.isvextprodid, 16, "REPORTBODY.ISVEXTPRODID")
        IdentityBlock.of(self).check("REPORTBODY")
        require_bytes(self.isvfamilyid, 16, "REPORTBODY.ISVFAMILYID")
        require_bytes(self.report_data, 64, "REPORTBODY.REPORTDATA")

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportBody:
        require_length(data, cls.SIZE, "REPORTBODY")
        cpusvn, miscselect, cet, res1, isvextprodid, identity, res2, isvfamilyid, report_data = (
            _BODY.unpack(data)
        )
        require_zero(res1, "REPORTBODY reserved @21")
        block = IdentityBlock.unpack(identity, "REPORTBODY")
        require_zero(res2, "REPORTBODY reserved @262")
        return cls(
            cpusvn=cpusvn,
            miscselect=miscselect,
            cet_attributes=cet,
            isvextprodid=isvextprodid,
            isvfamilyid=isvfamilyid,
            report_data=report_data,
            **block._asdict(),
        )

    def to_bytes(self) -> bytes:
        return _BODY.pack(
            self.cpusvn,
            self.miscselect,
            self.cet_attributes,
            bytes(11),
            self.isvextprodid,
            IdentityBlock.of(self).pack(),
            bytes(42),
            self.isvfamilyid,
            self.report_data,
        )


_REPORT = struct.Struct("<384s32s16s")
assert _REPORT.size == 432


@dataclass(frozen=True, slots=True)
class Report:
    """EREPORT output: body, KEYID (not MACed) and MAC = AES-128-CMAC(report key, body)."""

    body: ReportBody
    key_id: bytes = bytes(32)
    mac: bytes = bytes(16)

    LAYOUT = _REPORT
    SIZE = 432

    def __post_init__(self) -> None:
        if not isinstance(self.body, ReportBody):
            raise MalformedStructureError("REPORT.BODY must be a ReportBody")
        require_bytes(self.key_id, 32, "REPORT.KEYID")
        require_bytes(self.mac, 16, "REPORT.MAC")

    @classmethod
    def from_bytes(cls, data: bytes) -> Report:
        require_length(data, cls.SIZE, "REPORT")
        body, key_id, mac = _REPORT.unpack(data)
        return cls(ReportBody.from_bytes(body), key_id, mac)

    def to_bytes(self) -> bytes:
        return _REPORT.pack(self.body.to_bytes(), self.key_id, self.mac)

    def mac_body(self) -> bytes:
        """The bytes the MAC covers: REPORT[0:384]."""
        return self.body.to_bytes()


_TARGETINFO = struct.Struct(
    "<"
    "32s"  # 0   MEASUREMENT
    "16s"  # 32  ATTRIBUTES
    "2s"  # 48  reserved (newer SDM: CET_ATTRIBUTES @48, UNVERIFIED)
    "H"  # 50  CONFIGSVN
    "I"  # 52  MISCSELECT
    "8s"  # 56  reserved
    "64s"  # 64  CONFIGID
    "384s"  # 128 reserved
)
assert _TARGETINFO.size == 512


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """The enclave a REPORT is targeted at (SDK ``sgx_target_info_t``)."""

    measurement: Measurement
    attributes: Attributes = NO_ATTRIBUTES
    configsvn: int = 0
    miscselect: int = 0
    configid: bytes = bytes(64)

    LAYOUT = _TARGETINFO
    SIZE = 512

    def __post_init__(self) -> None:
        if not isinstance(self.measurement, Measurement):
            raise MalformedStructureError("TARGETINFO.MEASUREMENT must be a Measurement")
        if not isinstance(self.attributes, Attributes):
            raise MalformedStructureError("TARGETINFO.ATTRIBUTES must be Attributes")
        require_uint(self.configsvn, 16, "TARGETINFO.CONFIGSVN")
        require_uint(self.miscselect, 32, "TARGETINFO.MISCSELECT")
        require_bytes(self.configid, 64, "TARGETINFO.CONFIGID")

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        require_length(data, cls.SIZE, "TARGETINFO")
        measurement, attributes, res1, configsvn, miscselect, res2, configid, res3 = (
            _TARGETINFO.unpack(data)
        )
        require_zero(res1, "TARGETINFO reserved @48")
        require_zero(res2, "TARGETINFO reserved @56")
        require_zero(res3, "TARGETINFO reserved @128")
        return cls(
            measurement=Measurement(measurement),
            attributes=Attributes.from_bytes(attributes),
            configsvn=configsvn,
            miscselect=miscselect,
            configid=configid,
        )

    @classmethod
    def from_report_body(cls, body: ReportBody) -> TargetInfo:
        """The TARGETINFO of the enclave that produced ``body`` (SDK ``sgx_self_target``)."""
        return cls(
            measurement=body.mrenclave,
            attributes=body.attributes,
            configsvn=body.configsvn,
            miscselect=body.miscselect,
            configid=body.configid,
        )

    def to_bytes(self) -> bytes:
        return _TARGETINFO.pack(
            self.measurement.value,
            self.attributes.to_bytes(),
            bytes(2),
            self.configsvn,
            self.miscselect,
            bytes(8),
            self.configid,
            bytes(384),
        )
