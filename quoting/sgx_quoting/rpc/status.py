"""The one table from quoting errors to gRPC status codes (STYLE.md "Errors").

Invariants: :func:`status_of` is the only place a status code is chosen for a quoting error;
the error's class decides, never its message. Every error leaves with a
``google.rpc.ErrorInfo`` whose ``reason`` is the class's stable code. Anything not in the table
is INTERNAL with a generic message (the servicer logs the details).
"""

from __future__ import annotations

import grpc

from sgx_platform.arch.errors import MalformedStructureError
from sgx_quoting.errors import (
    PcsInputError,
    PcsStateError,
    QuotingError,
    UnknownPlatformError,
)
from sgx_rpc.errors import StatusReport, StatusTable, code_for

DOMAIN = "quoting.sgxemu"

S = grpc.StatusCode

#: Error class -> status code, most specific first.
STATUS_TABLE: StatusTable = (
    (PcsInputError, S.INVALID_ARGUMENT),
    (UnknownPlatformError, S.NOT_FOUND),
    (PcsStateError, S.FAILED_PRECONDITION),
    (MalformedStructureError, S.INVALID_ARGUMENT),
)


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a quoting error, or None when it must be reported as INTERNAL."""
    code = code_for(STATUS_TABLE, error)
    if code is None:
        return None
    reason = error.reason if isinstance(error, QuotingError) else "MALFORMED_STRUCTURE"
    return StatusReport(code, str(error), reason)
