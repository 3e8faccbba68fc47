"""Every real quote set of ``sets.json``: the same verdict as dcap-qvl where dcap-qvl can judge
it, the expected values of ``sets.json`` where it cannot, and the named negative vectors."""

from __future__ import annotations

from typing import Any

import pytest

from sgx_verifier.anchors import AnchorSet, intel_sgx_root_ca, load_anchor
from sgx_verifier.appraisal import appraise
from sgx_verifier.collateral import (
    Collateral,
    read_certificates,
    read_crl,
    read_signed_item,
)
from sgx_verifier.verdict import Check, FailureCode, TcbStatus

# (set id, TCB Info index for sets with several, expected platform status or None)
ORACLE_CASES = [
    ("phala-sgx-v3-2025-06", 0),
    ("phala-sgx-v3-2023-11", 0),
    ("automata-sgx-v3-2025-08", 0),
    ("cross-automata-quote-fortanix-eval-17-18-19", 0),
    ("cross-automata-quote-fortanix-eval-17-18-19", 1),
    ("cross-automata-quote-fortanix-eval-17-18-19", 2),
    ("phala-tdx-v4-2025-06", 0),
    ("phala-tdx-v5-2026-02", 0),
    ("automata-tdx-v4-2025-06", 0),
]


def expected_for(spec: dict[str, Any], index: int) -> dict[str, Any]:
    expected: dict[str, Any] = dict(spec["expected"])
    per_number = expected.pop("by_tcb_evaluation_data_number", None)
    if per_number is not None:
        expected.update(per_number[sorted(per_number)[index]])
    return expected


@pytest.mark.parametrize(("set_id", "index"), ORACLE_CASES)
def test_same_verdict_as_dcap_qvl(real_sets, outcomes, set_id: str, index: int) -> None:  # type: ignore[no-untyped-def]
    qvl_outcome, our_outcome = outcomes
    spec = real_sets.by_id[set_id]
    quote = real_sets.quote(set_id)
    collateral = real_sets.collateral(set_id, index)
    at = spec["suggested_now"]
    verdict = appraise(quote, collateral, at=at)
    ours = our_outcome(verdict)
    theirs = qvl_outcome(quote, real_sets.oracle(collateral), real_sets.intel_root_der, at)
    assert ours.accepted == theirs.accepted, (ours, theirs)
    assert ours.status == theirs.status
    assert ours.advisory_ids == theirs.advisory_ids
    assert verdict.trust_anchor is not None
    assert verdict.trust_anchor.name == "intel-sgx-root-ca"
    expected = expected_for(spec, index)
    if "platform_tcb_status" in expected:
        assert verdict.platform_tcb_status == expected["platform_tcb_status"]
        assert verdict.qe_tcb_status == expected["qe_tcb_status"]
        assert list(verdict.advisory_ids) == expected["advisory_ids"]
    if expected.get("tcb_status") == "UpToDate":
        assert verdict.tcb_status is TcbStatus.UP_TO_DATE
    if set_id == "phala-tdx-v5-2026-02":
        # The "outdated" fixture: no TCB level matches (dcap-qvl says the same).
        assert verdict.codes() == (FailureCode.TCB_LEVEL_NOT_FOUND,)


def test_collateral_ids_are_the_store_ids(real_sets) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from sgx_platform.arch.dcap.signed_json import join_signed_response

    collateral = real_sets.collateral("phala-sgx-v3-2025-06")
    verdict = appraise(real_sets.quote("phala-sgx-v3-2025-06"), collateral, at=1752919277)
    ids = {c.name: c.sha256 for c in verdict.collateral}
    body = join_signed_response("tcbInfo", collateral.tcb_info.text, collateral.tcb_info.signature)
    assert ids["tcb_info"] == hashlib.sha256(body.encode()).hexdigest()
    assert ids["pck_crl"] == hashlib.sha256(collateral.pck_crl).hexdigest()
    assert ids["root_ca_crl"] == hashlib.sha256(collateral.root_ca_crl).hexdigest()
    assert set(ids) >= {"tcb_info", "qe_identity", "pck_crl", "root_ca_crl"}


def test_mobilecoin_stale_pck_crl_is_rejected(real_sets, outcomes) -> None:  # type: ignore[no-untyped-def]
    qvl_outcome, our_outcome = outcomes
    set_id = "mobilecoin-sgx-v3-2023-07"
    spec = real_sets.by_id[set_id]
    quote, collateral = real_sets.quote(set_id), real_sets.collateral(set_id)
    at = spec["suggested_now"]
    verdict = appraise(quote, collateral, at=at)
    assert not verdict.verified
    # Stale PCK CRL and nothing else: every signature, chain and binding verifies.
    assert [(f.check, f.code) for f in verdict.failures] == [
        (Check.PCK_CRL, FailureCode.CRL_EXPIRED)
    ]
    assert verdict.error is not None and "stale" in verdict.error.message
    theirs = qvl_outcome(quote, real_sets.oracle(collateral), real_sets.intel_root_der, at)
    assert not theirs.accepted and "CrlExpired" in theirs.detail
    assert not our_outcome(verdict).accepted
    # sets.json's expected statuses, as the assessment with the CRL waived.
    assessment = verdict.unverified_assessment
    assert assessment is not None
    expected = spec["expected"]
    assert assessment.platform.status == expected["platform_tcb_status"]
    assert assessment.qe.status == expected["qe_tcb_status"]
    assert list(assessment.advisory_ids) == expected["advisory_ids"]
    # No instant makes everything fresh (sets.json: "MUST FAIL").
    for at in range(1682000000, 1692000000, 43200):
        assert not appraise(quote, collateral, at=at).verified


@pytest.mark.parametrize("set_id", ["fortanix-sgx-v3-2020-05", "fortanix-dcapql-sgx-v3-2020-05"])
def test_fortanix_2020_sets(real_sets, set_id: str) -> None:  # type: ignore[no-untyped-def]
    """TCB Info v2 (dcap-qvl cannot read it) and the legacy 2033 root in the quote; no root CRL
    from 2020 exists, so the only failure is that CRL, and the statuses are sets.json's."""
    spec = real_sets.by_id[set_id]
    verdict = appraise(
        real_sets.quote(set_id), real_sets.collateral(set_id), at=spec["suggested_now"]
    )
    assert [(f.check, f.code) for f in verdict.failures] == [
        (Check.ROOT_CRL, FailureCode.CRL_NOT_YET_VALID)
    ]
    assert verdict.trust_anchor is not None
    assert verdict.trust_anchor.key_sha256 == intel_sgx_root_ca().key_sha256
    assessment = verdict.unverified_assessment
    assert assessment is not None
    expected = spec["expected"]
    assert assessment.platform.status == expected["platform_tcb_status"]
    assert assessment.qe.status == expected["qe_tcb_status"]
    assert list(assessment.advisory_ids) == expected["advisory_ids"]


def test_fortanix_corrupted_quote_names_the_quote_signature(real_sets) -> None:  # type: ignore[no-untyped-def]
    collateral = real_sets.collateral("fortanix-dcapql-sgx-v3-2020-05")
    at = 1589860000
    good = appraise(real_sets.read("fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin"),
                    collateral, at=at)  # fmt: skip
    bad = appraise(
        real_sets.read("fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain_corrupted.bin"),
        collateral,
        at=at,
    )
    assert not good.failed(Check.QUOTE_SIGNATURE)
    assert bad.failed(Check.QUOTE_SIGNATURE)
    assert set(bad.failures) - set(good.failures) == {
        f for f in bad.failures if f.check is Check.QUOTE_SIGNATURE
    }
    quote_failure = next(f for f in bad.failures if f.check is Check.QUOTE_SIGNATURE)
    assert quote_failure.code is FailureCode.QUOTE_SIGNATURE_INVALID
    assert quote_failure.hint
    # The QE report signature and the chain still verify.
    assert not bad.failed(Check.QE_REPORT_SIGNATURE) and not bad.failed(Check.PCK_CHAIN)


def test_type3_quote_needs_a_pck_chain(real_sets) -> None:  # type: ignore[no-untyped-def]
    collateral = real_sets.collateral("fortanix-dcapql-sgx-v3-2020-05")
    verdict = appraise(real_sets.read("fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin"), collateral,
                       at=1589860000)  # fmt: skip
    assert verdict.error is not None
    assert verdict.error.code is FailureCode.PCK_CHAIN_REQUIRED
    assert verdict.error.check is Check.CERTIFICATION_DATA
    assert "--pck-chain" in verdict.error.hint
    # What can be checked without the PCK certificate does verify.
    assert not verdict.failed(Check.QUOTE_SIGNATURE)
    assert not verdict.failed(Check.QE_REPORT_BINDING)


def _synthetic(real_sets, tee: str) -> tuple[bytes, Collateral, bytes, bytes]:  # type: ignore[no-untyped-def]
    folder = f"intel-dcap-sampledata-synthetic/{tee}/"
    signer = read_certificates(real_sets.read(folder + "tcbSignChain.pem"), "TCB chain")
    collateral = Collateral(
        tcb_info=read_signed_item(real_sets.read(folder + "tcbInfo.json"), "tcbInfo", signer),
        qe_identity=read_signed_item(
            real_sets.read(folder + "qeIdentity.json"), "enclaveIdentity", signer
        ),
        pck_crl=read_crl(real_sets.read(folder + "intermediateCaCrl.der"), "PCK CRL")[0],
        root_ca_crl=read_crl(real_sets.read(folder + "rootCaCrl.der"), "root CRL")[0],
    )
    pck_chain = real_sets.read(folder + "pckCert.pem") + real_sets.read(folder + "pckSignChain.pem")
    root = real_sets.read(folder + "trustedRootCaCert.pem")
    return real_sets.read(folder + "quote.dat"), collateral, pck_chain, root


def test_synthetic_sample_verifies_only_under_its_own_root(real_sets) -> None:  # type: ignore[no-untyped-def]
    quote, collateral, pck_chain, root = _synthetic(real_sets, "sgx")
    at = 1600000000  # inside every window of the sample data
    own = AnchorSet.of([load_anchor(root, "intel-sample")])
    verdict = appraise(quote, collateral, at=at, pck_chain=pck_chain, anchors=own)
    assert verdict.verified, verdict.failures
    assert verdict.trust_anchor is not None and verdict.trust_anchor.name == "intel-sample"
    assert not verdict.trust_anchor.production
    assert verdict.to_dict()["warning"]
    real = appraise(quote, collateral, at=at, pck_chain=pck_chain)
    assert not real.verified
    assert real.error is not None
    assert (real.error.check, real.error.code) == (Check.PCK_CHAIN, FailureCode.CHAIN_UNTRUSTED)
    assert real.failed(Check.TCB_INFO_CHAIN) and real.failed(Check.QE_IDENTITY_CHAIN)
    # Without the separately supplied PCK chain, type 1 certification data cannot be judged.
    bare = appraise(quote, collateral, at=at, anchors=own)
    assert bare.error is not None and bare.error.code is FailureCode.PCK_CHAIN_REQUIRED


def test_synthetic_tdx_sample_is_rejected_under_the_real_root(real_sets) -> None:  # type: ignore[no-untyped-def]
    quote, collateral, _chain, _root = _synthetic(real_sets, "tdx")
    verdict = appraise(quote, collateral, at=1630000000)
    assert verdict.error is not None
    assert (verdict.error.check, verdict.error.code) == (
        Check.PCK_CHAIN,
        FailureCode.CHAIN_UNTRUSTED,
    )
