"""The daemon's client of ``sgx.platform.v1.PlatformService``
(:class:`~sgx_launchctl.platform_api.PlatformApi` over gRPC).

Invariants: enclave calls and platform info go to the device socket; the launch-policy latch
goes to the owner socket (or whichever channel the caller passes as ``owner``). Every call has
a deadline. Every failure becomes :class:`PlatformCallError` with the status name and the
ErrorInfo reason; handles never appear in messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from sgx.platform.v1 import platform_pb2 as pb
from sgx.platform.v1 import platform_pb2_grpc as pb_grpc
from sgx_launchctl.errors import PlatformCallError
from sgx_launchctl.platform_api import PlatformEnclave, PlatformStatus
from sgx_rpc.channel import unix_channel
from sgx_rpc.errors import error_info

_MODES = {pb.LAUNCH_MODE_OPEN: "open", pb.LAUNCH_MODE_TOKEN: "token"}


class GrpcPlatform:
    """The platform over two channels: the device socket and the owner socket."""

    def __init__(
        self, device: grpc.Channel, owner: grpc.Channel | None, *, timeout: float = 10.0
    ) -> None:
        self._device = device
        self._owner = owner
        self._stub = pb_grpc.PlatformServiceStub(device)
        self._owner_stub = pb_grpc.PlatformServiceStub(owner) if owner is not None else None
        self._timeout = timeout

    @classmethod
    def unix(
        cls, device_socket: Path, owner_socket: Path | None, *, timeout: float = 10.0
    ) -> GrpcPlatform:
        return cls(
            unix_channel(device_socket),
            unix_channel(owner_socket) if owner_socket is not None else None,
            timeout=timeout,
        )

    def _call(self, stub: Any, method: str, request: Any) -> Any:
        try:
            return getattr(stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as e:
            info = error_info(e)
            code: grpc.StatusCode = e.code()
            reason = info.reason if info is not None else code.name
            raise PlatformCallError(code.name, reason, e.details() or code.name) from None

    def status(self) -> PlatformStatus:
        r: pb.GetPlatformInfoResponse = self._call(
            self._stub, "GetPlatformInfo", pb.GetPlatformInfoRequest()
        )
        return PlatformStatus(
            boot_epoch=r.boot_epoch,
            cpusvn=r.cpu_svn,
            launch_mode=_MODES.get(r.launch_mode, "unknown"),
            le_pubkey_hash=r.le_pubkey_hash,
            le_pubkey_hash_locked=r.le_pubkey_hash_locked,
            latched_digest=r.launch_policy_latch or None,
        )

    def load_enclave(self, image: Path, sigstruct: bytes) -> PlatformEnclave:
        r: pb.LoadEnclaveFromFileResponse = self._call(
            self._stub,
            "LoadEnclaveFromFile",
            pb.LoadEnclaveFromFileRequest(path=str(image), sigstruct=sigstruct),
        )
        return PlatformEnclave(r.enclave_handle, r.enclave_id, r.lease_seconds)

    def create_report(self, handle: bytes) -> bytes:
        r: pb.CreateReportResponse = self._call(
            self._stub, "CreateReport", pb.CreateReportRequest(enclave_handle=handle)
        )
        return r.report

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        r: pb.GetKeyResponse = self._call(
            self._stub, "GetKey", pb.GetKeyRequest(enclave_handle=handle, key_request=key_request)
        )
        return r.key

    def renew_lease(self, handle: bytes) -> float:
        r: pb.RenewLeaseResponse = self._call(
            self._stub, "RenewLease", pb.RenewLeaseRequest(enclave_handle=handle)
        )
        return r.lease_seconds

    def destroy_enclave(self, handle: bytes) -> None:
        self._call(self._stub, "DestroyEnclave", pb.DestroyEnclaveRequest(enclave_handle=handle))

    def latch_launch_policy(self, digest: bytes) -> None:
        if self._owner_stub is None:
            raise PlatformCallError(
                "UNAVAILABLE", "NO_OWNER_CHANNEL",
                "no owner socket is configured, so the policy cannot be latched",
            )
        self._call(
            self._owner_stub, "LatchLaunchPolicy", pb.LatchLaunchPolicyRequest(digest=digest)
        )

    def close(self) -> None:
        self._device.close()
        if self._owner is not None:
            self._owner.close()
