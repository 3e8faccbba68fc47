"""The PCE: its PCK key from EGETKEY(PROVISION) and its certification of QE reports.

The enclaves run on a real platform served in-process on Unix sockets; the PCE reaches it
through the quoting package's gRPC port, as in the service.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.dcap.ecdsa import public_key_from_raw, raw_rs_to_der
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.report import Report
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform
from sgx_quoting.enclave_errors import CertificationError, EnclaveLaunchError
from sgx_quoting.enclaves import EnclaveManifest, deploy_enclaves, initialize_state
from sgx_quoting.engine import destroy_quietly, launch_quoting_enclave
from sgx_quoting.pce import PCE_ID, ProvisioningCertificationEnclave, derive_pck_key
from sgx_quoting.qe import QuotingEnclave
from sgx_quoting.rpc.platform_client import GrpcPlatform

# -- the derivation (pure) -----------------------------------------------------------------------

KEY = bytes(range(16))
CPUSVN = bytes([3] * 8 + [0] * 8)


def _point(key: ec.EllipticCurvePrivateKey) -> int:
    return key.public_key().public_numbers().x


def test_derivation_is_deterministic_and_bound_to_every_input() -> None:
    base = _point(derive_pck_key(KEY, cpusvn=CPUSVN, pcesvn=13))
    assert _point(derive_pck_key(KEY, cpusvn=CPUSVN, pcesvn=13)) == base
    variants = [
        derive_pck_key(bytes(16), cpusvn=CPUSVN, pcesvn=13),
        derive_pck_key(KEY, cpusvn=bytes(16), pcesvn=13),
        derive_pck_key(KEY, cpusvn=CPUSVN, pcesvn=14),
        derive_pck_key(KEY, cpusvn=CPUSVN, pcesvn=13, pce_id=b"\x00\x01"),
    ]
    assert len({base, *(_point(v) for v in variants)}) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"provision_key": KEY[:15], "cpusvn": CPUSVN, "pcesvn": 1},
        {"provision_key": KEY + b"\x00", "cpusvn": CPUSVN, "pcesvn": 1},
        {"provision_key": KEY, "cpusvn": CPUSVN[:15], "pcesvn": 1},
        {"provision_key": KEY, "cpusvn": CPUSVN, "pcesvn": -1},
        {"provision_key": KEY, "cpusvn": CPUSVN, "pcesvn": 1 << 16},
        {"provision_key": KEY, "cpusvn": CPUSVN, "pcesvn": 1, "pce_id": b"\x00"},
    ],
)
def test_derivation_rejects_bad_sizes(kwargs: dict[str, object]) -> None:
    with pytest.raises(MalformedStructureError):
        derive_pck_key(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_different_tcbs_give_different_keys(a: bytes, b: bytes) -> None:
    ka = derive_pck_key(KEY, cpusvn=a, pcesvn=1)
    kb = derive_pck_key(KEY, cpusvn=b, pcesvn=1)
    assert (_point(ka) == _point(kb)) == (a == b)


# -- on the platform -------------------------------------------------------------------------------


class Platform:
    """A platform with the quoting enclaves' images and manifest."""

    def __init__(self, state: Path, vendor: rsa.RSAPrivateKey) -> None:
        self.state = state
        initialize_platform(state / "platform")
        (state / "enclaves").mkdir(mode=0o755, exist_ok=True)
        if not (state / "quoting" / "enclaves.json").exists():
            initialize_state(state / "quoting", state / "enclaves", vendor_key=vendor)
        self.service = PlatformService(parse_config("[epc]\npages = 256\n", state))
        self.service.start()
        run = state / "run"
        self.port = GrpcPlatform.unix(run / "platform.sock", run / "platform-provision.sock")
        self.device = PlatformClient.unix(run / "platform.sock")
        self.owner = PlatformClient.unix(run / "platform-owner" / "owner.sock")
        self.handles: list[bytes] = []

    @property
    def manifest(self) -> EnclaveManifest:
        return EnclaveManifest.load(self.state / "quoting", self.state / "enclaves")

    def launch(self, name: str) -> bytes:
        manifest = self.manifest
        handle, _ = launch_quoting_enclave(
            self.port, getattr(manifest, name), manifest.mrsigner
        )
        self.handles.append(handle)
        return handle

    def pce(self) -> ProvisioningCertificationEnclave:
        return ProvisioningCertificationEnclave(self.port, self.launch("pce"))

    def qe(self) -> QuotingEnclave:
        return QuotingEnclave(self.port, self.launch("qe"))

    def close(self) -> None:
        for handle in self.handles:
            destroy_quietly(self.port, handle)
        self.port.close()
        self.device.close()
        self.owner.close()
        self.service.stop(grace=1)


@pytest.fixture(scope="module")
def vendor() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture()
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxp", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def platform(state: Path, vendor: rsa.RSAPrivateKey) -> Iterator[Platform]:
    p = Platform(state, vendor)
    try:
        yield p
    finally:
        p.close()


def test_the_pck_is_stable_for_a_platform_and_tcb(platform: Platform) -> None:
    first = platform.pce()
    cpusvn = first.current_cpusvn()
    key = first.pck_public_key(cpusvn)
    assert first.pcesvn == platform.manifest.pce.isvsvn
    assert first.pce_id == PCE_ID
    second = platform.pce()  # another launch of the same PCE
    assert second.pck_public_key(cpusvn) == key


def test_the_pck_changes_with_cpusvn(platform: Platform) -> None:
    pce = platform.pce()
    old = pce.current_cpusvn()
    old_key = pce.pck_public_key(old)
    new = platform.owner.update_tcb()
    assert pce.current_cpusvn() == new != old
    assert pce.pck_public_key(new) != old_key
    # A fresh derivation for the old TCB (EGETKEY allows a lower CPUSVN) gives the old key.
    assert platform.pce().pck_public_key(old) == old_key


def test_the_pck_changes_with_pcesvn(platform: Platform) -> None:
    before = platform.pce()
    cpusvn = before.current_cpusvn()
    old_key = before.pck_public_key(cpusvn)
    deploy_enclaves(platform.state / "quoting", platform.state / "enclaves", pce_svn=5)
    after = platform.pce()
    assert after.pcesvn == 5
    assert after.pck_public_key(cpusvn) != old_key


def test_the_pck_differs_between_platforms(
    platform: Platform, vendor: rsa.RSAPrivateKey
) -> None:
    key = platform.pce().pck_public_key(platform.pce().current_cpusvn())
    with tempfile.TemporaryDirectory(prefix="sgxp", dir="/tmp") as other_dir:
        other = Platform(Path(other_dir), vendor)
        try:
            pce = other.pce()
            assert pce.identity.mrenclave == platform.manifest.pce.mrenclave
            assert pce.pck_public_key(pce.current_cpusvn()) != key
        finally:
            other.close()


def test_certify_signs_the_qe_report_body_with_the_pck(platform: Platform) -> None:
    pce, qe = platform.pce(), platform.qe()
    qe.generate_attestation_key()
    certification = pce.certify(qe.report_for_pce(pce.target_info))
    body = certification.qe_report
    assert body.mrenclave == platform.manifest.qe.mrenclave
    assert certification.cpusvn == body.cpusvn == pce.current_cpusvn()
    assert certification.pcesvn == pce.pcesvn
    assert certification.pck_public_key == pce.pck_public_key(body.cpusvn)
    public = public_key_from_raw(certification.pck_public_key)
    der = raw_rs_to_der(certification.qe_report_signature)
    public.verify(der, body.to_bytes(), ec.ECDSA(hashes.SHA256()))
    altered = bytearray(body.to_bytes())
    altered[320] ^= 1
    with pytest.raises(InvalidSignature):
        public.verify(der, bytes(altered), ec.ECDSA(hashes.SHA256()))


def test_certify_refuses_a_report_not_targeted_at_the_pce(platform: Platform) -> None:
    pce, qe = platform.pce(), platform.qe()
    qe.generate_attestation_key()
    to_itself = platform.port.create_report(platform.handles[-1], b"", bytes(64))
    with pytest.raises(CertificationError, match="does not verify"):
        pce.certify(to_itself)
    report = bytearray(qe.report_for_pce(pce.target_info))
    report[330] ^= 1  # REPORTDATA
    with pytest.raises(CertificationError, match="does not verify"):
        pce.certify(bytes(report))
    for bad in (b"", bytes(report[:-1])):
        with pytest.raises(CertificationError, match="malformed"):
            pce.certify(bad)


def test_certify_refuses_enclaves_without_provisionkey(
    platform: Platform, vendor: rsa.RSAPrivateKey
) -> None:
    pce = platform.pce()
    image = build_image(seed=5)
    (platform.state / "enclaves" / "plain.sgxs").write_bytes(write_sgxs(image))
    sig = sign_sigstruct(vendor, measure(image), isvprodid=1, isvsvn=1)  # same signer, no PK
    loaded = platform.device.load_enclave_from_file(
        platform.state / "enclaves" / "plain.sgxs", sig.to_bytes()
    )
    platform.handles.append(loaded.handle)
    report = platform.device.create_report(loaded.handle, pce.target_info.to_bytes(), bytes(64))
    with pytest.raises(CertificationError, match="PROVISIONKEY"):
        pce.certify(report)


def test_a_production_pce_refuses_a_debug_enclave(
    platform: Platform, vendor: rsa.RSAPrivateKey
) -> None:
    pce = platform.pce()
    image = build_image(seed=6)
    (platform.state / "enclaves" / "dbg.sgxs").write_bytes(write_sgxs(image))
    flags = int(AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY)
    sig = sign_sigstruct(vendor, measure(image), attributes=Attributes(flags, 3))
    loaded = platform.device.load_enclave_from_file(
        platform.state / "enclaves" / "dbg.sgxs", sig.to_bytes(), debug=True, provision_key=True
    )
    platform.handles.append(loaded.handle)
    platform.port.grant_provision_key(loaded.handle)
    platform.device.init_enclave(loaded.handle, sig.to_bytes())
    report = platform.device.create_report(loaded.handle, pce.target_info.to_bytes(), bytes(64))
    assert Report.from_bytes(report).body.attributes.debug
    with pytest.raises(CertificationError, match="debug"):
        pce.certify(report)


def test_the_quoting_enclaves_never_launch_in_debug_mode(platform: Platform) -> None:
    entry = platform.manifest.qe
    sig = entry.read_sigstruct()
    loaded = platform.device.load_enclave_from_file(
        entry.image, sig, debug=True, provision_key=True
    )
    platform.handles.append(loaded.handle)
    platform.port.grant_provision_key(loaded.handle)
    with pytest.raises(PlatformRpcError) as refused:
        platform.device.init_enclave(loaded.handle, sig)
    assert refused.value.sgx_code is not None
    assert refused.value.reason == "SGX_INVALID_ATTRIBUTE"


def test_a_launch_without_the_provision_grant_fails_and_leaks_nothing(
    platform: Platform,
) -> None:
    run = platform.state / "run"
    # The device socket does not carry GrantProvisionKey: the grant is refused.
    no_grant = GrpcPlatform.unix(run / "platform.sock", run / "platform.sock")
    try:
        manifest = platform.manifest
        with pytest.raises(EnclaveLaunchError) as failed:
            launch_quoting_enclave(no_grant, manifest.pce, manifest.mrsigner)
    finally:
        no_grant.close()
    assert failed.value.cause is not None
    assert failed.value.cause.remote_reason == "PERMISSION_DENIED"
    assert platform.device.info().enclave_count == 0
