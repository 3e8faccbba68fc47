"""The one table from launch-control errors to gRPC status codes (STYLE.md "Errors").

Invariants: :func:`status_of` is the only place a status code is chosen for a domain error;
the most specific class in ``STATUS`` wins. Every error leaves with an ``ErrorInfo`` whose
reason is the error's stable code and whose metadata carries the hint (and the first broken
audit entry, when that is what failed). Anything that is not a :class:`LaunchctlError` is
INTERNAL with a generic message; the details go to the log only.
"""

from __future__ import annotations

import grpc

from sgx_launchctl.errors import (
    AuditChainError,
    ConfigError,
    InvalidRequestError,
    LaunchctlError,
    NotFoundError,
    NotReadyError,
    PlatformUnavailableError,
    PolicyLockedError,
    StateIntegrityError,
)
from sgx_rpc.errors import StatusReport, StatusTable, code_for

DOMAIN = "launchctl.sgxemu"
S = grpc.StatusCode

#: Most specific first.
STATUS: StatusTable = (
    (InvalidRequestError, S.INVALID_ARGUMENT),
    (NotFoundError, S.NOT_FOUND),
    (PolicyLockedError, S.FAILED_PRECONDITION),
    (StateIntegrityError, S.FAILED_PRECONDITION),
    (ConfigError, S.FAILED_PRECONDITION),
    (NotReadyError, S.UNAVAILABLE),
    (PlatformUnavailableError, S.UNAVAILABLE),
    (LaunchctlError, S.FAILED_PRECONDITION),
)


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a domain error, or None when it must be reported as INTERNAL."""
    code = code_for(STATUS, error)
    if code is None or not isinstance(error, LaunchctlError):
        return None
    metadata: dict[str, str] = {}
    if error.hint:
        metadata["hint"] = error.hint
    if isinstance(error, AuditChainError):
        metadata["sequence"] = str(error.sequence)
    return StatusReport(code, error.sentence(), error.reason, metadata)
