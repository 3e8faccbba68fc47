"""``sgx.launchctl.v1.LaunchControlService``: a thin servicer over
:class:`~sgx_launchctl.daemon.LaunchControl`, and who may call what.

Invariants: each method decodes its request, makes one daemon call and encodes the response;
it decides nothing. Errors leave through :func:`sgx_launchctl.rpc.status.status_of` with an
``ErrorInfo``; anything unexpected is INTERNAL with a generic message. Authorization happens
before the servicer runs, in ``sgx_rpc``'s interceptor with :func:`authorizer`: the socket or
certificate a call arrives on grants a role —

* ``admin``: the admin socket (0600 in a 0700 directory) or the admin certificate
  (CN ``sgxemu-admin``): every change and every read;
* ``platform``: the authority socket (0600 in a 0700 directory) or the platform's certificate
  (CN ``sgxemu-platform``): GetLaunchToken, GetLoadPolicy and the reads;
* ``reader``: the public socket (its file mode is the gate): the reads only.

Any other certificate gets no method (PERMISSION_DENIED); a TCP client without a certificate
fails the TLS handshake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from sgx.launchctl.v1 import launchctl_pb2 as pb
from sgx.launchctl.v1 import launchctl_pb2_grpc as pb_grpc
from sgx_launchctl.daemon import LaunchControl
from sgx_launchctl.errors import AuditChainError
from sgx_launchctl.rpc.convert import (
    MODES,
    measurement,
    policy_to_pb,
    signer_from_pb,
    signer_to_pb,
)
from sgx_launchctl.rpc.status import DOMAIN, status_of
from sgx_rpc.errors import abort_with
from sgx_rpc.server import Authorizer, current_caller

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LaunchControlService"].full_name

ROLE_ADMIN = "admin"
ROLE_PLATFORM = "platform"
ROLE_READER = "reader"

CERTIFICATE_ROLES = {"sgxemu-admin": ROLE_ADMIN, "sgxemu-platform": ROLE_PLATFORM}

READ_METHODS = ("ListSigners", "GetStatus", "GetAuditLog", "GetLoadPolicy")
ADMIN_METHODS = (
    "AddSigner", "RemoveSigner", "LockPolicy", "AllowImageDirectory", "AllowImageDigest",
    "SetLoadRule",
)
PLATFORM_METHODS = ("GetLaunchToken",)
ROLE_METHODS: dict[str, tuple[str, ...]] = {
    ROLE_ADMIN: ADMIN_METHODS + READ_METHODS,
    ROLE_PLATFORM: PLATFORM_METHODS + READ_METHODS,
    ROLE_READER: READ_METHODS,
}
#: Entries returned when a GetAuditLog request names no limit, and the most it may ask for.
DEFAULT_AUDIT_LIMIT = 1000
MAX_AUDIT_LIMIT = 10000

_R = TypeVar("_R")


def authorizer() -> Authorizer:
    return Authorizer.for_service(
        pb.DESCRIPTOR.services_by_name["LaunchControlService"],
        ROLE_METHODS,
        domain=DOMAIN,
        role_of_certificate=lambda cn: CERTIFICATE_ROLES.get(cn),
    )


def _caller() -> str:
    caller = current_caller()
    return f"{caller.role}:{caller.identity}"


class LaunchControlServicer(pb_grpc.LaunchControlServiceServicer):
    """Decode, call the daemon, encode."""

    def __init__(self, daemon: LaunchControl) -> None:
        self._daemon = daemon

    def _serve(self, context: grpc.ServicerContext, call: Callable[[], _R]) -> _R:
        try:
            return call()
        except Exception as e:
            abort_with(context, status_of(e), e, domain=DOMAIN)

    # -- the platform ---------------------------------------------------------------------------

    def GetLaunchToken(
        self, request: pb.GetLaunchTokenRequest, context: grpc.ServicerContext
    ) -> pb.GetLaunchTokenResponse:
        def call() -> pb.GetLaunchTokenResponse:
            decision = self._daemon.decide_launch(
                request.sigstruct, request.secs, request.boot_epoch, _caller()
            )
            if decision.token is not None:
                return pb.GetLaunchTokenResponse(einittoken=decision.token)
            denial = decision.denial
            assert denial is not None
            return pb.GetLaunchTokenResponse(
                denial=pb.LaunchDenial(
                    rule=denial.rule,
                    reason=denial.reason,
                    message=denial.message,
                    hint=decision.hint,
                    mrsigner=denial.mrsigner.to_bytes() if denial.mrsigner else b"",
                    mrenclave=denial.mrenclave.to_bytes() if denial.mrenclave else b"",
                )
            )

        return self._serve(context, call)

    def GetLoadPolicy(
        self, request: pb.GetLoadPolicyRequest, context: grpc.ServicerContext
    ) -> pb.GetLoadPolicyResponse:
        return self._serve(
            context,
            lambda: pb.GetLoadPolicyResponse(
                policy=policy_to_pb(self._daemon.load_policy_for(request.boot_epoch))
            ),
        )

    # -- the allowlist --------------------------------------------------------------------------

    def AddSigner(
        self, request: pb.AddSignerRequest, context: grpc.ServicerContext
    ) -> pb.AddSignerResponse:
        def call() -> pb.AddSignerResponse:
            entry, replaced = self._daemon.add_signer(signer_from_pb(request.signer), _caller())
            return pb.AddSignerResponse(signer=signer_to_pb(entry), replaced=replaced)

        return self._serve(context, call)

    def RemoveSigner(
        self, request: pb.RemoveSignerRequest, context: grpc.ServicerContext
    ) -> pb.RemoveSignerResponse:
        def call() -> pb.RemoveSignerResponse:
            self._daemon.remove_signer(measurement(request.mrsigner, "MRSIGNER"), _caller())
            return pb.RemoveSignerResponse()

        return self._serve(context, call)

    def ListSigners(
        self, request: pb.ListSignersRequest, context: grpc.ServicerContext
    ) -> pb.ListSignersResponse:
        return self._serve(
            context,
            lambda: pb.ListSignersResponse(
                signers=[signer_to_pb(e) for e in self._daemon.signers()]
            ),
        )

    def LockPolicy(
        self, request: pb.LockPolicyRequest, context: grpc.ServicerContext
    ) -> pb.LockPolicyResponse:
        return self._serve(
            context, lambda: pb.LockPolicyResponse(digest=self._daemon.lock(_caller()))
        )

    # -- the load policy ------------------------------------------------------------------------

    def AllowImageDirectory(
        self, request: pb.AllowImageDirectoryRequest, context: grpc.ServicerContext
    ) -> pb.AllowImageDirectoryResponse:
        return self._serve(
            context,
            lambda: pb.AllowImageDirectoryResponse(
                policy=policy_to_pb(
                    self._daemon.allow_image_directory(request.directory, _caller())
                )
            ),
        )

    def AllowImageDigest(
        self, request: pb.AllowImageDigestRequest, context: grpc.ServicerContext
    ) -> pb.AllowImageDigestResponse:
        return self._serve(
            context,
            lambda: pb.AllowImageDigestResponse(
                policy=policy_to_pb(self._daemon.allow_image_digest(request.sha256, _caller()))
            ),
        )

    def SetLoadRule(
        self, request: pb.SetLoadRuleRequest, context: grpc.ServicerContext
    ) -> pb.SetLoadRuleResponse:
        return self._serve(
            context,
            lambda: pb.SetLoadRuleResponse(
                policy=policy_to_pb(
                    self._daemon.set_load_rule(request.rule, request.enabled, _caller())
                )
            ),
        )

    # -- reads ----------------------------------------------------------------------------------

    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetStatusResponse:
        def call() -> pb.GetStatusResponse:
            s = self._daemon.status()
            return pb.GetStatusResponse(
                locked=s.locked,
                mode=MODES.get(s.mode, pb.LAUNCH_MODE_UNSPECIFIED),
                signer_count=s.signer_count,
                policy=policy_to_pb(s.policy),
                policy_digest=s.policy_digest,
                latched_digest=s.latched_digest or b"",
                boot_epoch=s.boot_epoch,
                ready=s.ready,
                le_mrsigner=s.le_mrsigner.to_bytes(),
                le_mrenclave=s.le_mrenclave.to_bytes(),
                audit_length=s.audit_length,
                audit_head=s.audit_head,
            )

        return self._serve(context, call)

    def GetAuditLog(
        self, request: pb.GetAuditLogRequest, context: grpc.ServicerContext
    ) -> pb.GetAuditLogResponse:
        def call() -> pb.GetAuditLogResponse:
            limit = min(request.limit or DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT)
            entries = self._daemon.audit_entries(max(1, request.start_sequence), limit)
            response = pb.GetAuditLogResponse(
                entries=[
                    pb.AuditEntry(
                        sequence=e.sequence, time=e.time, event=e.event, caller=e.caller,
                        details_json=e.details, hash=e.hash,
                    )
                    for e in entries
                ],
                length=self._daemon.audit_length,
            )
            if request.verify:
                try:
                    length = self._daemon.verify_audit()
                    response.verification.CopyFrom(
                        pb.AuditVerification(verified=True, length=length)
                    )
                except AuditChainError as e:
                    response.verification.CopyFrom(
                        pb.AuditVerification(
                            verified=False, first_broken_sequence=e.sequence, reason=e.message,
                            length=self._daemon.audit_length,
                        )
                    )
            return response

        return self._serve(context, call)


def register(servicer: LaunchControlServicer) -> Callable[[grpc.Server], None]:
    def add(server: grpc.Server) -> None:
        pb_grpc.add_LaunchControlServiceServicer_to_server(servicer, server)

    return add
