"""EINIT: every refusal of SGX-REFERENCE §5.1 with its SGX code, the token path, the LE."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import NO_DEBUG_ATTRIBUTE_MASK, mrsigner_of_public_key
from sgx_platform.arch.sigstruct import compute_q1_q2
from sgx_platform.cpu import SgxCpu
from sgx_platform.errors import (
    EnclaveInstructionError,
    GeneralProtectionFault,
    RegisterLockedError,
)
from sgx_platform.fuses import PlatformFuses
from sgx_platform.launch import INTEL_LE_PUBKEYHASH

DEBUG = int(AttributeFlags.DEBUG)
MODE64 = int(AttributeFlags.MODE64BIT)
TOKEN_KEY = int(AttributeFlags.EINITTOKEN_KEY)


def _einit_code(cpu, ref, sig, token=None) -> SgxErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(EnclaveInstructionError) as info:
        cpu.einit(ref, sig, token)
    assert info.value.leaf == "EINIT"
    return info.value.code


def _flc(cpu: SgxCpu, sig) -> None:  # type: ignore[no-untyped-def]
    """The Linux FLC path: the registers hold the enclave's own signer, token all zero."""
    cpu.le_pubkeyhash.write(sig.mrsigner)


# -- the self-signed (no token) path ---------------------------------------------------------


def test_flc_path_launches_and_commits_identity(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=1)
    sig = kit.sign(image, kit.keys.app, isvprodid=7, isvsvn=3)
    _flc(cpu, sig)
    ctx = kit.load(cpu, image, sig)
    ident = ctx.identity
    assert ident.mrenclave == sig.mrenclave and ident.mrsigner == sig.mrsigner
    assert ident.mrsigner == mrsigner_of_public_key(kit.keys.app)
    assert (ident.isvprodid, ident.isvsvn) == (7, 3)
    assert ident.attributes == Attributes(MODE64 | int(AttributeFlags.INIT), 3)
    assert cpu.is_initialized(ctx.ref)


def test_sigstruct_bytes_are_accepted(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=2)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    ref = kit.create_and_add(cpu, image)
    cpu.einit(ref, sig.to_bytes(), bytes(304))


def test_tampered_page_is_invalid_measurement(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=3, data_pages=2)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    page = image.pages[-1]
    tampered = dataclasses.replace(page, data=bytes([page.data[0] ^ 1]) + page.data[1:])
    image2 = dataclasses.replace(image, pages=(*image.pages[:-1], tampered))
    ref = kit.create_and_add(cpu, image2)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_MEASUREMENT


def test_unmeasured_chunk_is_invalid_measurement(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=4)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    base = 1 << 32
    ref = cpu.ecreate(
        Secs(size=image.size, base_address=base, ssa_frame_size=1, attributes=Attributes(4, 3))
    )
    for p in image.pages:
        cpu.eadd(ref, base + p.offset, p.data, p.secinfo)
        for c in range(0, 4096 - 256, 256):  # the last chunk of each page is skipped
            cpu.eextend(ref, base + p.offset + c)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_MEASUREMENT


@pytest.mark.parametrize(
    ("what", "offset"),
    [("SIGNATURE", 516 + 10), ("Q1", 1040 + 5), ("Q2", 1424 + 5), ("signed ISVSVN", 1026)],
)
def test_bad_signature(cpu, kit, what: str, offset: int) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=5)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    raw = bytearray(sig.to_bytes())
    raw[offset] ^= 0x01
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, bytes(raw)) is SgxErrorCode.INVALID_SIGNATURE, what


@pytest.mark.parametrize(
    ("what", "offset", "value"),
    [
        ("HEADER", 0, 0x07),
        ("HEADER2", 24, 0x02),
        ("VENDOR", 16, 0x01),
        ("EXPONENT", 512, 0x05),
        ("reserved @44", 44, 0x01),
        ("reserved @992", 992, 0x01),
        ("reserved @1028", 1028, 0x01),
    ],
)
def test_bad_sigstruct_structure(cpu, kit, what: str, offset: int, value: int) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=6)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    raw = bytearray(sig.to_bytes())
    raw[offset] = value
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, bytes(raw)) is SgxErrorCode.INVALID_SIG_STRUCT, what


def test_structure_is_checked_before_signature(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=6)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    raw = bytearray(sig.to_bytes())
    raw[512] = 5  # exponent (also breaks nothing else) ...
    raw[600] ^= 1  # ... and a broken signature: step 2 decides first
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, bytes(raw)) is SgxErrorCode.INVALID_SIG_STRUCT


def test_isvfamilyid_without_kss(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=7)
    sig = kit.sign(image, kit.keys.app, isvfamilyid=b"\x01" * 16)
    _flc(cpu, sig)
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_SIG_STRUCT
    # With KSS (in SECS and, as the default mask covers it, in the SIGSTRUCT) it launches.
    kss = MODE64 | int(AttributeFlags.KSS)
    sig2 = kit.sign(image, kit.keys.app, isvfamilyid=b"\x01" * 16, attributes=Attributes(kss, 3))
    ctx = kit.load(cpu, image, sig2, flags=kss)
    assert ctx.identity.isvfamilyid == b"\x01" * 16


@pytest.mark.parametrize(
    ("what", "secs_flags", "secs_xfrm", "sig_attrs", "mask"),
    [
        (
            "DEBUG under a no-debug mask",
            MODE64 | DEBUG,
            3,
            Attributes(MODE64, 3),
            NO_DEBUG_ATTRIBUTE_MASK,
        ),
        ("MODE64BIT differs", MODE64, 3, Attributes(0, 3), NO_DEBUG_ATTRIBUTE_MASK),
        ("XFRM MPX bit differs", MODE64, 0x3, Attributes(MODE64, 0x1B), NO_DEBUG_ATTRIBUTE_MASK),
    ],
)
def test_masked_attributes_differ(  # type: ignore[no-untyped-def]
    cpu, kit, what, secs_flags, secs_xfrm, sig_attrs, mask
) -> None:
    image = kit.image(seed=8)
    sig = kit.sign(image, kit.keys.app, attributes=sig_attrs, attribute_mask=mask)
    _flc(cpu, sig)
    ref = kit.create_and_add(cpu, image, flags=secs_flags, xfrm=secs_xfrm)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_ATTRIBUTE, what


def test_attributes_outside_mask_may_differ(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=8)
    sig = kit.sign(image, kit.keys.app)  # default mask leaves DEBUG free
    _flc(cpu, sig)
    ctx = kit.load(cpu, image, sig, flags=MODE64 | DEBUG)
    assert ctx.identity.attributes.debug


def test_masked_miscselect_differs(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=9)
    sig = kit.sign(image, kit.keys.app, miscselect=0, miscmask=0xFFFFFFFF)
    _flc(cpu, sig)
    ref = kit.create_and_add(cpu, image, miscselect=1)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_ATTRIBUTE


def test_cet_attributes_demanded_by_sigstruct(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=9)
    sig = kit.sign(image, kit.keys.app)
    # Re-sign with CET_ATTRIBUTES 1 under mask 1 (sign_sigstruct has no CET parameters).
    unsigned = dataclasses.replace(sig, cet_attributes=1, cet_attributes_mask=1)
    resigned = _resign(unsigned, kit.keys.app)
    _flc(cpu, resigned)
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, resigned) is SgxErrorCode.INVALID_ATTRIBUTE


def _resign(sig, key):  # type: ignore[no-untyped-def]
    s = int.from_bytes(key.sign(sig.signed_data(), padding.PKCS1v15(), hashes.SHA256()), "big")
    q1, q2 = compute_q1_q2(s, key.public_key().public_numbers().n)
    out = dataclasses.replace(
        sig,
        signature=s.to_bytes(384, "little"),
        q1=q1.to_bytes(384, "little"),
        q2=q2.to_bytes(384, "little"),
    )
    out.verify()
    return out


def test_einittoken_key_for_another_signer(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    flags = MODE64 | TOKEN_KEY
    image = kit.image(seed=10)
    sig = kit.sign(image, kit.keys.app, attributes=Attributes(flags, 3))
    cpu.le_pubkeyhash.write(mrsigner_of_public_key(kit.keys.le))
    ref = kit.create_and_add(cpu, image, flags=flags)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_ATTRIBUTE


def test_no_token_and_signer_differs_from_registers(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=11)
    sig = kit.sign(image, kit.keys.app)
    assert cpu.le_pubkeyhash.value == INTEL_LE_PUBKEYHASH
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_EINITTOKEN
    assert _einit_code(cpu, ref, sig, bytes(304)) is SgxErrorCode.INVALID_EINITTOKEN
    assert _einit_code(cpu, ref, sig, EinitToken()) is SgxErrorCode.INVALID_EINITTOKEN


def test_already_initialized_is_gp(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=12)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    ctx = kit.load(cpu, image, sig)
    with pytest.raises(GeneralProtectionFault):
        cpu.einit(ctx.ref, sig)


# -- the token path ---------------------------------------------------------------------------


@pytest.fixture
def le(cpu, kit):  # type: ignore[no-untyped-def]
    return kit.launch_enclave(cpu)


@pytest.fixture
def app(kit):  # type: ignore[no-untyped-def]
    image = kit.image(seed=20, data_pages=2)
    return image, kit.sign(image, kit.keys.app, isvprodid=3)


def test_le_launches_without_token_and_issues_a_working_token(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    assert le.identity.attributes.has(AttributeFlags.EINITTOKEN_KEY)
    ref = kit.create_and_add(cpu, image)
    # Without a token the app (another signer) is refused; the same SECS then launches with one:
    # a failed EINIT can be retried.
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_EINITTOKEN
    token = kit.token_for(le, image, sig)
    assert token.valid and token.mrenclave == sig.mrenclave
    ctx = cpu.einit(ref, sig, token)
    assert ctx.identity.mrsigner == mrsigner_of_public_key(kit.keys.app)


def test_token_as_bytes(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig)
    kit.load(cpu, image, sig, token=token.to_bytes())


def test_token_with_wrong_mac(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig)
    bad = dataclasses.replace(token, mac=bytes([token.mac[0] ^ 1]) + token.mac[1:])
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, bad) is SgxErrorCode.INVALID_EINITTOKEN


def test_token_mac_covers_first_192_bytes_only(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig)
    # KEYID is not MAC'd but feeds the key: changing it breaks the MAC check.
    ref = kit.create_and_add(cpu, image)
    bad = dataclasses.replace(token, key_id=b"\x01" * 32)
    assert _einit_code(cpu, ref, sig, bad) is SgxErrorCode.INVALID_EINITTOKEN
    # A MAC'd field (MRENCLAVE, inside [0:192)) changed after MACing: wrong MAC, not measurement.
    bad2 = dataclasses.replace(token, mrenclave=Measurement(b"\x02" * 32))
    assert _einit_code(cpu, ref, sig, bad2) is SgxErrorCode.INVALID_EINITTOKEN


def test_token_made_by_a_non_le_is_refused(cpu, kit, le, app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    # The same LE image and key on another platform: its EINITTOKEN key differs.
    other = SgxCpu(PlatformFuses.create(tmp_path / "other"), epc_pages=256)
    other_le = kit.launch_enclave(other)
    token = kit.token_for(other_le, image, sig)
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_EINITTOKEN


def test_token_for_another_mrenclave(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    other_image = kit.image(seed=21)
    other_sig = kit.sign(other_image, kit.keys.app, isvprodid=3)
    token = kit.token_for(le, other_image, other_sig)
    ref = kit.create_and_add(cpu, image)
    # §5.1 step 16 (SDM): a valid token for another enclave is SGX_INVALID_MEASUREMENT.
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_MEASUREMENT


def test_token_for_another_mrsigner(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    other_sig = kit.sign(image, kit.keys.other, isvprodid=3)
    token = kit.token_for(le, image, other_sig)
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_MEASUREMENT


def test_token_from_debug_le_for_production_enclave(cpu, kit, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    debug_le = kit.launch_enclave(cpu, debug=True)
    token = kit.token_for(debug_le, image, sig)
    assert token.masked_attributes_le.debug
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_EINITTOKEN
    # ... while a debug enclave launches with it.
    dbg = MODE64 | DEBUG
    debug_token = kit.token_for(debug_le, image, sig, flags=dbg)
    kit.load(cpu, image, sig, token=debug_token, flags=dbg)


def test_token_attributes_differ_from_secs(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig, flags=MODE64 | DEBUG)  # token for a debug launch
    ref = kit.create_and_add(cpu, image)  # production SECS
    # ADR 0004: SGX_INVALID_EINITTOKEN (the SDM's code here is UNVERIFIED).
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_EINITTOKEN


def test_token_from_a_future_cpusvn(cpu, kit, app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    # A platform whose TCB was updated issues a token whose CPUSVNLE is beyond this platform's.
    newer_fuses = PlatformFuses.create(tmp_path / "newer")
    newer = SgxCpu(newer_fuses, epc_pages=256)
    newer.update_tcb()
    token = kit.token_for(kit.launch_enclave(newer), image, sig)
    ref = kit.create_and_add(cpu, image)
    cpu.le_pubkeyhash.write(mrsigner_of_public_key(kit.keys.le))
    # Step 14's CPUSVN check comes before the MAC check of step 15.
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_CPUSVN


def test_token_after_tcb_update_still_valid(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig)
    cpu.update_tcb()
    kit.load(cpu, image, sig, token=token)


@pytest.mark.parametrize(("offset", "value"), [(0, 0x03), (4, 0x01), (100, 0x01), (220, 0x01)])
def test_token_reserved_bytes(cpu, kit, le, app, offset: int, value: int) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    raw = bytearray(kit.token_for(le, image, sig).to_bytes())
    raw[offset] |= value
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, bytes(raw)) is SgxErrorCode.INVALID_EINITTOKEN


def test_invalid_token_contents_are_ignored(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    # VALID = 0: nothing else in the token is looked at (step 13), reserved bytes included.
    image = kit.image(seed=22)
    sig = kit.sign(image, kit.keys.app)
    _flc(cpu, sig)
    raw = bytearray(b"\xee" * 304)
    raw[0:4] = b"\x00\x00\x00\x00"
    kit.load(cpu, image, sig, token=bytes(raw))


def test_token_owner_epoch_bound(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    token = kit.token_for(le, image, sig)
    cpu.set_owner_epoch(b"\x5a" * 16)
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig, token) is SgxErrorCode.INVALID_EINITTOKEN


def test_registers_locked_to_le(cpu, kit, le, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    cpu.le_pubkeyhash.lock()
    with pytest.raises(RegisterLockedError):
        cpu.le_pubkeyhash.write(sig.mrsigner)  # the Linux trick is gone once locked
    ref = kit.create_and_add(cpu, image)
    assert _einit_code(cpu, ref, sig) is SgxErrorCode.INVALID_EINITTOKEN


def test_non_le_enclave_cannot_issue_tokens(cpu, kit, app) -> None:  # type: ignore[no-untyped-def]
    image, sig = app
    _flc(cpu, sig)
    ctx = kit.load(cpu, image, sig)
    with pytest.raises(EnclaveInstructionError) as info:
        kit.token_for(ctx, image, sig)
    assert info.value.code is SgxErrorCode.INVALID_ATTRIBUTE


def test_a_new_cpu_starts_at_the_intel_le_hash(tmp_path: Path) -> None:
    c = SgxCpu(PlatformFuses.create(tmp_path / "f"), epc_pages=16)
    assert c.le_pubkeyhash.value == INTEL_LE_PUBKEYHASH and not c.le_pubkeyhash.locked
