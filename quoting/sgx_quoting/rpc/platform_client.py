"""The platform's gRPC API as the quoting enclaves use it (a ``ports.PlatformPort``).

Two channels: the device socket (enclave build, report, key, seal calls) and the provision
socket (``GrantProvisionKey``, the ``/dev/sgx_provision`` gate). Over TCP both are the same
mTLS channel, where the quoting service's certificate grants both roles.

Invariants: imports only ``sgx_platform.arch`` of the platform, plus the generated
``sgx.platform.v1`` code; every failed call raises
:class:`~sgx_quoting.enclave_errors.PlatformCallError` with the status code name and the
``ErrorInfo`` reason and metadata, never a bare ``grpc.RpcError``; handles are never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from sgx.platform.v1 import platform_pb2 as pb
from sgx.platform.v1 import platform_pb2_grpc as pb_grpc
from sgx_platform.arch.measurement import Measurement
from sgx_quoting.enclave_errors import PlatformCallError
from sgx_quoting.ports import LoadedEnclave
from sgx_rpc.errors import error_info

DEFAULT_TIMEOUT = 60.0
#: How long a call waits for a platform that is (re)starting before it is UNAVAILABLE.
RECONNECT_WAIT = 3.0
#: Reconnect quickly after a platform restart (gRPC's default backoff starts at a second and
#: grows to two minutes).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def platform_channel(path: Path) -> grpc.Channel:
    """A channel to one of the platform's Unix sockets, reconnecting quickly."""
    return grpc.insecure_channel(f"unix:{Path(path).absolute()}", options=CHANNEL_OPTIONS)


def _call(stub: Any, method: str, request: Any, timeout: float) -> Any:
    try:
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            # Not connected (no ErrorInfo: the platform never saw the call): wait briefly for
            # a (re)starting platform, then give up with UNAVAILABLE.
            if e.code() != grpc.StatusCode.UNAVAILABLE or error_info(e) is not None:
                raise
            return getattr(stub, method)(
                request, timeout=min(timeout, RECONNECT_WAIT), wait_for_ready=True
            )
    except grpc.RpcError as e:
        info = error_info(e)
        code: grpc.StatusCode = e.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and info is None:
            code = grpc.StatusCode.UNAVAILABLE
        raise PlatformCallError(
            "platform",
            method,
            code.name,
            e.details() or code.name,
            info.reason if info is not None else code.name,
            dict(info.metadata) if info is not None else {},
        ) from None


class GrpcPlatform:
    """:class:`~sgx_quoting.ports.PlatformPort` over the platform's gRPC service."""

    def __init__(
        self,
        device: grpc.Channel,
        provision: grpc.Channel | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._channels = [device] if provision is None else [device, provision]
        self._device = pb_grpc.PlatformServiceStub(device)
        self._provision = pb_grpc.PlatformServiceStub(provision or device)
        self._timeout = timeout

    @classmethod
    def unix(
        cls, device: Path, provision: Path, *, timeout: float = DEFAULT_TIMEOUT
    ) -> GrpcPlatform:
        return cls(platform_channel(device), platform_channel(provision), timeout=timeout)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _dev(self, method: str, request: Any) -> Any:
        return _call(self._device, method, request, self._timeout)

    def platform_info(self) -> pb.GetPlatformInfoResponse:
        response: pb.GetPlatformInfoResponse = self._dev(
            "GetPlatformInfo", pb.GetPlatformInfoRequest()
        )
        return response

    def load_enclave_from_file(
        self, path: Path, sigstruct: bytes, *, provision_key: bool
    ) -> LoadedEnclave:
        r: pb.LoadEnclaveFromFileResponse = self._dev(
            "LoadEnclaveFromFile",
            pb.LoadEnclaveFromFileRequest(
                path=str(path), sigstruct=sigstruct, provision_key=provision_key
            ),
        )
        return LoadedEnclave(
            handle=r.enclave_handle,
            enclave_id=r.enclave_id,
            lease_seconds=r.lease_seconds,
            initialized=r.state == pb.ENCLAVE_STATE_INITIALIZED,
            image_sha256=r.image_sha256,
        )

    def grant_provision_key(self, handle: bytes) -> None:
        _call(
            self._provision,
            "GrantProvisionKey",
            pb.GrantProvisionKeyRequest(enclave_handle=handle),
            self._timeout,
        )

    def init_enclave(self, handle: bytes, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        r: pb.InitEnclaveResponse = self._dev(
            "InitEnclave", pb.InitEnclaveRequest(enclave_handle=handle, sigstruct=sigstruct)
        )
        return Measurement(r.mrenclave), Measurement(r.mrsigner)

    def destroy_enclave(self, handle: bytes) -> None:
        self._dev("DestroyEnclave", pb.DestroyEnclaveRequest(enclave_handle=handle))

    def renew_lease(self, handle: bytes) -> float:
        r: pb.RenewLeaseResponse = self._dev(
            "RenewLease", pb.RenewLeaseRequest(enclave_handle=handle)
        )
        return r.lease_seconds

    def create_report(self, handle: bytes, target_info: bytes, report_data: bytes) -> bytes:
        r: pb.CreateReportResponse = self._dev(
            "CreateReport",
            pb.CreateReportRequest(
                enclave_handle=handle, target_info=target_info, report_data=report_data
            ),
        )
        return r.report

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        r: pb.GetKeyResponse = self._dev(
            "GetKey", pb.GetKeyRequest(enclave_handle=handle, key_request=key_request)
        )
        return r.key

    def seal_to_signer(self, handle: bytes, plaintext: bytes, additional: bytes) -> bytes:
        r: pb.SealDataResponse = self._dev(
            "SealData",
            pb.SealDataRequest(
                enclave_handle=handle,
                plaintext=plaintext,
                additional_mac_text=additional,
                policy=pb.SEAL_POLICY_MRSIGNER,
            ),
        )
        return r.sealed_data

    def unseal(self, handle: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        r: pb.UnsealDataResponse = self._dev(
            "UnsealData", pb.UnsealDataRequest(enclave_handle=handle, sealed_data=sealed)
        )
        return r.plaintext, r.additional_mac_text
