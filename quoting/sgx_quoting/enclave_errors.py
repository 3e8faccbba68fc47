"""Errors of the quoting enclaves (PCE, QE) and the quoting service.

They extend the package's branch (:class:`~sgx_quoting.errors.QuotingError`); each carries a
stable ``reason`` for ``google.rpc.ErrorInfo``, and :mod:`sgx_quoting.rpc.quoting_status` maps
them to gRPC status codes by class, never by message text.

Calls to the platform and to the PCS fail with :class:`PlatformCallError` and
:class:`PcsCallError`: they keep the remote status code name, the remote ``reason`` and its
metadata, so the service can tell a stale enclave handle (re-launch and carry on) from a
refusal (report it) without parsing sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from sgx_quoting.errors import QuotingError

#: Platform reasons meaning "this enclave handle no longer names a live enclave".
GONE_HANDLE_REASONS = frozenset({"STALE_HANDLE", "UNKNOWN_HANDLE", "LEASE_EXPIRED"})


class ReportRejectedError(QuotingError, ValueError):
    """A REPORT the QE refuses to quote."""

    reason: ClassVar[str] = "REPORT_REJECTED"


class MalformedReportError(ReportRejectedError):
    """Not a 432-byte REPORT with zero reserved bytes."""

    reason: ClassVar[str] = "REPORT_MALFORMED"


class ReportMacMismatchError(ReportRejectedError):
    """The REPORT's MAC does not verify with the QE's report key: it was targeted at another
    enclave (or made on another platform or boot), or its bytes were altered."""

    reason: ClassVar[str] = "REPORT_MAC_MISMATCH"


class ReportTcbMismatchError(ReportRejectedError):
    """The REPORT was made at another CPUSVN than the one the QE is certified for (a TCB update
    happened in between): make a new REPORT."""

    reason: ClassVar[str] = "REPORT_TCB_MISMATCH"


class CertificationError(QuotingError):
    """The PCE refused to certify a QE report (bad MAC, missing PROVISIONKEY, debug QE)."""

    reason: ClassVar[str] = "CERTIFICATION_REFUSED"


class AttestationKeyError(QuotingError):
    """The sealed attestation key cannot be used (unreadable, wrong key, not this signer's)."""

    reason: ClassVar[str] = "ATTESTATION_KEY"


class QuotingStateError(QuotingError):
    """The quoting service's own state (enclave manifest, images, sealed key) is unusable."""

    reason: ClassVar[str] = "QUOTING_STATE"


class _RemoteCallError(QuotingError):
    """A failed call to another service: its status code name, reason and metadata."""

    def __init__(
        self,
        service: str,
        method: str,
        code: str,
        message: str,
        reason: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{service} {method} failed: {code} {reason}: {message}")
        self.service = service
        self.method = method
        self.code = code
        self.remote_message = message
        self.remote_reason = reason
        self.metadata = dict(metadata or {})

    @property
    def unavailable(self) -> bool:
        """The service did not answer (down, restarting, deadline)."""
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


class PlatformCallError(_RemoteCallError):
    """A platform RPC that failed."""

    reason: ClassVar[str] = "PLATFORM_CALL_FAILED"

    @property
    def handle_gone(self) -> bool:
        """The enclave handle is stale (platform reset or restart), destroyed or expired."""
        return self.remote_reason in GONE_HANDLE_REASONS


class PcsCallError(_RemoteCallError):
    """A PCS (ProvisioningService) RPC that failed."""

    reason: ClassVar[str] = "PCS_CALL_FAILED"


class EnclaveLaunchError(QuotingError):
    """The PCE or QE could not be launched on the platform (denied, no PROVISIONKEY grant...).

    ``cause`` is the platform's refusal when there is one.
    """

    reason: ClassVar[str] = "ENCLAVE_LAUNCH_FAILED"

    def __init__(self, message: str, cause: PlatformCallError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class QuotingUnavailableError(QuotingError):
    """The platform or the PCS does not answer, so no quote can be made now (retry later)."""

    reason: ClassVar[str] = "QUOTING_UNAVAILABLE"
