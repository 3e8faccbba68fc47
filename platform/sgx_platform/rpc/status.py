"""The one table from driver errors to gRPC status codes (STYLE.md "Errors").

Invariants: :func:`status_of` is the only place a status code is chosen for a domain error,
and every code is one of STYLE.md's (see :mod:`sgx_rpc.errors`). The errno decides
(``ERRNO_STATUS``) unless the reason code is listed in ``REASON_STATUS`` (a state error is
``EINVAL`` in the kernel but FAILED_PRECONDITION here, etc.). Every error
leaves with a ``google.rpc.ErrorInfo``: ``reason`` is the stable code, ``metadata`` carries
``errno``, ``sgx_code`` and ``sgx_code_name`` (when the CPU decided), ``rule`` (when a rule
decided), ``hint`` and any details. Anything that is not a driver error is INTERNAL with a
generic message; the details go to the log only.
"""

from __future__ import annotations

import errno

import grpc

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.driver_errors import DriverError
from sgx_rpc.errors import StatusReport

DOMAIN = "platform.sgxemu"

S = grpc.StatusCode

#: errno → status (the default for a driver error).
ERRNO_STATUS: dict[int, grpc.StatusCode] = {
    errno.EINVAL: S.INVALID_ARGUMENT,  # malformed argument, bad SECINFO, offset/length
    errno.EIO: S.INVALID_ARGUMENT,  # ECREATE/EADD/EEXTEND faulted on what the caller sent
    errno.EFBIG: S.INVALID_ARGUMENT,  # image too large
    errno.EBADMSG: S.INVALID_ARGUMENT,  # sealed data that does not open here
    errno.EFAULT: S.INVALID_ARGUMENT,
    errno.EBUSY: S.ABORTED,  # concurrent call on the enclave, offset added twice
    errno.EPERM: S.PERMISSION_DENIED,  # the CPU refused EINIT (SGX code attached)
    errno.EACCES: S.PERMISSION_DENIED,  # policy: load rules, attributes, launch authority
    errno.ENOMEM: S.RESOURCE_EXHAUSTED,  # out of EPC
    errno.ESTALE: S.NOT_FOUND,  # handle from an earlier boot
    errno.EBADF: S.NOT_FOUND,  # unknown, destroyed or expired handle
    errno.ENOENT: S.NOT_FOUND,  # image file missing
    errno.EAGAIN: S.UNAVAILABLE,  # no launch authority answered (fail closed, retry later)
}

#: Reason codes whose status differs from their errno's.
REASON_STATUS: dict[str, grpc.StatusCode] = {
    "WRONG_STATE": S.FAILED_PRECONDITION,
    "REGISTERS_LOCKED": S.FAILED_PRECONDITION,
    "LATCH_SET": S.FAILED_PRECONDITION,
    "TCB_NOT_RAISED": S.FAILED_PRECONDITION,
    "EPCM_FAULT": S.PERMISSION_DENIED,
    "NOT_DEBUGGABLE": S.PERMISSION_DENIED,
    # An evicted page was altered or replayed: the enclave cannot go on (its state is wrong).
    "SGX_MAC_COMPARE_FAIL": S.FAILED_PRECONDITION,
}


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a domain error, or None when it must be reported as INTERNAL."""
    if isinstance(error, DriverError):
        code = REASON_STATUS.get(error.reason) or ERRNO_STATUS.get(error.errno, S.INTERNAL)
        metadata = {"errno": error.errno_name}
        if error.sgx_code is not None:
            metadata["sgx_code"] = str(int(error.sgx_code))
            metadata["sgx_code_name"] = error.sgx_code.name
        if error.rule is not None:
            metadata["rule"] = error.rule
        if error.hint:
            metadata["hint"] = error.hint
        metadata.update(error.details)
        if code is S.INTERNAL:
            return None
        return StatusReport(code, error.sentence(), error.reason, metadata, error.rule)
    if isinstance(error, MalformedStructureError):
        return StatusReport(
            S.INVALID_ARGUMENT, str(error), "MALFORMED_STRUCTURE", {"errno": "EINVAL"}
        )
    return None
