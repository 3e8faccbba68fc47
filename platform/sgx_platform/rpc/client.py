"""A client of ``sgx.platform.v1.PlatformService`` for the CLI and other components.

Invariants:

* Imports only ``sgx_platform.arch``, the generated ``sgx.platform.v1`` code and ``sgx_rpc``
  (never the emulator), so it can move verbatim to wherever launchctl and quoting may import it.
* Every failed call raises :class:`PlatformRpcError` carrying the RPC's name, the status code
  and the ``ErrorInfo`` fields (reason, errno, SGX code, rule, hint) — callers branch on
  ``reason``, never on message text.
* With ``reconnect_wait`` (a long-lived client such as the quoting service), a call that never
  reached the platform (UNAVAILABLE without an ``ErrorInfo``) is tried once more, waiting at
  most that long for a (re)starting platform; a call the platform never answered then fails
  UNAVAILABLE. Without it (the default, one-shot clients such as the CLI) every failure is
  reported as it comes.
* An :class:`EnclaveSession` keeps its enclave's lease alive from a daemon thread (renewing at a
  third of the lease period) and destroys the enclave when closed; the handle never appears in
  its ``repr``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from sgx.platform.v1 import platform_pb2 as pb
from sgx.platform.v1 import platform_pb2_grpc as pb_grpc
from sgx_platform.arch.errors import SgxError
from sgx_platform.arch.measurement import Measurement
from sgx_rpc.channel import ChannelOption, unix_channel
from sgx_rpc.errors import error_info

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class PlatformRpcError(SgxError):
    """A platform call that failed; the fields come from the status and its ErrorInfo."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        metadata: dict[str, str],
        method: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata
        #: The RPC that failed (``GetKey``, ``LoadEnclaveFromFile``...).
        self.method = method

    @property
    def errno_name(self) -> str | None:
        return self.metadata.get("errno")

    @property
    def sgx_code(self) -> int | None:
        value = self.metadata.get("sgx_code")
        return int(value) if value is not None else None

    @property
    def rule(self) -> str | None:
        return self.metadata.get("rule")

    @property
    def hint(self) -> str | None:
        return self.metadata.get("hint")

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, method: str = "") -> PlatformRpcError:
        info = error_info(error)
        code: grpc.StatusCode = error.code()
        details: str = error.details() or code.name
        if info is None:
            return cls(code, details, code.name, {}, method)
        return cls(code, details, info.reason, dict(info.metadata), method)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    handle: bytes = field(repr=False)
    enclave_id: str
    lease_seconds: float
    initialized: bool
    image_sha256: bytes
    page_count: int
    mrenclave: Measurement | None
    mrsigner: Measurement | None


class PlatformClient:
    """Typed calls over one channel; ``timeout`` bounds each call, ``reconnect_wait`` (seconds,
    0 for none) how long a call that never reached the platform waits for it once more."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_wait: float = 0.0,
    ) -> None:
        self._channel = channel
        self._stub = pb_grpc.PlatformServiceStub(channel)
        self._timeout = timeout
        self._reconnect_wait = reconnect_wait

    @classmethod
    def unix(
        cls,
        path: str | Path,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_wait: float = 0.0,
        options: Sequence[ChannelOption] = (),
    ) -> PlatformClient:
        """A client of one of the platform's sockets; a long-lived client passes
        ``options=sgx_rpc.channel.QUICK_RECONNECT``."""
        return cls(
            unix_channel(path, options=options), timeout=timeout, reconnect_wait=reconnect_wait
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        call = getattr(self._stub, method)
        try:
            try:
                return call(request, timeout=self._timeout)
            except grpc.RpcError as e:
                if not self._reconnect_wait or not _never_reached(e):
                    raise
                return call(
                    request, timeout=min(self._timeout, self._reconnect_wait), wait_for_ready=True
                )
        except grpc.RpcError as e:
            if self._reconnect_wait and _never_answered(e):
                unavailable = grpc.StatusCode.UNAVAILABLE
                raise PlatformRpcError(
                    unavailable, e.details() or unavailable.name, unavailable.name, {}, method
                ) from None
            raise PlatformRpcError.from_rpc(e, method) from None

    # -- platform ----------------------------------------------------------------------------

    def info(self) -> pb.GetPlatformInfoResponse:
        response: pb.GetPlatformInfoResponse = self._call(
            "GetPlatformInfo", pb.GetPlatformInfoRequest()
        )
        return response

    # -- build -------------------------------------------------------------------------------

    def create_enclave(self, secs: bytes) -> pb.CreateEnclaveResponse:
        response: pb.CreateEnclaveResponse = self._call(
            "CreateEnclave", pb.CreateEnclaveRequest(secs=secs)
        )
        return response

    def add_pages(
        self, handle: bytes, offset: int, data: bytes, secinfo: bytes, *, measure: bool
    ) -> int:
        response: pb.AddPagesResponse = self._call(
            "AddPages",
            pb.AddPagesRequest(
                enclave_handle=handle, offset=offset, data=data, secinfo=secinfo, measure=measure
            ),
        )
        return response.count

    def init_enclave(self, handle: bytes, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        response: pb.InitEnclaveResponse = self._call(
            "InitEnclave", pb.InitEnclaveRequest(enclave_handle=handle, sigstruct=sigstruct)
        )
        return Measurement(response.mrenclave), Measurement(response.mrsigner)

    def load_enclave_from_file(
        self,
        path: str | Path,
        sigstruct: bytes,
        *,
        debug: bool = False,
        provision_key: bool = False,
        defer_init: bool = False,
    ) -> LoadResult:
        r: pb.LoadEnclaveFromFileResponse = self._call(
            "LoadEnclaveFromFile",
            pb.LoadEnclaveFromFileRequest(
                path=str(path),
                sigstruct=sigstruct,
                debug=debug,
                provision_key=provision_key,
                defer_init=defer_init,
            ),
        )
        return LoadResult(
            handle=r.enclave_handle,
            enclave_id=r.enclave_id,
            lease_seconds=r.lease_seconds,
            initialized=r.state == pb.ENCLAVE_STATE_INITIALIZED,
            image_sha256=r.image_sha256,
            page_count=r.page_count,
            mrenclave=Measurement(r.mrenclave) if r.mrenclave else None,
            mrsigner=Measurement(r.mrsigner) if r.mrsigner else None,
        )

    def grant_provision_key(self, handle: bytes) -> None:
        self._call("GrantProvisionKey", pb.GrantProvisionKeyRequest(enclave_handle=handle))

    def destroy_enclave(self, handle: bytes) -> int:
        response: pb.DestroyEnclaveResponse = self._call(
            "DestroyEnclave", pb.DestroyEnclaveRequest(enclave_handle=handle)
        )
        return response.pages_freed

    def renew_lease(self, handle: bytes) -> float:
        response: pb.RenewLeaseResponse = self._call(
            "RenewLease", pb.RenewLeaseRequest(enclave_handle=handle)
        )
        return response.lease_seconds

    # -- inside the enclave ----------------------------------------------------------------

    def read_memory(self, handle: bytes, offset: int, length: int) -> bytes:
        response: pb.ReadEnclaveMemoryResponse = self._call(
            "ReadEnclaveMemory",
            pb.ReadEnclaveMemoryRequest(enclave_handle=handle, offset=offset, length=length),
        )
        return response.data

    def write_memory(self, handle: bytes, offset: int, data: bytes) -> None:
        self._call(
            "WriteEnclaveMemory",
            pb.WriteEnclaveMemoryRequest(enclave_handle=handle, offset=offset, data=data),
        )

    def create_report(
        self, handle: bytes, target_info: bytes = b"", report_data: bytes = b""
    ) -> bytes:
        response: pb.CreateReportResponse = self._call(
            "CreateReport",
            pb.CreateReportRequest(
                enclave_handle=handle, target_info=target_info, report_data=report_data
            ),
        )
        return response.report

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        response: pb.GetKeyResponse = self._call(
            "GetKey", pb.GetKeyRequest(enclave_handle=handle, key_request=key_request)
        )
        return response.key

    def seal(
        self,
        handle: bytes,
        plaintext: bytes,
        additional_mac_text: bytes = b"",
        *,
        policy: pb.SealPolicy.ValueType = pb.SEAL_POLICY_UNSPECIFIED,
    ) -> bytes:
        response: pb.SealDataResponse = self._call(
            "SealData",
            pb.SealDataRequest(
                enclave_handle=handle,
                plaintext=plaintext,
                additional_mac_text=additional_mac_text,
                policy=policy,
            ),
        )
        return response.sealed_data

    def unseal(self, handle: bytes, sealed_data: bytes) -> tuple[bytes, bytes]:
        response: pb.UnsealDataResponse = self._call(
            "UnsealData", pb.UnsealDataRequest(enclave_handle=handle, sealed_data=sealed_data)
        )
        return response.plaintext, response.additional_mac_text

    def debug_read(self, handle: bytes, offset: int, length: int) -> bytes:
        response: pb.DebugReadMemoryResponse = self._call(
            "DebugReadMemory",
            pb.DebugReadMemoryRequest(enclave_handle=handle, offset=offset, length=length),
        )
        return response.data

    def debug_write(self, handle: bytes, offset: int, data: bytes) -> None:
        self._call(
            "DebugWriteMemory",
            pb.DebugWriteMemoryRequest(enclave_handle=handle, offset=offset, data=data),
        )

    # -- owner -------------------------------------------------------------------------------

    def reset(self) -> pb.ResetPlatformResponse:
        response: pb.ResetPlatformResponse = self._call(
            "ResetPlatform", pb.ResetPlatformRequest()
        )
        return response

    def update_tcb(self, cpu_svn: bytes = b"") -> bytes:
        response: pb.UpdateTcbResponse = self._call(
            "UpdateTcb", pb.UpdateTcbRequest(cpu_svn=cpu_svn)
        )
        return response.cpu_svn

    def set_owner_epoch(self, owner_epoch: bytes) -> None:
        self._call("SetOwnerEpoch", pb.SetOwnerEpochRequest(owner_epoch=owner_epoch))

    def set_le_pubkey_hash(self, value: bytes) -> None:
        self._call("SetLePubkeyHash", pb.SetLePubkeyHashRequest(le_pubkey_hash=value))

    def lock_le_registers(self) -> bytes:
        response: pb.LockLeRegistersResponse = self._call(
            "LockLeRegisters", pb.LockLeRegistersRequest()
        )
        return response.le_pubkey_hash

    def latch_launch_policy(self, digest: bytes) -> None:
        self._call("LatchLaunchPolicy", pb.LatchLaunchPolicyRequest(digest=digest))


def _never_reached(error: grpc.RpcError) -> bool:
    """Not connected: UNAVAILABLE without an ``ErrorInfo`` (the platform never saw the call)."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and error_info(error) is None


def _never_answered(error: grpc.RpcError) -> bool:
    """The deadline passed without an answer from the platform (no ``ErrorInfo``)."""
    return error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and error_info(error) is None


class EnclaveSession:
    """One enclave held by this client: its lease renewed in the background, destroyed on close."""

    def __init__(
        self, client: PlatformClient, handle: bytes, enclave_id: str, lease_seconds: float
    ) -> None:
        self.client = client
        self.handle = handle
        self.enclave_id = enclave_id
        self._period = max(0.05, lease_seconds / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew, name=f"lease-{enclave_id}", daemon=True
        )
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.client.renew_lease(self.handle)
            except PlatformRpcError as e:
                log.warning("enclave %s: lease renewal failed: %s", self.enclave_id, e)
                if e.code == grpc.StatusCode.NOT_FOUND:
                    return

    def close(self, *, destroy: bool = True) -> int:
        """Stop renewing; destroy the enclave (returns EPC pages freed, 0 if already gone)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if not destroy:
            return 0
        try:
            return self.client.destroy_enclave(self.handle)
        except PlatformRpcError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return 0
            raise

    def __enter__(self) -> EnclaveSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EnclaveSession(enclave_id={self.enclave_id!r})"
