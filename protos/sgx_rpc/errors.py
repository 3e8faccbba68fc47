"""Turning domain failures into gRPC status with ``google.rpc.ErrorInfo``.

Every error a servicer returns goes through :func:`abort`: a status code from the component's
mapping table, a sentence a user understands, and an ``ErrorInfo`` whose ``reason`` is a
stable UPPER_SNAKE code (the errno name, the SGX code or the rule that decided), ``domain``
names the component, and ``metadata`` carries the specifics (errno, sgx_code, rule, hint).
Clients read it back with :func:`error_info`.

Each component keeps its one table (``rpc/status.py``: error class or errno -> code) and turns
an error into a :class:`StatusReport`; its servicer ends a failed call with
:func:`abort_with`, which sends the report, or INTERNAL with :data:`INTERNAL_MESSAGE` when the
error is not in the table (the details go to the log only). The codes follow STYLE.md:
malformed input INVALID_ARGUMENT, wrong state or locked FAILED_PRECONDITION, busy ABORTED,
policy or permission denial PERMISSION_DENIED, unknown peer UNAUTHENTICATED, out of EPC
RESOURCE_EXHAUSTED, stale handle (or another named thing that does not exist) NOT_FOUND, and
a service that is down, starting or unreachable UNAVAILABLE (retry later; launches fail
closed meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the service logged the details"


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    domain: str,
    metadata: Mapping[str, str] | None = None,
) -> NoReturn:
    """End the call with ``code``, ``message`` and an ``ErrorInfo`` detail."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=domain, metadata={k: str(v) for k, v in (metadata or {}).items()}
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover


def abort_internal(context: grpc.ServicerContext, domain: str, exc: BaseException) -> NoReturn:
    """End the call with INTERNAL and a generic message; the details go to the log only."""
    log.exception("internal error in %s", domain, exc_info=exc)
    abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, reason="INTERNAL", domain=domain)


#: The codes a component's table may choose (STYLE.md "Errors"); INTERNAL is only ever sent by
#: :func:`abort_with` for an error that is not in the table.
TABLE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAVAILABLE,
    }
)


@dataclass(frozen=True)
class StatusReport:
    """What a failed call sends back: the code from the component's table, a sentence for
    people, the stable reason and the ``ErrorInfo`` metadata."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: The rule that decided, when one did.
    rule: str | None = None


#: A component's table from error classes to codes, most specific class first.
StatusTable = Sequence[tuple[type[BaseException], grpc.StatusCode]]


def code_for(table: StatusTable, error: BaseException) -> grpc.StatusCode | None:
    """The code of the first class in ``table`` that ``error`` is an instance of, or None."""
    return next((code for kind, code in table if isinstance(error, kind)), None)


def abort_with(
    context: grpc.ServicerContext,
    report: StatusReport | None,
    error: BaseException,
    *,
    domain: str,
) -> NoReturn:
    """End the call with ``report``; ``None`` (an error the table does not know) is INTERNAL
    with a generic message, and ``error`` goes to the log."""
    if report is None:
        abort_internal(context, domain, error)
    abort(
        context,
        report.code,
        report.message,
        reason=report.reason,
        domain=domain,
        metadata=report.metadata,
    )


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` carried by a failed call, or None when it carries none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
