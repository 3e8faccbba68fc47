"""The verdict's invariants and the default relying-party policy."""

from __future__ import annotations

import pytest

from sgx_verifier.errors import VerificationError
from sgx_verifier.policy import DEFAULT_POLICY, Policy, ViolationCode
from sgx_verifier.verdict import (
    Check,
    EnclaveIdentity,
    Failure,
    FailureCode,
    StatusDetail,
    TcbStatus,
    Verdict,
)

FAILURE = Failure(FailureCode.QUOTE_SIGNATURE_INVALID, Check.QUOTE_SIGNATURE, "bad", "fix it")


def verified(status: TcbStatus, *, debug: bool = False) -> Verdict:
    return Verdict(
        verified=True,
        tcb_status=status,
        platform=StatusDetail(status),
        qe=StatusDetail(TcbStatus.UP_TO_DATE),
        enclave=EnclaveIdentity(tee="SGX", debug=debug),
    )


def test_zero_value_is_not_verified() -> None:
    verdict = Verdict()
    assert verdict.verified is False
    assert verdict.error is None
    doc = verdict.to_dict()
    assert doc["verified"] is False
    assert doc["tcb_status"] is None
    result = DEFAULT_POLICY.evaluate(verdict)
    assert not result.passed
    assert result.violations[0].code is ViolationCode.NOT_VERIFIED


def test_verified_verdicts_cannot_carry_failures_or_lack_statuses() -> None:
    with pytest.raises(ValueError, match="failures"):
        Verdict(
            verified=True,
            tcb_status=TcbStatus.UP_TO_DATE,
            platform=StatusDetail(TcbStatus.UP_TO_DATE),
            qe=StatusDetail(TcbStatus.UP_TO_DATE),
            failures=(FAILURE,),
        )
    with pytest.raises(ValueError, match="statuses"):
        Verdict(verified=True, tcb_status=TcbStatus.UP_TO_DATE)
    with pytest.raises(ValueError, match="which check"):
        Verdict(verified=False, tcb_status=TcbStatus.UP_TO_DATE)


def test_failures_are_reported_in_the_document() -> None:
    verdict = Verdict(failures=(FAILURE,))
    doc = verdict.to_dict()
    assert doc["error"] == {
        "code": "QUOTE_SIGNATURE_INVALID",
        "check": "quote.signature",
        "message": "bad",
        "hint": "fix it",
    }
    assert verdict.failed(Check.QUOTE_SIGNATURE)
    assert verdict.codes() == (FailureCode.QUOTE_SIGNATURE_INVALID,)


def test_default_policy_accepts_only_up_to_date_production_enclaves() -> None:
    assert DEFAULT_POLICY.evaluate(verified(TcbStatus.UP_TO_DATE)).passed
    for status in TcbStatus:
        if status is TcbStatus.UP_TO_DATE:
            continue
        result = DEFAULT_POLICY.evaluate(verified(status))
        assert not result.passed
        assert [v.code for v in result.violations] == [ViolationCode.TCB_STATUS]
    debug = DEFAULT_POLICY.evaluate(verified(TcbStatus.SW_HARDENING_NEEDED, debug=True))
    assert [v.code for v in debug.violations] == [
        ViolationCode.TCB_STATUS,
        ViolationCode.DEBUG_ENCLAVE,
    ]
    assert debug.to_dict()["passed"] is False


def test_relaxed_policy_and_revoked_is_never_acceptable() -> None:
    relaxed = Policy(
        accepted_statuses=frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED}),
        allow_debug=True,
    )
    assert relaxed.evaluate(verified(TcbStatus.SW_HARDENING_NEEDED, debug=True)).passed
    with pytest.raises(VerificationError, match="Revoked"):
        Policy(accepted_statuses=frozenset({TcbStatus.REVOKED}))
    with pytest.raises(VerificationError):
        Policy(accepted_statuses=frozenset())
