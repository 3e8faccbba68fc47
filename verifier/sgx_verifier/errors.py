"""The verifier's branch of the error tree.

Invariants: every error here derives from :class:`VerificationError` (itself an
:class:`~sgx_platform.arch.errors.SgxError`). :class:`CheckFailedError` is the one exception an
appraisal step raises: it carries the stable failure code, the name of the check and a hint a
user can act on, and the appraisal turns it into a :class:`~sgx_verifier.verdict.Failure`.
Anchors and unreadable inputs raise their own subclasses before any appraisal starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgx_platform.arch.errors import SgxError

if TYPE_CHECKING:
    from sgx_verifier.verdict import Check, FailureCode


class VerificationError(SgxError):
    """Root of the verifier's errors."""


class AnchorError(VerificationError):
    """A trust anchor could not be loaded or is not usable (not a CA certificate, not P-256)."""


class CollateralInputError(VerificationError):
    """Collateral input that cannot be assembled (missing pieces, unreadable containers)."""


class CheckFailedError(VerificationError):
    """One appraisal check failed: a stable code, the check's name, a message and a hint."""

    def __init__(self, code: FailureCode, check: Check, message: str, hint: str) -> None:
        super().__init__(f"{check.value}: {code.value}: {message}")
        self.code = code
        self.check = check
        self.message = message
        self.hint = hint
