"""The quoting service for real: platform, PCS and QuotingService in-process on Unix sockets.

An application enclave is loaded through the platform, makes a REPORT for the QE's TARGETINFO,
gets a quote over gRPC, and dcap-qvl (an independent verifier) judges it with the PCS's
collateral under the emulator's root CA. The scenarios of the PCS (TCB recovery, revocation,
expiry) and of the platform (TCB update, reset, restart) must show in its verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sgx.quoting.v1 import quoting_pb2 as qpb
from sgx.quoting.v1 import quoting_pb2_grpc as qgrpc
from sgx_platform.arch.dcap.pck import sgx_extension_from_certificate
from sgx_platform.arch.dcap.quote import (
    INTEL_QE_VENDOR_ID,
    PckCertChainCertificationData,
    Quote,
)
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report, TargetInfo
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import EnclaveSession, PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform
from sgx_quoting.config import QuotingConfig
from sgx_quoting.enclaves import EnclaveManifest, deploy_enclaves, initialize_state
from sgx_quoting.service import QuotingServer
from sgx_quoting.state import PcsStore, create_pcs
from sgx_rpc.channel import unix_channel
from sgx_rpc.errors import error_info

S = grpc.StatusCode
APP_ISVPRODID = 7
APP_ISVSVN = 3
#: Short leases, so that the lease renewal's recovery shows within a test.
LEASE_SECONDS = 3


@dataclass(frozen=True)
class App:
    """An application enclave loaded on the platform."""

    handle: bytes
    mrenclave: bytes
    mrsigner: bytes


class World:
    """A state directory with a platform, a PCS, the quoting enclaves and an application."""

    def __init__(self, state: Path, keys: Keys) -> None:
        self.state = state
        initialize_platform(state / "platform")
        (state / "enclaves").mkdir(mode=0o755)
        self.manifest = initialize_state(
            state / "quoting", state / "enclaves", vendor_key=keys.vendor
        )
        create_pcs(
            state / "pcs",
            qe_mrsigner=self.manifest.mrsigner.value,
            qe_isvsvn=self.manifest.qe.isvsvn,
            qe_isvprodid=self.manifest.qe.isvprodid,
        )
        self.pcs_store = PcsStore(state / "pcs")
        image = build_image(code_pages=1, data_pages=1, seed=77)
        (state / "enclaves" / "app.sgxs").write_bytes(write_sgxs(image))
        self.app_sigstruct = sign_sigstruct(
            keys.app, measure(image), isvprodid=APP_ISVPRODID, isvsvn=APP_ISVSVN
        ).to_bytes()
        self.app_mrsigner = mrsigner_of_public_key(keys.app).value
        self.sessions: list[EnclaveSession] = []
        self.platform: PlatformService | None = None
        self.quoting: QuotingServer | None = None
        self.start_platform()
        self.start_quoting()
        self.channel = unix_channel(state / "run" / "quoting.sock")
        self.stub = qgrpc.QuotingServiceStub(self.channel)

    def start_platform(self) -> None:
        config = parse_config(f"lease_seconds = {LEASE_SECONDS}\n[epc]\npages = 512\n", self.state)
        self.platform = PlatformService(config, max_workers=8)
        self.platform.start()
        # New clients: a channel that saw the platform go away backs off before reconnecting.
        self.device = PlatformClient.unix(self.state / "run" / "platform.sock", timeout=30)
        self.owner = PlatformClient.unix(
            self.state / "run" / "platform-owner" / "owner.sock", timeout=30
        )

    def stop_platform(self) -> None:
        assert self.platform is not None
        self._end_sessions()
        self.device.close()
        self.owner.close()
        self.platform.stop(grace=1)
        self.platform = None

    def start_quoting(self) -> None:
        self.quoting = QuotingServer(QuotingConfig.defaults(self.state), max_workers=4)
        self.quoting.start()

    def stop_quoting(self) -> None:
        assert self.quoting is not None
        self.quoting.stop(grace=1)
        self.quoting = None

    def _end_sessions(self) -> None:
        for session in self.sessions:
            session.close(destroy=False)
        self.sessions.clear()

    def close(self) -> None:
        self._end_sessions()
        self.channel.close()
        if self.quoting is not None:
            self.stop_quoting()
        if self.platform is not None:
            self.stop_platform()

    # -- the application ---------------------------------------------------------------------

    def load_app(self, *, debug: bool = False) -> App:
        loaded = self.device.load_enclave_from_file(
            self.state / "enclaves" / "app.sgxs", self.app_sigstruct, debug=debug
        )
        assert loaded.mrenclave is not None and loaded.mrsigner is not None
        self.sessions.append(
            EnclaveSession(self.device, loaded.handle, loaded.enclave_id, loaded.lease_seconds)
        )
        return App(loaded.handle, loaded.mrenclave.value, loaded.mrsigner.value)

    def target_info(self) -> bytes:
        return self.stub.GetTargetInfo(qpb.GetTargetInfoRequest(), timeout=30).target_info

    def report(self, app: App, report_data: bytes, target_info: bytes | None = None) -> bytes:
        ti = self.target_info() if target_info is None else target_info
        return self.device.create_report(app.handle, ti, report_data)

    def quote(self, report: bytes) -> bytes:
        return self.stub.GetQuote(qpb.GetQuoteRequest(report=report), timeout=30).quote

    # -- the PCS and dcap-qvl ----------------------------------------------------------------

    def collateral(self, quote: bytes) -> str:
        with self.pcs_store.session() as pcs:
            return pcs.collateral_for_quote(quote).to_json()

    def root_ca(self) -> bytes:
        return self.pcs_store.load_pki().root_ca_der

    def verify(self, quote: bytes, *, at: dt.datetime | None = None) -> dcap_qvl.VerifiedReport:
        # The collateral first: the PCS stamps it with its clock, and a "now" taken before it
        # could be a second earlier than its issueDate ("TCBInfo issue date is in the future").
        collateral = dcap_qvl.QuoteCollateralV3.from_json(self.collateral(quote))
        when = int((at or dt.datetime.now(dt.UTC)).timestamp())
        return dcap_qvl.verify_with_root_ca(quote, collateral, self.root_ca(), when)


@dataclass(frozen=True)
class Keys:
    vendor: rsa.RSAPrivateKey
    app: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(generate_signing_key(), generate_signing_key())


@pytest.fixture()
def world(keys: Keys) -> Iterator[World]:
    state = Path(tempfile.mkdtemp(prefix="sgxq", dir="/tmp"))
    w = World(state, keys)
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(state, ignore_errors=True)


def _parse(quote: bytes) -> Quote:
    return Quote.from_bytes(quote)


def _pck_leaf(quote: Quote) -> x509.Certificate:
    data = quote.certification_data
    assert isinstance(data, PckCertChainCertificationData)
    return data.certificates()[0]


def _user_data(tag: bytes) -> bytes:
    return hashlib.sha256(tag).digest() + b"app half".ljust(32, b"\x00")


# -- the fresh quote ---------------------------------------------------------------------------


def test_a_fresh_quote_is_up_to_date_and_carries_the_enclave(world: World) -> None:
    app = world.load_app()
    report_data = _user_data(b"nonce || user data")
    quote_bytes = world.quote(world.report(app, report_data))

    verdict = world.verify(quote_bytes)
    assert verdict.status == "UpToDate"
    assert verdict.advisory_ids == []

    quote = _parse(quote_bytes)
    body = quote.isv_report
    assert body.mrenclave.value == app.mrenclave
    assert body.mrsigner.value == app.mrsigner == world.app_mrsigner
    assert (body.isvprodid, body.isvsvn) == (APP_ISVPRODID, APP_ISVSVN)
    assert body.report_data == report_data
    assert not body.attributes.debug
    # The header as Intel's QE3 writes it.
    assert quote.version == 3
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert quote.header.qe_svn == world.manifest.qe.isvsvn
    assert quote.header.pce_svn == world.manifest.pce.isvsvn
    assert quote.header.user_data[16:] == bytes(4)
    # The QE report: the vendor's production QE, certified for this attestation key.
    qe = quote.qe_report
    assert qe.mrsigner == world.manifest.mrsigner
    assert qe.mrenclave == world.manifest.qe.mrenclave
    assert qe.isvprodid == 1 and not qe.attributes.debug
    assert qe.report_data[:32] == hashlib.sha256(
        quote.signature_data.attestation_public_key + quote.qe_auth_data
    ).digest()
    # Certification data type 5: the PCK chain, leaf first, for the platform's TCB.
    data = quote.certification_data
    assert isinstance(data, PckCertChainCertificationData)
    assert data.certificates() == data.ordered_chain()
    extension = sgx_extension_from_certificate(_pck_leaf(quote))
    assert extension.tcb.cpusvn == body.cpusvn == qe.cpusvn
    assert extension.tcb.pcesvn == world.manifest.pce.isvsvn


def test_quoting_info_and_target_info_name_the_launched_qe(world: World) -> None:
    info = world.stub.GetQuotingInfo(qpb.GetQuotingInfoRequest(), timeout=30)
    manifest = EnclaveManifest.load(world.state / "quoting", world.state / "enclaves")
    assert info.qe_mrenclave == manifest.qe.mrenclave.value
    assert info.qe_mrsigner == info.pce_mrsigner == manifest.mrsigner.value
    assert (info.qe_isvprodid, info.qe_svn) == (1, manifest.qe.isvsvn)
    assert (info.pce_isvprodid, info.pce_svn) == (manifest.pce.isvprodid, manifest.pce.isvsvn)
    assert info.pce_id == bytes(2)
    assert len(info.attestation_public_key) == 64
    target = TargetInfo.from_bytes(world.target_info())
    assert target.measurement == manifest.qe.mrenclave
    assert not target.attributes.debug


def test_health_and_reflection(world: World) -> None:
    service = "sgx.quoting.v1.QuotingService"
    health = health_pb2_grpc.HealthStub(world.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(world.channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert service in names


# -- refusals ----------------------------------------------------------------------------------


def _refused(world: World, report: bytes) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as refused:
        world.quote(report)
    info = error_info(refused.value)
    assert info is not None
    return refused.value.code(), info.reason, refused.value.details() or ""


def test_a_report_targeted_elsewhere_is_refused(world: World) -> None:
    app = world.load_app()
    to_itself = world.device.create_report(app.handle, b"", bytes(64))
    code, reason, message = _refused(world, to_itself)
    assert (code, reason) == (S.INVALID_ARGUMENT, "REPORT_MAC_MISMATCH")
    assert "targeted at another enclave" in message
    # A TARGETINFO of the QE's MRENCLAVE but other attributes is another enclave too.
    target = TargetInfo.from_bytes(world.target_info())
    other = TargetInfo(target.measurement, type(target.attributes)(0x5, 0x3)).to_bytes()
    code, reason, _ = _refused(world, world.report(app, bytes(64), other))
    assert (code, reason) == (S.INVALID_ARGUMENT, "REPORT_MAC_MISMATCH")
    assert world.quoting is not None
    assert world.quoting.metrics.value(
        "sgxemu_quoting_refusals_total", {"reason": "REPORT_MAC_MISMATCH"}
    ) == 2


def test_an_altered_report_is_refused(world: World) -> None:
    app = world.load_app()
    genuine = world.report(app, _user_data(b"x"))
    fields = {"CPUSVN": 0, "ATTRIBUTES": 48, "MRENCLAVE": 64, "MRSIGNER": 128, "ISVSVN": 258,
              "REPORTDATA": 320, "KEYID": 384, "MAC": 416}
    for what, offset in fields.items():
        report = bytearray(genuine)
        report[offset] ^= 0x01
        code, reason, _ = _refused(world, bytes(report))
        assert (code, reason) == (S.INVALID_ARGUMENT, "REPORT_MAC_MISMATCH"), what
    assert world.verify(world.quote(genuine)).status == "UpToDate"


def test_malformed_reports_are_refused(world: World) -> None:
    app = world.load_app()
    report = world.report(app, bytes(64))
    reserved = bytearray(report)
    reserved[100] = 1  # REPORTBODY reserved @96
    for bad in (b"", report[:-1], report + b"\x00", bytes(reserved)):
        code, reason, _ = _refused(world, bad)
        assert (code, reason) == (S.INVALID_ARGUMENT, "REPORT_MALFORMED")
    # The service still quotes afterwards.
    assert world.verify(world.quote(report)).status == "UpToDate"


def test_a_debug_enclave_is_quoted_and_the_verifier_rejects_it(world: World) -> None:
    app = world.load_app(debug=True)
    quote = world.quote(world.report(app, bytes(64)))
    assert _parse(quote).isv_report.attributes.debug
    with pytest.raises(ValueError, match=r"(?i)debug"):
        world.verify(quote)


# -- PCS scenarios -----------------------------------------------------------------------------


def test_tcb_recovery_then_platform_tcb_update(world: World) -> None:
    app = world.load_app()
    before = world.quote(world.report(app, bytes(64)))
    key_before = _parse(before).signature_data.attestation_public_key
    with world.pcs_store.session() as pcs:
        recovery = pcs.tcb_recovery()

    verdict = world.verify(world.quote(world.report(app, bytes(64))))
    assert verdict.status == "OutOfDate"
    assert verdict.advisory_ids == [recovery.advisory_id]

    old_cpusvn = _parse(before).isv_report.cpusvn
    stale = world.report(app, bytes(64))
    new_cpusvn = world.owner.update_tcb()
    assert new_cpusvn != old_cpusvn
    # A REPORT from before the update no longer verifies with the QE's (new) report key.
    assert Report.from_bytes(stale).body.cpusvn == old_cpusvn
    code, reason, _ = _refused(world, stale)
    assert (code, reason) == (S.INVALID_ARGUMENT, "REPORT_MAC_MISMATCH")

    after = _parse(world.quote(world.report(app, bytes(64))))
    assert after.isv_report.cpusvn == new_cpusvn == after.qe_report.cpusvn
    assert sgx_extension_from_certificate(_pck_leaf(after)).tcb.cpusvn == new_cpusvn
    verdict = world.verify(after.to_bytes())
    assert verdict.status == "UpToDate"
    assert verdict.advisory_ids == []
    # Same attestation key, sealed again at the new TCB.
    assert after.signature_data.attestation_public_key == key_before
    sealed = (world.state / "quoting" / "attestation-key.sealed").read_bytes()
    assert KeyRequest.from_bytes(sealed[:512]).cpusvn == new_cpusvn


def test_revoked_pck_is_rejected(world: World) -> None:
    app = world.load_app()
    quote = world.quote(world.report(app, bytes(64)))
    with world.pcs_store.session() as pcs:
        assert pcs.revoke_pck()
    with pytest.raises(ValueError, match="Revoked"):
        world.verify(quote)
    # A new quote carries the same (revoked) PCK certificate: still rejected.
    with pytest.raises(ValueError, match="Revoked"):
        world.verify(world.quote(world.report(app, bytes(64))))


#: dcap-qvl's names for expired collateral (TCB Info, QE Identity, a CRL, the collateral).
EXPIRED = (r"TCBInfo expired|QE Identity expired|CrlExpired|Collateral expired"
           r"|revocation list expired")


def test_collateral_past_next_update_is_rejected_as_expired(world: World) -> None:
    app = world.load_app()
    quote = world.quote(world.report(app, bytes(64)))
    with world.pcs_store.session() as pcs:
        next_update = pcs.collateral_for_quote(quote).signed_tcb_info.tcb_info.next_update
    assert world.verify(quote, at=next_update - dt.timedelta(seconds=1)).status == "UpToDate"
    # The PCS clock runs here: when a second ticks between issuing the TCB Info and the CRLs,
    # a CRL's nextUpdate is one second later and dcap-qvl reports "CrlExpired" first, which
    # is the same verdict (expired collateral) under another of dcap-qvl's names.
    with pytest.raises(ValueError, match=EXPIRED):
        world.verify(quote, at=next_update + dt.timedelta(seconds=1))
    # The PCS clock set back 31 days: what it issues "now" expired a day ago.
    with world.pcs_store.session() as pcs:
        pcs.set_clock(offset_seconds=-31 * 24 * 3600)
    with pytest.raises(ValueError, match=EXPIRED):
        world.verify(quote)


# -- restarts and resets -------------------------------------------------------------------------


def test_the_attestation_key_survives_a_quoting_restart(world: World) -> None:
    app = world.load_app()
    first = _parse(world.quote(world.report(app, bytes(64))))
    sealed = (world.state / "quoting" / "attestation-key.sealed").read_bytes()
    world.stop_quoting()
    world.start_quoting()
    second = _parse(world.quote(world.report(app, bytes(64))))
    assert (
        second.signature_data.attestation_public_key
        == first.signature_data.attestation_public_key
    )
    assert (world.state / "quoting" / "attestation-key.sealed").read_bytes() == sealed
    assert world.verify(second.to_bytes()).status == "UpToDate"


def test_a_platform_reset_relaunches_the_quoting_enclaves(world: World) -> None:
    assert world.quoting is not None
    key = world.stub.GetQuotingInfo(qpb.GetQuotingInfoRequest(), timeout=30).attestation_public_key
    world.owner.reset()
    app = world.load_app()  # the old application enclave is gone too
    quote = _parse(world.quote(world.report(app, bytes(64))))
    assert quote.signature_data.attestation_public_key == key
    assert world.verify(quote.to_bytes()).status == "UpToDate"
    assert world.quoting.metrics.value("sgxemu_quoting_enclave_launches_total") == 2


def test_a_platform_restart_relaunches_the_quoting_enclaves(world: World) -> None:
    assert world.quoting is not None
    world.stop_platform()
    world.start_platform()
    app = world.load_app()
    quote = world.quote(world.report(app, bytes(64)))
    assert world.verify(quote).status == "UpToDate"
    assert world.quoting.metrics.value("sgxemu_quoting_enclave_launches_total") == 2


def test_the_lease_renewal_relaunches_after_a_reset_without_a_request(world: World) -> None:
    assert world.quoting is not None
    world.owner.reset()
    metrics = world.quoting.metrics
    deadline = time.monotonic() + 60
    while metrics.value("sgxemu_quoting_enclave_launches_total") < 2:
        assert time.monotonic() < deadline, "the enclaves were not launched again"
        time.sleep(0.2)


# -- the attestation key when its sealed copy is lost ---------------------------------------------


def _attestation_key(world: World) -> bytes:
    return world.stub.GetQuotingInfo(qpb.GetQuotingInfoRequest(), timeout=30).attestation_public_key


@pytest.mark.parametrize("damage", ["junk", "flipped byte", "owner epoch"])
def test_an_unopenable_sealed_key_is_replaced_by_a_new_one(world: World, damage: str) -> None:
    before = _attestation_key(world)
    path = world.state / "quoting" / "attestation-key.sealed"
    world.stop_quoting()
    if damage == "junk":
        path.write_bytes(b"not sealed data")
    elif damage == "flipped byte":
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 1
        path.write_bytes(bytes(blob))
    else:
        world.owner.set_owner_epoch(b"\x01" * 16)  # the old seal key is gone for good
    world.start_quoting()
    after = _attestation_key(world)
    assert after != before
    app = world.load_app()
    quote = _parse(world.quote(world.report(app, bytes(64))))
    assert quote.signature_data.attestation_public_key == after
    assert world.verify(quote.to_bytes()).status == "UpToDate"
    # The new key is sealed in place of the old one and survives the next restart.
    world.stop_quoting()
    world.start_quoting()
    assert _attestation_key(world) == after


def test_the_quoting_service_needs_the_platform_only_through_its_sockets(world: World) -> None:
    """With the platform down, quoting answers UNAVAILABLE; once it is back, it carries on."""
    report = world.report(world.load_app(), bytes(64))
    world.stop_platform()
    with pytest.raises(grpc.RpcError) as down:
        world.quote(report)
    assert down.value.code() == S.UNAVAILABLE
    info = error_info(down.value)
    assert info is not None and info.reason == "QUOTING_UNAVAILABLE"
    world.start_platform()
    app = world.load_app()
    assert world.verify(world.quote(world.report(app, bytes(64)))).status == "UpToDate"


def test_an_update_with_new_pce_and_qe_svns(world: World) -> None:
    """``platform update-tcb`` with PCE/QE images re-signed at higher ISVSVNs: the next quote
    comes from the new enclaves, with a PCK for the new PCESVN and the same attestation key."""
    app = world.load_app()
    before = _parse(world.quote(world.report(app, bytes(64))))
    deploy_enclaves(world.state / "quoting", world.state / "enclaves", pce_svn=4, qe_svn=3)
    new_cpusvn = world.owner.update_tcb()
    after = _parse(world.quote(world.report(app, bytes(64))))
    assert (after.header.pce_svn, after.header.qe_svn) == (4, 3)
    assert after.qe_report.isvsvn == 3
    tcb = sgx_extension_from_certificate(_pck_leaf(after)).tcb
    assert (tcb.cpusvn, tcb.pcesvn) == (new_cpusvn, 4)
    assert (
        after.signature_data.attestation_public_key
        == before.signature_data.attestation_public_key
    )
    sealed = (world.state / "quoting" / "attestation-key.sealed").read_bytes()
    assert KeyRequest.from_bytes(sealed[:512]).isvsvn == 3
    verdict = world.verify(after.to_bytes())
    assert verdict.status == "UpToDate"


def test_enclaves_launched_at_a_later_request_are_kept_alive(world: World) -> None:
    """The quoting service started while the platform was down: the first request launches
    the enclaves, and their leases are renewed from then on."""
    world.stop_quoting()
    world.stop_platform()
    world.start_quoting()  # the platform does not answer: serving anyway
    world.start_platform()
    app = world.load_app()
    report = world.report(app, bytes(64))
    assert world.quoting is not None
    assert world.quoting.metrics.value("sgxemu_quoting_enclave_launches_total") == 1
    time.sleep(LEASE_SECONDS * 1.5)  # past one lease period: renewed, not re-launched
    assert world.verify(world.quote(report)).status == "UpToDate"
    assert world.quoting.metrics.value("sgxemu_quoting_enclave_launches_total") == 1
