"""A client of ``sgx.launchctl.v1.LaunchControlService`` (the CLI's and the tests').

Invariants: every failed call raises :class:`LaunchctlRpcError` with the status code and the
``ErrorInfo`` reason and metadata (hint, first broken audit entry), so callers branch on
``reason``, never on message text. Results come back as domain objects or plain dataclasses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sgx.launchctl.v1 import launchctl_pb2 as pb
from sgx.launchctl.v1 import launchctl_pb2_grpc as pb_grpc
from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.errors import LaunchctlError
from sgx_launchctl.policy import LoadPolicy
from sgx_launchctl.rpc.convert import MODE_NAMES, policy_from_pb, signer_from_pb, signer_to_pb
from sgx_platform.arch.measurement import Measurement
from sgx_rpc.channel import tls_channel, unix_channel
from sgx_rpc.errors import error_info

DEFAULT_TIMEOUT = 30.0


class LaunchctlRpcError(LaunchctlError):
    """A launchctl call that failed; fields from the status and its ErrorInfo."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]
    ) -> None:
        super().__init__(message, reason=reason)
        self.code = code
        self.metadata = metadata

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> LaunchctlRpcError:
        code: grpc.StatusCode = error.code()
        details: str = error.details() or code.name
        info = error_info(error)
        if info is None:
            return cls(code, details, code.name, {})
        return cls(code, details, info.reason, dict(info.metadata))

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class Status:
    locked: bool
    mode: str
    signer_count: int
    policy: LoadPolicy
    policy_digest: bytes
    latched_digest: bytes
    boot_epoch: bytes
    ready: bool
    le_mrsigner: bytes
    le_mrenclave: bytes
    audit_length: int
    audit_head: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "locked": self.locked,
            "mode": self.mode,
            "ready": self.ready,
            "entries": self.signer_count,
            "policy": self.policy.canonical(),
            "policy_digest": self.policy_digest.hex(),
            "latched_digest": self.latched_digest.hex() or None,
            "boot_epoch": self.boot_epoch.hex(),
            "launch_enclave": {
                "mrsigner": self.le_mrsigner.hex(),
                "mrenclave": self.le_mrenclave.hex(),
            },
            "audit": {"length": self.audit_length, "head": self.audit_head.hex()},
        }


@dataclass(frozen=True)
class AuditLine:
    sequence: int
    time: str
    event: str
    caller: str
    details: dict[str, Any]
    hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence, "time": self.time, "event": self.event,
            "caller": self.caller, "details": self.details, "hash": self.hash.hex(),
        }


@dataclass(frozen=True)
class AuditLog:
    entries: list[AuditLine]
    length: int
    verified: bool | None
    first_broken_sequence: int
    reason: str


@dataclass(frozen=True)
class TokenAnswer:
    einittoken: bytes | None
    denial: pb.LaunchDenial | None


class LaunchctlClient:
    """Typed calls over one channel; ``timeout`` bounds each call."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._channel = channel
        self._stub = pb_grpc.LaunchControlServiceStub(channel)
        self._timeout = timeout

    @classmethod
    def unix(cls, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT) -> LaunchctlClient:
        return cls(unix_channel(path), timeout=timeout)

    @classmethod
    def tls(
        cls,
        address: str,
        ca_pem: bytes,
        certificate_pem: bytes | None,
        key_pem: bytes | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> LaunchctlClient:
        return cls(
            tls_channel(address, ca_pem, client_certificate_pem=certificate_pem,
                        client_key_pem=key_pem),
            timeout=timeout,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LaunchctlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise LaunchctlRpcError.from_rpc(e) from None

    def call_raw(self, method: str, request: Any) -> Any:
        """Any method by name (the authorization tests call every one this way)."""
        return self._call(method, request)

    # -- the platform's questions ---------------------------------------------------------------

    def get_launch_token(
        self, sigstruct: bytes, secs: bytes, boot_epoch: bytes = b""
    ) -> TokenAnswer:
        r: pb.GetLaunchTokenResponse = self._call(
            "GetLaunchToken",
            pb.GetLaunchTokenRequest(sigstruct=sigstruct, secs=secs, boot_epoch=boot_epoch),
        )
        if r.WhichOneof("decision") == "einittoken":
            return TokenAnswer(r.einittoken, None)
        return TokenAnswer(None, r.denial)

    def load_policy(self, boot_epoch: bytes = b"") -> LoadPolicy:
        r: pb.GetLoadPolicyResponse = self._call(
            "GetLoadPolicy", pb.GetLoadPolicyRequest(boot_epoch=boot_epoch)
        )
        return policy_from_pb(r.policy)

    # -- admin ----------------------------------------------------------------------------------

    def add_signer(self, entry: SignerEntry) -> tuple[SignerEntry, bool]:
        r: pb.AddSignerResponse = self._call(
            "AddSigner", pb.AddSignerRequest(signer=signer_to_pb(entry))
        )
        return signer_from_pb(r.signer), r.replaced

    def remove_signer(self, mrsigner: Measurement) -> None:
        self._call("RemoveSigner", pb.RemoveSignerRequest(mrsigner=mrsigner.to_bytes()))

    def lock(self) -> bytes:
        r: pb.LockPolicyResponse = self._call("LockPolicy", pb.LockPolicyRequest())
        return r.digest

    def allow_dir(self, directory: str) -> LoadPolicy:
        r: pb.AllowImageDirectoryResponse = self._call(
            "AllowImageDirectory", pb.AllowImageDirectoryRequest(directory=directory)
        )
        return policy_from_pb(r.policy)

    def allow_digest(self, digest: bytes) -> LoadPolicy:
        r: pb.AllowImageDigestResponse = self._call(
            "AllowImageDigest", pb.AllowImageDigestRequest(sha256=digest)
        )
        return policy_from_pb(r.policy)

    def set_rule(self, rule: str, enabled: bool) -> LoadPolicy:
        r: pb.SetLoadRuleResponse = self._call(
            "SetLoadRule", pb.SetLoadRuleRequest(rule=rule, enabled=enabled)
        )
        return policy_from_pb(r.policy)

    # -- reads ----------------------------------------------------------------------------------

    def signers(self) -> list[SignerEntry]:
        r: pb.ListSignersResponse = self._call("ListSigners", pb.ListSignersRequest())
        return [signer_from_pb(s) for s in r.signers]

    def status(self) -> Status:
        r: pb.GetStatusResponse = self._call("GetStatus", pb.GetStatusRequest())
        return Status(
            locked=r.locked,
            mode=MODE_NAMES.get(r.mode, "unknown"),
            signer_count=r.signer_count,
            policy=policy_from_pb(r.policy),
            policy_digest=r.policy_digest,
            latched_digest=r.latched_digest,
            boot_epoch=r.boot_epoch,
            ready=r.ready,
            le_mrsigner=r.le_mrsigner,
            le_mrenclave=r.le_mrenclave,
            audit_length=r.audit_length,
            audit_head=r.audit_head,
        )

    def audit(self, *, start: int = 1, limit: int = 0, verify: bool = False) -> AuditLog:
        r: pb.GetAuditLogResponse = self._call(
            "GetAuditLog",
            pb.GetAuditLogRequest(start_sequence=start, limit=limit, verify=verify),
        )
        lines = [
            AuditLine(e.sequence, e.time, e.event, e.caller, json.loads(e.details_json), e.hash)
            for e in r.entries
        ]
        verified = r.verification.verified if r.HasField("verification") else None
        return AuditLog(
            lines, r.length, verified, r.verification.first_broken_sequence,
            r.verification.reason,
        )
