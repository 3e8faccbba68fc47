"""sgx.quoting.v1.ProvisioningService served for real: Unix socket and mTLS, real channels."""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sgx.quoting.v1 import provisioning_pb2 as pb
from sgx.quoting.v1 import provisioning_pb2_grpc as pb_grpc
from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_quoting.fixtures import Fixture, fixture
from sgx_quoting.pki import derive_private_key
from sgx_quoting.rpc.provisioning import (
    ROLE_LOCAL,
    SERVICE_NAME,
    ProvisioningServicer,
    authorizer,
    register,
)
from sgx_quoting.state import PcsStore
from sgx_rpc.channel import tls_channel, unix_channel, wait_ready
from sgx_rpc.errors import error_info
from sgx_rpc.server import ServiceHost, TlsListener, UnixListener


@dataclass
class Served:
    fixture: Fixture
    store: PcsStore
    stub: pb_grpc.ProvisioningServiceStub
    channel: grpc.Channel


@pytest.fixture
def served() -> Iterator[Served]:
    f = fixture()
    with tempfile.TemporaryDirectory(prefix="pcs-", dir="/tmp") as tmp:
        store = PcsStore(Path(tmp) / "pcs")
        store.create(f.pki, f.state())
        host = ServiceHost(
            authorizer(),
            [register(ProvisioningServicer(store, system_clock=f.clock))],
            [SERVICE_NAME],
        )
        host.add(UnixListener(Path(tmp) / "pcs.sock", 0o600, ROLE_LOCAL))
        host.start()
        channel = unix_channel(Path(tmp) / "pcs.sock")
        try:
            wait_ready(channel, 10)
            yield Served(f, store, pb_grpc.ProvisioningServiceStub(channel), channel)
        finally:
            channel.close()
            host.stop(0)


def _register(s: Served) -> pb.RegisterPckResponse:
    f = s.fixture
    return s.stub.RegisterPck(
        pb.RegisterPckRequest(
            pck_public_key=public_key_to_raw(f.pck_key.public_key()),
            cpu_svn=f.tcb.cpusvn,
            pce_svn=f.tcb.pcesvn,
            pce_id=f.platform.pce_id,
        )
    )


def _verify(s: Served, quote: bytes, collateral_json: str) -> dcap_qvl.VerifiedReport:
    return dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral_json),
        s.stub.GetRootCa(pb.GetRootCaRequest()).root_ca_der,
        int(s.fixture.now.timestamp()),
    )


def test_register_select_and_collateral(served: Served) -> None:
    f = served.fixture
    registered = _register(served).chain
    expected = f.pcs().select_pck(f.tcb, pce_id=f.platform.pce_id)
    assert registered.pem_chain.encode() == expected.pem()
    assert registered.pck_certificate == expected.leaf.public_bytes(serialization.Encoding.DER)
    assert (registered.cpu_svn, registered.pce_svn) == (f.tcb.cpusvn, f.tcb.pcesvn)
    assert registered.fmspc == f.platform.fmspc
    assert registered.ca == pb.PCK_CA_PROCESSOR
    assert not registered.revoked
    selected = served.stub.GetPckCertChain(
        pb.GetPckCertChainRequest(
            cpu_svn=f.tcb.cpusvn, pce_svn=f.tcb.pcesvn + 3, pce_id=f.platform.pce_id
        )
    ).chain
    assert selected == registered
    quote = f.quote()
    by_quote = served.stub.GetCollateral(pb.GetCollateralRequest(quote=quote))
    assert by_quote.fmspc == f.platform.fmspc
    assert by_quote.ca == pb.PCK_CA_PROCESSOR
    assert _verify(served, quote, by_quote.quote_collateral_json).status == "UpToDate"
    by_fmspc = served.stub.GetCollateral(
        pb.GetCollateralRequest(fmspc=pb.FmspcTarget(fmspc=f.platform.fmspc))
    )
    assert by_fmspc == by_quote
    assert by_fmspc.tcb_info in by_fmspc.quote_collateral_json.replace('\\"', '"')
    assert served.stub.GetRootCa(pb.GetRootCaRequest()).root_ca_der == f.pki.root_ca_der


def test_changes_by_another_process_are_seen(served: Served) -> None:
    f = served.fixture
    _register(served)
    with served.store.session(system_clock=f.clock) as pcs:  # as `sgxemu pcs` would
        recovery = pcs.tcb_recovery()
    quote = f.quote()
    collateral = served.stub.GetCollateral(pb.GetCollateralRequest(quote=quote))
    report = _verify(served, quote, collateral.quote_collateral_json)
    assert (report.status, report.advisory_ids) == ("OutOfDate", [recovery.advisory_id])
    with served.store.session(system_clock=f.clock) as pcs:
        pcs.revoke_pck()
    assert _register(served).chain.revoked


def _status(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info(call)
    assert info is not None
    return call.code(), info.reason


def test_errors_carry_status_and_reason(served: Served) -> None:
    f = served.fixture
    key = public_key_to_raw(f.pck_key.public_key())
    cases = [
        (
            lambda: served.stub.RegisterPck(
                pb.RegisterPckRequest(
                    pck_public_key=key, cpu_svn=f.tcb.cpusvn, pce_svn=1, pce_id=b"\x00\x09"
                )
            ),
            (grpc.StatusCode.NOT_FOUND, "PCS_UNKNOWN_PLATFORM"),
        ),
        (
            lambda: served.stub.RegisterPck(
                pb.RegisterPckRequest(pck_public_key=key, cpu_svn=b"\x01", pce_id=bytes(2))
            ),
            (grpc.StatusCode.INVALID_ARGUMENT, "PCS_INVALID_INPUT"),
        ),
        (
            lambda: served.stub.GetPckCertChain(
                pb.GetPckCertChainRequest(cpu_svn=f.tcb.cpusvn, pce_svn=1, pce_id=bytes(2))
            ),
            (grpc.StatusCode.NOT_FOUND, "PCS_UNKNOWN_PLATFORM"),
        ),
        (
            lambda: served.stub.GetCollateral(pb.GetCollateralRequest()),
            (grpc.StatusCode.INVALID_ARGUMENT, "PCS_INVALID_INPUT"),
        ),
        (
            lambda: served.stub.GetCollateral(pb.GetCollateralRequest(quote=b"\x03\x00junk")),
            (grpc.StatusCode.INVALID_ARGUMENT, "PCS_INVALID_INPUT"),
        ),
        (
            lambda: served.stub.GetCollateral(
                pb.GetCollateralRequest(fmspc=pb.FmspcTarget(fmspc=bytes(6)))
            ),
            (grpc.StatusCode.NOT_FOUND, "PCS_UNKNOWN_PLATFORM"),
        ),
        (
            lambda: served.stub.GetCollateral(
                pb.GetCollateralRequest(fmspc=pb.FmspcTarget(fmspc=f.platform.fmspc, ca=7))
            ),
            (grpc.StatusCode.INVALID_ARGUMENT, "PCS_INVALID_INPUT"),
        ),
    ]
    for call, expected in cases:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert _status(raised.value) == expected  # type: ignore[arg-type]


def test_broken_state_is_failed_precondition(served: Served) -> None:
    (served.store.directory / "pcs.json").write_text("{}")
    with pytest.raises(grpc.RpcError) as raised:
        served.stub.GetCollateral(pb.GetCollateralRequest(quote=served.fixture.quote()))
    assert _status(raised.value) == (grpc.StatusCode.FAILED_PRECONDITION, "PCS_STATE")  # type: ignore[arg-type]


def test_health_serving(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    response = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# -- mTLS: the certificate decides who may register -------------------------------------------


def _issue(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = derive_private_key(b"test-provisioning-rpc-tls", name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_mtls_roles(tmp_path: Path) -> None:
    f = fixture()
    store = PcsStore(tmp_path / "pcs")
    store.create(f.pki, f.state())
    ca = _issue("test service CA", None)
    server = _issue("sgxemu-pcs", ca)
    host = ServiceHost(
        authorizer(), [register(ProvisioningServicer(store, system_clock=f.clock))], [SERVICE_NAME]
    )
    listener = TlsListener(
        "127.0.0.1:0", _pem(server[0]), _key_pem(server[1]), client_ca_pem=_pem(ca[0])
    )
    host.add(listener)
    address = host.start()[listener]
    try:
        request = pb.RegisterPckRequest(
            pck_public_key=public_key_to_raw(f.pck_key.public_key()),
            cpu_svn=f.tcb.cpusvn,
            pce_svn=f.tcb.pcesvn,
            pce_id=f.platform.pce_id,
        )
        for name, may_register in (("sgxemu-quoting", True), ("some-verifier", False)):
            client = _issue(name, ca)
            channel = tls_channel(
                address,
                _pem(ca[0]),
                client_certificate_pem=_pem(client[0]),
                client_key_pem=_key_pem(client[1]),
            )
            with channel:
                stub = pb_grpc.ProvisioningServiceStub(channel)
                assert stub.GetRootCa(pb.GetRootCaRequest()).root_ca_der == f.pki.root_ca_der
                if may_register:
                    assert stub.RegisterPck(request).chain.pce_svn == f.tcb.pcesvn
                else:
                    with pytest.raises(grpc.RpcError) as raised:
                        stub.RegisterPck(request)
                    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        host.stop(0)
