"""Errors of the emulated kernel driver: an errno, a stable reason, and what decided.

Invariants:

* Every failure the driver (``driver.py``), the load policy (``load_policy.py``) and the
  enclave registry (``lease.py``) report is a :class:`DriverError`: it carries the errno the
  Linux driver would return (SGX-REFERENCE §1.3), a stable UPPER_SNAKE ``reason``, the SGX
  error code when the CPU decided (``sgx_code``), the load rule when the policy decided
  (``rule``), and a ``hint`` telling the user what to do. The gRPC layer maps these fields to a
  status code through one table (``rpc/status.py``); nothing else decides a status.
* Messages and hints never contain secrets (handles, keys, page contents).
"""

from __future__ import annotations

import errno as _errno

from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.errors import PlatformError


def errno_name(number: int) -> str:
    """``EINVAL`` for ``errno.EINVAL``; ``E<n>`` for an unknown number."""
    return _errno.errorcode.get(number, f"E{number}")


class DriverError(PlatformError):
    """A refused driver call: errno, stable reason, and the SGX code or rule that decided."""

    def __init__(
        self,
        errno: int,
        message: str,
        *,
        reason: str | None = None,
        sgx_code: SgxErrorCode | None = None,
        rule: str | None = None,
        hint: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.reason = reason or (f"SGX_{sgx_code.name}" if sgx_code is not None else None) or (
            errno_name(errno)
        )
        self.sgx_code = sgx_code
        self.rule = rule
        self.hint = hint
        self.details = dict(details or {})

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)

    def sentence(self) -> str:
        """The message and, when there is one, the hint: what a user reads."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.sentence()}"


class LoadPolicyDeniedError(DriverError):
    """A load rule refused a page (EACCES); ``rule`` names the rule, ``hint`` the fix."""

    def __init__(self, rule: str, reason: str, message: str, hint: str) -> None:
        super().__init__(_errno.EACCES, message, reason=reason, rule=rule, hint=hint)


class LaunchDeniedError(DriverError):
    """The launch authority refused to issue an EINITTOKEN (token mode; EACCES).

    ``rule`` names the authority's rule that decided (``signer``, ``allow_debug``, ...), or
    ``launch_authority`` when it names none.
    """

    def __init__(
        self,
        message: str,
        hint: str = "",
        *,
        reason: str = "LAUNCH_DENIED",
        rule: str = "launch_authority",
    ) -> None:
        super().__init__(_errno.EACCES, message, reason=reason, rule=rule, hint=hint)


class LaunchAuthorityUnavailableError(DriverError):
    """No launch authority answered: token mode fails closed (EAGAIN, retry later)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(
            _errno.EAGAIN,
            message,
            reason="LAUNCH_AUTHORITY_UNAVAILABLE",
            rule="launch_authority",
            hint=hint or "start the launch-control service (sgxemu launchctl serve) and retry",
        )


class StaleHandleError(DriverError):
    """A handle from an earlier boot of the platform (reset or restart since)."""

    def __init__(self) -> None:
        super().__init__(
            _errno.ESTALE,
            "the enclave handle is from an earlier boot of the platform (it was reset or "
            "restarted since); its enclave no longer exists",
            reason="STALE_HANDLE",
            hint="load the enclave again",
        )


class UnknownHandleError(DriverError):
    """A handle of this boot that names no live enclave (destroyed, expired, or invented)."""

    def __init__(
        self, why: str = "no enclave has this handle (destroyed, or never created)"
    ) -> None:
        super().__init__(
            _errno.EBADF,
            why,
            reason="UNKNOWN_HANDLE",
            hint="load the enclave again and keep its lease renewed",
        )


class LeaseExpiredError(UnknownHandleError):
    """The enclave's lease ended without renewal; the enclave is (being) destroyed."""

    def __init__(self) -> None:
        super().__init__("the enclave's lease expired and the enclave was destroyed")
        self.reason = "LEASE_EXPIRED"
