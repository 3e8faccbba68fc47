"""The permission gates: the device, provision and owner sockets, with an unprivileged client.

Tests run as root, and root ignores file modes, so the client here is a subprocess that imports
what it needs and then drops to uid/gid 65534 (nobody/nogroup) before it connects. The state
directory and ``run/`` are traversable (0755), as the gate needs; the owner directory is not.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.measure import MrEnclaveMeasurer
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.arch.tcs import Tcs
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import PlatformService, initialize_state

NOBODY = 65534
NOGROUP = 65534

_CLIENT = r"""
import json, os, sys
import grpc
from sgx.platform.v1 import platform_pb2 as pb
from sgx.platform.v1 import platform_pb2_grpc as pb_grpc
from sgx_rpc.errors import error_info

path, method, handle_hex, uid, gid = sys.argv[1:6]
requests = {
    "GetPlatformInfo": pb.GetPlatformInfoRequest(),
    "CreateEnclave": pb.CreateEnclaveRequest(secs=bytes(4096)),
    "GrantProvisionKey": pb.GrantProvisionKeyRequest(enclave_handle=bytes.fromhex(handle_hex)),
    "UpdateTcb": pb.UpdateTcbRequest(),
    "ResetPlatform": pb.ResetPlatformRequest(),
}
os.setgroups([])
os.setgid(int(gid))
os.setuid(int(uid))
assert (os.getuid(), os.geteuid(), os.getgid()) == (int(uid), int(uid), int(gid))
channel = grpc.insecure_channel("unix:" + path)
try:
    getattr(pb_grpc.PlatformServiceStub(channel), method)(requests[method], timeout=15)
    print(json.dumps({"code": "OK", "uid": os.getuid()}))
except grpc.RpcError as e:
    info = error_info(e)
    print(json.dumps({"code": e.code().name, "reason": info.reason if info else None,
                      "details": e.details(), "uid": os.getuid()}))
"""


def call_as(uid: int, gid: int, socket: Path, method: str, handle: bytes = b"") -> dict[str, str]:
    """Run one RPC from a process that dropped to ``uid``/``gid`` before connecting."""
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(socket), method, handle.hex(), str(uid), str(gid)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout)
    assert result["uid"] == uid
    return result


@pytest.fixture()
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxg", dir="/tmp"))
    d.chmod(0o755)
    (d / "enclaves").mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def start(state: Path) -> Iterator[Callable[[str], PlatformService]]:
    running: list[PlatformService] = []

    def make(toml: str = "") -> PlatformService:
        if not (state / "platform" / "fuses").exists():
            initialize_state(state / "platform")
        service = PlatformService(parse_config(toml, state), max_workers=4)
        service.start()
        running.append(service)
        return service

    yield make
    for service in running:
        service.stop(grace=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_socket_modes(start: Callable[[str], PlatformService]) -> None:
    s = start("").config.sockets
    assert (_mode(s.device), _mode(s.provision), _mode(s.owner)) == (0o666, 0o660, 0o600)
    assert _mode(s.owner_directory) == 0o700
    assert _mode(s.directory) & 0o011, "run/ must be traversable for the device gate"


def test_the_device_socket_mode_is_the_gate(start: Callable[[str], PlatformService]) -> None:
    open_ = start("").config.sockets
    assert call_as(NOBODY, NOGROUP, open_.device, "GetPlatformInfo")["code"] == "OK"
    # Reaching the driver: an all-zero SECS is refused by the driver, not by the gate.
    reply = call_as(NOBODY, NOGROUP, open_.device, "CreateEnclave")
    assert (reply["code"], reply["reason"]) == ("INVALID_ARGUMENT", "SECS_SIZE")
    # The device socket carries no owner call, whoever connects.
    reply = call_as(NOBODY, NOGROUP, open_.device, "UpdateTcb")
    assert (reply["code"], reply["reason"]) == ("PERMISSION_DENIED", "PERMISSION_DENIED")


def test_a_closed_device_socket_keeps_others_out(
    start: Callable[[str], PlatformService],
) -> None:
    closed = start("[sockets]\ndevice_mode = 0o600\n").config.sockets
    reply = call_as(NOBODY, NOGROUP, closed.device, "GetPlatformInfo")
    assert reply["code"] == "UNAVAILABLE", reply
    assert call_as(0, 0, closed.device, "GetPlatformInfo")["code"] == "OK"


def _provision_enclave(client: PlatformClient) -> tuple[bytes, bytes]:
    """A CREATED enclave asking for PROVISIONKEY, and its SIGSTRUCT."""
    size = 8192
    attributes = Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY), 3)
    secs = Secs(size=size, base_address=size, attributes=attributes)
    handle = client.create_enclave(secs.to_bytes()).enclave_handle
    tcs = Tcs(ossa=4096, nssa=1, oentry=0).to_bytes()
    ssa = SecInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.W)
    client.add_pages(handle, 0, tcs, SecInfo(PageType.TCS).to_bytes(), measure=True)
    client.add_pages(handle, 4096, bytes(4096), ssa.to_bytes(), measure=True)
    m = MrEnclaveMeasurer(1, size)
    m.add_page(0, SecInfo(PageType.TCS), tcs, measured=True)
    m.add_page(4096, ssa, bytes(4096), measured=True)
    sig = sign_sigstruct(generate_signing_key(), m.finalize(), attributes=attributes)
    return handle, sig.to_bytes()


def test_the_provision_socket_is_the_provisionkey_gate(
    start: Callable[[str], PlatformService],
) -> None:
    service = start("[sockets]\nprovision_group = \"nogroup\"\n")
    s = service.config.sockets
    assert os.stat(s.provision).st_gid == NOGROUP
    with PlatformClient.unix(s.device) as device:
        handle, sig = _provision_enclave(device)
        # Outside the group: the socket cannot be opened.
        reply = call_as(NOBODY, 0, s.provision, "GrantProvisionKey", handle)
        assert reply["code"] == "UNAVAILABLE", reply
        # The device socket does not grant it either, whoever calls.
        reply = call_as(NOBODY, NOGROUP, s.device, "GrantProvisionKey", handle)
        assert (reply["code"], reply["reason"]) == ("PERMISSION_DENIED", "PERMISSION_DENIED")
        # In the group: the grant goes through, and INIT may then have PROVISIONKEY.
        assert call_as(NOBODY, NOGROUP, s.provision, "GrantProvisionKey", handle)["code"] == "OK"
        device.init_enclave(handle, sig)
        # The provision socket grants only that: no enclave building, no owner calls.
        reply = call_as(NOBODY, NOGROUP, s.provision, "CreateEnclave")
        assert reply["reason"] == "PERMISSION_DENIED"


def test_the_owner_socket_is_private(start: Callable[[str], PlatformService]) -> None:
    s = start("").config.sockets
    reply = call_as(NOBODY, NOGROUP, s.owner, "ResetPlatform")
    assert reply["code"] == "UNAVAILABLE", reply
    assert call_as(0, 0, s.owner, "GetPlatformInfo")["code"] == "OK"
    # Even for a client who could reach it, the directory is the owner's alone.
    os.chmod(s.owner, 0o666)
    reply = call_as(NOBODY, NOGROUP, s.owner, "ResetPlatform")
    assert reply["code"] == "UNAVAILABLE", "the 0700 directory still keeps others out"
    assert call_as(0, 0, s.owner, "ResetPlatform")["code"] == "OK"
