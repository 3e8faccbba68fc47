"""What the daemon needs from the platform, as an interface (implemented in ``rpc/platform.py``
over the platform's published client ``sgx_platform.rpc.client``; only ``rpc/`` touches
generated code). The interface is the daemon's: ``LaunchctlService`` accepts any implementation.

Invariants: every method is one platform call with a deadline; a refusal or an unreachable
platform raises :class:`~sgx_launchctl.errors.PlatformCallError` carrying the platform's status
name and ErrorInfo reason (``STALE_HANDLE``, ``LATCH_SET``, ...), so the daemon branches on
codes, never on message text. Enclave handles are secrets: never logged, never in a ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class PlatformStatus:
    """The parts of the platform's info the daemon acts on."""

    boot_epoch: bytes
    cpusvn: bytes
    #: "open" or "token".
    launch_mode: str
    le_pubkey_hash: bytes
    le_pubkey_hash_locked: bool
    #: The launch-policy latch: None until latched in this boot.
    latched_digest: bytes | None


@dataclass(frozen=True)
class PlatformEnclave:
    """An enclave the daemon holds on the platform (its handle makes it "the code inside")."""

    handle: bytes = field(repr=False)
    enclave_id: str = ""
    lease_seconds: float = 60.0


class PlatformApi(Protocol):
    def status(self) -> PlatformStatus: ...

    def load_enclave(self, image: Path, sigstruct: bytes) -> PlatformEnclave: ...

    def create_report(self, handle: bytes) -> bytes: ...

    def get_key(self, handle: bytes, key_request: bytes) -> bytes: ...

    def renew_lease(self, handle: bytes) -> float: ...

    def destroy_enclave(self, handle: bytes) -> None: ...

    def latch_launch_policy(self, digest: bytes) -> None: ...

    def close(self) -> None: ...
