"""Sealing in the sgx_sealed_data_t layout: policies, SVNs, owner epoch, restart, platforms."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName, KeyPolicy
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.cpu import SgxCpu
from sgx_platform.errors import EnclaveInstructionError, SealingParameterError, UnsealError
from sgx_platform.fuses import PlatformFuses
from sgx_platform.seal import (
    DEFAULT_ATTRIBUTE_MASK,
    HEADER_SIZE,
    SealedData,
    seal_data,
    sealed_data_size,
    unseal_data,
)

MRENCLAVE = int(KeyPolicy.MRENCLAVE)
MRSIGNER = int(KeyPolicy.MRSIGNER)
MODE64 = int(AttributeFlags.MODE64BIT)


def _launch(
    cpu: SgxCpu,
    kit,
    *,
    seed: int,
    key=None,
    isvprodid: int = 1,
    isvsvn: int = 1,  # type: ignore[no-untyped-def]
    flags: int = MODE64,
):
    image = kit.image(seed=seed)
    sig = kit.sign(
        image,
        key or kit.keys.app,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        attributes=Attributes(flags, 3),
    )
    cpu.le_pubkeyhash.write(sig.mrsigner)  # FLC: every signer launches
    return kit.load(cpu, image, sig, flags=flags)


def test_round_trip_with_additional_data(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    blob = seal_data(e, b"secret", b"header")
    assert len(blob) == sealed_data_size(6, 6) == HEADER_SIZE + 12
    out = unseal_data(e, blob)
    assert (out.plaintext, out.additional_data) == (b"secret", b"header")
    parsed = SealedData.from_bytes(blob)
    assert parsed.additional_data == b"header" and parsed.ciphertext != b"secret"
    kr = parsed.key_request
    assert kr.keyname == KeyName.SEAL and kr.keypolicy == MRSIGNER  # SDK default policy
    assert kr.attribute_mask == DEFAULT_ATTRIBUTE_MASK and kr.miscmask == 0xF0000000
    assert kr.isvsvn == 1 and kr.cpusvn == cpu.cpusvn


def test_layout_offsets(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    blob = seal_data(e, b"abc", b"xy")
    assert KeyRequest.from_bytes(blob[0:512]).keyname == KeyName.SEAL
    assert struct.unpack_from("<I", blob, 512)[0] == 3  # plain_text_offset
    assert blob[516:528] == bytes(12)
    assert struct.unpack_from("<I", blob, 528)[0] == 5  # payload_size
    assert blob[532:544] == bytes(12)
    assert blob[560 + 3 :] == b"xy"


def test_fresh_keyid_every_seal(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    a, b = seal_data(e, b"same"), seal_data(e, b"same")
    assert (
        SealedData.from_bytes(a).key_request.key_id != SealedData.from_bytes(b).key_request.key_id
    )
    assert a[560:] != b[560:]


@pytest.mark.parametrize("where", ["ciphertext", "aad", "tag", "keyid", "isvsvn"])
def test_altered_blob_does_not_open(cpu, kit, where: str) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    raw = bytearray(seal_data(e, b"secret", b"aad"))
    offset = {"ciphertext": 560, "aad": 567, "tag": 544, "keyid": 40, "isvsvn": 4}[where]
    if where == "isvsvn":
        raw[offset] = 0  # lower ISVSVN in the stored KEYREQUEST: another key
    else:
        raw[offset] ^= 1
    with pytest.raises(UnsealError):
        unseal_data(e, bytes(raw))


def test_mrenclave_policy_binds_to_the_enclave(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    a = _launch(cpu, kit, seed=1)
    a_again = _launch(cpu, kit, seed=1)  # another instance, same MRENCLAVE
    b = _launch(cpu, kit, seed=2)  # same signer and ISVPRODID, other MRENCLAVE
    blob = seal_data(a, b"x", policy=MRENCLAVE)
    assert unseal_data(a_again, blob).plaintext == b"x"
    with pytest.raises(UnsealError):
        unseal_data(b, blob)


def test_mrsigner_policy(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    a = _launch(cpu, kit, seed=1, isvprodid=5, isvsvn=3)
    blob = seal_data(a, b"x", policy=MRSIGNER)
    # another enclave, same signer and ISVPRODID: opens, also at a higher ISVSVN
    assert unseal_data(_launch(cpu, kit, seed=2, isvprodid=5, isvsvn=3), blob).plaintext == b"x"
    assert unseal_data(_launch(cpu, kit, seed=3, isvprodid=5, isvsvn=9), blob).plaintext == b"x"
    # below the sealing ISVSVN: EGETKEY refuses (SGX_INVALID_ISVSVN, surfaced as such)
    with pytest.raises(EnclaveInstructionError) as info:
        unseal_data(_launch(cpu, kit, seed=4, isvprodid=5, isvsvn=2), blob)
    assert info.value.code is SgxErrorCode.INVALID_ISVSVN
    # another ISVPRODID or another signer: does not open
    with pytest.raises(UnsealError):
        unseal_data(_launch(cpu, kit, seed=5, isvprodid=6, isvsvn=3), blob)
    with pytest.raises(UnsealError):
        unseal_data(_launch(cpu, kit, seed=1, key=kit.keys.other, isvprodid=5, isvsvn=3), blob)


def test_noisvprodid_policy_spans_products(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    kss = MODE64 | int(AttributeFlags.KSS)
    a = _launch(cpu, kit, seed=1, isvprodid=5, flags=kss)
    blob = seal_data(a, b"x", policy=MRSIGNER | int(KeyPolicy.NOISVPRODID))
    assert unseal_data(_launch(cpu, kit, seed=2, isvprodid=6, flags=kss), blob).plaintext == b"x"
    # NOISVPRODID is a KSS policy bit (KEYPOLICY & 0x3C): refused for a non-KSS enclave.
    with pytest.raises(SealingParameterError):
        seal_data(_launch(cpu, kit, seed=3), b"x", policy=MRSIGNER | int(KeyPolicy.NOISVPRODID))


def test_owner_epoch_change_breaks_unsealing(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    blob = seal_data(e, b"x", policy=MRENCLAVE)
    cpu.set_owner_epoch(b"\x01" * 16)
    with pytest.raises(UnsealError):
        unseal_data(e, blob)


def test_tcb_update_keeps_old_blobs_and_refuses_future_ones(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    cpu = SgxCpu(fuses, epc_pages=256)
    e = _launch(cpu, kit, seed=1)
    old = seal_data(e, b"old")
    cpu.update_tcb()
    assert unseal_data(e, old).plaintext == b"old"  # KEYREQUEST.CPUSVN below the new one
    new = seal_data(e, b"new")
    assert SealedData.from_bytes(new).key_request.cpusvn == cpu.cpusvn
    # A blob from a newer TCB than the platform's: SGX_INVALID_CPUSVN, surfaced as such.
    raw = bytearray(new)
    raw[8] = 0xFF  # KEYREQUEST.CPUSVN[0] above the platform's
    with pytest.raises(EnclaveInstructionError) as info:
        unseal_data(e, bytes(raw))
    assert info.value.code is SgxErrorCode.INVALID_CPUSVN


def test_sealed_data_survives_a_restart(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    first = SgxCpu(fuses, epc_pages=256)
    blob = seal_data(_launch(first, kit, seed=1), b"persist", policy=MRENCLAVE)
    restarted = SgxCpu(PlatformFuses.open(fuses.directory), epc_pages=256)
    assert restarted.boot_epoch != first.boot_epoch
    assert unseal_data(_launch(restarted, kit, seed=1), blob).plaintext == b"persist"
    first.reset()
    assert unseal_data(_launch(first, kit, seed=1), blob).plaintext == b"persist"


def test_two_platforms_keys_differ(tmp_path, kit) -> None:  # type: ignore[no-untyped-def]
    a = SgxCpu(PlatformFuses.create(tmp_path / "a"), epc_pages=256)
    b = SgxCpu(PlatformFuses.create(tmp_path / "b"), epc_pages=256)
    ea, eb = _launch(a, kit, seed=1), _launch(b, kit, seed=1)
    assert ea.identity.mrenclave == eb.identity.mrenclave
    request = KeyRequest(
        keyname=int(KeyName.SEAL),
        keypolicy=MRENCLAVE,
        cpusvn=a.cpusvn,
        attribute_mask=DEFAULT_ATTRIBUTE_MASK,
        key_id=b"\x07" * 32,
    )
    assert ea.egetkey(request) != eb.egetkey(request)
    report_request = KeyRequest(keyname=int(KeyName.REPORT), key_id=b"\x07" * 32)
    assert ea.egetkey(report_request) != eb.egetkey(report_request)
    with pytest.raises(UnsealError):
        unseal_data(eb, seal_data(ea, b"x", policy=MRENCLAVE))


def test_debug_and_production_seal_keys_differ(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    prod = _launch(cpu, kit, seed=1)
    dbg = _launch(cpu, kit, seed=1, flags=MODE64 | int(AttributeFlags.DEBUG))
    with pytest.raises(UnsealError):
        unseal_data(dbg, seal_data(prod, b"x", policy=MRENCLAVE))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"policy": 0}, "MRENCLAVE or MRSIGNER"),
        ({"policy": int(KeyPolicy.NOISVPRODID)}, "MRENCLAVE or MRSIGNER"),
        ({"policy": MRSIGNER | int(KeyPolicy.CONFIGID)}, "only bits"),
        ({"attribute_mask": Attributes(0x1, 0)}, "INIT and DEBUG"),
        ({"misc_mask": 1 << 32}, "32 bits"),
    ],
)
def test_seal_parameters(cpu, kit, kw, match: str) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    with pytest.raises(SealingParameterError, match=match):
        seal_data(e, b"x", **kw)


def test_nothing_to_seal(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SealingParameterError):
        seal_data(_launch(cpu, kit, seed=1), b"", b"only aad")


def test_kss_enclave_default_policy_includes_kss_bits(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    kss = MODE64 | int(AttributeFlags.KSS)
    e = _launch(cpu, kit, seed=1, flags=kss)
    blob = seal_data(e, b"k")
    assert SealedData.from_bytes(blob).key_request.keypolicy == MRSIGNER | 0x38
    assert unseal_data(e, blob).plaintext == b"k"


def test_keyname_must_be_seal(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    e = _launch(cpu, kit, seed=1)
    parsed = SealedData.from_bytes(seal_data(e, b"x"))
    other = dataclasses.replace(
        parsed, key_request=dataclasses.replace(parsed.key_request, keyname=int(KeyName.REPORT))
    )
    with pytest.raises(UnsealError, match="not SEAL"):
        unseal_data(e, other.to_bytes())


# -- parsing (negative first) -------------------------------------------------------------------


def _blob() -> bytes:
    return SealedData(KeyRequest(keyname=4), 3, b"\x01" * 16, b"abcde").to_bytes()


@pytest.mark.parametrize("cut", [0, 1, 511, 512, 559, 560, 564])
def test_truncated(cut: int) -> None:
    with pytest.raises(MalformedStructureError):
        SealedData.from_bytes(_blob()[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(MalformedStructureError):
        SealedData.from_bytes(_blob() + b"\x00")


@pytest.mark.parametrize("offset", [516, 527, 532, 543, 100])
def test_reserved_bytes(offset: int) -> None:
    raw = bytearray(_blob())
    raw[offset] = 1
    with pytest.raises(MalformedStructureError):
        SealedData.from_bytes(bytes(raw))


def test_text_offset_beyond_payload() -> None:
    raw = bytearray(_blob())
    struct.pack_into("<I", raw, 512, 6)
    with pytest.raises(MalformedStructureError):
        SealedData.from_bytes(bytes(raw))


def test_sealed_data_size_overflow() -> None:
    assert sealed_data_size(0, 1) == 561
    assert sealed_data_size(2**32, 1) == 0xFFFFFFFF


@settings(max_examples=50, deadline=None)
@given(
    text=st.binary(min_size=0, max_size=64),
    aad=st.binary(max_size=64),
    tag=st.binary(min_size=16, max_size=16),
    policy=st.integers(0, 0x3F),
)
def test_round_trip_property(text: bytes, aad: bytes, tag: bytes, policy: int) -> None:
    sealed = SealedData(KeyRequest(keyname=4, keypolicy=policy), len(text), tag, text + aad)
    raw = sealed.to_bytes()
    assert SealedData.from_bytes(raw) == sealed
    assert SealedData.from_bytes(raw).to_bytes() == raw
