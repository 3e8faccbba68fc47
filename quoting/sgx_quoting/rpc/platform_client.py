"""The platform's gRPC API as the quoting enclaves use it (a ``ports.PlatformPort``), over the
platform's published client :class:`sgx_platform.rpc.client.PlatformClient`.

Two clients: the device socket (enclave build, report, key, seal calls) and the provision
socket (``GrantProvisionKey``, the ``/dev/sgx_provision`` gate). Over TCP both are the same
mTLS channel, where the quoting service's certificate grants both roles.

Invariants: imports of the platform only ``sgx_platform.arch`` and its published client; every
failed call raises :class:`~sgx_quoting.enclave_errors.PlatformCallError` with the RPC's name,
the status code name and the ``ErrorInfo`` reason and metadata, never a bare
``grpc.RpcError``; a platform that is (re)starting is waited for briefly
(:data:`RECONNECT_WAIT`, and the channels reconnect quickly) before a call fails UNAVAILABLE;
handles are never logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sgx.platform.v1 import platform_pb2 as pb
from sgx_platform.arch.measurement import Measurement
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_quoting.enclave_errors import PlatformCallError
from sgx_quoting.ports import LoadedEnclave
from sgx_rpc.channel import QUICK_RECONNECT

DEFAULT_TIMEOUT = 60.0
#: How long a call waits for a platform that is (re)starting before it is UNAVAILABLE.
RECONNECT_WAIT = 3.0


@contextmanager
def _platform_errors() -> Iterator[None]:
    try:
        yield
    except PlatformRpcError as e:
        raise PlatformCallError(
            "platform", e.method, e.code.name, e.message, e.reason, e.metadata
        ) from None


class GrpcPlatform:
    """:class:`~sgx_quoting.ports.PlatformPort` over the platform's gRPC service."""

    def __init__(self, device: PlatformClient, provision: PlatformClient | None = None) -> None:
        self._device = device
        self._provision = provision or device

    @classmethod
    def unix(
        cls, device: Path, provision: Path, *, timeout: float = DEFAULT_TIMEOUT
    ) -> GrpcPlatform:
        def client(path: Path) -> PlatformClient:
            return PlatformClient.unix(
                path, timeout=timeout, reconnect_wait=RECONNECT_WAIT, options=QUICK_RECONNECT
            )

        return cls(client(device), client(provision))

    def close(self) -> None:
        self._device.close()
        if self._provision is not self._device:
            self._provision.close()

    def load_enclave_from_file(
        self, path: Path, sigstruct: bytes, *, provision_key: bool
    ) -> LoadedEnclave:
        with _platform_errors():
            r = self._device.load_enclave_from_file(path, sigstruct, provision_key=provision_key)
        return LoadedEnclave(
            handle=r.handle,
            enclave_id=r.enclave_id,
            lease_seconds=r.lease_seconds,
            initialized=r.initialized,
            image_sha256=r.image_sha256,
        )

    def grant_provision_key(self, handle: bytes) -> None:
        with _platform_errors():
            self._provision.grant_provision_key(handle)

    def init_enclave(self, handle: bytes, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        with _platform_errors():
            return self._device.init_enclave(handle, sigstruct)

    def destroy_enclave(self, handle: bytes) -> None:
        with _platform_errors():
            self._device.destroy_enclave(handle)

    def renew_lease(self, handle: bytes) -> float:
        with _platform_errors():
            return self._device.renew_lease(handle)

    def create_report(self, handle: bytes, target_info: bytes, report_data: bytes) -> bytes:
        with _platform_errors():
            return self._device.create_report(handle, target_info, report_data)

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        with _platform_errors():
            return self._device.get_key(handle, key_request)

    def seal_to_signer(self, handle: bytes, plaintext: bytes, additional: bytes) -> bytes:
        with _platform_errors():
            return self._device.seal(
                handle, plaintext, additional, policy=pb.SEAL_POLICY_MRSIGNER
            )

    def unseal(self, handle: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        with _platform_errors():
            return self._device.unseal(handle, sealed)
