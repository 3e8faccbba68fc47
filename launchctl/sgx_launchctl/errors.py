"""The launch-control daemon's branch of errors.

Invariants: every failure the daemon reports is a :class:`LaunchctlError` with a stable
UPPER_SNAKE ``reason`` and, where it helps, a ``hint`` saying what to do; the gRPC layer maps
each class to one status code through one table (``rpc/status.py``). A launch *denial* is not
an error: it is a decision (:class:`sgx_launchctl.allowlist.Denial`) returned to the platform.
Messages never contain keys or enclave handles.
"""

from __future__ import annotations

from sgx_platform.arch.errors import SgxError

#: The sentence every refused change carries once the policy is latched.
LOCKED_MESSAGE = "the launch policy is locked until the platform is reset"


class LaunchctlError(SgxError):
    """A refused or failed launch-control operation."""

    reason = "LAUNCHCTL_ERROR"

    def __init__(self, message: str, *, hint: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if reason is not None:
            self.reason = reason

    def sentence(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return self.sentence()


class InvalidRequestError(LaunchctlError, ValueError):
    """Unusable input: a malformed MRSIGNER, digest, key, SIGSTRUCT, rule name or path."""

    reason = "INVALID_ARGUMENT"


class NotFoundError(LaunchctlError):
    """The named allowlist entry does not exist."""

    reason = "NOT_FOUND"


class PolicyLockedError(LaunchctlError):
    """A change while the launch policy is latched in the platform (FAILED_PRECONDITION)."""

    reason = "POLICY_LOCKED"

    def __init__(self, message: str = LOCKED_MESSAGE) -> None:
        super().__init__(
            message,
            hint="reset the platform (sgxemu platform reset) to unlock it; the boot "
            "configuration may lock it again",
        )


class StateIntegrityError(LaunchctlError):
    """The database does not authenticate: it was edited, truncated or replaced offline."""

    reason = "STATE_TAMPERED"


class AuditChainError(StateIntegrityError):
    """The audit hash chain is broken; ``sequence`` is the first entry that fails."""

    reason = "AUDIT_CHAIN_BROKEN"

    def __init__(self, sequence: int, message: str) -> None:
        super().__init__(f"audit entry {sequence}: {message}")
        self.sequence = sequence


class RollbackError(StateIntegrityError):
    """The state's policy digest differs from the digest latched in the platform."""

    reason = "STATE_ROLLBACK"


class StateUnsealError(StateIntegrityError):
    """The key that authenticates the state cannot be derived (other platform or owner)."""

    reason = "STATE_KEY_UNAVAILABLE"


class PlatformUnavailableError(LaunchctlError):
    """The platform did not answer or refused a call the daemon needs."""

    reason = "PLATFORM_UNAVAILABLE"


class NotReadyError(LaunchctlError):
    """The daemon is (re)starting for a new platform boot; retry in a moment."""

    reason = "NOT_READY"


class ConfigError(LaunchctlError, ValueError):
    """A configuration file that is unreadable, not TOML, or has unknown or invalid keys."""

    reason = "BAD_CONFIGURATION"


class InitError(LaunchctlError):
    """``initialize_state`` refused (existing state, key path inside the state directory...)."""

    reason = "INIT_REFUSED"


class PlatformCallError(PlatformUnavailableError):
    """A platform call that failed: its gRPC status name and the ErrorInfo reason."""

    def __init__(self, status: str, platform_reason: str, message: str) -> None:
        super().__init__(f"the platform refused or did not answer ({platform_reason}): {message}")
        self.status = status
        self.platform_reason = platform_reason
