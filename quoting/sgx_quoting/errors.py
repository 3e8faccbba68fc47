"""The quoting package's branch of the error tree.

Every error here derives from :class:`QuotingError`, itself a
:class:`~sgx_platform.arch.errors.SgxError`. Each class carries a stable ``reason`` (an
UPPER_SNAKE code for ``google.rpc.ErrorInfo``) so the RPC layer maps errors to status codes
from one table and never from message text.
"""

from __future__ import annotations

from typing import ClassVar

from sgx_platform.arch.errors import SgxError


class QuotingError(SgxError):
    """Root of every error raised by :mod:`sgx_quoting`."""

    reason: ClassVar[str] = "QUOTING_ERROR"


class PcsError(QuotingError):
    """A request the emulated provisioning certification service cannot serve."""

    reason: ClassVar[str] = "PCS_ERROR"


class PcsInputError(PcsError, ValueError):
    """A request whose values are unusable (wrong sizes, unknown CA name, SVN out of range)."""

    reason: ClassVar[str] = "PCS_INVALID_INPUT"


class UnknownPlatformError(PcsError):
    """No registered PCK certificate, or no TCB Info, for this platform, FMSPC or TCB."""

    reason: ClassVar[str] = "PCS_UNKNOWN_PLATFORM"


class PcsStateError(PcsError):
    """The PCS state directory is missing, incomplete, or does not match its keys."""

    reason: ClassVar[str] = "PCS_STATE"
