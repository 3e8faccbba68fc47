"""The one table from the verifier's domain errors to gRPC status codes (STYLE.md "Errors").

Invariants: :func:`status_of` is the only place a status code is chosen. Unusable input of
every kind (a quote, policy, challenge, collateral or time that cannot be used) is
INVALID_ARGUMENT with a stable reason; collateral the store lacks, or no configured PCS, is
FAILED_PRECONDITION; a PCS that cannot be reached is UNAVAILABLE. Anything else is INTERNAL
with a generic message (the details go to the log only). A quote that does not verify is not
an error at all: it is an answer.
"""

from __future__ import annotations

import grpc

from sgx_platform.arch.errors import MalformedStructureError
from sgx_rpc.errors import StatusReport
from sgx_verifier.challenge import ChallengeConfigError, ChallengeKeyError
from sgx_verifier.errors import CollateralInputError
from sgx_verifier.fetch import FetchError
from sgx_verifier.policy import PolicyError
from sgx_verifier.service import (
    CollateralUnavailableError,
    ImportRejectedError,
    InvalidRequestError,
    NoSourceError,
)

DOMAIN = "verifier.sgxemu"

S = grpc.StatusCode


def status_of(error: BaseException) -> StatusReport | None:
    """The status of a domain error, or None when it must be reported as INTERNAL."""
    if isinstance(error, InvalidRequestError):
        return StatusReport(S.INVALID_ARGUMENT, error.message, error.reason)
    if isinstance(error, PolicyError):
        return StatusReport(S.INVALID_ARGUMENT, str(error), "POLICY_INVALID")
    if isinstance(error, ImportRejectedError):
        return StatusReport(
            S.INVALID_ARGUMENT,
            f"collateral refused, nothing was imported: {error}",
            error.code.value,
            {"item": error.item, "hint": error.hint},
        )
    if isinstance(error, CollateralInputError | MalformedStructureError):
        return StatusReport(S.INVALID_ARGUMENT, str(error), "COLLATERAL_MALFORMED")
    if isinstance(error, ChallengeConfigError) and not isinstance(error, ChallengeKeyError):
        return StatusReport(S.INVALID_ARGUMENT, str(error), "CHALLENGE_TTL")
    if isinstance(error, CollateralUnavailableError):
        return StatusReport(
            S.FAILED_PRECONDITION,
            str(error),
            "COLLATERAL_MISSING",
            {"missing": ",".join(error.missing), "hint": "sgxemu verifier collateral import"},
        )
    if isinstance(error, NoSourceError):
        return StatusReport(S.FAILED_PRECONDITION, str(error), "NO_COLLATERAL_SOURCE")
    if isinstance(error, FetchError):
        return StatusReport(S.UNAVAILABLE, str(error), "PCS_UNAVAILABLE")
    return None
