"""The one table from quoting errors to gRPC status codes (STYLE.md "Errors").

Invariants: :func:`status_of` is the only place a status code is chosen for a quoting error;
the error's class decides, never its message. Every error leaves with a
``google.rpc.ErrorInfo`` whose ``reason`` is the class's stable code. Anything not in the table
is INTERNAL with a generic message (the servicer logs the details).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from sgx_platform.arch.errors import MalformedStructureError
from sgx_quoting.errors import (
    PcsInputError,
    PcsStateError,
    QuotingError,
    UnknownPlatformError,
)

DOMAIN = "quoting.sgxemu"

S = grpc.StatusCode

#: Error class -> status code, most specific first.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (PcsInputError, S.INVALID_ARGUMENT),
    (UnknownPlatformError, S.NOT_FOUND),
    (PcsStateError, S.FAILED_PRECONDITION),
    (MalformedStructureError, S.INVALID_ARGUMENT),
)


@dataclass(frozen=True)
class StatusReport:
    """What a failed call sends back."""

    code: grpc.StatusCode
    message: str
    reason: str


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a quoting error, or None when it must be reported as INTERNAL."""
    for cls, code in STATUS_TABLE:
        if isinstance(error, cls):
            if isinstance(error, QuotingError):
                reason = error.reason
            else:
                reason = "MALFORMED_STRUCTURE"
            return StatusReport(code, str(error), reason)
    return None
