"""Turning domain failures into gRPC status with ``google.rpc.ErrorInfo``.

Every error a servicer returns goes through :func:`abort`: a status code from the component's
mapping table, a sentence a user understands, and an ``ErrorInfo`` whose ``reason`` is a
stable UPPER_SNAKE code (the errno name, the SGX code or the rule that decided), ``domain``
names the component, and ``metadata`` carries the specifics (errno, sgx_code, rule, hint).
Clients read it back with :func:`error_info`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
