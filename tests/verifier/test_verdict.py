"""The verdict's invariants: zero value, consistency, the JSON document."""

from __future__ import annotations

import pytest

from sgx_verifier.policy import DEFAULT_POLICY, ViolationCode
from sgx_verifier.verdict import (
    AnchorRef,
    Assessment,
    Check,
    EnclaveIdentity,
    Failure,
    FailureCode,
    StatusDetail,
    TcbStatus,
    Verdict,
)

FAILURE = Failure(FailureCode.QUOTE_SIGNATURE_INVALID, Check.QUOTE_SIGNATURE, "bad", "fix it")
UP = StatusDetail(TcbStatus.UP_TO_DATE)


def test_zero_value_is_not_verified() -> None:
    verdict = Verdict()
    assert verdict.verified is False
    assert verdict.error is None
    doc = verdict.to_dict()
    assert doc["verified"] is False
    assert doc["tcb_status"] is None
    assert "error" not in doc
    result = DEFAULT_POLICY.evaluate(verdict)
    assert not result.passed
    assert result.violations[0].code is ViolationCode.NOT_VERIFIED


def test_verified_verdicts_cannot_carry_failures_or_lack_statuses() -> None:
    with pytest.raises(ValueError, match="failures"):
        Verdict(verified=True, tcb_status=TcbStatus.UP_TO_DATE, platform=UP, qe=UP,
                failures=(FAILURE,))  # fmt: skip
    with pytest.raises(ValueError, match="statuses"):
        Verdict(verified=True, tcb_status=TcbStatus.UP_TO_DATE)
    assessment = Assessment(TcbStatus.UP_TO_DATE, UP, UP, ())
    with pytest.raises(ValueError, match="no unverified assessment"):
        Verdict(verified=True, tcb_status=TcbStatus.UP_TO_DATE, platform=UP, qe=UP,
                unverified_assessment=assessment)  # fmt: skip


def test_unverified_verdicts_carry_no_status() -> None:
    with pytest.raises(ValueError, match="no status"):
        Verdict(tcb_status=TcbStatus.UP_TO_DATE, failures=(FAILURE,))
    with pytest.raises(ValueError, match="no status"):
        Verdict(platform=UP, failures=(FAILURE,))
    assessment = Assessment(TcbStatus.OUT_OF_DATE, StatusDetail(TcbStatus.OUT_OF_DATE), UP, ())
    with pytest.raises(ValueError, match="which checks failed"):
        Verdict(unverified_assessment=assessment)
    verdict = Verdict(failures=(FAILURE,), unverified_assessment=assessment)
    doc = verdict.to_dict()
    assert doc["tcb_status"] is None and doc["platform_tcb_status"] is None
    assert doc["unverified_assessment"]["tcb_status"] == "OutOfDate"
    assert "not a verification result" in doc["unverified_assessment"]["note"]


def test_failures_are_reported_in_the_document() -> None:
    verdict = Verdict(failures=(FAILURE,))
    doc = verdict.to_dict()
    assert doc["error"] == {
        "code": "QUOTE_SIGNATURE_INVALID",
        "check": "quote.signature",
        "message": "bad",
        "hint": "fix it",
    }
    assert doc["failures"] == [doc["error"]]
    assert verdict.failed(Check.QUOTE_SIGNATURE)
    assert not verdict.failed(Check.PCK_CHAIN)
    assert verdict.codes() == (FailureCode.QUOTE_SIGNATURE_INVALID,)


def test_verified_document_names_identity_anchor_and_warns_about_test_anchors() -> None:
    enclave = EnclaveIdentity(
        tee="SGX",
        mrenclave=bytes(range(32)),
        mrsigner=bytes(32),
        isv_prod_id=7,
        isv_svn=3,
        report_data=bytes(64),
    )
    verdict = Verdict(
        verified=True,
        tcb_status=TcbStatus.SW_HARDENING_NEEDED,
        platform=StatusDetail(TcbStatus.SW_HARDENING_NEEDED, ("INTEL-SA-00615",)),
        qe=UP,
        advisory_ids=("INTEL-SA-00615",),
        quote_version=3,
        enclave=enclave,
        fmspc=bytes.fromhex("00906ed50000"),
        trust_anchor=AnchorRef("sgxemu-root", "ab" * 32, production=False),
    )
    doc = verdict.to_dict()
    for key in (
        "verified",
        "tcb_status",
        "platform_tcb_status",
        "qe_tcb_status",
        "advisory_ids",
        "quote_version",
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "debug",
        "report_data",
        "fmspc",
        "trust_anchor",
        "collateral",
    ):
        assert key in doc, key
    assert doc["mrenclave"] == bytes(range(32)).hex()
    assert doc["fmspc"] == "00906ed50000"
    assert doc["trust_anchor"] == "sgxemu-root"
    assert "test anchor" in doc["warning"]
    assert doc["advisory_ids"] == ["INTEL-SA-00615"]
