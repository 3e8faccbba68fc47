"""The authorization matrix: every LaunchControlService call from every kind of caller.

Callers: the admin certificate over mTLS, another service's certificate, a TCP client without
a certificate, an ordinary local user (uid 65534, a subprocess that drops privileges) on each
socket, and root on the public, authority and admin sockets (root ignores file modes, so the
socket a call arrives on is what grants the role). Expected: changes only for the admin role,
tokens only for the platform role, reads for everyone who can connect; a user who cannot
connect (private directories, TLS without a certificate) gets nothing at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest

from sgx.launchctl.v1 import launchctl_pb2 as pb
from sgx.launchctl.v1 import launchctl_pb2_grpc as pb_grpc
from sgx_rpc.channel import tls_channel, unix_channel
from sgx_rpc.errors import error_info
from sgxemu_cli.service_pki import create_service_pki

METHODS = sorted(pb.DESCRIPTOR.services_by_name["LaunchControlService"].methods_by_name)
READS = {"ListSigners", "GetStatus", "GetAuditLog", "GetLoadPolicy"}
CHANGES = {"AddSigner", "RemoveSigner", "LockPolicy", "AllowImageDirectory",
           "AllowImageDigest", "SetLoadRule"}
TOKENS = {"GetLaunchToken"}
NOBODY = 65534

# The same request builder runs in-process and in the unprivileged subprocess.
_CALLS = textwrap.dedent(
    """
    import grpc
    from sgx.launchctl.v1 import launchctl_pb2 as pb
    from sgx.launchctl.v1 import launchctl_pb2_grpc as pb_grpc

    def requests():
        return {
            "AddSigner": pb.AddSignerRequest(signer=pb.SignerEntry(mrsigner=b"\\x42" * 32)),
            "RemoveSigner": pb.RemoveSignerRequest(mrsigner=b"\\x43" * 32),
            "AllowImageDirectory": pb.AllowImageDirectoryRequest(directory="/opt/images"),
            "AllowImageDigest": pb.AllowImageDigestRequest(sha256=b"\\x44" * 32),
            "SetLoadRule": pb.SetLoadRuleRequest(rule="no_write_exec", enabled=True),
            "GetLaunchToken": pb.GetLaunchTokenRequest(sigstruct=b"x", secs=b"y"),
            "ListSigners": pb.ListSignersRequest(),
            "GetStatus": pb.GetStatusRequest(),
            "GetAuditLog": pb.GetAuditLogRequest(limit=5, verify=True),
            "GetLoadPolicy": pb.GetLoadPolicyRequest(),
            "LockPolicy": pb.LockPolicyRequest(),
        }

    def call_all(channel, methods):
        stub = pb_grpc.LaunchControlServiceStub(channel)
        built = requests()
        results = {}
        for name in methods:  # LockPolicy last: it refuses every later change
            try:
                getattr(stub, name)(built[name], timeout=5)
                results[name] = "OK"
            except grpc.RpcError as e:
                results[name] = e.code().name
        return results
    """
)
_namespace: dict[str, Any] = {}
exec(_CALLS, _namespace)  # the test code shared with the subprocess below
call_all = _namespace["call_all"]
ORDER = [m for m in METHODS if m != "LockPolicy"] + ["LockPolicy"]

_UNPRIVILEGED = _CALLS + textwrap.dedent(
    """
    import json, os, sys
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    assert os.getuid() == 65534
    from sgx_rpc.channel import unix_channel
    methods = json.loads(sys.argv[2])
    with unix_channel(sys.argv[1]) as channel:
        print(json.dumps(call_all(channel, methods)))
    """
)


def _as_nobody(socket: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED, str(socket), json.dumps(ORDER)],
        capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": os.environ.get("PATH", ""), "HOME": "/"}, cwd="/",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def _authorized(results: dict[str, str], allowed: set[str], who: str) -> None:
    for method, code in results.items():
        if method in allowed:
            assert code not in ("PERMISSION_DENIED", "UNAVAILABLE", "UNAUTHENTICATED"), (
                who, method, code)
        else:
            assert code == "PERMISSION_DENIED", (who, method, code)


@pytest.fixture
def tls_world(world: Any) -> Any:
    tls = world.state / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    create_service_pki(tls, ("platform", "launchctl", "quoting"))
    world.write_launchctl_config(
        '[tcp]\naddress = "127.0.0.1:0"\ncertificate = "tls/launchctl.pem"\n'
        'private_key = "tls/launchctl.key"\nclient_ca = "tls/ca.pem"\n'
    )
    world.start_platform("token")
    world.start_launchctl()
    # An ordinary user may reach the public socket (its mode is the gate), not the others.
    for path in (world.root, world.state, world.state / "run"):
        os.chmod(path, 0o755)
    return world


def test_the_authorization_matrix(tls_world: Any) -> None:
    w = tls_world
    run = w.state / "run"
    public, admin_sock = run / "launchctl.sock", run / "launchctl-admin" / "admin.sock"
    authority = run / "launchctl-authority" / "authority.sock"
    assert oct(public.stat().st_mode & 0o777) == "0o666"
    for private in (admin_sock, authority):
        assert oct(private.parent.stat().st_mode & 0o777) == "0o700"
        assert oct(private.stat().st_mode & 0o777) == "0o600"
    tls = w.state / "tls"
    ca = (tls / "ca.pem").read_bytes()
    address = w.launchctl.addresses["tcp"]

    matrix: dict[str, dict[str, str]] = {}
    # An ordinary local user (uid 65534).
    matrix["uid 65534 on the public socket"] = _as_nobody(public)
    matrix["uid 65534 on the admin socket"] = _as_nobody(admin_sock)
    matrix["uid 65534 on the authority socket"] = _as_nobody(authority)
    # TCP without a client certificate: the TLS handshake fails.
    with tls_channel(address, ca) as ch:
        matrix["TCP without a certificate"] = call_all(ch, ORDER)
    # Another service's certificate: no role here.
    with tls_channel(address, ca, client_certificate_pem=(tls / "quoting.pem").read_bytes(),
                     client_key_pem=(tls / "quoting.key").read_bytes()) as ch:
        matrix["another service's certificate"] = call_all(ch, ORDER)
    # The sockets that grant roles (root ignores modes: the socket decides).
    with unix_channel(public) as ch:
        matrix["root on the public socket"] = call_all(ch, ORDER)
    with unix_channel(authority) as ch:
        matrix["the authority socket"] = call_all(ch, ORDER)
    with unix_channel(admin_sock) as ch:
        matrix["the admin socket"] = call_all(ch, ORDER)
    with tls_channel(address, ca, client_certificate_pem=(tls / "admin.pem").read_bytes(),
                     client_key_pem=(tls / "admin.key").read_bytes()) as ch:
        matrix["the admin certificate over mTLS"] = call_all(ch, ORDER)

    for who in ("uid 65534 on the admin socket", "uid 65534 on the authority socket",
                "TCP without a certificate"):
        assert set(matrix[who].values()) == {"UNAVAILABLE"}, (who, matrix[who])
    other = matrix["another service's certificate"]
    assert set(other.values()) == {"PERMISSION_DENIED"}, other
    _authorized(matrix["uid 65534 on the public socket"], READS, "uid 65534")
    _authorized(matrix["root on the public socket"], READS, "reader")
    _authorized(matrix["the authority socket"], READS | TOKENS, "platform")
    _authorized(matrix["the admin socket"], READS | CHANGES, "admin socket")
    _authorized(matrix["the admin certificate over mTLS"], READS | CHANGES, "admin cert")
    # The admin's changes really ran (then the lock refused the certificate's later ones).
    socket_admin = matrix["the admin socket"]
    assert socket_admin["AddSigner"] == "OK" and socket_admin["LockPolicy"] == "OK"
    assert socket_admin["RemoveSigner"] == "NOT_FOUND"
    assert matrix["the admin certificate over mTLS"]["AddSigner"] == "FAILED_PRECONDITION"
    assert matrix["the authority socket"]["GetLaunchToken"] == "OK"  # a denial, not an error
    # Every call was tried by every caller.
    assert all(set(results) == set(METHODS) for results in matrix.values())
    # Nobody but the admin changed anything: one add, one lock, three policy changes.
    events = [line.event for line in w.admin().audit().entries]
    assert events.count("signer_added") == 1 and events.count("policy_locked") == 1
    assert events.count("load_policy_changed") == 3


def test_the_unprivileged_user_sees_denials_with_error_info(tls_world: Any) -> None:
    results = _as_nobody(tls_world.state / "run" / "launchctl.sock")
    assert results["AddSigner"] == "PERMISSION_DENIED"
    with unix_channel(tls_world.state / "run" / "launchctl.sock") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.LaunchControlServiceStub(ch).LockPolicy(pb.LockPolicyRequest(), timeout=5)
    info = error_info(e.value)
    assert info is not None and info.reason == "PERMISSION_DENIED"
    assert info.metadata["role"] == "reader" and info.domain == "launchctl.sgxemu"
