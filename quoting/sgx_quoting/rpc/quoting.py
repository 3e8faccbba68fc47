"""``sgx.quoting.v1.QuotingService``: a thin servicer over the quoting engine.

Invariants: each method decodes its request, makes one engine call and encodes the response;
it decides nothing. Errors leave through :func:`sgx_quoting.rpc.quoting_status.status_of` with
an ``ErrorInfo``; anything unexpected is INTERNAL with a generic message. Calls are counted by
method and status code. Who may call is decided before the servicer runs, by
:func:`authorizer`: the local socket (its file mode is the gate), the admin and any certificate
of the local service CA may call everything; unauthenticated TLS peers may not quote.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from sgx.quoting.v1 import quoting_pb2 as pb
from sgx.quoting.v1 import quoting_pb2_grpc as pb_grpc
from sgx_quoting.engine import QuotingEngine
from sgx_quoting.rpc.quoting_status import DOMAIN, status_of
from sgx_rpc.errors import abort_with
from sgx_rpc.server import Authorizer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QuotingService"].full_name

_R = TypeVar("_R")

ROLE_LOCAL = "local"
ROLE_ADMIN = "admin"
ROLE_SERVICE = "service"
ROLE_ANONYMOUS = "anonymous"

#: Certificate common names of the local service CA that get a role other than "service".
CERTIFICATE_ROLES = {"sgxemu-admin": ROLE_ADMIN}

_ALL_METHODS = ("GetTargetInfo", "GetQuote", "GetQuotingInfo")
_ROLE_METHODS: dict[str, tuple[str, ...]] = {
    ROLE_LOCAL: _ALL_METHODS,
    ROLE_ADMIN: _ALL_METHODS,
    ROLE_SERVICE: _ALL_METHODS,
    ROLE_ANONYMOUS: ("GetQuotingInfo",),
}


def authorizer() -> Authorizer:
    """Roles per method. A Unix listener grants :data:`ROLE_LOCAL`; a TLS peer gets its
    certificate's role (admin, else service); a TLS peer without a certificate (where the
    listener allows it) is :data:`ROLE_ANONYMOUS`."""

    def role_of_certificate(common_name: str) -> str:
        return CERTIFICATE_ROLES.get(common_name, ROLE_SERVICE)

    return Authorizer.for_service(
        pb.DESCRIPTOR.services_by_name["QuotingService"],
        _ROLE_METHODS,
        domain=DOMAIN,
        role_of_certificate=role_of_certificate,
    )


class QuotingServicer(pb_grpc.QuotingServiceServicer):
    """Decode, call the engine, encode."""

    def __init__(self, engine: QuotingEngine) -> None:
        self._engine = engine

    def _serve(self, method: str, context: grpc.ServicerContext, call: Callable[[], _R]) -> _R:
        calls = self._engine.metrics.calls
        try:
            result = call()
        except Exception as e:
            report = status_of(e)
            calls.labels(method, "INTERNAL" if report is None else report.code.name).inc()
            abort_with(context, report, e, domain=DOMAIN)
        calls.labels(method, "OK").inc()
        return result

    def GetTargetInfo(
        self, request: pb.GetTargetInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetTargetInfoResponse:
        return self._serve(
            "GetTargetInfo",
            context,
            lambda: pb.GetTargetInfoResponse(target_info=self._engine.target_info()),
        )

    def GetQuote(
        self, request: pb.GetQuoteRequest, context: grpc.ServicerContext
    ) -> pb.GetQuoteResponse:
        return self._serve(
            "GetQuote",
            context,
            lambda: pb.GetQuoteResponse(quote=self._engine.get_quote(request.report)),
        )

    def GetQuotingInfo(
        self, request: pb.GetQuotingInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetQuotingInfoResponse:
        def call() -> pb.GetQuotingInfoResponse:
            info = self._engine.info()
            return pb.GetQuotingInfoResponse(
                qe_mrenclave=info.qe.mrenclave.value,
                qe_mrsigner=info.qe.mrsigner.value,
                qe_isvprodid=info.qe.isvprodid,
                qe_svn=info.qe.isvsvn,
                pce_mrenclave=info.pce.mrenclave.value,
                pce_mrsigner=info.pce.mrsigner.value,
                pce_isvprodid=info.pce.isvprodid,
                pce_svn=info.pce.isvsvn,
                pce_id=info.pce_id,
                cpu_svn=info.cpusvn,
                attestation_public_key=info.attestation_public_key,
                pck_cert_chain=info.pck_chain_pem,
            )

        return self._serve("GetQuotingInfo", context, call)


def register(servicer: QuotingServicer) -> Callable[[grpc.Server], None]:
    """A :class:`~sgx_rpc.server.ServiceHost` registration for ``servicer``."""

    def add(server: grpc.Server) -> None:
        pb_grpc.add_QuotingServiceServicer_to_server(servicer, server)

    return add
