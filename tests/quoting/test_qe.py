"""The QE: its sealed attestation key, its REPORT checks and its identity, on a real platform."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform
from sgx_quoting.enclave_errors import (
    AttestationKeyError,
    MalformedReportError,
    PlatformCallError,
    ReportMacMismatchError,
)
from sgx_quoting.enclaves import EnclaveManifest, deploy_enclaves, initialize_state
from sgx_quoting.engine import destroy_quietly, launch_quoting_enclave
from sgx_quoting.pce import ProvisioningCertificationEnclave
from sgx_quoting.qe import SEALED_KEY_LABEL, QuotingEnclave, sealed_at
from sgx_quoting.rpc.platform_client import GrpcPlatform


class Platform:
    def __init__(self, state: Path, vendor: rsa.RSAPrivateKey) -> None:
        self.state = state
        initialize_platform(state / "platform")
        (state / "enclaves").mkdir(mode=0o755)
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
        handle, _ = launch_quoting_enclave(self.port, getattr(manifest, name), manifest.mrsigner)
        self.handles.append(handle)
        return handle

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
def platform(vendor: rsa.RSAPrivateKey) -> Iterator[Platform]:
    state = Path(tempfile.mkdtemp(prefix="sgxe", dir="/tmp"))
    p = Platform(state, vendor)
    try:
        yield p
    finally:
        p.close()
        shutil.rmtree(state, ignore_errors=True)


# -- the sealed attestation key --------------------------------------------------------------------


def test_sealed_at_rejects_short_and_malformed_blobs() -> None:
    request = KeyRequest(keyname=4, keypolicy=2, isvsvn=3, cpusvn=bytes([1] * 16))
    assert sealed_at(request.to_bytes() + b"payload") == request
    with pytest.raises(AttestationKeyError, match="shorter"):
        sealed_at(request.to_bytes()[:-1])
    bad = bytearray(request.to_bytes())
    bad[100] = 1  # reserved @78
    with pytest.raises(AttestationKeyError, match="malformed"):
        sealed_at(bytes(bad))


def test_a_new_qe_launch_opens_the_sealed_key(platform: Platform) -> None:
    qe = platform.qe()
    with pytest.raises(AttestationKeyError):
        _ = qe.attestation_public_key
    sealed = qe.generate_attestation_key()
    request = sealed_at(sealed)
    assert request.keypolicy == 2  # MRSIGNER
    assert request.isvsvn == qe.qe_svn
    assert not qe.needs_reseal(sealed)
    again = platform.qe()
    again.restore_attestation_key(sealed)
    assert again.attestation_public_key == qe.attestation_public_key


def test_a_tcb_update_asks_for_a_reseal(platform: Platform) -> None:
    qe = platform.qe()
    sealed = qe.generate_attestation_key()
    new = platform.owner.update_tcb()
    assert qe.needs_reseal(sealed)
    resealed = qe.seal_attestation_key()
    assert sealed_at(resealed).cpusvn == new
    assert not qe.needs_reseal(resealed)
    other = platform.qe()
    other.restore_attestation_key(sealed)  # the old blob still opens (lower CPUSVN)
    assert other.attestation_public_key == qe.attestation_public_key


def test_a_newer_qe_opens_the_key_and_an_older_one_cannot_open_its_reseal(
    platform: Platform,
) -> None:
    old_entry = platform.manifest.qe
    old = platform.qe()
    sealed = old.generate_attestation_key()
    deploy_enclaves(platform.state / "quoting", platform.state / "enclaves", qe_svn=2)
    new = platform.qe()
    assert new.qe_svn == 2
    new.restore_attestation_key(sealed)
    assert new.needs_reseal(sealed)
    resealed = new.seal_attestation_key()
    assert sealed_at(resealed).isvsvn == 2
    # The QE at SVN 1 (its SIGSTRUCT is still on disk) cannot open what SVN 2 sealed.
    old_again = QuotingEnclave(
        platform.port,
        launch_quoting_enclave(platform.port, old_entry, platform.manifest.mrsigner)[0],
    )
    with pytest.raises(PlatformCallError) as refused:
        old_again.restore_attestation_key(resealed)
    assert refused.value.remote_reason == "SGX_INVALID_ISVSVN"


def test_blobs_that_are_not_this_qes_attestation_key_are_refused(
    platform: Platform,
) -> None:
    qe = platform.qe()
    handle = platform.handles[-1]
    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    scalar = key_a.private_numbers().private_value.to_bytes(32, "big")
    label_b = SEALED_KEY_LABEL + public_key_to_raw(key_b.public_key())
    for plaintext, additional, message in (
        (scalar, b"another label", "not a QE attestation key"),
        (scalar[:31], SEALED_KEY_LABEL + public_key_to_raw(key_a.public_key()), "not a QE"),
        (scalar, label_b, "does not match"),
        (bytes(32), SEALED_KEY_LABEL + bytes(64), "invalid"),
    ):
        blob = platform.port.seal_to_signer(handle, plaintext, additional)
        with pytest.raises(AttestationKeyError, match=message):
            qe.restore_attestation_key(blob)
    # A blob sealed by the PCE (same signer, another product) does not open in the QE.
    pce = ProvisioningCertificationEnclave(platform.port, platform.launch("pce"))
    assert pce.identity.isvprodid != qe.identity.isvprodid
    blob = platform.port.seal_to_signer(
        platform.handles[-1], scalar, SEALED_KEY_LABEL + public_key_to_raw(key_a.public_key())
    )
    with pytest.raises(PlatformCallError) as refused:
        qe.restore_attestation_key(blob)
    assert refused.value.remote_reason == "UNSEAL_FAILED"
    # Altered bytes do not open.
    good = bytearray(qe.generate_attestation_key())
    good[-1] ^= 1
    with pytest.raises(PlatformCallError):
        qe.restore_attestation_key(bytes(good))


# -- REPORT checks and identity --------------------------------------------------------------------


def test_verify_report(platform: Platform, vendor: rsa.RSAPrivateKey) -> None:
    qe = platform.qe()
    image = build_image(seed=9)
    (platform.state / "enclaves" / "app.sgxs").write_bytes(write_sgxs(image))
    sig = sign_sigstruct(vendor, measure(image), isvprodid=4, isvsvn=1)
    app = platform.device.load_enclave_from_file(
        platform.state / "enclaves" / "app.sgxs", sig.to_bytes()
    )
    platform.handles.append(app.handle)
    report = platform.device.create_report(app.handle, qe.target_info.to_bytes(), bytes(64))
    assert qe.verify_report(report) == Report.from_bytes(report)
    with pytest.raises(ReportMacMismatchError):
        qe.verify_report(platform.device.create_report(app.handle, b"", bytes(64)))
    for bad in (report[:-1], report + b"\x00"):
        with pytest.raises(MalformedReportError):
            qe.verify_report(bad)
    assert issubclass(MalformedReportError, ValueError)
    assert not issubclass(MalformedReportError, MalformedStructureError)


def test_the_qe_id_is_stable_across_launches_and_tcb_updates(platform: Platform) -> None:
    qe_id = platform.qe().qe_id
    assert len(qe_id) == 16
    assert platform.qe().qe_id == qe_id
    platform.owner.update_tcb()
    assert platform.qe().qe_id == qe_id
