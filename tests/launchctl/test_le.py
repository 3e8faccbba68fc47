"""The launch enclave: signing at init, where the launch-authority key goes (never into the
state directory), and tokens that the emulated CPU's EINIT accepts — and refuses when forged,
for another enclave, or with other attributes."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_launchctl.allowlist import LaunchRequest
from sgx_launchctl.config import LaunchctlConfig
from sgx_launchctl.errors import InitError
from sgx_launchctl.le import (
    LE_ISVPRODID,
    LE_ISVSVN,
    TokenMinter,
    build_launch_enclave_image,
    create_launch_enclave,
    einittoken_key_request,
)
from sgx_launchctl.service import initialize_state
from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.report import TargetInfo
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import (
    NO_DEBUG_ATTRIBUTE_MASK,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.cpu import EnclaveContext, SgxCpu
from sgx_platform.errors import EnclaveInstructionError
from sgx_platform.fuses import PlatformFuses

MODE64 = int(AttributeFlags.MODE64BIT)
BASE = 0x1_0000_0000


def _key_material(key: rsa.RSAPrivateKey) -> list[bytes]:
    """Byte strings that would give the key away: its PEM forms, d, p and q both ways."""
    numbers = key.private_numbers()
    found = [
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    ]
    for value in (numbers.d, numbers.p, numbers.q):
        size = (value.bit_length() + 7) // 8
        found += [value.to_bytes(size, "big"), value.to_bytes(size, "little")]
    return found


def test_the_launch_authority_key_is_not_in_the_state_directory(template: Any) -> None:
    key = serialization.load_pem_private_key(template.key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert not template.key_file.is_relative_to(template.state)
    assert oct(template.key_file.stat().st_mode & 0o777) == "0o600"
    assert mrsigner_of_public_key(key).hex() == template.summary["le_mrsigner"]
    secrets_ = _key_material(key)
    files = [p for p in template.state.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        for secret in secrets_:
            assert secret not in data, path
        assert b"PRIVATE KEY" not in data or path.is_relative_to(template.state / "tls"), path


def test_init_keeps_only_the_sigstructs(template: Any) -> None:
    config = LaunchctlConfig.defaults(template.state)
    le = config.launch_enclave
    token_sig = Sigstruct.from_bytes(le.sigstruct.read_bytes())
    open_sig = Sigstruct.from_bytes(le.open_sigstruct.read_bytes())
    image = build_launch_enclave_image()
    for sig in (token_sig, open_sig):
        sig.verify()
        assert sig.mrenclave == measure(image)
        assert sig.mrsigner.hex() == template.summary["le_mrsigner"]
        assert sig.attribute_mask == NO_DEBUG_ATTRIBUTE_MASK  # never in debug mode
        assert (sig.isvprodid, sig.isvsvn) == (LE_ISVPRODID, LE_ISVSVN)
    assert token_sig.attributes.has(AttributeFlags.EINITTOKEN_KEY)
    assert not open_sig.attributes.has(AttributeFlags.EINITTOKEN_KEY)
    for path in (le.sigstruct, le.open_sigstruct, config.database):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
    assert oct(config.database.parent.stat().st_mode & 0o777) == "0o700"


def test_init_refuses_a_key_path_inside_the_state_or_an_existing_file(
    tmp_path: Path, keys: Any
) -> None:
    state = tmp_path / "state"
    vendor = mrsigner_of_public_key(keys.vendor)
    for inside in (state / "le.pem", state / "launchctl" / "le.pem", state):
        with pytest.raises(InitError, match="inside the state directory"):
            initialize_state(state, vendor_mrsigner=vendor, export_key_to=inside)
    final = tmp_path / "final"
    with pytest.raises(InitError, match="inside the state directory"):
        initialize_state(state, vendor_mrsigner=vendor, export_key_to=final / "k.pem",
                         final_state_dir=final)
    existing = tmp_path / "existing.pem"
    existing.write_text("keep me")
    with pytest.raises(InitError, match="already exists"):
        initialize_state(state, vendor_mrsigner=vendor, export_key_to=existing)
    assert existing.read_text() == "keep me"
    with pytest.raises(InitError, match="does not exist"):
        initialize_state(state, vendor_mrsigner=vendor, export_key_to=tmp_path / "no" / "k.pem")


def test_without_an_export_path_the_key_is_destroyed(tmp_path: Path, keys: Any) -> None:
    state = tmp_path / "state"
    summary = initialize_state(state, vendor_mrsigner=mrsigner_of_public_key(keys.vendor),
                               export_key_to=None)
    assert summary["launch_authority_key"] == "destroyed"
    assert not [p for p in tmp_path.rglob("*.pem")]
    for path in (p for p in state.rglob("*") if p.is_file()):
        assert b"PRIVATE KEY" not in path.read_bytes(), path
    with pytest.raises(InitError, match="already exists"):  # never overwritten
        initialize_state(state, vendor_mrsigner=mrsigner_of_public_key(keys.vendor),
                         export_key_to=None)


# -- tokens on the emulated CPU ----------------------------------------------------------------


def _load(
    cpu: SgxCpu, image: EnclaveImage, sig: Sigstruct, flags: int, token: EinitToken | None
) -> EnclaveContext:
    ref = cpu.ecreate(Secs(size=image.size, base_address=BASE,
                           ssa_frame_size=image.ssa_frame_size, attributes=Attributes(flags, 3)))
    for page in image.pages:
        cpu.eadd(ref, BASE + page.offset, page.data, page.secinfo)
        if page.measured:
            cpu.eextend_page(ref, BASE + page.offset)
    return cpu.einit(ref, sig, token)


@pytest.fixture
def le(tmp_path: Path) -> tuple[SgxCpu, TokenMinter]:
    """The LE signed as init signs it, running on a CPU whose registers hold its signer."""
    config = LaunchctlConfig.defaults(tmp_path / "s")
    info = create_launch_enclave(config.launch_enclave, state_dir=tmp_path / "s",
                                 export_key_to=None, date=datetime.date(2025, 1, 1))
    cpu = SgxCpu(PlatformFuses.create(tmp_path / "fuses"), epc_pages=256)
    cpu.le_pubkeyhash.write(info.mrsigner)
    cpu.le_pubkeyhash.lock()
    sig = Sigstruct.from_bytes(config.launch_enclave.sigstruct.read_bytes())
    ctx = _load(cpu, build_launch_enclave_image(), sig,
                MODE64 | int(AttributeFlags.EINITTOKEN_KEY), None)
    report = ctx.ereport(TargetInfo(ctx.identity.mrenclave)).body
    request = einittoken_key_request(report)
    return cpu, TokenMinter(report, request, ctx.egetkey(request))


def _app(key: rsa.RSAPrivateKey, seed: int = 3) -> tuple[EnclaveImage, Sigstruct]:
    image = build_image(seed=seed)
    return image, sign_sigstruct(key, measure(image), date=0x20250101)


def _request(sig: Sigstruct, flags: int) -> LaunchRequest:
    secs = Secs(size=1 << 16, attributes=Attributes(flags, 3))
    return LaunchRequest.from_bytes(sig.to_bytes(), secs.to_bytes())


def _refused(code: SgxErrorCode, load: Any) -> None:
    with pytest.raises(EnclaveInstructionError) as e:
        load()
    assert e.value.code is code


def test_a_minted_token_launches_exactly_its_enclave(le: Any, keys: Any) -> None:
    cpu, minter = le
    image, sig = _app(keys.app)
    token = minter.mint(_request(sig, MODE64))
    assert token.valid and token.mrsigner == sig.mrsigner and token.mrenclave == sig.mrenclave
    assert EinitToken.from_bytes(token.to_bytes()) == token
    ctx = _load(cpu, image, sig, MODE64, token)
    assert ctx.identity.mrsigner == sig.mrsigner
    # Without a token the same enclave is refused (registers hold the LE signer).
    _refused(SgxErrorCode.INVALID_EINITTOKEN, lambda: _load(cpu, image, sig, MODE64, None))


def test_forged_foreign_and_mismatched_tokens_are_refused_by_einit(le: Any, keys: Any) -> None:
    cpu, minter = le
    image, sig = _app(keys.app)
    token = minter.mint(_request(sig, MODE64))
    forged = replace(token, mac=bytes(b ^ 1 for b in token.mac))
    _refused(SgxErrorCode.INVALID_EINITTOKEN, lambda: _load(cpu, image, sig, MODE64, forged))
    altered = replace(token, isvsvn_le=token.isvsvn_le + 1)  # MAC no longer matches
    _refused(SgxErrorCode.INVALID_EINITTOKEN, lambda: _load(cpu, image, sig, MODE64, altered))
    other_image, other_sig = _app(keys.other, seed=4)
    _refused(SgxErrorCode.INVALID_MEASUREMENT,
             lambda: _load(cpu, other_image, other_sig, MODE64, token))
    debug = MODE64 | int(AttributeFlags.DEBUG)
    _refused(SgxErrorCode.INVALID_EINITTOKEN, lambda: _load(cpu, image, sig, debug, token))
    debug_token = minter.mint(_request(sig, debug))
    assert _load(cpu, image, sig, debug, debug_token).identity.attributes.debug


def test_a_token_from_another_key_is_refused(le: Any, keys: Any) -> None:
    cpu, minter = le
    image, sig = _app(keys.app)
    impostor = TokenMinter(minter.le, minter.key_request, b"\x00" * 16)
    token = impostor.mint(_request(sig, MODE64))
    _refused(SgxErrorCode.INVALID_EINITTOKEN, lambda: _load(cpu, image, sig, MODE64, token))
