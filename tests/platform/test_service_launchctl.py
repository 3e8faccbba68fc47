"""The platform asking the launch-control daemon over gRPC (``[launchctl]`` in platform.toml).

The daemon here is a test double of ``sgx.launchctl.v1.LaunchControlService`` (GetLaunchToken,
GetLoadPolicy) on a real Unix socket; it plays the launch enclave the way the real daemon does
(an LE on the platform derives the EINITTOKEN key through the platform's own gRPC API). It is
replaced by the real launchctl when that service lands.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx.launchctl.v1 import launchctl_pb2 as lpb
from sgx.launchctl.v1 import launchctl_pb2_grpc as lpb_grpc
from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.config import parse_config
from sgx_platform.driver_errors import LaunchAuthorityUnavailableError
from sgx_platform.keys import aes_cmac
from sgx_platform.launch_authority import TokenRequest
from sgx_platform.launch_token import LE_ATTRIBUTE_MASK, LE_MISC_MASK
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.rpc.launchctl import LaunchControlClient
from sgx_platform.service import PlatformService, initialize_state

S = grpc.StatusCode
LE_ATTRIBUTES = Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.EINITTOKEN_KEY), 3)
APP = build_image(code_pages=1, data_pages=1, seed=3)
LE_IMAGE = build_image(code_pages=1, data_pages=1, seed=4)
_pages = list(APP.pages)
_code = next(i for i, p in enumerate(_pages) if p.secinfo.permissions & SecInfoFlags.X)
_pages[_code] = dataclasses.replace(
    _pages[_code], secinfo=SecInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.W | SecInfoFlags.X)
)
RWX_APP = EnclaveImage(APP.ssa_frame_size, APP.size, tuple(_pages))


class LaunchctlDouble(lpb_grpc.LaunchControlServiceServicer):
    """GetLaunchToken and GetLoadPolicy as the daemon answers them."""

    def __init__(self, enclaves: Path) -> None:
        self.platform: PlatformClient | None = None
        self.le_handle: bytes | None = None
        self.allowed: set[bytes] = set()
        self.rules = {"no_write_exec": True}
        self.boot_epochs: list[bytes] = []
        self.enclaves = enclaves

    def GetLaunchToken(self, request, context):  # type: ignore[no-untyped-def]
        self.boot_epochs.append(request.boot_epoch)
        sig = Sigstruct.from_bytes(request.sigstruct)
        if sig.mrsigner.value not in self.allowed:
            return lpb.GetLaunchTokenResponse(denial=lpb.LaunchDenial(
                rule="signer", reason="LAUNCH_SIGNER_NOT_LISTED",
                message=f"MRSIGNER {sig.mrsigner} is not on the allowlist (rule signer)",
                hint=f"sgxemu launchctl add-signer {sig.mrsigner}",
                mrsigner=sig.mrsigner.value, mrenclave=sig.enclave_hash.value,
            ))
        assert self.platform is not None and self.le_handle is not None
        own = Report.from_bytes(self.platform.create_report(self.le_handle)).body
        kr = KeyRequest(keyname=int(KeyName.EINITTOKEN), isvsvn=own.isvsvn, cpusvn=own.cpusvn,
                        attribute_mask=LE_ATTRIBUTE_MASK, key_id=secrets.token_bytes(32),
                        miscmask=LE_MISC_MASK)
        key = self.platform.get_key(self.le_handle, kr.to_bytes())
        token = EinitToken(
            valid=True, attributes=Secs.from_bytes(request.secs).attributes,
            mrenclave=sig.enclave_hash, mrsigner=sig.mrsigner, cpusvn_le=own.cpusvn,
            isvprodid_le=own.isvprodid, isvsvn_le=own.isvsvn,
            masked_miscselect_le=LE_MISC_MASK & own.miscselect,
            masked_attributes_le=Attributes(LE_ATTRIBUTE_MASK.flags | 3, 0) & own.attributes,
            key_id=kr.key_id,
        )
        token = dataclasses.replace(token, mac=aes_cmac(key, token.mac_body()))
        return lpb.GetLaunchTokenResponse(einittoken=token.to_bytes())

    def GetLoadPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return lpb.GetLoadPolicyResponse(policy=lpb.LoadPolicy(
            allowed_dirs=[str(self.enclaves)],
            rules=[lpb.LoadRule(name=k, enabled=v) for k, v in self.rules.items()],
        ))


@pytest.fixture(scope="module")
def le_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture()
def world(le_key: rsa.RSAPrivateKey) -> Iterator[tuple[PlatformService, LaunchctlDouble,
                                                        grpc.Server, PlatformClient]]:
    state = Path(tempfile.mkdtemp(prefix="sgxd", dir="/tmp"))
    server: grpc.Server | None = None
    service: PlatformService | None = None
    client: PlatformClient | None = None
    try:
        (state / "enclaves").mkdir(mode=0o755)
        for name, image in (("app.sgxs", APP), ("le.sgxs", LE_IMAGE), ("rwx.sgxs", RWX_APP)):
            (state / "enclaves" / name).write_bytes(write_sgxs(image))
        double = LaunchctlDouble(state / "enclaves")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        lpb_grpc.add_LaunchControlServiceServicer_to_server(double, server)
        socket = state / "lc.sock"
        server.add_insecure_port(f"unix:{socket}")
        server.start()
        initialize_state(state / "platform")
        config = parse_config(
            f'launch_mode = "token"\nle_pubkey_hash = "{mrsigner_of_public_key(le_key).hex()}"\n'
            f'[launchctl]\nsocket = "{socket}"\ntimeout_seconds = 10\n', state)
        service = PlatformService(config, max_workers=6)
        service.start()
        client = PlatformClient.unix(config.sockets.device, timeout=30)
        le_sig = sign_sigstruct(le_key, measure(LE_IMAGE), attributes=LE_ATTRIBUTES).to_bytes()
        double.platform = client
        double.le_handle = client.load_enclave_from_file("le.sgxs", le_sig).handle
        yield service, double, server, client
    finally:
        if client is not None:
            client.close()
        if service is not None:
            service.stop(grace=1)
        if server is not None:
            server.stop(0)
        shutil.rmtree(state, ignore_errors=True)


def test_tokens_and_denials_come_from_the_daemon(
    world: tuple[PlatformService, LaunchctlDouble, grpc.Server, PlatformClient],
    app_key: rsa.RSAPrivateKey,
) -> None:
    _, double, _, client = world
    sig = sign_sigstruct(app_key, measure(APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as denied:
        client.load_enclave_from_file("app.sgxs", sig)
    e = denied.value
    assert (e.code, e.reason, e.rule) == (S.PERMISSION_DENIED, "LAUNCH_SIGNER_NOT_LISTED",
                                          "signer")
    assert "add-signer" in (e.hint or "")
    double.allowed.add(mrsigner_of_public_key(app_key).value)
    loaded = client.load_enclave_from_file("app.sgxs", sig)
    assert loaded.initialized and loaded.mrenclave == measure(APP)
    assert double.boot_epochs[-1] == client.info().boot_epoch


def test_the_load_policy_comes_from_the_daemon(
    world: tuple[PlatformService, LaunchctlDouble, grpc.Server, PlatformClient],
    app_key: rsa.RSAPrivateKey,
) -> None:
    _, double, _, client = world
    double.allowed.add(mrsigner_of_public_key(app_key).value)
    sig = sign_sigstruct(app_key, measure(RWX_APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as denied:
        client.load_enclave_from_file("rwx.sgxs", sig)
    assert denied.value.reason == "LOAD_NO_WRITE_EXEC"
    double.rules["no_write_exec"] = False  # the admin switched it off in launchctl
    assert client.load_enclave_from_file("rwx.sgxs", sig).initialized
    double.rules["no_such_rule"] = True  # a policy the platform does not understand
    with pytest.raises(PlatformRpcError) as unknown:
        client.load_enclave_from_file("rwx.sgxs", sig)
    assert unknown.value.reason == "LOAD_POLICY_UNAVAILABLE"


def test_an_unreachable_daemon_fails_closed(
    world: tuple[PlatformService, LaunchctlDouble, grpc.Server, PlatformClient],
    app_key: rsa.RSAPrivateKey,
) -> None:
    _, double, server, client = world
    double.allowed.add(mrsigner_of_public_key(app_key).value)
    server.stop(0)
    sig = sign_sigstruct(app_key, measure(APP)).to_bytes()
    with pytest.raises(PlatformRpcError) as down:
        client.load_enclave_from_file("app.sgxs", sig)
    assert (down.value.code, down.value.reason) == (S.PERMISSION_DENIED,
                                                    "LOAD_POLICY_UNAVAILABLE")
    info = client.info()
    assert info.enclave_count == 1, "only the launch enclave"
    assert service_launchctl(world) is not None
    request = TokenRequest(sig, bytes(4096), mrsigner_of_public_key(app_key), measure(APP))
    with pytest.raises(LaunchAuthorityUnavailableError) as no_answer:
        service_launchctl(world).issue_token(request)
    assert no_answer.value.reason == "LAUNCH_AUTHORITY_UNAVAILABLE"


def service_launchctl(
    world: tuple[PlatformService, LaunchctlDouble, grpc.Server, PlatformClient],
) -> LaunchControlClient:
    launchctl = world[0].launchctl
    assert launchctl is not None
    return launchctl
