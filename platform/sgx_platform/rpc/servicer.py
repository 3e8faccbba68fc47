"""``sgx.platform.v1.PlatformService``: a thin servicer over :class:`~sgx_platform.driver.Driver`.

Invariants: each method decodes its request, makes one driver call and encodes the response;
it decides nothing. Errors leave through :func:`sgx_platform.rpc.status.status_of` (one table)
with an ``ErrorInfo``; anything unexpected is INTERNAL with a generic message. Who may call
what is decided before the servicer runs, by the authorization interceptor and
:func:`authorizer` (the socket or certificate a call arrives on grants a role).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from sgx.platform.v1 import platform_pb2 as pb
from sgx.platform.v1 import platform_pb2_grpc as pb_grpc
from sgx_platform.arch.attributes import KeyPolicy
from sgx_platform.config import LaunchMode
from sgx_platform.driver import Driver, EnclaveState
from sgx_platform.metrics import PlatformMetrics
from sgx_platform.rpc.status import DOMAIN, status_of
from sgx_rpc.errors import abort_with
from sgx_rpc.server import Authorizer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PlatformService"].full_name

_R = TypeVar("_R")

# Roles: one per Unix socket, plus the mTLS identities of the local service CA.
ROLE_DEVICE = "device"
ROLE_PROVISION = "provision"
ROLE_OWNER = "owner"
ROLE_ADMIN = "admin"
ROLE_QUOTING = "quoting"
ROLE_LAUNCHCTL = "launchctl"
ROLE_SERVICE = "service"

#: Certificate common names (the local service CA's profile) and the role each gets.
CERTIFICATE_ROLES = {
    "sgxemu-admin": ROLE_ADMIN,
    "sgxemu-quoting": ROLE_QUOTING,
    "sgxemu-launchctl": ROLE_LAUNCHCTL,
}

_DEVICE_METHODS = (
    "CreateEnclave", "AddPages", "InitEnclave", "LoadEnclaveFromFile", "DestroyEnclave",
    "RenewLease", "ReadEnclaveMemory", "WriteEnclaveMemory", "CreateReport", "GetKey",
    "SealData", "UnsealData", "DebugReadMemory", "DebugWriteMemory",
)
_PROVISION_METHODS = ("GrantProvisionKey",)
_OWNER_METHODS = (
    "ResetPlatform", "UpdateTcb", "SetOwnerEpoch", "SetLePubkeyHash", "LockLeRegisters",
    "LatchLaunchPolicy",
)
_ROLE_METHODS: dict[str, tuple[str, ...]] = {
    ROLE_DEVICE: _DEVICE_METHODS,
    ROLE_PROVISION: _PROVISION_METHODS,
    ROLE_OWNER: _OWNER_METHODS,
    ROLE_ADMIN: _DEVICE_METHODS + _PROVISION_METHODS + _OWNER_METHODS,
    ROLE_QUOTING: _DEVICE_METHODS + _PROVISION_METHODS,
    ROLE_LAUNCHCTL: (*_DEVICE_METHODS, "LatchLaunchPolicy"),
    ROLE_SERVICE: _DEVICE_METHODS,
}


def authorizer() -> Authorizer:
    """Which role may call which method; GetPlatformInfo is open to every role."""

    def role_of_certificate(common_name: str) -> str:
        return CERTIFICATE_ROLES.get(common_name, ROLE_SERVICE)

    return Authorizer.for_service(
        pb.DESCRIPTOR.services_by_name["PlatformService"],
        {role: (*methods, "GetPlatformInfo") for role, methods in _ROLE_METHODS.items()},
        domain=DOMAIN,
        role_of_certificate=role_of_certificate,
    )


_LAUNCH_MODES = {LaunchMode.OPEN: pb.LAUNCH_MODE_OPEN, LaunchMode.TOKEN: pb.LAUNCH_MODE_TOKEN}
_STATES = {
    EnclaveState.CREATED: pb.ENCLAVE_STATE_CREATED,
    EnclaveState.INITIALIZED: pb.ENCLAVE_STATE_INITIALIZED,
}
_SEAL_POLICIES = {
    pb.SEAL_POLICY_UNSPECIFIED: None,
    pb.SEAL_POLICY_MRENCLAVE: int(KeyPolicy.MRENCLAVE),
    pb.SEAL_POLICY_MRSIGNER: int(KeyPolicy.MRSIGNER),
}


class PlatformServicer(pb_grpc.PlatformServiceServicer):
    """Decode, call the driver, encode."""

    def __init__(self, driver: Driver, metrics: PlatformMetrics | None = None) -> None:
        self._driver = driver
        self._metrics = metrics

    def _serve(self, context: grpc.ServicerContext, method: str, call: Callable[[], _R]) -> _R:
        try:
            result = call()
        except Exception as e:
            report = status_of(e)
            self._count(method, grpc.StatusCode.INTERNAL if report is None else report.code)
            if self._metrics is not None and report is not None and report.code in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAVAILABLE,
            ):
                self._metrics.denials.labels(report.rule or "-", report.reason).inc()
            abort_with(context, report, e, domain=DOMAIN)
        self._count(method, grpc.StatusCode.OK)
        return result

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        if self._metrics is not None:
            self._metrics.calls.labels(method, code.name).inc()

    # -- platform --------------------------------------------------------------------------

    def GetPlatformInfo(
        self, request: pb.GetPlatformInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetPlatformInfoResponse:
        def call() -> pb.GetPlatformInfoResponse:
            info = self._driver.info()
            return pb.GetPlatformInfoResponse(
                cpu_svn=info.cpusvn,
                launch_mode=_LAUNCH_MODES[info.launch_mode],
                le_pubkey_hash=info.le_pubkey_hash.to_bytes(),
                le_pubkey_hash_locked=info.le_pubkey_hash_locked,
                launch_policy_latch=info.launch_policy_latch or b"",
                boot_epoch=info.boot_epoch,
                epc_pages_total=info.epc_pages_total,
                epc_pages_free=info.epc_pages_free,
                epc_pages_evicted=info.epc_pages_evicted,
                eviction_enabled=info.eviction_enabled,
                enclave_count=info.enclave_count,
                lease_seconds=info.lease_seconds,
            )

        return self._serve(context, "GetPlatformInfo", call)

    # -- build -------------------------------------------------------------------------------

    def CreateEnclave(
        self, request: pb.CreateEnclaveRequest, context: grpc.ServicerContext
    ) -> pb.CreateEnclaveResponse:
        def call() -> pb.CreateEnclaveResponse:
            created = self._driver.create_enclave(request.secs)
            return pb.CreateEnclaveResponse(
                enclave_handle=created.handle,
                enclave_id=created.enclave_id,
                lease_seconds=created.lease_seconds,
            )

        return self._serve(context, "CreateEnclave", call)

    def AddPages(
        self, request: pb.AddPagesRequest, context: grpc.ServicerContext
    ) -> pb.AddPagesResponse:
        return self._serve(
            context,
            "AddPages",
            lambda: pb.AddPagesResponse(
                count=self._driver.add_pages(
                    request.enclave_handle, request.offset, request.data, request.secinfo,
                    request.measure,
                )
            ),
        )

    def InitEnclave(
        self, request: pb.InitEnclaveRequest, context: grpc.ServicerContext
    ) -> pb.InitEnclaveResponse:
        def call() -> pb.InitEnclaveResponse:
            mrenclave, mrsigner = self._driver.init_enclave(
                request.enclave_handle, request.sigstruct
            )
            return pb.InitEnclaveResponse(
                mrenclave=mrenclave.to_bytes(), mrsigner=mrsigner.to_bytes()
            )

        return self._serve(context, "InitEnclave", call)

    def LoadEnclaveFromFile(
        self, request: pb.LoadEnclaveFromFileRequest, context: grpc.ServicerContext
    ) -> pb.LoadEnclaveFromFileResponse:
        def call() -> pb.LoadEnclaveFromFileResponse:
            loaded = self._driver.load_from_file(
                request.path,
                request.sigstruct,
                debug=request.debug,
                provision_key=request.provision_key,
                defer_init=request.defer_init,
            )
            return pb.LoadEnclaveFromFileResponse(
                enclave_handle=loaded.handle,
                enclave_id=loaded.enclave_id,
                lease_seconds=loaded.lease_seconds,
                state=_STATES[loaded.state],
                image_sha256=loaded.image_sha256,
                page_count=loaded.page_count,
                mrenclave=loaded.mrenclave.to_bytes() if loaded.mrenclave else b"",
                mrsigner=loaded.mrsigner.to_bytes() if loaded.mrsigner else b"",
            )

        return self._serve(context, "LoadEnclaveFromFile", call)

    def GrantProvisionKey(
        self, request: pb.GrantProvisionKeyRequest, context: grpc.ServicerContext
    ) -> pb.GrantProvisionKeyResponse:
        def call() -> pb.GrantProvisionKeyResponse:
            self._driver.grant_provision_key(request.enclave_handle)
            return pb.GrantProvisionKeyResponse()

        return self._serve(context, "GrantProvisionKey", call)

    def DestroyEnclave(
        self, request: pb.DestroyEnclaveRequest, context: grpc.ServicerContext
    ) -> pb.DestroyEnclaveResponse:
        return self._serve(
            context,
            "DestroyEnclave",
            lambda: pb.DestroyEnclaveResponse(
                pages_freed=self._driver.destroy(request.enclave_handle)
            ),
        )

    def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> pb.RenewLeaseResponse:
        return self._serve(
            context,
            "RenewLease",
            lambda: pb.RenewLeaseResponse(
                lease_seconds=self._driver.renew_lease(request.enclave_handle)
            ),
        )

    # -- inside the enclave ----------------------------------------------------------------

    def ReadEnclaveMemory(
        self, request: pb.ReadEnclaveMemoryRequest, context: grpc.ServicerContext
    ) -> pb.ReadEnclaveMemoryResponse:
        return self._serve(
            context,
            "ReadEnclaveMemory",
            lambda: pb.ReadEnclaveMemoryResponse(
                data=self._driver.read_memory(
                    request.enclave_handle, request.offset, request.length
                )
            ),
        )

    def WriteEnclaveMemory(
        self, request: pb.WriteEnclaveMemoryRequest, context: grpc.ServicerContext
    ) -> pb.WriteEnclaveMemoryResponse:
        def call() -> pb.WriteEnclaveMemoryResponse:
            self._driver.write_memory(request.enclave_handle, request.offset, request.data)
            return pb.WriteEnclaveMemoryResponse()

        return self._serve(context, "WriteEnclaveMemory", call)

    def CreateReport(
        self, request: pb.CreateReportRequest, context: grpc.ServicerContext
    ) -> pb.CreateReportResponse:
        return self._serve(
            context,
            "CreateReport",
            lambda: pb.CreateReportResponse(
                report=self._driver.create_report(
                    request.enclave_handle, request.target_info, request.report_data
                )
            ),
        )

    def GetKey(self, request: pb.GetKeyRequest, context: grpc.ServicerContext) -> pb.GetKeyResponse:
        return self._serve(
            context,
            "GetKey",
            lambda: pb.GetKeyResponse(
                key=self._driver.get_key(request.enclave_handle, request.key_request)
            ),
        )

    def SealData(
        self, request: pb.SealDataRequest, context: grpc.ServicerContext
    ) -> pb.SealDataResponse:
        def call() -> pb.SealDataResponse:
            policy = _SEAL_POLICIES.get(request.policy)
            if request.policy not in _SEAL_POLICIES:
                policy = -1  # unknown enum value: the seal layer refuses it
            return pb.SealDataResponse(
                sealed_data=self._driver.seal(
                    request.enclave_handle, request.plaintext, request.additional_mac_text, policy
                )
            )

        return self._serve(context, "SealData", call)

    def UnsealData(
        self, request: pb.UnsealDataRequest, context: grpc.ServicerContext
    ) -> pb.UnsealDataResponse:
        def call() -> pb.UnsealDataResponse:
            plaintext, aad = self._driver.unseal(request.enclave_handle, request.sealed_data)
            return pb.UnsealDataResponse(plaintext=plaintext, additional_mac_text=aad)

        return self._serve(context, "UnsealData", call)

    def DebugReadMemory(
        self, request: pb.DebugReadMemoryRequest, context: grpc.ServicerContext
    ) -> pb.DebugReadMemoryResponse:
        return self._serve(
            context,
            "DebugReadMemory",
            lambda: pb.DebugReadMemoryResponse(
                data=self._driver.debug_read(
                    request.enclave_handle, request.offset, request.length
                )
            ),
        )

    def DebugWriteMemory(
        self, request: pb.DebugWriteMemoryRequest, context: grpc.ServicerContext
    ) -> pb.DebugWriteMemoryResponse:
        def call() -> pb.DebugWriteMemoryResponse:
            self._driver.debug_write(request.enclave_handle, request.offset, request.data)
            return pb.DebugWriteMemoryResponse()

        return self._serve(context, "DebugWriteMemory", call)

    # -- owner -------------------------------------------------------------------------------

    def ResetPlatform(
        self, request: pb.ResetPlatformRequest, context: grpc.ServicerContext
    ) -> pb.ResetPlatformResponse:
        def call() -> pb.ResetPlatformResponse:
            epoch, destroyed = self._driver.reset()
            return pb.ResetPlatformResponse(boot_epoch=epoch, enclaves_destroyed=destroyed)

        return self._serve(context, "ResetPlatform", call)

    def UpdateTcb(
        self, request: pb.UpdateTcbRequest, context: grpc.ServicerContext
    ) -> pb.UpdateTcbResponse:
        return self._serve(
            context,
            "UpdateTcb",
            lambda: pb.UpdateTcbResponse(
                cpu_svn=self._driver.update_tcb(request.cpu_svn or None)
            ),
        )

    def SetOwnerEpoch(
        self, request: pb.SetOwnerEpochRequest, context: grpc.ServicerContext
    ) -> pb.SetOwnerEpochResponse:
        def call() -> pb.SetOwnerEpochResponse:
            self._driver.set_owner_epoch(request.owner_epoch)
            return pb.SetOwnerEpochResponse()

        return self._serve(context, "SetOwnerEpoch", call)

    def SetLePubkeyHash(
        self, request: pb.SetLePubkeyHashRequest, context: grpc.ServicerContext
    ) -> pb.SetLePubkeyHashResponse:
        def call() -> pb.SetLePubkeyHashResponse:
            self._driver.set_le_pubkey_hash(request.le_pubkey_hash)
            return pb.SetLePubkeyHashResponse()

        return self._serve(context, "SetLePubkeyHash", call)

    def LockLeRegisters(
        self, request: pb.LockLeRegistersRequest, context: grpc.ServicerContext
    ) -> pb.LockLeRegistersResponse:
        return self._serve(
            context,
            "LockLeRegisters",
            lambda: pb.LockLeRegistersResponse(
                le_pubkey_hash=self._driver.lock_le_registers().to_bytes()
            ),
        )

    def LatchLaunchPolicy(
        self, request: pb.LatchLaunchPolicyRequest, context: grpc.ServicerContext
    ) -> pb.LatchLaunchPolicyResponse:
        def call() -> pb.LatchLaunchPolicyResponse:
            self._driver.latch_launch_policy(request.digest)
            return pb.LatchLaunchPolicyResponse()

        return self._serve(context, "LatchLaunchPolicy", call)


def register(servicer: PlatformServicer) -> Callable[[grpc.Server], None]:
    """A :class:`~sgx_rpc.server.ServiceHost` registration for ``servicer``."""

    def add(server: grpc.Server) -> None:
        pb_grpc.add_PlatformServiceServicer_to_server(servicer, server)

    return add
