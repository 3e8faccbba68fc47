"""The launch authority interface: who gives the driver an EINITTOKEN in token mode (ADR 0010).

In token mode the LE hash registers hold the launch enclave's signer and are locked at boot.
At every EINIT of an enclave signed by anyone else, the driver asks a :class:`LaunchAuthority`
for a token for *exactly* this SIGSTRUCT and this SECS (the launch-control daemon plays the
launch enclave; until it lands, tests use a double). Clients never see tokens.

Invariants:

* The request carries the exact bytes: the 1808-byte SIGSTRUCT the client passed to INIT and the
  4096-byte SECS as ECREATE received it (attributes, MISCSELECT, size; no identity fields), so
  the authority decides on what EINIT will check and nothing else.
* An implementation bounds its own wait (a network call has a deadline). It raises
  :class:`~sgx_platform.driver_errors.LaunchDeniedError` to refuse, and may raise
  :class:`~sgx_platform.driver_errors.LaunchAuthorityUnavailableError` to say why it has no
  answer; any other failure also means "no answer". Either way the driver fails closed.
* The driver does not trust the token: EINIT checks its MAC, MRENCLAVE, MRSIGNER, attributes
  and CPUSVN as the SDM says (§5.1 steps 13-17).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sigstruct import Sigstruct


@dataclass(frozen=True)
class TokenRequest:
    """What the authority is asked to launch: exact SIGSTRUCT and SECS bytes, and a summary."""

    sigstruct: bytes
    secs: bytes
    #: SHA-256 of SIGSTRUCT.MODULUS (what EINIT will compute), for logs and quick decisions.
    mrsigner: Measurement
    #: SIGSTRUCT.ENCLAVEHASH (EINIT will check the measured pages against it).
    mrenclave: Measurement
    #: The platform's boot epoch (8 bytes): the token is for this boot only (the EINITTOKEN key
    #: depends on the LE registers, which a reset may change).
    boot_epoch: bytes = b""

    def parsed_sigstruct(self) -> Sigstruct:
        """The SIGSTRUCT, strictly parsed (raises ``MalformedStructureError``)."""
        return Sigstruct.from_bytes(self.sigstruct)

    def parsed_secs(self) -> Secs:
        return Secs.from_bytes(self.secs)


class LaunchAuthority(Protocol):
    """Issues EINITTOKENs (the launch enclave's role); refuses with ``LaunchDeniedError``."""

    def issue_token(self, request: TokenRequest) -> EinitToken: ...
