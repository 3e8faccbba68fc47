"""The optional TCP listener: mTLS with the local service CA, certificates mapped to roles."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService, initialize_state
from sgx_rpc.channel import tls_channel
from sgxemu_cli.service_pki import create_service_pki


@pytest.fixture()
def served() -> Iterator[tuple[PlatformService, Path]]:
    state = Path(tempfile.mkdtemp(prefix="sgxs", dir="/tmp"))
    try:
        (state / "tls").mkdir(mode=0o700)
        create_service_pki(state / "tls", ("platform", "quoting", "launchctl"))
        initialize_state(state / "platform")
        service = PlatformService(parse_config('[tcp]\naddress = "127.0.0.1:0"\n', state),
                                  max_workers=4)
        service.start()
        try:
            yield service, state / "tls"
        finally:
            service.stop(grace=1)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _issue_client(tls: Path, common_name: str) -> str:
    """A client certificate from the local service CA (the CA's service certificates are for
    servers only, so a service acting as a client needs one like this)."""
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    name = f"client-{common_name}"
    (tls / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return name


def _client(address: str, tls: Path, identity: str | None) -> PlatformClient:
    cert = key = None
    if identity is not None:
        cert = (tls / f"{identity}.pem").read_bytes()
        key = (tls / f"{identity}.key").read_bytes()
    channel = tls_channel(address, (tls / "ca.pem").read_bytes(), client_certificate_pem=cert,
                          client_key_pem=key, server_name="localhost")
    return PlatformClient(channel, timeout=10)


def test_mtls_roles(served: tuple[PlatformService, Path]) -> None:
    service, tls = served
    address = service.addresses["tcp"]
    with _client(address, tls, "admin") as admin:
        assert admin.info().epc_pages_total > 0
        assert len(admin.update_tcb()) == 16, "the admin certificate may make owner calls"
    with _client(address, tls, _issue_client(tls, "sgxemu-quoting")) as quoting:
        quoting.info()
        with pytest.raises(PlatformRpcError) as denied:
            quoting.reset()
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PlatformRpcError) as not_found:
            quoting.grant_provision_key(b"x")  # allowed to ask; the handle is unknown
        assert not_found.value.reason == "UNKNOWN_HANDLE"
    with _client(address, tls, _issue_client(tls, "sgxemu-launchctl")) as launchctl:
        with pytest.raises(PlatformRpcError) as denied:
            launchctl.grant_provision_key(b"x")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        launchctl.latch_launch_policy(b"\x01" * 32)
    with _client(address, tls, _issue_client(tls, "someone-else")) as other:
        other.info()
        with pytest.raises(PlatformRpcError) as denied:
            other.latch_launch_policy(b"\x02" * 32)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with _client(address, tls, None) as anonymous, pytest.raises(PlatformRpcError) as refused:
        anonymous.info()
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE, "no client certificate, no TLS"
