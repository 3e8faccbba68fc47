"""Relying-party policy applied to a verdict: which TCB statuses and enclaves are acceptable.

Invariants:

* The default policy is strict: only ``UpToDate``, no debug enclaves.
* A verdict that is not verified never passes, whatever the policy.
* ``Revoked`` can never be made acceptable: the constructor refuses it.
* Evaluation reports every violation, each with a stable code, a message and a hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sgx_verifier.errors import VerificationError
from sgx_verifier.verdict import TcbStatus, Verdict


class ViolationCode(StrEnum):
    NOT_VERIFIED = "POLICY_NOT_VERIFIED"
    TCB_STATUS = "POLICY_TCB_STATUS"
    DEBUG_ENCLAVE = "POLICY_DEBUG_ENCLAVE"


@dataclass(frozen=True, slots=True)
class Violation:
    code: ViolationCode
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class PolicyResult:
    passed: bool
    violations: tuple[Violation, ...]

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "violations": [v.to_dict() for v in self.violations]}


@dataclass(frozen=True, slots=True)
class Policy:
    """What a relying party accepts from a verified quote."""

    accepted_statuses: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})
    allow_debug: bool = False

    def __post_init__(self) -> None:
        if TcbStatus.REVOKED in self.accepted_statuses:
            raise VerificationError("policy: the Revoked TCB status can never be accepted")
        if not self.accepted_statuses:
            raise VerificationError("policy: at least one TCB status must be accepted")

    def evaluate(self, verdict: Verdict) -> PolicyResult:
        violations: list[Violation] = []
        if not verdict.verified:
            violations.append(
                Violation(
                    ViolationCode.NOT_VERIFIED,
                    "the quote was not verified",
                    "see the failed checks; a quote that does not verify is never accepted",
                )
            )
            return PolicyResult(False, tuple(violations))
        status = verdict.tcb_status
        if status not in self.accepted_statuses:
            accepted = ", ".join(sorted(s.value for s in self.accepted_statuses))
            advisories = ", ".join(verdict.advisory_ids) or "none listed"
            violations.append(
                Violation(
                    ViolationCode.TCB_STATUS,
                    f"TCB status {status} is not accepted (accepted: {accepted}); "
                    f"advisories: {advisories}",
                    "update the platform (BIOS/microcode, SGX PSW and quoting enclave) and "
                    "re-attest, or accept this status explicitly in your policy after reviewing "
                    "the advisories",
                )
            )
        enclave = verdict.enclave
        if enclave is not None and enclave.debug and not self.allow_debug:
            violations.append(
                Violation(
                    ViolationCode.DEBUG_ENCLAVE,
                    "the enclave runs in debug mode: its memory can be read and changed from "
                    "outside",
                    "launch the enclave without debug (production signing) and re-attest",
                )
            )
        return PolicyResult(not violations, tuple(violations))


#: The policy the CLI applies unless told otherwise.
DEFAULT_POLICY = Policy()
