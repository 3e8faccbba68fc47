"""The daemon's client of ``sgx.platform.v1.PlatformService``
(:class:`~sgx_launchctl.platform_api.PlatformApi` over the platform's published client
:class:`sgx_platform.rpc.client.PlatformClient`).

Invariants: enclave calls and platform info go to the device socket; the launch-policy latch
goes to the owner socket (or whichever client the caller passes as ``owner``). Every call has
a deadline. Every failure becomes :class:`PlatformCallError` with the status name and the
ErrorInfo reason; handles never appear in messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sgx.platform.v1 import platform_pb2 as pb
from sgx_launchctl.errors import PlatformCallError
from sgx_launchctl.platform_api import PlatformEnclave, PlatformStatus
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_rpc.channel import QUICK_RECONNECT

_MODES = {pb.LAUNCH_MODE_OPEN: "open", pb.LAUNCH_MODE_TOKEN: "token"}


@contextmanager
def _platform_errors() -> Iterator[None]:
    try:
        yield
    except PlatformRpcError as e:
        raise PlatformCallError(e.code.name, e.reason, e.message) from None


class GrpcPlatform:
    """The platform over two clients: the device socket and the owner socket."""

    def __init__(self, device: PlatformClient, owner: PlatformClient | None) -> None:
        self._device = device
        self._owner = owner

    @classmethod
    def unix(
        cls, device_socket: Path, owner_socket: Path | None, *, timeout: float = 10.0
    ) -> GrpcPlatform:
        # QUICK_RECONNECT: the daemon polls a platform that is down; without it gRPC's backoff
        # grows so that a restarted platform was noticed only ~10 s later (launches waited).
        return cls(
            PlatformClient.unix(device_socket, timeout=timeout, options=QUICK_RECONNECT),
            PlatformClient.unix(owner_socket, timeout=timeout, options=QUICK_RECONNECT)
            if owner_socket is not None
            else None,
        )

    def status(self) -> PlatformStatus:
        with _platform_errors():
            r = self._device.info()
        return PlatformStatus(
            boot_epoch=r.boot_epoch,
            cpusvn=r.cpu_svn,
            launch_mode=_MODES.get(r.launch_mode, "unknown"),
            le_pubkey_hash=r.le_pubkey_hash,
            le_pubkey_hash_locked=r.le_pubkey_hash_locked,
            latched_digest=r.launch_policy_latch or None,
        )

    def load_enclave(self, image: Path, sigstruct: bytes) -> PlatformEnclave:
        with _platform_errors():
            r = self._device.load_enclave_from_file(image, sigstruct)
        return PlatformEnclave(r.handle, r.enclave_id, r.lease_seconds)

    def create_report(self, handle: bytes) -> bytes:
        with _platform_errors():
            return self._device.create_report(handle)

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        with _platform_errors():
            return self._device.get_key(handle, key_request)

    def renew_lease(self, handle: bytes) -> float:
        with _platform_errors():
            return self._device.renew_lease(handle)

    def destroy_enclave(self, handle: bytes) -> None:
        with _platform_errors():
            self._device.destroy_enclave(handle)

    def latch_launch_policy(self, digest: bytes) -> None:
        if self._owner is None:
            raise PlatformCallError(
                "UNAVAILABLE", "NO_OWNER_CHANNEL",
                "no owner socket is configured, so the policy cannot be latched",
            )
        with _platform_errors():
            self._owner.latch_launch_policy(digest)

    def close(self) -> None:
        self._device.close()
        if self._owner is not None:
            self._owner.close()
