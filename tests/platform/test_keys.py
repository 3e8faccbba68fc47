"""Key derivation: the §6.1 key-dependency table, EGETKEY's checks, the KDF layout (ADR 0002).

The table test turns one input at a time (an enclave SECS field, a KEYREQUEST field, a platform
value) and asserts the derived key changes exactly when §6.1 says that key depends on it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName, KeyPolicy
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import TargetInfo
from sgx_platform.errors import EnclaveInstructionError, GeneralProtectionFault
from sgx_platform.keys import (
    HARDCODED_PKCS1_5_PADDING,
    EnclaveIdentity,
    KeyDependencies,
    KeyDeriver,
    aes_cmac,
    egetkey_dependencies,
    einittoken_key_dependencies,
    ereport_key_dependencies,
)

F = AttributeFlags


def _b(n: int, size: int) -> bytes:
    return bytes([n]) * size


@dataclass(frozen=True)
class World:
    """Everything a derivation reads: platform, enclave SECS, KEYREQUEST."""

    seal_secret: bytes
    provisioning_secret: bytes
    owner_epoch: bytes
    cpusvn: bytes
    enclave: EnclaveIdentity
    request: KeyRequest

    def key(self, name: KeyName) -> bytes:
        request = replace(self.request, keyname=int(name))
        deps = egetkey_dependencies(
            request, self.enclave, owner_epoch=self.owner_epoch, cpusvn=self.cpusvn
        )
        return KeyDeriver(self.seal_secret, self.provisioning_secret).derive(deps)

    def secs(self, **changes: object) -> World:
        return replace(self, enclave=replace(self.enclave, **changes))  # type: ignore[arg-type]

    def kr(self, **changes: object) -> World:
        return replace(self, request=replace(self.request, **changes))  # type: ignore[arg-type]


#: Policy with every identity bit except NOISVPRODID; and the policy with none but NOISVPRODID.
POLICY_ALL = int(
    KeyPolicy.MRENCLAVE
    | KeyPolicy.MRSIGNER
    | KeyPolicy.CONFIGID
    | KeyPolicy.ISVFAMILYID
    | KeyPolicy.ISVEXTPRODID
)
POLICY_NONE = int(KeyPolicy.NOISVPRODID)


def base_world(policy: int) -> World:
    return World(
        seal_secret=_b(0x11, 16),
        provisioning_secret=_b(0x22, 16),
        owner_epoch=_b(0x33, 16),
        cpusvn=bytes([5] * 8 + [0] * 8),
        enclave=EnclaveIdentity(
            attributes=Attributes(
                int(F.INIT | F.MODE64BIT | F.PROVISIONKEY | F.EINITTOKEN_KEY | F.KSS), 0x3
            ),
            miscselect=0x1,
            mrenclave=Measurement(_b(0x44, 32)),
            mrsigner=Measurement(_b(0x55, 32)),
            isvprodid=7,
            isvsvn=5,
            configid=_b(0x66, 64),
            configsvn=3,
            isvfamilyid=_b(0x77, 16),
            isvextprodid=_b(0x88, 16),
        ),
        request=KeyRequest(
            keyname=int(KeyName.SEAL),
            keypolicy=policy,
            isvsvn=4,
            cpusvn=bytes([4] * 8 + [0] * 8),
            # DEBUG deliberately absent: EGETKEY ORs INIT|DEBUG in itself.
            attribute_mask=Attributes(
                int(F.INIT | F.MODE64BIT | F.PROVISIONKEY | F.EINITTOKEN_KEY | F.KSS), 0x3
            ),
            key_id=_b(0x99, 32),
            miscmask=0x1,
            configsvn=2,
        ),
    )


Knob = Callable[[World], tuple[World, World]]


def change(f: Callable[[World], World]) -> Knob:
    return lambda w: (w, f(w))


def _flip_byte0(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x01]) + value[1:]


def _flags(w: World, bit: int) -> World:
    a = w.enclave.attributes
    return w.secs(attributes=Attributes(a.flags ^ bit, a.xfrm))


# An expectation is "C" (the key changes), "U" (unchanged), a KeyPolicy bit (changes iff the
# request's policy has it) or "!NOISVPRODID" (changes iff the policy lacks NOISVPRODID).
Expect = str | KeyPolicy
SEAL, REPORT, EINIT, PROV, PSEAL = (
    KeyName.SEAL,
    KeyName.REPORT,
    KeyName.EINITTOKEN,
    KeyName.PROVISION,
    KeyName.PROVISION_SEAL,
)
NOPROD = "!NOISVPRODID"

# Rows of SGX-REFERENCE §6.1 (plus the platform's root secrets), as
# (input turned, knob, {key name: expectation}).
TABLE: list[tuple[str, Knob, dict[KeyName, Expect]]] = [
    (
        "SECS.ISVFAMILYID",
        change(lambda w: w.secs(isvfamilyid=_b(0x78, 16))),
        {
            SEAL: KeyPolicy.ISVFAMILYID,
            REPORT: "U",
            EINIT: "U",
            PROV: "U",
            PSEAL: KeyPolicy.ISVFAMILYID,
        },
    ),
    (
        "SECS.ISVEXTPRODID",
        change(lambda w: w.secs(isvextprodid=_b(0x89, 16))),
        {
            SEAL: KeyPolicy.ISVEXTPRODID,
            REPORT: "U",
            EINIT: "U",
            PROV: "U",
            PSEAL: KeyPolicy.ISVEXTPRODID,
        },
    ),
    (
        "SECS.ISVPRODID",
        change(lambda w: w.secs(isvprodid=8)),
        {SEAL: NOPROD, REPORT: "U", EINIT: "C", PROV: "C", PSEAL: NOPROD},
    ),
    (
        "KEYREQUEST.ISVSVN",
        change(lambda w: w.kr(isvsvn=3)),
        {SEAL: "C", REPORT: "U", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "SECS.ISVSVN (request unchanged)",
        change(lambda w: w.secs(isvsvn=6)),
        {SEAL: "U", REPORT: "U", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
    (
        "OWNEREPOCH",
        change(lambda w: replace(w, owner_epoch=_b(0x34, 16))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "U", PSEAL: "U"},
    ),
    (
        "SECS.ATTRIBUTES bit inside ATTRIBUTEMASK (MODE64BIT)",
        change(lambda w: _flags(w, int(F.MODE64BIT))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "SECS.ATTRIBUTES.DEBUG, absent from the mask (INIT|DEBUG always count)",
        change(lambda w: _flags(w, int(F.DEBUG))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "SECS.ATTRIBUTES XFRM bit outside ATTRIBUTEMASK",
        change(lambda w: w.secs(attributes=Attributes(w.enclave.attributes.flags, 0x7))),
        {SEAL: "U", REPORT: "C", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
    (
        "KEYREQUEST.ATTRIBUTEMASK (a bit clear in SECS)",
        change(
            lambda w: w.kr(
                attribute_mask=Attributes(
                    w.request.attribute_mask.flags | int(F.AEXNOTIFY), w.request.attribute_mask.xfrm
                )
            )
        ),
        {SEAL: "C", REPORT: "U", EINIT: "U", PROV: "C", PSEAL: "C"},
    ),
    (
        "SECS.MRENCLAVE",
        change(lambda w: w.secs(mrenclave=Measurement(_b(0x45, 32)))),
        {SEAL: KeyPolicy.MRENCLAVE, REPORT: "C", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
    (
        "SECS.MRSIGNER",
        change(lambda w: w.secs(mrsigner=Measurement(_b(0x56, 32)))),
        {SEAL: KeyPolicy.MRSIGNER, REPORT: "U", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "KEYREQUEST.KEYID",
        change(lambda w: w.kr(key_id=_b(0x9A, 32))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "U", PSEAL: "U"},
    ),
    (
        "root seal secret (SEAL_KEY_FUSES)",
        change(lambda w: replace(w, seal_secret=_flip_byte0(w.seal_secret))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "U", PSEAL: "C"},
    ),
    (
        "root provisioning secret (the KDK root, ADR 0002)",
        change(lambda w: replace(w, provisioning_secret=_flip_byte0(w.provisioning_secret))),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "KEYREQUEST.CPUSVN",
        change(lambda w: w.kr(cpusvn=bytes([3] * 8 + [0] * 8))),
        {SEAL: "C", REPORT: "U", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "CR_CPUSVN (request unchanged)",
        change(lambda w: replace(w, cpusvn=bytes([6] * 8 + [0] * 8))),
        {SEAL: "U", REPORT: "C", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
    (
        "SECS.MISCSELECT bit inside MISCMASK",
        change(lambda w: w.secs(miscselect=0x0)),
        {SEAL: "C", REPORT: "C", EINIT: "C", PROV: "C", PSEAL: "C"},
    ),
    (
        "SECS.MISCSELECT bit outside MISCMASK",
        change(lambda w: w.secs(miscselect=0x3)),
        {SEAL: "U", REPORT: "C", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
    (
        "KEYREQUEST.MISCMASK (a bit clear in SECS)",
        change(lambda w: w.kr(miscmask=0x21)),
        {SEAL: "C", REPORT: "U", EINIT: "U", PROV: "C", PSEAL: "C"},
    ),
    (
        "KEYREQUEST.KEYPOLICY alone (NOISVPRODID with ISVPRODID 0)",
        lambda w: (
            w.secs(isvprodid=0),
            w.secs(isvprodid=0).kr(keypolicy=w.request.keypolicy ^ int(KeyPolicy.NOISVPRODID)),
        ),
        {SEAL: "C", REPORT: "U", EINIT: "U", PROV: "U", PSEAL: "C"},
    ),
    (
        "SECS.CONFIGID",
        change(lambda w: w.secs(configid=_b(0x67, 64))),
        {SEAL: KeyPolicy.CONFIGID, REPORT: "C", EINIT: "U", PROV: "U", PSEAL: KeyPolicy.CONFIGID},
    ),
    (
        "KEYREQUEST.CONFIGSVN",
        change(lambda w: w.kr(configsvn=1)),
        {SEAL: KeyPolicy.CONFIGID, REPORT: "U", EINIT: "U", PROV: "U", PSEAL: KeyPolicy.CONFIGID},
    ),
    (
        "SECS.CONFIGSVN (request unchanged)",
        change(lambda w: w.secs(configsvn=4)),
        {SEAL: "U", REPORT: "C", EINIT: "U", PROV: "U", PSEAL: "U"},
    ),
]


def _expects_change(expect: Expect, policy: int) -> bool:
    if expect == "C":
        return True
    if expect == "U":
        return False
    if expect == NOPROD:
        return not policy & KeyPolicy.NOISVPRODID
    assert isinstance(expect, KeyPolicy)
    return bool(policy & expect)


def test_table_covers_every_key_name() -> None:
    for _, _, expectations in TABLE:
        assert set(expectations) == set(KeyName)


@pytest.mark.parametrize("policy", [POLICY_ALL, POLICY_NONE], ids=["policy-all", "policy-none"])
@pytest.mark.parametrize("name", list(KeyName), ids=[n.name for n in KeyName])
@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_key_dependency_table(
    row: tuple[str, Knob, dict[KeyName, Expect]], name: KeyName, policy: int
) -> None:
    what, knob, expectations = row
    before, after = knob(base_world(policy))
    changed = before.key(name) != after.key(name)
    expected = _expects_change(expectations[name], policy)
    assert changed == expected, (
        f"{name.name} key {'changed' if changed else 'did not change'} when {what} changed "
        f"(policy {policy:#x}); §6.1 says it {'should' if expected else 'should not'}"
    )


def test_the_knobs_really_change_something() -> None:
    # Each knob produces a different world; otherwise a "U" row would pass vacuously.
    for what, knob, _ in TABLE:
        before, after = knob(base_world(POLICY_ALL))
        assert before != after, what


def test_key_names_are_separated() -> None:
    w = base_world(POLICY_ALL)
    assert len({w.key(n) for n in KeyName}) == len(KeyName)


# -- EREPORT: the target's report key from TARGETINFO -----------------------------------------


def _target_key(w: World, target: TargetInfo, key_id: bytes) -> bytes:
    deps = ereport_key_dependencies(target, key_id, owner_epoch=w.owner_epoch, cpusvn=w.cpusvn)
    return KeyDeriver(w.seal_secret, w.provisioning_secret).derive(deps)


def test_ereport_key_equals_the_targets_egetkey_report_key() -> None:
    w = base_world(POLICY_ALL)
    target = w.enclave.target_info()
    assert _target_key(w, target, w.request.key_id) == w.key(KeyName.REPORT)


@pytest.mark.parametrize(
    ("what", "other"),
    [
        ("MEASUREMENT", lambda t: replace(t, measurement=Measurement(_b(1, 32)))),
        ("ATTRIBUTES", lambda t: replace(t, attributes=Attributes(t.attributes.flags ^ 2, 3))),
        ("MISCSELECT", lambda t: replace(t, miscselect=t.miscselect ^ 1)),
        ("CONFIGID", lambda t: replace(t, configid=_b(2, 64))),
        ("CONFIGSVN", lambda t: replace(t, configsvn=t.configsvn + 1)),
    ],
)
def test_ereport_takes_target_fields_from_targetinfo(
    what: str, other: Callable[[TargetInfo], TargetInfo]
) -> None:
    w = base_world(POLICY_ALL)
    target = w.enclave.target_info()
    assert _target_key(w, other(target), w.request.key_id) != _target_key(
        w, target, w.request.key_id
    ), what


# -- EINIT's EINITTOKEN key matches what the LE's EGETKEY gives ------------------------------


def test_einit_token_key_matches_le_egetkey() -> None:
    w = base_world(POLICY_ALL)
    le = w.enclave
    kr = replace(w.request, keyname=int(KeyName.EINITTOKEN), keypolicy=0)
    le_key = w.kr(keyname=int(KeyName.EINITTOKEN), keypolicy=0).key(KeyName.EINITTOKEN)
    token = EinitToken(
        valid=True,
        cpusvn_le=kr.cpusvn,
        isvprodid_le=le.isvprodid,
        isvsvn_le=kr.isvsvn,
        masked_miscselect_le=kr.miscmask & le.miscselect,
        masked_attributes_le=Attributes(kr.attribute_mask.flags | 0x3, kr.attribute_mask.xfrm)
        & le.attributes,
        key_id=kr.key_id,
    )
    deps = einittoken_key_dependencies(token, le.mrsigner, owner_epoch=w.owner_epoch)
    assert KeyDeriver(w.seal_secret, w.provisioning_secret).derive(deps) == le_key
    other = einittoken_key_dependencies(token, Measurement(_b(0x57, 32)), owner_epoch=w.owner_epoch)
    assert KeyDeriver(w.seal_secret, w.provisioning_secret).derive(other) != le_key


# -- EGETKEY's checks ------------------------------------------------------------------------


def _code(w: World, name: int) -> SgxErrorCode:
    with pytest.raises(EnclaveInstructionError) as info:
        egetkey_dependencies(
            replace(w.request, keyname=name),
            w.enclave,
            owner_epoch=w.owner_epoch,
            cpusvn=w.cpusvn,
        )
    return info.value.code


def test_unknown_keyname() -> None:
    assert _code(base_world(POLICY_ALL), 5) is SgxErrorCode.INVALID_KEYNAME
    assert _code(base_world(POLICY_ALL), 0xFFFF) is SgxErrorCode.INVALID_KEYNAME


def test_einittoken_key_needs_einittoken_key_attribute() -> None:
    w = _flags(base_world(0), int(F.EINITTOKEN_KEY))
    assert _code(w, KeyName.EINITTOKEN) is SgxErrorCode.INVALID_ATTRIBUTE


@pytest.mark.parametrize("name", [KeyName.PROVISION, KeyName.PROVISION_SEAL])
def test_provision_keys_need_provisionkey(name: KeyName) -> None:
    w = _flags(base_world(0), int(F.PROVISIONKEY))
    assert _code(w, name) is SgxErrorCode.INVALID_ATTRIBUTE


@pytest.mark.parametrize(
    "name", [KeyName.SEAL, KeyName.EINITTOKEN, KeyName.PROVISION, KeyName.PROVISION_SEAL]
)
def test_cpusvn_beyond_platform(name: KeyName) -> None:
    w = base_world(0)
    # One component above the platform's, the others below: still "beyond".
    w = w.kr(cpusvn=bytes([6] + [0] * 15))
    assert _code(w, name) is SgxErrorCode.INVALID_CPUSVN
    # Equal is fine.
    w.kr(cpusvn=w.cpusvn).key(name)


def test_report_key_ignores_request_cpusvn_and_isvsvn() -> None:
    w = base_world(0).kr(cpusvn=_b(0xFF, 16), isvsvn=0xFFFF)
    assert w.key(KeyName.REPORT) == base_world(0).key(KeyName.REPORT)


@pytest.mark.parametrize(
    "name", [KeyName.SEAL, KeyName.EINITTOKEN, KeyName.PROVISION, KeyName.PROVISION_SEAL]
)
def test_isvsvn_above_enclave(name: KeyName) -> None:
    w = base_world(0)
    assert _code(w.kr(isvsvn=6), name) is SgxErrorCode.INVALID_ISVSVN
    w.kr(isvsvn=5).key(name)  # equal to SECS.ISVSVN is allowed


@pytest.mark.parametrize("name", [KeyName.SEAL, KeyName.PROVISION_SEAL])
def test_configsvn_above_enclave(name: KeyName) -> None:
    w = base_world(int(KeyPolicy.CONFIGID))
    assert _code(w.kr(configsvn=4), name) is SgxErrorCode.INVALID_ISVSVN
    w.kr(configsvn=3).key(name)


@pytest.mark.parametrize(
    "bit",
    [KeyPolicy.NOISVPRODID, KeyPolicy.CONFIGID, KeyPolicy.ISVFAMILYID, KeyPolicy.ISVEXTPRODID],
)
def test_kss_policy_bits_need_kss(bit: KeyPolicy) -> None:
    w = _flags(base_world(int(KeyPolicy.MRSIGNER)), int(F.KSS)).kr(configsvn=0)
    w.key(KeyName.SEAL)
    with pytest.raises(GeneralProtectionFault):
        w.kr(keypolicy=int(KeyPolicy.MRSIGNER | bit)).key(KeyName.SEAL)


def test_configsvn_needs_kss() -> None:
    w = _flags(base_world(int(KeyPolicy.MRSIGNER)), int(F.KSS))
    with pytest.raises(GeneralProtectionFault):
        w.kr(configsvn=1).key(KeyName.SEAL)


# -- the KDF itself (ADR 0002) ---------------------------------------------------------------


def test_aes_cmac_rfc4493_and_sdk_simulator_vectors() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert aes_cmac(key, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    assert (
        aes_cmac(key, bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")).hex()
        == "070a16b46b4d4144f79bdd9dd04a287c"
    )
    # SGX-REFERENCE §6.2: the SDK simulator's report key over its dd_report_key_t layout.
    dd = bytearray(192)
    struct.pack_into("<H", dd, 0, 3)
    struct.pack_into("<QQ", dd, 8, 5, 3)
    dd[28:44] = b"THISISOWNEREPOCH"
    dd[44:76] = bytes.fromhex("784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc")
    dd[76:92] = bytes.fromhex("4820f3376ae6b2f2034d3b7a4b48a778")
    dd[158:190] = bytes.fromhex("ff00" * 8) + bytes(16)
    assert aes_cmac(bytes.fromhex("ff00" * 8), bytes(dd)).hex() == (
        "87042abadc2e7a7a8042f00ed3e6539c"
    )


def test_serialization_layout() -> None:
    deps = KeyDependencies(
        keyname=4,
        seal_key_fuses=True,
        keypolicy=0x0102,
        isvprodid=0x0304,
        isvsvn=0x0506,
        owner_epoch=_b(0xA1, 16),
        attributes=Attributes(0x1111, 0x2222),
        attribute_mask=Attributes(0x3333, 0x4444),
        mrenclave=Measurement(_b(0xA2, 32)),
        mrsigner=Measurement(_b(0xA3, 32)),
        key_id=_b(0xA4, 32),
        cpusvn=_b(0xA5, 16),
        miscselect=0x0708090A,
        miscmask=0x0B0C0D0E,
        configid=_b(0xA6, 64),
        configsvn=0x0F10,
        isvfamilyid=_b(0xA7, 16),
        isvextprodid=_b(0xA8, 16),
    )
    raw = deps.serialize()
    assert len(raw) == 656
    assert raw[0:16] == b"SGXEMU-KEYDEP/1\x00"
    assert struct.unpack_from("<HHHHH", raw, 16) == (4, 0x0102, 0x0304, 0x0506, 0x0F10)
    assert raw[26:28] == bytes(2)
    assert struct.unpack_from("<II", raw, 28) == (0x0708090A, 0x0B0C0D0E)
    assert raw[36:48] == bytes(12)
    assert raw[48:64] == _b(0xA1, 16)
    assert raw[64:80] == Attributes(0x1111, 0x2222).to_bytes()
    assert raw[80:96] == Attributes(0x3333, 0x4444).to_bytes()
    assert raw[96:112] == _b(0xA5, 16)
    assert raw[112:128] == _b(0xA7, 16)
    assert raw[128:144] == _b(0xA8, 16)
    assert raw[144:176] == _b(0xA2, 32)
    assert raw[176:208] == _b(0xA3, 32)
    assert raw[208:240] == _b(0xA4, 32)
    assert raw[240:304] == _b(0xA6, 64)
    assert raw[304:656] == HARDCODED_PKCS1_5_PADDING


def test_kdf_is_cmac_under_the_kdk_over_the_serialization() -> None:
    seal, prov = _b(1, 16), _b(2, 16)
    deriver = KeyDeriver(seal, prov)
    deps = KeyDependencies(keyname=4, seal_key_fuses=True)
    kdk = aes_cmac(prov, b"SGXEMU-KDK/1\x00\x00\x00\x00" + seal)
    assert deriver.derive(deps) == aes_cmac(kdk, deps.serialize())
    no_fuses = replace(deps, seal_key_fuses=False)
    kdk0 = aes_cmac(prov, b"SGXEMU-KDK/1\x00\x00\x00\x00" + bytes(16))
    assert deriver.derive(no_fuses) == aes_cmac(kdk0, no_fuses.serialize())
    assert KeyDeriver(_b(3, 16), prov).derive(no_fuses) == deriver.derive(no_fuses)


def test_every_dependency_field_feeds_the_key() -> None:
    deriver = KeyDeriver(_b(1, 16), _b(2, 16))
    base = KeyDependencies(keyname=4, seal_key_fuses=True)
    seen = {deriver.derive(base)}
    for f in dataclasses.fields(KeyDependencies):
        value = getattr(base, f.name)
        if isinstance(value, bool):
            other: object = not value
        elif isinstance(value, int):
            other = value + 1
        elif isinstance(value, bytes):
            other = _flip_byte0(value)
        elif isinstance(value, Attributes):
            other = Attributes(value.flags ^ 1, value.xfrm)
        else:
            assert isinstance(value, Measurement)
            other = Measurement(_flip_byte0(value.value))
        seen.add(deriver.derive(replace(base, **{f.name: other})))
    assert len(seen) == len(dataclasses.fields(KeyDependencies)) + 1


def test_deriver_repr_hides_secrets() -> None:
    assert "01" not in repr(KeyDeriver(_b(1, 16), _b(1, 16)))
