"""The quoting enclaves under launch control: the platform in token mode, launchctl deciding.

The PCE and QE launch like any enclave: the platform asks the launch-control daemon for a
token at each EINIT, and the daemon admits the emulated vendor signer because ``sgxemu init``
listed it with PROVISIONKEY allowed. Without that allowance they do not launch, and the quoting
service says why.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx.quoting.v1 import quoting_pb2 as qpb
from sgx.quoting.v1 import quoting_pb2_grpc as qgrpc
from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.config import load_config as load_launchctl_config
from sgx_launchctl.rpc.client import LaunchctlClient
from sgx_launchctl.service import LaunchctlService
from sgx_launchctl.service import initialize_state as initialize_launchctl
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform
from sgx_quoting.config import QuotingConfig
from sgx_quoting.enclaves import EnclaveManifest, initialize_state
from sgx_quoting.service import QuotingServer
from sgx_quoting.state import PcsStore, create_pcs
from sgx_rpc.channel import unix_channel
from sgx_rpc.errors import error_info


@dataclass(frozen=True)
class Keys:
    vendor: rsa.RSAPrivateKey
    app: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(generate_signing_key(), generate_signing_key())


class TokenWorld:
    def __init__(self, state: Path, keys: Keys) -> None:
        self.state = state
        initialize_platform(state / "platform")
        (state / "enclaves").mkdir(mode=0o755)
        self.manifest: EnclaveManifest = initialize_state(
            state / "quoting", state / "enclaves", vendor_key=keys.vendor
        )
        summary = initialize_launchctl(
            state, vendor_mrsigner=self.manifest.mrsigner, export_key_to=None
        )
        (state / "launchctl" / "launchctl.toml").write_text(
            "[platform]\npoll_seconds = 0.05\ntimeout = 5.0\n"
        )
        create_pcs(
            state / "pcs",
            qe_mrsigner=self.manifest.mrsigner.value,
            qe_isvsvn=self.manifest.qe.isvsvn,
            qe_isvprodid=self.manifest.qe.isvprodid,
        )
        platform_config = (
            f'launch_mode = "token"\nle_pubkey_hash = "{summary["le_mrsigner"]}"\n'
            '[epc]\npages = 1024\n[launchctl]\nsocket = "run/launchctl-authority/authority.sock"\n'
        )
        self.platform = PlatformService(parse_config(platform_config, state))
        self.platform.start()
        self.launchctl = LaunchctlService(load_launchctl_config(state))
        self.launchctl.start()
        self.quoting: QuotingServer | None = None
        run = state / "run"
        self.device = PlatformClient.unix(run / "platform.sock", timeout=20)
        self.owner = PlatformClient.unix(run / "platform-owner" / "owner.sock", timeout=20)
        self.admin = LaunchctlClient.unix(run / "launchctl-admin" / "admin.sock", timeout=20)
        self.channel = unix_channel(run / "quoting.sock")
        self.stub = qgrpc.QuotingServiceStub(self.channel)
        image = build_image(seed=31)
        (state / "enclaves" / "app.sgxs").write_bytes(write_sgxs(image))
        self.app_sigstruct = sign_sigstruct(
            keys.app, measure(image), isvprodid=2, isvsvn=1
        ).to_bytes()
        self.app_mrsigner = mrsigner_of_public_key(keys.app)

    def start_quoting(self) -> None:
        self.quoting = QuotingServer(QuotingConfig.defaults(self.state))
        self.quoting.start()

    def quote(self) -> bytes:
        loaded = self.device.load_enclave_from_file(
            self.state / "enclaves" / "app.sgxs", self.app_sigstruct
        )
        try:
            target = self.stub.GetTargetInfo(qpb.GetTargetInfoRequest(), timeout=20).target_info
            report = self.device.create_report(loaded.handle, target, bytes(64))
            quote: bytes = self.stub.GetQuote(qpb.GetQuoteRequest(report=report), timeout=20).quote
            return quote
        finally:
            self.device.destroy_enclave(loaded.handle)

    def close(self) -> None:
        self.channel.close()
        for client in (self.device, self.owner, self.admin):
            client.close()
        if self.quoting is not None:
            self.quoting.stop(grace=1)
        self.launchctl.stop(0.5)
        self.platform.stop(grace=1)


@pytest.fixture()
def world(keys: Keys) -> Iterator[TokenWorld]:
    state = Path(tempfile.mkdtemp(prefix="sgxt", dir="/tmp"))
    w = TokenWorld(state, keys)
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(state, ignore_errors=True)


def test_the_quoting_enclaves_launch_with_tokens_and_quotes_verify(world: TokenWorld) -> None:
    world.admin.add_signer(SignerEntry(mrsigner=world.app_mrsigner, comment="the app"))
    world.start_quoting()
    quote = world.quote()
    store = PcsStore(world.state / "pcs")
    with store.session() as pcs:
        collateral = pcs.collateral_for_quote(quote).to_json()
    verdict = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral),
        store.load_pki().root_ca_der,
        int(dt.datetime.now(dt.UTC).timestamp()),
    )
    assert verdict.status == "UpToDate"
    info = world.platform.driver.info()
    assert info.launch_mode.value == "token"


def test_without_provisionkey_allowed_the_quoting_enclaves_do_not_launch(
    world: TokenWorld,
) -> None:
    world.admin.add_signer(
        SignerEntry(mrsigner=world.manifest.mrsigner, allow_provision_key=False, comment="vendor")
    )
    launch_enclave_only = world.platform.driver.info().enclave_count  # the daemon's LE
    world.start_quoting()  # starts serving; the enclaves could not launch
    with pytest.raises(grpc.RpcError) as refused:
        world.stub.GetTargetInfo(qpb.GetTargetInfoRequest(), timeout=20)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info is not None
    assert info.reason == "ENCLAVE_LAUNCH_FAILED"
    assert info.metadata["remote_code"] == "PERMISSION_DENIED"
    assert "--allow-provision-key" in info.metadata["hint"]
    assert world.platform.driver.info().enclave_count == launch_enclave_only  # nothing leaked
    # The admin allows PROVISIONKEY again: the next request launches them.
    world.admin.add_signer(
        SignerEntry(mrsigner=world.manifest.mrsigner, allow_provision_key=True, comment="vendor")
    )
    world.admin.add_signer(SignerEntry(mrsigner=world.app_mrsigner))
    assert len(world.quote()) > 1000
