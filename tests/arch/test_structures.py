"""Byte-exact SGX structures: round trips, field offsets (SGX-REFERENCE §3) and rejections."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_platform.arch.attributes import (
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
)
from sgx_platform.arch.codes import EnclsLeaf, EncluLeaf, SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import Report, ReportBody, TargetInfo
from sgx_platform.arch.secinfo import PageInfo, PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sigstruct import SIGSTRUCT_HEADER, SIGSTRUCT_HEADER2, Sigstruct
from sgx_platform.arch.tcs import Tcs


def _patch_u(data: bytearray, offset: int, size: int, mask: int) -> None:
    value = int.from_bytes(data[offset : offset + size], "little") & mask
    data[offset : offset + size] = value.to_bytes(size, "little")


def _secinfo_fix(b: bytearray) -> None:
    flags = int.from_bytes(b[0:8], "little")
    pt = (flags >> 8 & 0xFF) % 5
    b[0:8] = ((flags & 0x3F) | pt << 8).to_bytes(8, "little")


@dataclass(frozen=True)
class Spec:
    cls: Any
    size: int
    reserved: tuple[tuple[int, int], ...] = ()
    constants: tuple[tuple[int, bytes], ...] = ()
    fix: Callable[[bytearray], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def valid(self, raw: bytes) -> bytes:
        b = bytearray(raw)
        for off, n in self.reserved:
            b[off : off + n] = bytes(n)
        for off, value in self.constants:
            b[off : off + len(value)] = value
        if self.fix:
            self.fix(b)
        return bytes(b)


_BODY_RESERVED = ((21, 11), (96, 32), (160, 32), (262, 42))

SPECS = {
    "Attributes": Spec(Attributes, 16),
    "Measurement": Spec(Measurement, 32),
    "ReportBody": Spec(ReportBody, 384, _BODY_RESERVED),
    "Report": Spec(Report, 432, _BODY_RESERVED),
    "TargetInfo": Spec(TargetInfo, 512, ((48, 2), (56, 8), (128, 384))),
    "Secs": Spec(Secs, 4096, ((24, 24), (96, 32), (160, 32), (262, 3834))),
    "SecInfo": Spec(SecInfo, 64, ((8, 56),), fix=_secinfo_fix),
    "PageInfo": Spec(PageInfo, 32),
    "Tcs": Spec(Tcs, 4096, ((72, 4024),), fix=lambda b: _patch_u(b, 8, 8, 0x3)),
    "Sigstruct": Spec(
        Sigstruct,
        1808,
        ((44, 84), (910, 2), (992, 16), (1028, 12)),
        ((0, SIGSTRUCT_HEADER), (24, SIGSTRUCT_HEADER2)),
    ),
    "EinitToken": Spec(
        EinitToken,
        304,
        ((4, 44), (96, 32), (160, 32), (212, 24)),
        fix=lambda b: _patch_u(b, 0, 4, 1),
    ),
    "KeyRequest": Spec(KeyRequest, 512, ((6, 2), (78, 434)), fix=lambda b: _patch_u(b, 2, 2, 0x3F)),
}
NAMES = sorted(SPECS)


def _valid_bytes(spec: Spec) -> st.SearchStrategy[bytes]:
    """Raw bytes made valid (reserved zeroed, constants set); 4 KiB ones from a seeded PRNG."""
    n = spec.size
    edge = st.sampled_from([bytes(n), b"\xff" * n])
    if n <= 1024:
        return st.one_of(edge, st.binary(min_size=n, max_size=n)).map(spec.valid)
    seeded = st.randoms(use_true_random=False).map(lambda r: r.randbytes(n))
    return st.one_of(edge, seeded).map(spec.valid)


def _boundaries(cls: Any) -> list[int]:
    """Every field boundary of a structure's struct layout (from its format string)."""
    layout = getattr(cls, "LAYOUT", None)
    if layout is None:
        return [cls.SIZE // 2] if hasattr(cls, "SIZE") else [16]
    out, pos = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", layout.format):
        n = int(count or 1)
        pos += n if code in "sx" else n * struct.calcsize("<" + code)
        out.append(pos)
    return out[:-1]


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_sizes_are_the_architectural_ones(name: str) -> None:
    spec = SPECS[name]
    layout = getattr(spec.cls, "LAYOUT", None)
    if layout is not None:
        assert layout.size == spec.size
        assert layout.format.startswith("<")
    assert len(spec.cls.from_bytes(spec.valid(bytes(spec.size))).to_bytes()) == spec.size


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(data=st.data())
def test_bytes_round_trip(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    raw = data.draw(_valid_bytes(spec))
    parsed = spec.cls.from_bytes(raw)
    assert parsed.to_bytes() == raw
    assert spec.cls.from_bytes(parsed.to_bytes()) == parsed


@settings(max_examples=40, deadline=None)
@given(
    body=st.builds(
        ReportBody,
        cpusvn=st.binary(min_size=16, max_size=16),
        miscselect=st.integers(0, 2**32 - 1),
        cet_attributes=st.integers(0, 255),
        attributes=st.builds(Attributes, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
        mrenclave=st.binary(min_size=32, max_size=32).map(Measurement),
        mrsigner=st.binary(min_size=32, max_size=32).map(Measurement),
        isvprodid=st.integers(0, 0xFFFF),
        isvsvn=st.integers(0, 0xFFFF),
        configsvn=st.integers(0, 0xFFFF),
        report_data=st.binary(min_size=64, max_size=64),
    ),
    key_id=st.binary(min_size=32, max_size=32),
    mac=st.binary(min_size=16, max_size=16),
)
def test_report_object_round_trip(body: ReportBody, key_id: bytes, mac: bytes) -> None:
    report = Report(body, key_id, mac)
    assert Report.from_bytes(report.to_bytes()) == report
    assert report.mac_body() == report.to_bytes()[:384]
    target = TargetInfo.from_report_body(body)
    assert TargetInfo.from_bytes(target.to_bytes()) == target


@settings(max_examples=40, deadline=None)
@given(
    page_type=st.sampled_from(list(PageType)),
    flags=st.integers(0, 0x3F),
)
def test_secinfo_object_round_trip(page_type: PageType, flags: int) -> None:
    secinfo = SecInfo(page_type, SecInfoFlags(flags))
    assert SecInfo.from_bytes(secinfo.to_bytes()) == secinfo
    assert secinfo.raw_flags == flags | int(page_type) << 8


# -- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_wrong_length_is_rejected(name: str) -> None:
    spec = SPECS[name]
    good = spec.valid(bytes(spec.size))
    lengths = {0, 1, spec.size - 1, *_boundaries(spec.cls)}
    for n in sorted(lengths):
        with pytest.raises(MalformedStructureError):
            spec.cls.from_bytes(good[:n])
    with pytest.raises(MalformedStructureError):
        spec.cls.from_bytes(good + b"\x00")
    with pytest.raises(MalformedStructureError):
        spec.cls.from_bytes(good + good)


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].reserved])
def test_every_reserved_region_must_be_zero(name: str) -> None:
    spec = SPECS[name]
    good = spec.valid(bytes(spec.size))
    spec.cls.from_bytes(good)
    for off, n in spec.reserved:
        for pos in {off, off + n - 1}:
            bad = bytearray(good)
            bad[pos] = 0x01
            with pytest.raises(MalformedStructureError, match="reserved"):
                spec.cls.from_bytes(bytes(bad))


@pytest.mark.parametrize("which", [0, 24])
def test_sigstruct_header_constants_are_checked_bytewise(which: int) -> None:
    good = SPECS["Sigstruct"].valid(bytes(1808))
    for i in range(16):
        bad = bytearray(good)
        bad[which + i] ^= 0x80
        with pytest.raises(MalformedStructureError, match="HEADER2" if which else "HEADER "):
            Sigstruct.from_bytes(bytes(bad))


def test_secinfo_reserved_flag_bits_and_unknown_page_types() -> None:
    for bit in [6, 7, *range(16, 64)]:
        with pytest.raises(MalformedStructureError, match="reserved bits"):
            SecInfo.from_bytes((1 << bit | 0x200).to_bytes(8, "little") + bytes(56))
    for pt in range(5, 256):
        with pytest.raises(MalformedStructureError, match="unknown page type"):
            SecInfo.from_bytes((pt << 8).to_bytes(8, "little") + bytes(56))
    with pytest.raises(MalformedStructureError):
        SecInfo(PageType.REG, SecInfoFlags(0x40))


def test_tcs_reserved_flag_bits() -> None:
    good = bytearray(Tcs(ossa=0x1000, nssa=2, oentry=0x3000).to_bytes())
    for bit in range(2, 64):
        bad = bytearray(good)
        bad[8:16] = (1 << bit).to_bytes(8, "little")
        with pytest.raises(MalformedStructureError, match="reserved bits"):
            Tcs.from_bytes(bytes(bad))


def test_einittoken_valid_upper_bits() -> None:
    for bit in range(1, 32):
        raw = (1 << bit | 1).to_bytes(4, "little") + bytes(300)
        with pytest.raises(MalformedStructureError, match="VALID"):
            EinitToken.from_bytes(raw)
    assert EinitToken.from_bytes(b"\x01" + bytes(303)).valid is True
    assert EinitToken.from_bytes(bytes(304)) == EinitToken()


def test_keyrequest_reserved_policy_bits_and_unknown_keyname() -> None:
    for bit in range(6, 16):
        raw = struct.pack("<HH", 4, 1 << bit) + bytes(508)
        with pytest.raises(MalformedStructureError, match="KEYPOLICY"):
            KeyRequest.from_bytes(raw)
    unknown = KeyRequest.from_bytes(struct.pack("<HH", 5, 0) + bytes(508))
    assert unknown.key_name() is None  # SGX_INVALID_KEYNAME is the CPU's decision
    assert KeyRequest(keyname=4).key_name() is KeyName.SEAL


@pytest.mark.parametrize(
    "make",
    [
        lambda: Attributes(-1, 0),
        lambda: Attributes(0, 2**64),
        lambda: Measurement(b"\x00" * 31),
        lambda: ReportBody(isvsvn=0x10000),
        lambda: ReportBody(report_data=bytes(63)),
        lambda: Report(ReportBody(), mac=bytes(15)),
        lambda: TargetInfo(Measurement(bytes(32)), configid=bytes(65)),
        lambda: Secs(size=-1),
        lambda: PageInfo(0, 0, 0, 2**64),
        lambda: Tcs(ossa=0, nssa=2**32, oentry=0),
        lambda: EinitToken(key_id=bytes(31)),
        lambda: KeyRequest(keyname=0, keypolicy=0x40),
        lambda: KeyRequest(keyname=0x10000),
    ],
)
def test_constructors_reject_out_of_range_fields(make: Callable[[], object]) -> None:
    with pytest.raises(MalformedStructureError):
        make()


# -- field placement, checked against the tables of SGX-REFERENCE §3 ----------------------------


def _u(raw: bytes, off: int, n: int) -> int:
    return int.from_bytes(raw[off : off + n], "little")


def test_reportbody_offsets() -> None:
    body = ReportBody(
        cpusvn=b"\x11" * 16,
        miscselect=0x22334455,
        cet_attributes=0x66,
        isvextprodid=b"\x77" * 16,
        attributes=Attributes(0x0102030405060708, 0x1112131415161718),
        mrenclave=Measurement(b"\xaa" * 32),
        mrsigner=Measurement(b"\xbb" * 32),
        configid=b"\xcc" * 64,
        isvprodid=0x1234,
        isvsvn=0x5678,
        configsvn=0x9ABC,
        isvfamilyid=b"\xdd" * 16,
        report_data=b"\xee" * 64,
    )
    raw = body.to_bytes()
    assert raw[0:16] == b"\x11" * 16
    assert _u(raw, 16, 4) == 0x22334455 and raw[20] == 0x66
    assert raw[32:48] == b"\x77" * 16
    assert _u(raw, 48, 8) == 0x0102030405060708 and _u(raw, 56, 8) == 0x1112131415161718
    assert raw[64:96] == b"\xaa" * 32 and raw[128:160] == b"\xbb" * 32
    assert raw[192:256] == b"\xcc" * 64
    assert (_u(raw, 256, 2), _u(raw, 258, 2), _u(raw, 260, 2)) == (0x1234, 0x5678, 0x9ABC)
    assert raw[304:320] == b"\xdd" * 16 and raw[320:384] == b"\xee" * 64
    full = Report(body, b"\x01" * 32, b"\x02" * 16).to_bytes()
    assert full[384:416] == b"\x01" * 32 and full[416:432] == b"\x02" * 16


def test_targetinfo_offsets_follow_the_sdk_layout() -> None:
    raw = TargetInfo(
        Measurement(b"\xaa" * 32),
        Attributes(7, 3),
        configsvn=0x1234,
        miscselect=0x89ABCDEF,
        configid=b"\xcc" * 64,
    ).to_bytes()
    assert raw[0:32] == b"\xaa" * 32 and _u(raw, 32, 8) == 7 and _u(raw, 40, 8) == 3
    assert raw[48:50] == b"\x00\x00"
    assert _u(raw, 50, 2) == 0x1234 and _u(raw, 52, 4) == 0x89ABCDEF
    assert raw[64:128] == b"\xcc" * 64 and not any(raw[128:])


def test_secs_offsets() -> None:
    raw = Secs(
        size=0x40000,
        base_address=0x7F0000000000,
        ssa_frame_size=2,
        miscselect=1,
        attributes=Attributes(6, 3),
        mrenclave=Measurement(b"\xaa" * 32),
        mrsigner=Measurement(b"\xbb" * 32),
        configid=b"\xcc" * 64,
        isvprodid=9,
        isvsvn=8,
        configsvn=7,
    ).to_bytes()
    assert (_u(raw, 0, 8), _u(raw, 8, 8), _u(raw, 16, 4), _u(raw, 20, 4)) == (
        0x40000,
        0x7F0000000000,
        2,
        1,
    )
    assert (_u(raw, 48, 8), _u(raw, 56, 8)) == (6, 3)
    assert raw[64:96] == b"\xaa" * 32 and raw[128:160] == b"\xbb" * 32
    assert raw[192:256] == b"\xcc" * 64
    assert (_u(raw, 256, 2), _u(raw, 258, 2), _u(raw, 260, 2)) == (9, 8, 7)


def test_tcs_pageinfo_keyrequest_einittoken_offsets() -> None:
    tcs = Tcs(
        ossa=0x2000,
        nssa=2,
        oentry=0x5000,
        flags=1,
        cssa=1,
        aep=0x99,
        ofsbase=0x6000,
        ogsbase=0x7000,
        fslimit=0xFFF,
        gslimit=0xFFFFFFFF,
    ).to_bytes()
    assert [_u(tcs, o, n) for o, n in [(8, 8), (16, 8), (24, 4), (28, 4), (32, 8), (40, 8)]] == [
        1,
        0x2000,
        1,
        2,
        0x5000,
        0x99,
    ]
    assert [_u(tcs, o, n) for o, n in [(48, 8), (56, 8), (64, 4), (68, 4)]] == [
        0x6000,
        0x7000,
        0xFFF,
        0xFFFFFFFF,
    ]
    assert PageInfo(1, 2, 3, 4).to_bytes() == struct.pack("<4Q", 1, 2, 3, 4)
    kr = KeyRequest(
        keyname=KeyName.SEAL,
        keypolicy=KeyPolicy.MRSIGNER | KeyPolicy.NOISVPRODID,
        isvsvn=5,
        cpusvn=b"\x11" * 16,
        attribute_mask=Attributes(0xFF, 0x3),
        key_id=b"\x22" * 32,
        miscmask=0xFFFFFFFF,
        configsvn=6,
    ).to_bytes()
    assert (_u(kr, 0, 2), _u(kr, 2, 2), _u(kr, 4, 2)) == (4, 6, 5)
    assert kr[8:24] == b"\x11" * 16 and (_u(kr, 24, 8), _u(kr, 32, 8)) == (0xFF, 3)
    assert kr[40:72] == b"\x22" * 32 and _u(kr, 72, 4) == 0xFFFFFFFF and _u(kr, 76, 2) == 6
    tok = EinitToken(
        valid=True,
        attributes=Attributes(4, 3),
        mrenclave=Measurement(b"\xaa" * 32),
        mrsigner=Measurement(b"\xbb" * 32),
        cpusvn_le=b"\xcc" * 16,
        isvprodid_le=0x10,
        isvsvn_le=0x20,
        masked_miscselect_le=0x30,
        masked_attributes_le=Attributes(0x40, 0x50),
        key_id=b"\xdd" * 32,
        mac=b"\xee" * 16,
    )
    raw = tok.to_bytes()
    assert _u(raw, 0, 4) == 1 and (_u(raw, 48, 8), _u(raw, 56, 8)) == (4, 3)
    assert raw[64:96] == b"\xaa" * 32 and raw[128:160] == b"\xbb" * 32
    assert raw[192:208] == b"\xcc" * 16 and (_u(raw, 208, 2), _u(raw, 210, 2)) == (0x10, 0x20)
    assert _u(raw, 236, 4) == 0x30 and (_u(raw, 240, 8), _u(raw, 248, 8)) == (0x40, 0x50)
    assert raw[256:288] == b"\xdd" * 32 and raw[288:304] == b"\xee" * 16
    assert tok.mac_body() == raw[:192]


def test_secinfo_measured_flags_zero_tcs_permissions() -> None:
    tcs = SecInfo(PageType.TCS, SecInfoFlags.R | SecInfoFlags.W)
    assert tcs.raw_flags == 0x103 and tcs.measured_flags() == 0x100
    reg = SecInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.X)
    assert reg.measured_flags() == reg.raw_flags == 0x205


def test_enumerations_match_the_reference() -> None:
    assert [int(f) for f in AttributeFlags] == [0x1, 0x2, 0x4, 0x10, 0x20, 0x40, 0x80, 0x400]
    assert [int(p) for p in KeyPolicy] == [1, 2, 4, 8, 0x10, 0x20]
    assert [k.name for k in KeyName] == [
        "EINITTOKEN",
        "PROVISION",
        "PROVISION_SEAL",
        "REPORT",
        "SEAL",
    ]
    expected_codes = {
        "SUCCESS": 0, "INVALID_SIG_STRUCT": 1, "INVALID_ATTRIBUTE": 2, "BLKSTATE": 3,
        "INVALID_MEASUREMENT": 4, "NOTBLOCKABLE": 5, "PG_INVLD": 6, "LOCKFAIL": 7,
        "INVALID_SIGNATURE": 8, "MAC_COMPARE_FAIL": 9, "PAGE_NOT_BLOCKED": 10,
        "NOT_TRACKED": 11, "VA_SLOT_OCCUPIED": 12, "CHILD_PRESENT": 13, "ENCLAVE_ACT": 14,
        "ENTRYEPOCH_LOCKED": 15, "INVALID_EINITTOKEN": 16, "PREV_TRK_INCMPL": 17,
        "PG_IS_SECS": 18, "PAGE_ATTRIBUTES_MISMATCH": 19, "PAGE_NOT_MODIFIABLE": 20,
        "PAGE_NOT_DEBUGGABLE": 21, "INVALID_REPORTMACSTRUCT": 28, "INVALID_CPUSVN": 32,
        "INVALID_ISVSVN": 64, "UNMASKED_EVENT": 128, "INVALID_KEYNAME": 256,
    }  # fmt: skip
    assert {c.name: int(c) for c in SgxErrorCode} == expected_codes
    assert EnclsLeaf.EEXTEND == 6 and EnclsLeaf.EMODT == 15
    assert EncluLeaf.EGETKEY == 1 and EncluLeaf.EACCEPTCOPY == 7


def test_attributes_masking_and_flags() -> None:
    a = Attributes(int(AttributeFlags.DEBUG | AttributeFlags.MODE64BIT), 0xE7)
    mask = Attributes(~int(AttributeFlags.DEBUG) & (2**64 - 1), 0xFFFFFFFFFFFFFF1B)
    assert a.debug and a.has(AttributeFlags.MODE64BIT) and not a.has(AttributeFlags.KSS)
    assert a & mask == Attributes(int(AttributeFlags.MODE64BIT), 0x3)
    assert Attributes.from_bytes(a.to_bytes()) == a


def test_measurement_value_type() -> None:
    m = Measurement.from_hex("ab" * 32)
    assert m.hex() == "ab" * 32 and bytes(m) == b"\xab" * 32 and str(m) == "ab" * 32
    with pytest.raises(MalformedStructureError):
        Measurement.from_hex("zz")
    with pytest.raises(MalformedStructureError):
        Measurement.from_hex("ab" * 33)
