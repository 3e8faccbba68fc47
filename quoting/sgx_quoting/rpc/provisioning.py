"""``sgx.quoting.v1.ProvisioningService``: a thin servicer over the emulated PCS.

Invariants: each method decodes its request, runs one PCS operation inside a
:meth:`~sgx_quoting.state.PcsStore.session` (so it sees changes the command line made, and its
own changes are saved under the store's lock) and encodes the response; it decides nothing.
Errors leave through :func:`sgx_quoting.rpc.status.status_of` with an ``ErrorInfo``; anything
unexpected is INTERNAL with a generic message. Who may call what is decided before the servicer
runs, by :func:`authorizer`: reading (collateral, root CA, PCK certificate chains) is open to
every caller, registering a PCK key only to the quoting service, the admin and local callers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgx.quoting.v1 import provisioning_pb2 as pb
from sgx.quoting.v1 import provisioning_pb2_grpc as pb_grpc
from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.dcap.pck import sgx_extension_from_certificate
from sgx_quoting.errors import PcsInputError
from sgx_quoting.pcs import PckCertChain, PlatformTcb, system_now
from sgx_quoting.pki import PckCa
from sgx_quoting.rpc.status import DOMAIN, status_of
from sgx_quoting.state import PcsStore
from sgx_rpc.errors import abort_with
from sgx_rpc.server import Authorizer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProvisioningService"].full_name

_R = TypeVar("_R")

ROLE_ADMIN = "admin"
ROLE_QUOTING = "quoting"
ROLE_LOCAL = "local"
ROLE_SERVICE = "service"
ROLE_ANONYMOUS = "anonymous"

#: Certificate common names (the local service CA's profile) and the role each gets.
CERTIFICATE_ROLES = {"sgxemu-admin": ROLE_ADMIN, "sgxemu-quoting": ROLE_QUOTING}

_READ_METHODS = ("GetCollateral", "GetRootCa", "GetPckCertChain")
_REGISTER_METHODS = ("RegisterPck",)
_ROLE_METHODS: dict[str, tuple[str, ...]] = {
    ROLE_ADMIN: _READ_METHODS + _REGISTER_METHODS,
    ROLE_QUOTING: _READ_METHODS + _REGISTER_METHODS,
    ROLE_LOCAL: _READ_METHODS + _REGISTER_METHODS,
    ROLE_SERVICE: _READ_METHODS,
    ROLE_ANONYMOUS: _READ_METHODS,
}

_CA_TO_PROTO = {PckCa.PROCESSOR: pb.PCK_CA_PROCESSOR, PckCa.PLATFORM: pb.PCK_CA_PLATFORM}
_CA_FROM_PROTO = {v: k for k, v in _CA_TO_PROTO.items()}


def authorizer() -> Authorizer:
    """Roles per method: a Unix listener should grant :data:`ROLE_LOCAL` (its file mode is the
    gate), TLS peers get their certificate's role, else :data:`ROLE_SERVICE`."""

    def role_of_certificate(common_name: str) -> str:
        return CERTIFICATE_ROLES.get(common_name, ROLE_SERVICE)

    return Authorizer.for_service(
        pb.DESCRIPTOR.services_by_name["ProvisioningService"],
        _ROLE_METHODS,
        domain=DOMAIN,
        role_of_certificate=role_of_certificate,
    )


def _ppid(value: bytes) -> bytes | None:
    return value or None


def _chain_message(chain: PckCertChain) -> pb.PckCertChain:
    extension = sgx_extension_from_certificate(chain.leaf)
    return pb.PckCertChain(
        pem_chain=chain.pem().decode("ascii"),
        pck_certificate=chain.leaf.public_bytes(serialization.Encoding.DER),
        cpu_svn=extension.tcb.cpusvn,
        pce_svn=extension.tcb.pcesvn,
        fmspc=extension.fmspc,
        ca=_CA_TO_PROTO[PckCa.of_issuer(chain.leaf.issuer)],
        revoked=chain.revoked,
    )


def _collateral_message(collateral: QuoteCollateralV3) -> pb.GetCollateralResponse:
    tcb_info = collateral.signed_tcb_info.tcb_info
    chain_ca = PckCa.of_issuer(_first_subject(collateral.pck_crl_issuer_chain.encode("ascii")))
    return pb.GetCollateralResponse(
        quote_collateral_json=collateral.to_json(),
        pck_crl_issuer_chain=collateral.pck_crl_issuer_chain,
        root_ca_crl=collateral.root_ca_crl,
        pck_crl=collateral.pck_crl,
        tcb_info_issuer_chain=collateral.tcb_info_issuer_chain,
        tcb_info=collateral.tcb_info,
        tcb_info_signature=collateral.tcb_info_signature,
        qe_identity_issuer_chain=collateral.qe_identity_issuer_chain,
        qe_identity=collateral.qe_identity,
        qe_identity_signature=collateral.qe_identity_signature,
        fmspc=bytes(tcb_info.fmspc),
        ca=_CA_TO_PROTO[chain_ca],
    )


def _first_subject(pem: bytes) -> x509.Name:
    return x509.load_pem_x509_certificates(pem)[0].subject


class ProvisioningServicer(pb_grpc.ProvisioningServiceServicer):
    """Decode, run one PCS operation in a store session, encode."""

    def __init__(
        self, store: PcsStore, *, system_clock: Callable[[], dt.datetime] = system_now
    ) -> None:
        self._store = store
        self._clock = system_clock

    def _serve(self, context: grpc.ServicerContext, call: Callable[[], _R]) -> _R:
        try:
            return call()
        except Exception as e:
            report = status_of(e)
            if report is not None:
                log.info("PCS refused a call: %s: %s", report.reason, report.message)
            abort_with(context, report, e, domain=DOMAIN)

    def RegisterPck(
        self, request: pb.RegisterPckRequest, context: grpc.ServicerContext
    ) -> pb.RegisterPckResponse:
        def call() -> pb.RegisterPckResponse:
            tcb = PlatformTcb(request.cpu_svn, request.pce_svn)
            with self._store.session(system_clock=self._clock) as pcs:
                chain = pcs.register_pck(
                    request.pck_public_key,
                    tcb,
                    pce_id=request.pce_id,
                    ppid=_ppid(request.ppid),
                )
            return pb.RegisterPckResponse(chain=_chain_message(chain))

        return self._serve(context, call)

    def GetPckCertChain(
        self, request: pb.GetPckCertChainRequest, context: grpc.ServicerContext
    ) -> pb.GetPckCertChainResponse:
        def call() -> pb.GetPckCertChainResponse:
            tcb = PlatformTcb(request.cpu_svn, request.pce_svn)
            with self._store.session(system_clock=self._clock) as pcs:
                chain = pcs.select_pck(tcb, pce_id=request.pce_id, ppid=_ppid(request.ppid))
            return pb.GetPckCertChainResponse(chain=_chain_message(chain))

        return self._serve(context, call)

    def GetCollateral(
        self, request: pb.GetCollateralRequest, context: grpc.ServicerContext
    ) -> pb.GetCollateralResponse:
        def call() -> pb.GetCollateralResponse:
            target = request.WhichOneof("target")
            with self._store.session(system_clock=self._clock) as pcs:
                if target == "quote":
                    collateral = pcs.collateral_for_quote(request.quote)
                elif target == "fmspc":
                    ca = (
                        None
                        if request.fmspc.ca == pb.PCK_CA_UNSPECIFIED
                        else _CA_FROM_PROTO.get(request.fmspc.ca)
                    )
                    if request.fmspc.ca != pb.PCK_CA_UNSPECIFIED and ca is None:
                        raise PcsInputError(f"unknown PCK CA value {request.fmspc.ca}")
                    collateral = pcs.collateral(request.fmspc.fmspc, ca)
                else:
                    raise PcsInputError("GetCollateral needs a quote or an FMSPC")
            return _collateral_message(collateral)

        return self._serve(context, call)

    def GetRootCa(
        self, request: pb.GetRootCaRequest, context: grpc.ServicerContext
    ) -> pb.GetRootCaResponse:
        def call() -> pb.GetRootCaResponse:
            return pb.GetRootCaResponse(root_ca_der=self._store.load_pki().root_ca_der)

        return self._serve(context, call)


def register(servicer: ProvisioningServicer) -> Callable[[grpc.Server], None]:
    """A :class:`~sgx_rpc.server.ServiceHost` registration for ``servicer``."""

    def add(server: grpc.Server) -> None:
        pb_grpc.add_ProvisioningServiceServicer_to_server(servicer, server)

    return add
