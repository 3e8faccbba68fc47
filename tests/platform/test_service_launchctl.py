"""The platform asking the launch-control daemon over gRPC (``[launchctl]`` in platform.toml).

The integration tests run the real daemon (``sgx_launchctl.service``, started the way
tests/launchctl/conftest.py starts it) on the real platform: tokens, denials and the load
policy come from its allowlist and policy, changed through its admin socket. A double of
``sgx.launchctl.v1.LaunchControlService`` remains only where a test needs an authority that
misbehaves (a rule name the platform does not know, a forged or malformed token, an answer
without a decision): the real daemon never answers like that, and the platform must still
fail closed or have EINIT refuse.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx.launchctl.v1 import launchctl_pb2 as lpb
from sgx.launchctl.v1 import launchctl_pb2_grpc as lpb_grpc
from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.config import load_config
from sgx_launchctl.rpc.client import LaunchctlClient
from sgx_launchctl.service import LaunchctlService
from sgx_launchctl.service import initialize_state as initialize_launchctl
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.config import parse_config
from sgx_platform.driver_errors import LaunchAuthorityUnavailableError
from sgx_platform.launch_authority import TokenRequest
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform

S = grpc.StatusCode
APP = build_image(code_pages=1, data_pages=1, seed=3)
_pages = list(APP.pages)
_code = next(i for i, p in enumerate(_pages) if p.secinfo.permissions & SecInfoFlags.X)
_pages[_code] = dataclasses.replace(
    _pages[_code], secinfo=SecInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.W | SecInfoFlags.X)
)
RWX_APP = EnclaveImage(APP.ssa_frame_size, APP.size, tuple(_pages))
#: What the emulated vendor's MRSIGNER is does not matter here (no quoting enclaves).
VENDOR = Measurement(b"\x11" * 32)


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def _enclaves(state: Path) -> None:
    (state / "enclaves").mkdir(mode=0o755, exist_ok=True)
    for name, image in (("app.sgxs", APP), ("rwx.sgxs", RWX_APP)):
        (state / "enclaves" / name).write_bytes(write_sgxs(image))


# -- the real daemon ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    state: Path
    le_mrsigner: str


@pytest.fixture(scope="module")
def template() -> Iterator[Template]:
    """Platform and launchctl state as ``sgxemu init`` lays them out (made once: the
    launch-authority key is the slow part)."""
    with tempfile.TemporaryDirectory(prefix="sgxl", dir="/tmp") as d:
        state = Path(d) / "s"
        state.mkdir(mode=0o700)
        initialize_platform(state / "platform")
        summary = initialize_launchctl(state, vendor_mrsigner=VENDOR, export_key_to=None)
        _enclaves(state)
        (state / "launchctl" / "launchctl.toml").write_text(
            "[platform]\npoll_seconds = 0.05\ntimeout = 5.0\n"
        )
        yield Template(state, summary["le_mrsigner"])


@dataclass
class Real:
    platform: PlatformService
    launchctl: LaunchctlService | None
    device: PlatformClient
    admin: LaunchctlClient

    def stop_launchctl(self) -> None:
        if self.launchctl is not None:
            self.launchctl.stop(0.5)
            self.launchctl = None


@pytest.fixture()
def real(template: Template) -> Iterator[Real]:
    """The platform in token mode asking the real daemon, both running on a copy of the
    template."""
    root = Path(tempfile.mkdtemp(prefix="sgxl", dir="/tmp"))
    state = root / "s"
    shutil.copytree(template.state, state, symlinks=True)
    config = parse_config(
        f'launch_mode = "token"\nle_pubkey_hash = "{template.le_mrsigner}"\n'
        '[launchctl]\nsocket = "run/launchctl-authority/authority.sock"\n'
        "timeout_seconds = 10\n",
        state,
    )
    platform = PlatformService(config, max_workers=6)
    platform.start()
    world: Real | None = None
    try:
        launchctl = LaunchctlService(load_config(state))
        launchctl.start()
        world = Real(
            platform,
            launchctl,
            PlatformClient.unix(config.sockets.device, timeout=30),
            LaunchctlClient.unix(state / "run" / "launchctl-admin" / "admin.sock", timeout=30),
        )
        yield world
    finally:
        if world is not None:
            world.device.close()
            world.admin.close()
            world.stop_launchctl()
        platform.stop(grace=1)
        shutil.rmtree(root, ignore_errors=True)


def test_tokens_and_denials_come_from_the_daemon(real: Real, app_key: rsa.RSAPrivateKey) -> None:
    sig = sign_sigstruct(app_key, measure(APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as denied:
        real.device.load_enclave_from_file("app.sgxs", sig)
    e = denied.value
    assert (e.code, e.reason, e.rule) == (S.PERMISSION_DENIED, "LAUNCH_SIGNER_NOT_LISTED",
                                          "signer")
    assert "add-signer" in (e.hint or "")
    real.admin.add_signer(SignerEntry(mrsigner_of_public_key(app_key)))
    loaded = real.device.load_enclave_from_file("app.sgxs", sig)
    assert loaded.initialized and loaded.mrenclave == measure(APP)
    admitted = [line for line in real.admin.audit().entries if line.event == "launch_admitted"]
    assert admitted[-1].details["boot_epoch"] == real.device.info().boot_epoch.hex(), (
        "the platform asked for its current boot"
    )


def test_the_load_policy_comes_from_the_daemon(real: Real, app_key: rsa.RSAPrivateKey) -> None:
    real.admin.add_signer(SignerEntry(mrsigner_of_public_key(app_key)))
    sig = sign_sigstruct(app_key, measure(RWX_APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as denied:
        real.device.load_enclave_from_file("rwx.sgxs", sig)
    assert denied.value.reason == "LOAD_NO_WRITE_EXEC"
    real.admin.set_rule("no_write_exec", False)  # the admin switches it off in launchctl
    assert real.device.load_enclave_from_file("rwx.sgxs", sig).initialized


def test_an_unreachable_daemon_fails_closed(real: Real, app_key: rsa.RSAPrivateKey) -> None:
    real.admin.add_signer(SignerEntry(mrsigner_of_public_key(app_key)))
    real.stop_launchctl()
    before = real.device.info().enclave_count
    sig = sign_sigstruct(app_key, measure(APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as down:
        real.device.load_enclave_from_file("app.sgxs", sig)
    assert (down.value.code, down.value.reason) == (S.PERMISSION_DENIED,
                                                    "LOAD_POLICY_UNAVAILABLE")
    assert real.device.info().enclave_count == before, "the refused enclave was not left behind"
    launchctl = real.platform.launchctl
    assert launchctl is not None
    request = TokenRequest(sig, bytes(4096), mrsigner_of_public_key(app_key), measure(APP))
    with pytest.raises(LaunchAuthorityUnavailableError) as no_answer:
        launchctl.issue_token(request)
    assert no_answer.value.reason == "LAUNCH_AUTHORITY_UNAVAILABLE"


# -- a misbehaving authority (a double: the real daemon never answers like this) ------------------


class MisbehavingAuthority(lpb_grpc.LaunchControlServiceServicer):
    """Answers GetLaunchToken with ``token_response`` and GetLoadPolicy with the enclave
    directory and ``rules``, whatever they are."""

    def __init__(self, enclaves: Path) -> None:
        self.enclaves = enclaves
        self.rules: dict[str, bool] = {}
        self.token_response = lpb.GetLaunchTokenResponse()

    def GetLaunchToken(self, request, context):  # type: ignore[no-untyped-def]
        return self.token_response

    def GetLoadPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return lpb.GetLoadPolicyResponse(policy=lpb.LoadPolicy(
            allowed_dirs=[str(self.enclaves)],
            rules=[lpb.LoadRule(name=k, enabled=v) for k, v in self.rules.items()],
        ))


@pytest.fixture()
def misbehaving() -> Iterator[tuple[MisbehavingAuthority, PlatformClient]]:
    state = Path(tempfile.mkdtemp(prefix="sgxd", dir="/tmp"))
    server: grpc.Server | None = None
    service: PlatformService | None = None
    client: PlatformClient | None = None
    try:
        _enclaves(state)
        double = MisbehavingAuthority(state / "enclaves")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        lpb_grpc.add_LaunchControlServiceServicer_to_server(double, server)
        socket = state / "lc.sock"
        server.add_insecure_port(f"unix:{socket}")
        server.start()
        initialize_platform(state / "platform")
        le_hash = mrsigner_of_public_key(generate_signing_key()).hex()
        config = parse_config(
            f'launch_mode = "token"\nle_pubkey_hash = "{le_hash}"\n'
            f'[launchctl]\nsocket = "{socket}"\ntimeout_seconds = 10\n', state)
        service = PlatformService(config, max_workers=6)
        service.start()
        client = PlatformClient.unix(config.sockets.device, timeout=30)
        yield double, client
    finally:
        if client is not None:
            client.close()
        if service is not None:
            service.stop(grace=1)
        if server is not None:
            server.stop(0)
        shutil.rmtree(state, ignore_errors=True)


def test_a_load_policy_naming_an_unknown_rule_fails_closed(
    misbehaving: tuple[MisbehavingAuthority, PlatformClient], app_key: rsa.RSAPrivateKey
) -> None:
    double, client = misbehaving
    sig = sign_sigstruct(app_key, measure(RWX_APP)).to_bytes()
    double.rules["no_write_exec"] = False
    # Understood: the pages are added (INIT, which would need a token, is deferred).
    assert not client.load_enclave_from_file("rwx.sgxs", sig, defer_init=True).initialized
    double.rules["no_such_rule"] = True  # a policy the platform does not understand
    with pytest.raises(PlatformRpcError) as unknown:
        client.load_enclave_from_file("rwx.sgxs", sig, defer_init=True)
    assert unknown.value.reason == "LOAD_POLICY_UNAVAILABLE"


def _forged_token(sig: bytes) -> bytes:
    """A well-formed EINITTOKEN for exactly this SIGSTRUCT, MAC'd with no key at all."""
    parsed = Sigstruct.from_bytes(sig)
    return EinitToken(valid=True, attributes=parsed.attributes, mrenclave=parsed.enclave_hash,
                      mrsigner=parsed.mrsigner).to_bytes()


def test_tokens_that_are_forged_malformed_or_missing_launch_nothing(
    misbehaving: tuple[MisbehavingAuthority, PlatformClient], app_key: rsa.RSAPrivateKey
) -> None:
    double, client = misbehaving
    sig = sign_sigstruct(app_key, measure(APP)).to_bytes()
    loaded = client.load_enclave_from_file("app.sgxs", sig, defer_init=True)
    # Well formed, but MAC'd with no key at all: EINIT itself refuses it.
    forged = _forged_token(sig)
    double.token_response = lpb.GetLaunchTokenResponse(einittoken=forged)
    with pytest.raises(PlatformRpcError) as refused:
        client.init_enclave(loaded.handle, sig)
    assert (refused.value.code, refused.value.reason) == (S.PERMISSION_DENIED,
                                                          "SGX_INVALID_EINITTOKEN")
    # Not an EINITTOKEN, or no decision at all: no answer, the launch fails closed.
    for response in (lpb.GetLaunchTokenResponse(einittoken=forged[:-1]),
                     lpb.GetLaunchTokenResponse()):
        double.token_response = response
        with pytest.raises(PlatformRpcError) as closed:
            client.load_enclave_from_file("app.sgxs", sig)
        assert (closed.value.code, closed.value.reason) == (S.UNAVAILABLE,
                                                            "LAUNCH_AUTHORITY_UNAVAILABLE")
    assert client.info().enclave_count == 1, "only the enclave whose INIT was refused"
