"""Relying-party policy: each rule denies what it should, every violation is listed, TOML and
request documents are strict, and the policy hash is canonical."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sgx_verifier.challenge import ChallengeError, ChallengeFailure
from sgx_verifier.policy import (
    DEFAULT_POLICY,
    INTEL_ANCHOR,
    Policy,
    PolicyError,
    PolicyFacts,
    ViolationCode,
)
from sgx_verifier.verdict import (
    AnchorRef,
    Check,
    EnclaveIdentity,
    Failure,
    FailureCode,
    StatusDetail,
    TcbStatus,
    Verdict,
)

MRE = bytes.fromhex("11" * 32)
MRS = bytes.fromhex("22" * 32)
RD = bytes(range(64))
INTEL = AnchorRef(INTEL_ANCHOR, "a0" * 32, True)
EMULATED = AnchorRef("sgxemu-emulated", "b0" * 32, False)


def verdict(
    status: TcbStatus = TcbStatus.UP_TO_DATE,
    *,
    advisories: tuple[str, ...] = (),
    anchor: AnchorRef | None = INTEL,
    **enclave: Any,
) -> Verdict:
    identity = {
        "tee": "SGX",
        "mrenclave": MRE,
        "mrsigner": MRS,
        "isv_prod_id": 7,
        "isv_svn": 3,
        "debug": False,
        "report_data": RD,
    }
    identity.update(enclave)
    return Verdict(
        verified=True,
        tcb_status=status,
        platform=StatusDetail(status, advisories),
        qe=StatusDetail(TcbStatus.UP_TO_DATE),
        advisory_ids=advisories,
        enclave=EnclaveIdentity(**identity),
        trust_anchor=anchor,
    )


def codes(policy: Policy, v: Verdict, facts: PolicyFacts | None = None) -> list[ViolationCode]:
    result = policy.evaluate(v, facts)
    assert result.passed == (not result.violations)
    for violation in result.violations:
        assert violation.message and violation.hint
    return list(result.codes())


# --- the default --------------------------------------------------------------------------


def test_default_accepts_up_to_date_production_enclave_under_intel() -> None:
    assert codes(DEFAULT_POLICY, verdict()) == []


@pytest.mark.parametrize("status", [s for s in TcbStatus if s is not TcbStatus.UP_TO_DATE])
def test_default_denies_every_other_status(status: TcbStatus) -> None:
    assert codes(DEFAULT_POLICY, verdict(status)) == [ViolationCode.TCB_STATUS]


def test_default_denies_debug_and_other_anchors() -> None:
    assert codes(DEFAULT_POLICY, verdict(debug=True)) == [ViolationCode.DEBUG_ENCLAVE]
    assert codes(DEFAULT_POLICY, verdict(anchor=EMULATED)) == [ViolationCode.TRUST_ANCHOR]


def test_verified_verdict_without_anchor_fails_closed() -> None:
    assert codes(DEFAULT_POLICY, verdict(anchor=None)) == [ViolationCode.TRUST_ANCHOR]


def test_unverified_verdict_never_passes() -> None:
    failure = Failure(FailureCode.QUOTE_SIGNATURE_INVALID, Check.QUOTE_SIGNATURE, "bad", "fix")
    relaxed = Policy(
        accepted_statuses=frozenset(set(TcbStatus) - {TcbStatus.REVOKED}), allow_debug=True
    )
    result = relaxed.evaluate(Verdict(failures=(failure,)))
    assert not result.passed
    assert result.codes() == (ViolationCode.NOT_VERIFIED,)
    assert result.violations[0].detail == "QUOTE_SIGNATURE_INVALID"
    assert not DEFAULT_POLICY.evaluate(Verdict()).passed


# --- one rule at a time ---------------------------------------------------------------------


RULES: list[tuple[str, Policy, Verdict, ViolationCode]] = [
    ("mrenclave", Policy(mrenclave=frozenset({bytes(32)})), verdict(), ViolationCode.MRENCLAVE),
    ("mrsigner", Policy(mrsigner=frozenset({bytes(32)})), verdict(), ViolationCode.MRSIGNER),
    ("isv_prod_id", Policy(isv_prod_id=8), verdict(), ViolationCode.ISVPRODID),
    ("min_isv_svn", Policy(min_isv_svn=4), verdict(), ViolationCode.ISVSVN),
    ("debug", Policy(), verdict(debug=True), ViolationCode.DEBUG_ENCLAVE),
    (
        "statuses",
        Policy(accepted_statuses=frozenset({TcbStatus.SW_HARDENING_NEEDED})),
        verdict(),
        ViolationCode.TCB_STATUS,
    ),
    (
        "advisories",
        Policy(
            accepted_statuses=frozenset({TcbStatus.SW_HARDENING_NEEDED}),
            accepted_advisory_ids=frozenset({"INTEL-SA-00334"}),
        ),
        verdict(TcbStatus.SW_HARDENING_NEEDED, advisories=("INTEL-SA-00334", "INTEL-SA-00615")),
        ViolationCode.ADVISORY,
    ),
    ("anchors", Policy(trust_anchors=frozenset({"other"})), verdict(), ViolationCode.TRUST_ANCHOR),
    (
        "report_data",
        Policy(expected_report_data=bytes(64)),
        verdict(),
        ViolationCode.REPORT_DATA,
    ),
    ("challenge", Policy(require_challenge=True), verdict(), ViolationCode.CHALLENGE_REQUIRED),
    (
        "evaluation_number",
        Policy(min_tcb_evaluation_data_number=17),
        verdict(),
        ViolationCode.TCB_EVALUATION_NUMBER,
    ),
]


@pytest.mark.parametrize("policy, denied, code", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_denies_exactly_what_it_should(
    policy: Policy, denied: Verdict, code: ViolationCode
) -> None:
    assert codes(policy, denied) == [code]


def test_each_rule_accepts_its_match() -> None:
    policy = Policy(
        accepted_statuses=frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED}),
        accepted_advisory_ids=frozenset({"INTEL-SA-00615"}),
        trust_anchors=frozenset({INTEL_ANCHOR, "sgxemu-emulated"}),
        mrenclave=frozenset({MRE, bytes(32)}),
        mrsigner=frozenset({MRS}),
        isv_prod_id=7,
        min_isv_svn=3,
        expected_report_data=RD,
        min_tcb_evaluation_data_number=17,
    )
    facts = PolicyFacts(tcb_evaluation_data_number=17)
    v = verdict(TcbStatus.SW_HARDENING_NEEDED, advisories=("INTEL-SA-00615",), anchor=EMULATED)
    assert codes(policy, v, facts) == []
    assert codes(policy, v, PolicyFacts(tcb_evaluation_data_number=16)) == [
        ViolationCode.TCB_EVALUATION_NUMBER
    ]
    assert codes(policy, replace(v, enclave=replace(v.enclave, isv_svn=9)), facts) == []  # type: ignore[arg-type]


def test_challenge_outcomes() -> None:
    policy = Policy(require_challenge=True)
    ok = PolicyFacts(challenge_presented=True)
    assert codes(policy, verdict(), ok) == []
    refused = PolicyFacts(
        challenge_presented=True,
        challenge_error=ChallengeError(ChallengeFailure.REPLAYED, "already redeemed"),
    )
    result = policy.evaluate(verdict(), refused)
    assert result.codes() == (ViolationCode.CHALLENGE,)
    assert result.violations[0].detail == "CHALLENGE_REPLAYED"
    # A challenge sent without being required is still checked.
    assert codes(DEFAULT_POLICY, verdict(), refused) == [ViolationCode.CHALLENGE]


def test_every_violation_is_listed_in_a_fixed_order() -> None:
    strict = Policy(
        mrenclave=frozenset({bytes(32)}),
        mrsigner=frozenset({bytes(32)}),
        isv_prod_id=1,
        min_isv_svn=10,
        accepted_advisory_ids=frozenset(),
        expected_report_data=bytes(64),
        min_tcb_evaluation_data_number=99,
    )
    v = verdict(TcbStatus.OUT_OF_DATE, advisories=("INTEL-SA-00001",), anchor=EMULATED, debug=True)
    assert codes(strict, v) == [
        ViolationCode.TCB_STATUS,
        ViolationCode.ADVISORY,
        ViolationCode.TCB_EVALUATION_NUMBER,
        ViolationCode.TRUST_ANCHOR,
        ViolationCode.DEBUG_ENCLAVE,
        ViolationCode.MRENCLAVE,
        ViolationCode.MRSIGNER,
        ViolationCode.ISVPRODID,
        ViolationCode.ISVSVN,
        ViolationCode.REPORT_DATA,
    ]
    assert strict.evaluate(v).to_dict()["passed"] is False


# --- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"accepted_statuses": frozenset({TcbStatus.REVOKED})}, "Revoked"),
        ({"accepted_statuses": frozenset()}, "at least one TCB status"),
        ({"trust_anchors": frozenset()}, "at least one trust anchor"),
        ({"trust_anchors": frozenset({"bad name!"})}, "anchor name"),
        ({"accepted_advisory_ids": frozenset({"sa-1"})}, "advisory"),
        ({"mrenclave": frozenset({b"short"})}, "32 bytes"),
        ({"isv_prod_id": 65536}, "16-bit"),
        ({"min_isv_svn": -1}, "16-bit"),
        ({"expected_report_data": bytes(32)}, "64 bytes"),
        ({"expected_report_data": bytes(64), "require_challenge": True}, "choose one"),
        ({"collateral_grace_seconds": -1}, "grace"),
        ({"min_tcb_evaluation_data_number": -1}, "32-bit"),
    ],
)
def test_unusable_policies_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        Policy(**kwargs)


def test_with_anchors_adds_a_configured_anchor() -> None:
    local = DEFAULT_POLICY.with_anchors(["sgxemu-emulated"])
    assert local.trust_anchors == {INTEL_ANCHOR, "sgxemu-emulated"}
    assert codes(local, verdict(anchor=EMULATED)) == []
    assert local.digest() != DEFAULT_POLICY.digest()


# --- TOML and request documents --------------------------------------------------------------

FULL_TOML = f"""
version = 1
accepted_statuses = ["UpToDate", "SWHardeningNeeded"]
accepted_advisory_ids = ["INTEL-SA-00615"]
allow_debug = false
trust_anchors = ["{INTEL_ANCHOR}", "sgxemu-emulated"]
mrenclave = ["{"11" * 32}"]
mrsigner = ["{"22" * 32}"]
isv_prod_id = 7
min_isv_svn = 3
require_challenge = true
collateral_grace_seconds = 3600
min_tcb_evaluation_data_number = 17
"""


def test_toml_file_round_trips_into_the_same_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(FULL_TOML)
    policy = Policy.load(path)
    assert policy == Policy(
        accepted_statuses=frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED}),
        accepted_advisory_ids=frozenset({"INTEL-SA-00615"}),
        trust_anchors=frozenset({INTEL_ANCHOR, "sgxemu-emulated"}),
        mrenclave=frozenset({MRE}),
        mrsigner=frozenset({MRS}),
        isv_prod_id=7,
        min_isv_svn=3,
        require_challenge=True,
        collateral_grace_seconds=3600,
        min_tcb_evaluation_data_number=17,
    )
    assert Policy.from_mapping(policy.to_dict()) == policy
    assert Policy.from_mapping(policy.to_dict()).digest() == policy.digest()


def test_empty_document_is_the_default_and_hash_is_stable() -> None:
    assert Policy.from_toml("") == DEFAULT_POLICY
    assert Policy.from_toml("").digest() == DEFAULT_POLICY.digest()
    reordered = Policy.from_mapping({"trust_anchors": ["b", "a"]})
    assert reordered.digest() == Policy.from_mapping({"trust_anchors": ["a", "b"]}).digest()
    assert len(DEFAULT_POLICY.digest()) == 64


@pytest.mark.parametrize(
    "text, match",
    [
        ("mr_enclave = []", "unknown keys"),
        ("[enclave]\nmrenclave = []", "unknown keys"),
        ("version = 2", "version"),
        ("allow_debug = 1", "true or false"),
        ("isv_prod_id = '7'", "integer"),
        ("isv_prod_id = true", "integer"),
        ("min_isv_svn = 1.5", "integer"),
        ("mrenclave = '" + "11" * 32 + "'", "list of strings"),
        ("mrenclave = ['" + "11" * 31 + "']", "32 bytes in hex"),
        ("mrenclave = ['" + "zz" * 32 + "']", "32 bytes in hex"),
        ("mrsigner = ['" + "22" * 32 + "', '" + "22" * 32 + "']", "twice"),
        ("expected_report_data = '00'", "64 bytes in hex"),
        ("accepted_statuses = ['Uptodate']", "unknown TCB status"),
        ("accepted_statuses = ['Revoked']", "Revoked"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_documents_are_refused_with_the_key_named(text: str, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        Policy.from_toml(text, "p.toml")


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="UTF-8"):
        Policy.load(tmp_path / "bin.toml")
