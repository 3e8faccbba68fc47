"""The platform's side of launch control: a launch authority and a load-policy provider backed
by ``sgx.launchctl.v1.LaunchControlService`` (GetLaunchToken, GetLoadPolicy).

Invariants:

* Every request carries the platform's boot epoch and has a deadline (``timeout``).
* ``issue_token`` returns only a token that parses as a 304-byte EINITTOKEN; a denial becomes
  :class:`LaunchDeniedError` with the daemon's reason, rule and hint; a status error, a missing
  decision or a malformed token becomes :class:`LaunchAuthorityUnavailableError` ("no answer":
  the driver fails closed). The driver still has EINIT check the token.
* The channel reconnects quickly (``QUICK_RECONNECT``): a restarted daemon is used again within
  about a second.
* ``load_policy`` raises on a status error, an unknown rule name or a digest that is not 32
  bytes, so the driver fails closed (``LOAD_POLICY_UNAVAILABLE``); a rule the daemon does not
  mention stays on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

from sgx.launchctl.v1 import launchctl_pb2 as lpb
from sgx.launchctl.v1 import launchctl_pb2_grpc as lpb_grpc
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.driver_errors import LaunchAuthorityUnavailableError, LaunchDeniedError
from sgx_platform.launch_authority import TokenRequest
from sgx_platform.load_policy import ALL_RULES, LoadPolicy, LoadRule
from sgx_rpc.channel import QUICK_RECONNECT, unix_channel


class LaunchControlClient:
    """LaunchAuthority and LoadPolicyProvider over the launch-control daemon's authority API."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        boot_epoch: Callable[[], bytes],
        timeout: float = 5.0,
        where: str = "the launch-control daemon",
    ) -> None:
        self._channel = channel
        self._stub = lpb_grpc.LaunchControlServiceStub(channel)
        self._boot_epoch = boot_epoch
        self._timeout = timeout
        self._where = where

    @classmethod
    def unix(
        cls, path: Path, *, boot_epoch: Callable[[], bytes], timeout: float = 5.0
    ) -> LaunchControlClient:
        # QUICK_RECONNECT: after the daemon restarts, launches work again within about a
        # second, not after gRPC's default backoff (which grows while launches keep failing).
        return cls(unix_channel(path, options=QUICK_RECONNECT), boot_epoch=boot_epoch,
                   timeout=timeout,
                   where=f"the launch-control daemon at {path}")

    def close(self) -> None:
        self._channel.close()

    def _unavailable(self, what: str) -> LaunchAuthorityUnavailableError:
        return LaunchAuthorityUnavailableError(
            f"{self._where} gave no answer ({what}); the launch fails closed"
        )

    def issue_token(self, request: TokenRequest) -> EinitToken:
        try:
            response = self._stub.GetLaunchToken(
                lpb.GetLaunchTokenRequest(
                    sigstruct=request.sigstruct,
                    secs=request.secs,
                    boot_epoch=request.boot_epoch or self._boot_epoch(),
                ),
                timeout=self._timeout,
            )
        except grpc.RpcError as e:
            code: grpc.StatusCode = e.code()
            raise self._unavailable(code.name) from e
        decision = response.WhichOneof("decision")
        if decision == "denial":
            d = response.denial
            raise LaunchDeniedError(
                d.message or f"the launch-control daemon refused MRSIGNER {request.mrsigner}",
                d.hint,
                reason=d.reason or "LAUNCH_DENIED",
                rule=d.rule or "launch_authority",
            )
        if decision != "einittoken":
            raise self._unavailable("a response without a decision")
        try:
            return EinitToken.from_bytes(response.einittoken)
        except MalformedStructureError as e:
            raise self._unavailable(f"a malformed EINITTOKEN: {e}") from e

    def load_policy(self) -> LoadPolicy:
        response = self._stub.GetLoadPolicy(
            lpb.GetLoadPolicyRequest(boot_epoch=self._boot_epoch()), timeout=self._timeout
        )
        p = response.policy
        enabled = set(ALL_RULES)
        for rule in p.rules:
            named = LoadRule(rule.name)  # an unknown rule name raises: fail closed
            if not rule.enabled:
                enabled.discard(named)
        if not all(Path(d).is_absolute() for d in p.allowed_dirs):
            raise ValueError("the load policy names a relative image directory")
        digests = frozenset(bytes(d) for d in p.allowed_digests) if p.digests_restricted else None
        return LoadPolicy(
            allowed_dirs=tuple(Path(d) for d in p.allowed_dirs),
            allowed_digests=digests,
            enabled=frozenset(enabled),
        )
