"""What the quoting enclaves need from the platform and from the PCS, as interfaces.

The PCE and QE run as enclaves on the platform and reach it only through its gRPC API; the
PCS is reached only through its ProvisioningService. :mod:`sgx_quoting.rpc.platform_client`
(over the platform's published client ``sgx_platform.rpc.client``) and
:mod:`sgx_quoting.rpc.pcs_client` implement these protocols over gRPC; nothing else in the
package knows about channels or generated code.

Invariants: every method either returns what it says or raises
:class:`~sgx_quoting.enclave_errors.PlatformCallError` /
:class:`~sgx_quoting.enclave_errors.PcsCallError`. Handles are secrets (whoever holds one acts
as code inside that enclave): they never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sgx_platform.arch.measurement import Measurement


@dataclass(frozen=True)
class LoadedEnclave:
    """An enclave the platform created from an image file (maybe not yet initialized)."""

    handle: bytes = field(repr=False)
    enclave_id: str
    lease_seconds: float
    initialized: bool
    image_sha256: bytes


class PlatformPort(Protocol):
    """The platform's API as the quoting service uses it (device and provision sockets)."""

    def load_enclave_from_file(
        self, path: Path, sigstruct: bytes, *, provision_key: bool
    ) -> LoadedEnclave: ...

    def grant_provision_key(self, handle: bytes) -> None: ...

    def init_enclave(self, handle: bytes, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        """EINIT; returns (MRENCLAVE, MRSIGNER)."""
        ...

    def destroy_enclave(self, handle: bytes) -> None: ...

    def renew_lease(self, handle: bytes) -> float: ...

    def create_report(self, handle: bytes, target_info: bytes, report_data: bytes) -> bytes:
        """EREPORT; an empty ``target_info`` targets the enclave itself."""
        ...

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        """EGETKEY with a 512-byte KEYREQUEST; returns the 16-byte key."""
        ...

    def seal_to_signer(self, handle: bytes, plaintext: bytes, additional: bytes) -> bytes:
        """Seal with the MRSIGNER policy (same signer and product, same or higher ISVSVN)."""
        ...

    def unseal(self, handle: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        """Open sealed data inside the enclave: (plaintext, additional MAC text)."""
        ...


@dataclass(frozen=True)
class PckChain:
    """A PCK certificate chain as the PCS returns it."""

    pem_chain: str
    cpusvn: bytes
    pcesvn: int
    revoked: bool


class PcsPort(Protocol):
    """The PCS's API as the PCE registration uses it."""

    def register_pck(
        self, public_key: bytes, *, cpusvn: bytes, pcesvn: int, pce_id: bytes
    ) -> PckChain:
        """Certify a PCK public key (64 bytes x||y) for a TCB; the same key gets the same
        certificate back."""
        ...
