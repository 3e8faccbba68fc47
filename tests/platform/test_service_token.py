"""Token launch mode through the real gRPC service, with a launch-authority double.

The double plays launchctl's launch enclave the way the real one does: it launches an LE image
signed by the key whose hash the platform locked into the LE registers (that enclave may have
EINITTOKEN_KEY), derives the EINITTOKEN key with EGETKEY over the platform's gRPC API, and MACs
tokens for the signers it allows. It stays a double because these tests need an authority
that misbehaves or can be watched: one that tampers with its tokens (EINIT must refuse them),
blocks inside a request (EBUSY), or records exactly what the platform asked. The platform with
the real daemon is tested in test_service_launchctl.py and tests/launchctl/.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import Report
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import (
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.config import parse_config
from sgx_platform.driver_errors import LaunchDeniedError
from sgx_platform.keys import aes_cmac
from sgx_platform.launch_authority import TokenRequest
from sgx_platform.launch_token import LE_ATTRIBUTE_MASK, LE_MISC_MASK
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService, initialize_state

S = grpc.StatusCode
LE_ATTRIBUTES = Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.EINITTOKEN_KEY), 3)
APP = build_image(code_pages=1, data_pages=1, seed=1)
LE_IMAGE = build_image(code_pages=1, data_pages=1, seed=2)


class LaunchEnclaveDouble:
    """A launch authority backed by a launch enclave running on the platform."""

    def __init__(self) -> None:
        self.client: PlatformClient | None = None
        self.handle: bytes | None = None
        self.allowed: set[Measurement] = set()
        self.requests: list[TokenRequest] = []
        self.tamper: Callable[[EinitToken], EinitToken] | None = None
        self.entered: threading.Event | None = None
        self.release = threading.Event()

    def issue_token(self, request: TokenRequest) -> EinitToken:
        self.requests.append(request)
        if self.entered is not None:
            self.entered.set()
            assert self.release.wait(30)
        if self.client is None or self.handle is None:
            raise ConnectionError("the launch enclave is not running")
        if request.mrsigner not in self.allowed:
            raise LaunchDeniedError(
                f"MRSIGNER {request.mrsigner} is not on the allowlist",
                "sgxemu launchctl add-signer " + request.mrsigner.hex(),
            )
        own = Report.from_bytes(self.client.create_report(self.handle)).body
        key_request = KeyRequest(
            keyname=int(KeyName.EINITTOKEN), isvsvn=own.isvsvn, cpusvn=own.cpusvn,
            attribute_mask=LE_ATTRIBUTE_MASK, key_id=secrets.token_bytes(32),
            miscmask=LE_MISC_MASK,
        )
        key = self.client.get_key(self.handle, key_request.to_bytes())
        masked = Attributes(
            LE_ATTRIBUTE_MASK.flags | int(AttributeFlags.INIT | AttributeFlags.DEBUG), 0
        ) & own.attributes
        token = EinitToken(
            valid=True,
            attributes=Secs.from_bytes(request.secs).attributes,
            mrenclave=request.mrenclave,
            mrsigner=request.mrsigner,
            cpusvn_le=own.cpusvn,
            isvprodid_le=own.isvprodid,
            isvsvn_le=own.isvsvn,
            masked_miscselect_le=LE_MISC_MASK & own.miscselect,
            masked_attributes_le=masked,
            key_id=key_request.key_id,
        )
        token = dataclasses.replace(token, mac=aes_cmac(key, token.mac_body()))
        return self.tamper(token) if self.tamper is not None else token


@pytest.fixture(scope="module")
def le_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture()
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxt", dir="/tmp"))
    d.chmod(0o755)
    (d / "enclaves").mkdir(mode=0o755)
    (d / "enclaves" / "app.sgxs").write_bytes(write_sgxs(APP))
    (d / "enclaves" / "le.sgxs").write_bytes(write_sgxs(LE_IMAGE))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class TokenPlatform:
    def __init__(self, state: Path, le_key: rsa.RSAPrivateKey, authority: object | None) -> None:
        initialize_state(state / "platform")
        le_hash = mrsigner_of_public_key(le_key)
        self.config = parse_config(f'launch_mode = "token"\nle_pubkey_hash = "{le_hash.hex()}"\n',
                                   state)
        self.service = PlatformService(
            self.config, launch_authority=authority, max_workers=6  # type: ignore[arg-type]
        )
        self.service.start()
        self.device = PlatformClient.unix(self.config.sockets.device, timeout=30)
        self.owner = PlatformClient.unix(self.config.sockets.owner, timeout=30)
        self.le_sig = sign_sigstruct(le_key, measure(LE_IMAGE), attributes=LE_ATTRIBUTES,
                                     isvprodid=0x20).to_bytes()

    def start_le(self, double: LaunchEnclaveDouble) -> None:
        loaded = self.device.load_enclave_from_file("le.sgxs", self.le_sig)
        double.client = self.device
        double.handle = loaded.handle

    def close(self) -> None:
        self.device.close()
        self.owner.close()
        self.service.stop(grace=1)


@pytest.fixture()
def platform_with(state: Path, le_key: rsa.RSAPrivateKey
                  ) -> Iterator[Callable[[object | None], TokenPlatform]]:
    running: list[TokenPlatform] = []

    def make(authority: object | None) -> TokenPlatform:
        p = TokenPlatform(state, le_key, authority)
        running.append(p)
        return p

    yield make
    for p in running:
        p.close()


def refused(call: Callable[[], object], code: grpc.StatusCode, reason: str) -> PlatformRpcError:
    with pytest.raises(PlatformRpcError) as e:
        call()
    assert (e.value.code, e.value.reason) == (code, reason), (e.value.reason, e.value.message)
    return e.value


def sig(key: rsa.RSAPrivateKey, image: EnclaveImage = APP, **kw: object) -> bytes:
    return sign_sigstruct(key, measure(image), **kw).to_bytes()  # type: ignore[arg-type]


def test_token_mode_locks_the_le_signer_at_boot_and_again_after_reset(
    platform_with: Callable[[object | None], TokenPlatform], le_key: rsa.RSAPrivateKey
) -> None:
    p = platform_with(None)
    info = p.device.info()
    assert info.launch_mode == 2 and info.le_pubkey_hash_locked
    assert info.le_pubkey_hash == mrsigner_of_public_key(le_key).to_bytes()
    refused(lambda: p.owner.set_le_pubkey_hash(b"\x01" * 32), S.FAILED_PRECONDITION,
            "REGISTERS_LOCKED")
    p.owner.reset()
    info = p.device.info()
    assert info.le_pubkey_hash_locked, "the boot configuration is applied again after reset"
    assert info.le_pubkey_hash == mrsigner_of_public_key(le_key).to_bytes()


def test_the_le_launches_without_a_token_and_others_fail_closed_without_an_authority(
    platform_with: Callable[[object | None], TokenPlatform], app_key: rsa.RSAPrivateKey
) -> None:
    p = platform_with(None)
    loaded = p.device.load_enclave_from_file("le.sgxs", p.le_sig)
    assert loaded.initialized, "the LE's signer is in the registers: no token needed"
    e = refused(lambda: p.device.load_enclave_from_file("app.sgxs", sig(app_key)),
                S.UNAVAILABLE, "LAUNCH_AUTHORITY_UNAVAILABLE")
    assert (e.errno_name, e.rule) == ("EAGAIN", "launch_authority")
    assert p.device.info().enclave_count == 1, "the refused enclave was not left behind"


def test_allowed_signers_launch_with_a_token_and_others_are_denied(
    platform_with: Callable[[object | None], TokenPlatform], app_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    double = LaunchEnclaveDouble()
    p = platform_with(double)
    p.start_le(double)
    assert double.requests == [], "the LE itself needs no token"
    double.allowed.add(mrsigner_of_public_key(app_key))
    loaded = p.device.load_enclave_from_file("app.sgxs", sig(app_key))
    assert loaded.initialized and loaded.mrsigner == mrsigner_of_public_key(app_key)
    request = double.requests[-1]
    assert request.sigstruct == sig(app_key), "the authority sees the exact SIGSTRUCT"
    assert request.mrenclave == measure(APP)
    assert Secs.from_bytes(request.secs).size == APP.size
    e = refused(lambda: p.device.load_enclave_from_file("app.sgxs", sig(stranger_key)),
                S.PERMISSION_DENIED, "LAUNCH_DENIED")
    assert (e.errno_name, e.rule) == ("EACCES", "launch_authority")
    assert "add-signer" in (e.hint or "")
    assert p.service.metrics.value(
        "sgxemu_platform_denials_total", {"rule": "launch_authority", "reason": "LAUNCH_DENIED"}
    ) == 1
    # The double going away is "no answer": fail closed.
    double.handle = None
    refused(lambda: p.device.load_enclave_from_file("app.sgxs", sig(app_key)), S.UNAVAILABLE,
            "LAUNCH_AUTHORITY_UNAVAILABLE")


def test_einit_checks_the_token_itself(
    platform_with: Callable[[object | None], TokenPlatform], app_key: rsa.RSAPrivateKey,
    stranger_key: rsa.RSAPrivateKey,
) -> None:
    double = LaunchEnclaveDouble()
    p = platform_with(double)
    p.start_le(double)
    double.allowed.add(mrsigner_of_public_key(app_key))
    double.tamper = lambda t: dataclasses.replace(t, mac=bytes(16))
    e = refused(lambda: p.device.load_enclave_from_file("app.sgxs", sig(app_key)),
                S.PERMISSION_DENIED, "SGX_INVALID_EINITTOKEN")
    assert (e.errno_name, e.sgx_code) == ("EPERM", 16)
    other = build_image(code_pages=1, data_pages=1, seed=77)
    double.tamper = lambda t: dataclasses.replace(t, mrenclave=measure(other))
    e = refused(lambda: p.device.load_enclave_from_file("app.sgxs", sig(app_key)),
                S.PERMISSION_DENIED, "SGX_INVALID_EINITTOKEN")  # MAC covers MRENCLAVE
    double.tamper = None
    assert p.device.load_enclave_from_file("app.sgxs", sig(app_key)).initialized


def test_einittoken_key_only_for_the_locked_le_signer(
    platform_with: Callable[[object | None], TokenPlatform], app_key: rsa.RSAPrivateKey
) -> None:
    double = LaunchEnclaveDouble()
    p = platform_with(double)
    double.allowed.add(mrsigner_of_public_key(app_key))
    p.start_le(double)
    e = refused(
        lambda: p.device.load_enclave_from_file("app.sgxs", sig(app_key,
                                                                attributes=LE_ATTRIBUTES)),
        S.PERMISSION_DENIED, "EINITTOKEN_KEY_NOT_ALLOWED",
    )
    assert e.errno_name == "EACCES" and mrsigner_of_public_key(app_key).hex() in e.message
    # The LE itself derives EINITTOKEN keys; an ordinary enclave may not.
    app = p.device.load_enclave_from_file("app.sgxs", sig(app_key))
    request = KeyRequest(keyname=int(KeyName.EINITTOKEN)).to_bytes()
    assert len(p.device.get_key(double.handle or b"", request)) == 16
    refused(lambda: p.device.get_key(app.handle, request), S.PERMISSION_DENIED,
            "SGX_INVALID_ATTRIBUTE")


def test_a_concurrent_call_on_the_same_enclave_is_ebusy(
    platform_with: Callable[[object | None], TokenPlatform], app_key: rsa.RSAPrivateKey
) -> None:
    """INIT waits for the authority while holding the enclave: a second ioctl gets EBUSY."""
    double = LaunchEnclaveDouble()
    p = platform_with(double)
    p.start_le(double)
    double.allowed.add(mrsigner_of_public_key(app_key))
    loaded = p.device.load_enclave_from_file("app.sgxs", sig(app_key), defer_init=True)
    assert not loaded.initialized
    double.entered = threading.Event()
    outcome: dict[str, object] = {}

    def init() -> None:
        outcome["init"] = p.device.init_enclave(loaded.handle, sig(app_key))

    worker = threading.Thread(target=init)
    worker.start()
    try:
        assert double.entered.wait(30), "INIT reached the launch authority"
        data = SecInfo(PageType.REG, SecInfoFlags.R).to_bytes()
        e = refused(lambda: p.device.add_pages(loaded.handle, APP.size - 4096, bytes(4096), data,
                                               measure=True), S.ABORTED, "ENCLAVE_BUSY")
        assert e.errno_name == "EBUSY"
        refused(lambda: p.device.init_enclave(loaded.handle, sig(app_key)), S.ABORTED,
                "ENCLAVE_BUSY")
        # Other enclaves are not blocked, and neither is the platform.
        assert p.device.info().enclave_count == 2
    finally:
        double.release.set()
        worker.join(30)
    mrenclave, _ = outcome["init"]  # type: ignore[misc]
    assert mrenclave == measure(APP)
