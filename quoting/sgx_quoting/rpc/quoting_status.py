"""The one table from quoting-service errors to gRPC status codes (STYLE.md "Errors").

Invariants: the error's class decides the code, never its message: a REPORT the QE refuses is
INVALID_ARGUMENT; the platform or PCS not answering is UNAVAILABLE (retry later); quoting
enclaves that cannot launch, a key or state that cannot be used, or a refusal by the platform
or the PCS are FAILED_PRECONDITION (an operator must act; the ``ErrorInfo`` names the remote
service, method, code and reason). PCS-domain and malformed-structure errors fall through to
:func:`sgx_quoting.rpc.status.status_of`. Anything else is INTERNAL with a generic message.
"""

from __future__ import annotations

import grpc

from sgx_quoting.enclave_errors import (
    AttestationKeyError,
    CertificationError,
    EnclaveLaunchError,
    PcsCallError,
    PlatformCallError,
    QuotingStateError,
    QuotingUnavailableError,
    ReportRejectedError,
)
from sgx_quoting.errors import QuotingError
from sgx_quoting.rpc import status as pcs_status
from sgx_rpc.errors import StatusReport, StatusTable, code_for

DOMAIN = pcs_status.DOMAIN

S = grpc.StatusCode

#: Error class -> status code, most specific first.
STATUS_TABLE: StatusTable = (
    (ReportRejectedError, S.INVALID_ARGUMENT),
    (QuotingUnavailableError, S.UNAVAILABLE),
    (EnclaveLaunchError, S.FAILED_PRECONDITION),
    (AttestationKeyError, S.FAILED_PRECONDITION),
    (CertificationError, S.FAILED_PRECONDITION),
    (QuotingStateError, S.FAILED_PRECONDITION),
    (PlatformCallError, S.FAILED_PRECONDITION),
    (PcsCallError, S.FAILED_PRECONDITION),
)


def _remote_metadata(error: BaseException) -> dict[str, str]:
    remote = error.cause if isinstance(error, EnclaveLaunchError) else error
    if isinstance(remote, PlatformCallError | PcsCallError):
        metadata = {
            "service": remote.service,
            "method": remote.method,
            "remote_code": remote.code,
            "remote_reason": remote.remote_reason,
        }
        for key in ("rule", "hint", "errno", "sgx_code_name"):
            if key in remote.metadata:
                metadata[key] = remote.metadata[key]
        return metadata
    return {}


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a quoting-service error, or None when it must be reported as INTERNAL."""
    code = code_for(STATUS_TABLE, error)
    if code is None:
        return pcs_status.status_of(error)
    assert isinstance(error, QuotingError)
    return StatusReport(code, str(error), error.reason, _remote_metadata(error))
