"""As-of re-verification of a real Intel quote from the store: two generations of Intel
collateral for the same platform (Nov 2023 and Jun 2025), each verifying the quote for its own
time; the rollback-protected latest; collateral grace; ids that name exactly what was used."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sgx_verifier.anchors import INTEL_SGX_ROOT_KEY_SHA256, AnchorSet
from sgx_verifier.appraisal import appraise
from sgx_verifier.certificates import parse_certificates
from sgx_verifier.challenge import ChallengeKey, ChallengeService, SqliteReplayStore
from sgx_verifier.fetch import items_from_file
from sgx_verifier.policy import Policy
from sgx_verifier.service import (
    CollateralUnavailableError,
    ImportRejectedError,
    VerificationRequest,
    VerifierService,
)
from sgx_verifier.store import CollateralKind, Placement, SqliteCollateralStore, anchored_key
from sgx_verifier.token import TokenIssuer, TokenKeyring
from sgx_verifier.verdict import TcbStatus

#: What Intel says about this platform in both generations (sets.json).
ACCEPTING = Policy(
    accepted_statuses=frozenset({TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED}),
    accepted_advisory_ids=frozenset({"INTEL-SA-00289", "INTEL-SA-00615"}),
)


def ts(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def world(tmp_path: Path, real_vectors: Path) -> tuple[VerifierService, Clock, bytes, Path]:
    clock = Clock(ts("2025-07-01T00:00:00Z"))
    service = VerifierService(
        store=SqliteCollateralStore(tmp_path / "collateral.sqlite"),
        anchors=AnchorSet.default(),
        challenges=ChallengeService(ChallengeKey.generate(), SqliteReplayStore(tmp_path / "r")),
        tokens=TokenIssuer(TokenKeyring.create(tmp_path / "keys"), issuer="sgxemu-verifier"),
        appraise=appraise,
        default_policy=ACCEPTING,
        clock=clock,
    )
    base = real_vectors / "phala-dcap-qvl"
    return service, clock, (base / "sgx_quote").read_bytes(), base


def _import(service: VerifierService, path: Path) -> list[Placement]:
    items = [(path.name, item) for item in items_from_file(path)]
    return [r.placement for r in service.import_items(items, source=str(path))]


def test_each_generation_verifies_the_quote_for_its_own_time(
    world: tuple[VerifierService, Clock, bytes, Path],
) -> None:
    service, clock, quote, base = world
    assert _import(service, base / "sgx_quote_collateral.json") == [Placement.BECAME_LATEST] * 4
    # The 2023 generation is older on every key: stored, but the latest stays.
    assert _import(service, base / "sgx_quote_collateral_2023-11.json") == [
        Placement.OLDER_THAN_LATEST
    ] * 4

    now = service.verify(VerificationRequest(quote=quote))
    assert now.verdict.verified and now.accepted, now.verdict.failures
    assert now.verdict.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert now.verdict.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")

    then_at = ts("2023-11-22T00:00:00Z")
    then = service.verify(VerificationRequest(quote=quote, at=then_at))
    assert then.verdict.verified and then.accepted, then.verdict.failures
    assert then.at == then_at
    assert now.token is not None and then.token is None  # no token for a past time
    assert set(dict(then.collateral).values()).isdisjoint(dict(now.collateral).values())
    # The ids name exactly what was used: the verdict's own ids agree with the store's.
    used = {c.name: c.sha256 for c in then.verdict.collateral}
    assert all(used[name] == item_id for name, item_id in then.collateral)
    tcb = service.store.get(dict(then.collateral)["tcb_info"]).item
    assert tcb.issue_date <= then_at <= tcb.next_update

    # Re-verification with those ids, later, gives the same verdict.
    clock.now = ts("2026-01-01T00:00:00Z")
    ids = tuple(i for _, i in then.collateral)
    again = service.verify(VerificationRequest(quote=quote, at=then_at, collateral_ids=ids))
    assert again.verdict.verified and again.collateral == then.collateral

    # The latest (2025) collateral cannot judge 2023: that is what as-of is for.
    clock.now = then_at
    wrong_time = service.verify(VerificationRequest(quote=quote))
    assert not wrong_time.verdict.verified
    assert "COLLATERAL_NOT_YET_VALID" in wrong_time.verdict.codes()


def test_no_collateral_for_a_time_is_reported(
    world: tuple[VerifierService, Clock, bytes, Path],
) -> None:
    service, _, quote, base = world
    _import(service, base / "sgx_quote_collateral.json")
    with pytest.raises(CollateralUnavailableError) as e:
        service.verify(VerificationRequest(quote=quote, at=ts("2024-06-01T00:00:00Z")))
    assert set(e.value.missing) == {"tcb_info", "qe_identity", "pck_crl", "root_ca_crl"}


def test_collateral_grace_is_off_by_default_and_bounded(
    world: tuple[VerifierService, Clock, bytes, Path],
) -> None:
    service, clock, quote, base = world
    _import(service, base / "sgx_quote_collateral_2023-11.json")
    expiry = min(s.item.next_update for s in service.store.latest_all())
    clock.now = expiry + 3600
    stale = service.verify(VerificationRequest(quote=quote))
    assert not stale.verdict.verified and not stale.accepted
    assert set(stale.verdict.codes()) <= {"COLLATERAL_EXPIRED", "CRL_EXPIRED"}
    with pytest.raises(CollateralUnavailableError):
        service.verify(VerificationRequest(quote=quote, at=expiry + 3600))

    # An hour past nextUpdate, a day of grace: accepted, and the result says so.
    graceful = Policy(
        accepted_statuses=ACCEPTING.accepted_statuses,
        accepted_advisory_ids=ACCEPTING.accepted_advisory_ids,
        collateral_grace_seconds=86400,
    )
    for at in (None, expiry + 3600):  # now (the latest items), and as of a time
        result = service.verify(VerificationRequest(quote=quote, at=at, policy=graceful))
        assert result.accepted and result.grace_applied == 3601 and result.at == expiry - 1
        assert result.token is not None and result.to_dict()["collateral_grace_applied"] == 3601
    # Beyond the grace: refused.
    clock.now = expiry + 2 * 86400
    late = service.verify(VerificationRequest(quote=quote, policy=graceful))
    assert not late.accepted and late.grace_applied == 0 and late.token is None
    with pytest.raises(CollateralUnavailableError):
        service.verify(VerificationRequest(quote=quote, at=expiry + 2 * 86400, policy=graceful))


def test_collateral_under_another_root_is_not_imported(
    world: tuple[VerifierService, Clock, bytes, Path], real_vectors: Path
) -> None:
    service, _, _, _ = world
    synthetic = real_vectors / "intel-dcap-sampledata-synthetic" / "sgx"
    body = json.loads((synthetic / "tcbInfo.json").read_text())
    assert "tcbInfo" in body
    items = items_from_file(synthetic / "tcbInfo.json")
    chain = (synthetic / "tcbSignChain.pem").read_bytes()
    with pytest.raises(ImportRejectedError) as e:
        service.import_items([("tcbInfo.json", replace(items[0], issuer_chain=chain))], source="t")
    assert e.value.code.value == "CHAIN_UNTRUSTED"
    assert service.store.latest_all() == []
    synthetic_root = next(c for c in parse_certificates(chain) if c.self_issued)
    for root in (INTEL_SGX_ROOT_KEY_SHA256, hashlib.sha256(synthetic_root.spki_der).hexdigest()):
        key = anchored_key(items[0].key, root)
        assert service.store.versions(CollateralKind.TCB_INFO, key) == []
