"""The shared service runtime: listeners, health, reflection, authorization, errors, shutdown."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sgx.platform.v1 import platform_pb2, platform_pb2_grpc
from sgx_rpc.channel import tls_channel, unix_channel
from sgx_rpc.errors import abort, error_info
from sgx_rpc.server import Authorizer, ServiceHost, TlsListener, UnixListener, current_caller

METHOD = "/sgx.platform.v1.PlatformService/GetPlatformInfo"
SERVICE = "sgx.platform.v1.PlatformService"


class _InfoServicer(platform_pb2_grpc.PlatformServiceServicer):
    """A stand-in servicer: reports the caller's role in boot_epoch, fails on request."""

    fail = False

    def GetPlatformInfo(self, request, context):  # type: ignore[no-untyped-def]
        if self.fail:
            abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "the launch policy is locked until the platform is reset",
                reason="POLICY_LOCKED",
                domain="test",
                metadata={"rule": "lock"},
            )
        return platform_pb2.GetPlatformInfoResponse(boot_epoch=current_caller().role.encode())


def _cert(
    name: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture()
def pki() -> dict[str, bytes]:
    ca, ca_key = _cert("test CA", None, None, True)
    server, server_key = _cert("localhost", ca_key, ca.subject, False)
    admin, admin_key = _cert("admin", ca_key, ca.subject, False)
    other, other_key = _cert("someone", ca_key, ca.subject, False)
    return {
        "ca": _pem(ca),
        "server": _pem(server),
        "server_key": _key_pem(server_key),
        "admin": _pem(admin),
        "admin_key": _key_pem(admin_key),
        "other": _pem(other),
        "other_key": _key_pem(other_key),
    }


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sgxrpc", dir="/tmp") as d:
        yield Path(d)


def _host(servicer: _InfoServicer) -> ServiceHost:
    authorizer = Authorizer(
        domain="test",
        policy={METHOD: frozenset({"admin", "user"})},
        role_of_certificate=lambda cn: "admin" if cn == "admin" else None,
    )
    return ServiceHost(
        authorizer,
        [lambda server: platform_pb2_grpc.add_PlatformServiceServicer_to_server(servicer, server)],
        [SERVICE],
        max_workers=2,
    )


def test_unix_listeners_carry_their_role_and_mode(short_dir: Path) -> None:
    host = _host(_InfoServicer())
    host.add(UnixListener(short_dir / "dev.sock", 0o666, "user"))
    host.add(UnixListener(short_dir / "nobody.sock", 0o600, "nobody"))
    host.start()
    try:
        assert stat.S_IMODE(os.stat(short_dir / "dev.sock").st_mode) == 0o666
        assert stat.S_IMODE(os.stat(short_dir / "nobody.sock").st_mode) == 0o600
        assert not [p for p in short_dir.iterdir() if p.name.startswith(".")]
        with unix_channel(short_dir / "dev.sock") as ch:
            reply = platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                platform_pb2.GetPlatformInfoRequest(), timeout=5
            )
            assert reply.boot_epoch == b"user"
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            responses = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert SERVICE in names
        with unix_channel(short_dir / "nobody.sock") as ch:
            with pytest.raises(grpc.RpcError) as denied:
                platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                    platform_pb2.GetPlatformInfoRequest(), timeout=5
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            info = error_info(denied.value)
            assert info is not None and info.reason == "PERMISSION_DENIED"
            assert info.metadata["role"] == "nobody"
    finally:
        host.stop(grace=1)
    assert not (short_dir / "dev.sock").exists()


def test_domain_errors_carry_error_info(short_dir: Path) -> None:
    servicer = _InfoServicer()
    servicer.fail = True
    host = _host(servicer)
    host.add(UnixListener(short_dir / "dev.sock", 0o600, "user"))
    host.start()
    try:
        with unix_channel(short_dir / "dev.sock") as ch:
            with pytest.raises(grpc.RpcError) as failed:
                platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                    platform_pb2.GetPlatformInfoRequest(), timeout=5
                )
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "locked" in failed.value.details()
        info = error_info(failed.value)
        assert info is not None
        assert (info.reason, info.domain) == ("POLICY_LOCKED", "test")
        assert info.metadata["rule"] == "lock"
    finally:
        host.stop(grace=1)


def test_a_live_socket_is_not_stolen(short_dir: Path) -> None:
    first = _host(_InfoServicer())
    first.add(UnixListener(short_dir / "dev.sock", 0o600, "user"))
    first.start()
    try:
        second = _host(_InfoServicer())
        second.add(UnixListener(short_dir / "dev.sock", 0o600, "user"))
        with pytest.raises(OSError, match="another server"):
            second.start()
    finally:
        first.stop(grace=1)


def test_mtls_maps_certificates_to_roles(pki: dict[str, bytes]) -> None:
    host = _host(_InfoServicer())
    listener = TlsListener("127.0.0.1:0", pki["server"], pki["server_key"], client_ca_pem=pki["ca"])
    host.add(listener)
    address = host.start()[listener]
    try:
        with tls_channel(
            address, pki["ca"], client_certificate_pem=pki["admin"], client_key_pem=pki["admin_key"]
        ) as ch:
            reply = platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                platform_pb2.GetPlatformInfoRequest(), timeout=5
            )
            assert reply.boot_epoch == b"admin"
        with tls_channel(
            address, pki["ca"], client_certificate_pem=pki["other"], client_key_pem=pki["other_key"]
        ) as ch:
            with pytest.raises(grpc.RpcError) as denied:
                platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                    platform_pb2.GetPlatformInfoRequest(), timeout=5
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with tls_channel(address, pki["ca"]) as ch:
            with pytest.raises(grpc.RpcError) as no_cert:
                platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
                    platform_pb2.GetPlatformInfoRequest(), timeout=5
                )
            assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        host.stop(grace=1)


def test_stop_is_graceful_and_idempotent(short_dir: Path) -> None:
    host = _host(_InfoServicer())
    host.add(UnixListener(short_dir / "dev.sock", 0o600, "user"))
    host.start()
    host.stop(grace=1)
    host.stop(grace=1)
    with unix_channel(short_dir / "dev.sock") as ch, pytest.raises(grpc.RpcError) as gone:
        platform_pb2_grpc.PlatformServiceStub(ch).GetPlatformInfo(
            platform_pb2.GetPlatformInfoRequest(), timeout=2
        )
    assert gone.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# -- an authorizer from the roles of a service's RPCs ---------------------------------------------

_PLATFORM = platform_pb2.DESCRIPTOR.services_by_name["PlatformService"]


def _every_rpc_but(*names: str) -> tuple[str, ...]:
    return tuple(n for n in _PLATFORM.methods_by_name if n not in names)


def test_an_authorizer_for_a_service_gives_each_rpc_its_roles() -> None:
    authorizer = Authorizer.for_service(
        _PLATFORM,
        {"user": ("GetPlatformInfo",), "admin": _every_rpc_but()},
        domain="test",
        role_of_certificate=lambda cn: "admin" if cn == "admin" else None,
    )
    assert authorizer.policy[METHOD] == frozenset({"user", "admin"})
    assert authorizer.policy[f"/{SERVICE}/ResetPlatform"] == frozenset({"admin"})
    assert set(authorizer.policy) == {f"/{SERVICE}/{n}" for n in _PLATFORM.methods_by_name}
    assert authorizer.allows(METHOD, "user")
    assert not authorizer.allows(f"/{SERVICE}/ResetPlatform", "user")
    assert not authorizer.allows(f"/{SERVICE}/NoSuchRpc", "admin")
    assert authorizer.role_of_certificate("admin") == "admin"


def test_an_rpc_without_a_role_or_a_misspelt_rpc_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"without roles: \['ResetPlatform'\]"):
        Authorizer.for_service(
            _PLATFORM, {"admin": _every_rpc_but("ResetPlatform")}, domain="test"
        )
    with pytest.raises(AssertionError, match="no RPC 'ResetPlatfrom'"):
        Authorizer.for_service(
            _PLATFORM, {"admin": (*_every_rpc_but(), "ResetPlatfrom")}, domain="test"
        )
