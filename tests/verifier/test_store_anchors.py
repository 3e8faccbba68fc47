"""Two (three) PKIs in one collateral store: every item is kept under the anchor it chains to,
so collateral of Intel's PKI, an emulated world's and Intel's synthetic sample PKI never
compete for one "latest" pointer, rollback protection compares versions of one signer only,
and a verification picks the collateral of the PKI its quote's PCK chain leads to.

The PKIs collide on purpose: the emulated world here has the FMSPC of the real Intel quote
(``00a067110000``), every PKI has a ``QE`` identity, and the synthetic sample PKI has Intel's
CA names (so its CRLs have the very issuer-name keys of Intel's). Under the old keying
(``SGX/<fmspc>``, ``QE``, SHA-256 of the issuer name) each pair shared one pointer.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_quoting.fixtures import Fixture, fixture
from sgx_verifier.anchors import (
    INTEL_SGX_ROOT_KEY_SHA256,
    AnchorSet,
    TrustAnchor,
    intel_sgx_root_ca,
    load_anchor,
)
from sgx_verifier.appraisal import appraise
from sgx_verifier.challenge import ChallengeKey, ChallengeService, SqliteReplayStore
from sgx_verifier.collateral import Collateral
from sgx_verifier.fetch import items_from_bytes, items_from_file
from sgx_verifier.service import (
    CollateralUnavailableError,
    ImportRejectedError,
    VerificationRequest,
    VerificationResult,
    VerifierService,
    assemble,
)
from sgx_verifier.store import (
    SCHEMA_VERSION,
    CollateralItem,
    CollateralKind,
    Placement,
    SqliteCollateralStore,
    StoreError,
    anchored_key,
    split_key,
)
from sgx_verifier.token import TokenIssuer, TokenKeyring
from sgx_verifier.verdict import Check, FailureCode, TcbStatus

INTEL = INTEL_SGX_ROOT_KEY_SHA256
PHALA_FMSPC = bytes.fromhex("00a067110000")
#: Inside the windows of Phala's 2025-06 Intel collateral and of the emulated world below.
NOW = int(dt.datetime(2025, 6, 26, tzinfo=dt.UTC).timestamp())
#: Inside every window of Intel's synthetic sample data (as tests/verifier/test_real_sets.py).
SYNTHETIC_NOW = 1600000000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Pki:
    """One PKI's quote, collateral items (as a file import yields them) and anchor."""

    anchor: TrustAnchor
    quote: bytes
    items: list[CollateralItem]
    pck_chain: bytes | None = None
    now: int = NOW

    def named(self) -> list[tuple[str, CollateralItem]]:
        return [(self.anchor.name, item) for item in self.items]

    def ids(self) -> dict[str, str]:
        names = ("tcb_info", "qe_identity", "pck_crl", "root_ca_crl")
        return dict(zip(names, (i.id for i in self.items), strict=True))


def emulated_world() -> Fixture:
    """An emulated world whose platform has the real Intel quote's FMSPC, its PCS clock a few
    days after Intel's collateral was issued (a later issue date, a lower evaluation number:
    the pair the old rollback check ordered across PKIs)."""
    f = fixture(now=dt.datetime(2025, 6, 25, tzinfo=dt.UTC))
    return replace(f, platform=replace(f.platform, fmspc=PHALA_FMSPC))


@pytest.fixture(scope="module")
def pkis(real_vectors: Path) -> dict[str, Pki]:
    f = emulated_world()
    quote = f.quote()
    emulated_json = f.pcs().collateral_for_quote(quote).to_json().encode()
    phala = real_vectors / "phala-dcap-qvl"
    synthetic = real_vectors / "intel-dcap-sampledata-synthetic" / "sgx"
    sign_chain = (synthetic / "tcbSignChain.pem").read_bytes()
    pck_sign_chain = (synthetic / "pckSignChain.pem").read_bytes()
    synthetic_items = [
        replace(items_from_file(synthetic / "tcbInfo.json")[0], issuer_chain=sign_chain),
        replace(items_from_file(synthetic / "qeIdentity.json")[0], issuer_chain=sign_chain),
        replace(
            items_from_file(synthetic / "intermediateCaCrl.der")[0], issuer_chain=pck_sign_chain
        ),
        items_from_file(synthetic / "rootCaCrl.der")[0],
    ]
    return {
        "intel": Pki(
            intel_sgx_root_ca(),
            (phala / "sgx_quote").read_bytes(),
            items_from_file(phala / "sgx_quote_collateral.json"),
        ),
        "emulated": Pki(
            load_anchor(f.pki.root.der, "sgxemu-emulated"), quote, items_from_bytes(emulated_json)
        ),
        "synthetic": Pki(
            load_anchor((synthetic / "trustedRootCaCert.pem").read_bytes(), "intel-sample"),
            (synthetic / "quote.dat").read_bytes(),
            synthetic_items,
            pck_chain=(synthetic / "pckCert.pem").read_bytes() + pck_sign_chain,
            now=SYNTHETIC_NOW,
        ),
    }


def make_service(
    path: Path, anchors: Sequence[TrustAnchor], clock: Clock, replay: Path
) -> VerifierService:
    return VerifierService(
        store=SqliteCollateralStore(path),
        anchors=AnchorSet.of(anchors),
        challenges=ChallengeService(ChallengeKey.generate(), SqliteReplayStore(replay)),
        tokens=TokenIssuer(TokenKeyring.create(replay.with_suffix(".keys")), issuer="t"),
        appraise=appraise,
        clock=clock,
    )


@pytest.fixture()
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture()
def service(tmp_path: Path, pkis: dict[str, Pki], clock: Clock) -> VerifierService:
    anchors = [p.anchor for p in pkis.values()]
    return make_service(tmp_path / "collateral.sqlite", anchors, clock, tmp_path / "replay")


def verify(service: VerifierService, clock: Clock, pki: Pki) -> VerificationResult:
    clock.now = pki.now
    return service.verify(VerificationRequest(quote=pki.quote, pck_chain=pki.pck_chain))


# ---------------------------------------------------------------------------------------------
# The store: keys name their anchor


def test_the_pkis_collide_on_every_old_key(pkis: dict[str, Pki]) -> None:
    """The premise: without the root, these items would share pointers."""
    intel, emulated, synthetic = pkis["intel"], pkis["emulated"], pkis["synthetic"]
    assert [i.key for i in intel.items[:2]] == [i.key for i in emulated.items[:2]]
    assert intel.items[1].key == synthetic.items[1].key == "QE"
    assert [i.key for i in intel.items[2:]] == [i.key for i in synthetic.items[2:]]
    assert len({p.anchor.key_sha256 for p in pkis.values()}) == 3


def test_put_refuses_an_item_not_kept_under_an_anchor(
    tmp_path: Path, pkis: dict[str, Pki]
) -> None:
    store = SqliteCollateralStore(tmp_path / "c.sqlite")
    bare = pkis["intel"].items[0]
    assert bare.root is None and bare.key == "SGX/00a067110000"
    with pytest.raises(StoreError, match="not keyed under the anchor"):
        store.put(bare, source="t", now=0)
    for lookup in (
        lambda: store.latest(CollateralKind.TCB_INFO, bare.key),
        lambda: store.as_of(CollateralKind.TCB_INFO, bare.key, NOW),
        lambda: store.versions(CollateralKind.TCB_INFO, bare.key),
    ):
        with pytest.raises(StoreError, match="does not name the anchor"):
            lookup()
    assert store.latest_all() == []

    kept = bare.under(INTEL)
    assert kept.key == f"SGX/00a067110000@{INTEL}" and kept.root == INTEL
    assert kept.id == bare.id  # the id is the content's, whatever the key
    assert kept.under(INTEL) == kept
    with pytest.raises(StoreError, match="already kept under"):
        kept.under("ab" * 32)
    assert split_key(kept.key) == ("SGX/00a067110000", INTEL)
    for root in ("", "AB" * 32, "ab" * 31, "ab" * 32 + "00", "g" * 64):
        with pytest.raises(StoreError):
            bare.under(root)
    for base in ("", "a@b"):
        with pytest.raises(StoreError):
            anchored_key(base, INTEL)
    for key in ("QE", "QE@", f"@{INTEL}", f"a@b@{INTEL}", f"QE@{INTEL.upper()}"):
        with pytest.raises(StoreError):
            split_key(key)
    assert store.put(kept, source="t", now=0).key == kept.key


def _set_schema(path: Path, value: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE store_meta SET value = ? WHERE name = 'schema'", (value,))
    conn.close()


def _schema(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("SELECT value FROM store_meta WHERE name = 'schema'").fetchone()[0])
    finally:
        conn.close()


def test_a_schema_1_store_holding_collateral_is_refused_naming_the_fix(
    tmp_path: Path, pkis: dict[str, Pki]
) -> None:
    path = tmp_path / "c.sqlite"
    store = SqliteCollateralStore(path)
    store.put(pkis["intel"].items[0].under(INTEL), source="t", now=0)
    store.close()
    _set_schema(path, "1")
    with pytest.raises(StoreError) as e:
        SqliteCollateralStore(path)
    message = str(e.value)
    assert "schema 1" in message and "trust anchor" in message
    assert "import the collateral again" in message
    assert _schema(path) == "1"  # refused, not rewritten


def test_an_empty_schema_1_store_is_upgraded_and_an_unknown_schema_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    SqliteCollateralStore(path).close()
    assert _schema(path) == str(SCHEMA_VERSION) == "2"
    _set_schema(path, "1")
    SqliteCollateralStore(path).close()
    assert _schema(path) == "2"
    _set_schema(path, "3")
    with pytest.raises(StoreError, match="schema '3'"):
        SqliteCollateralStore(path)


# ---------------------------------------------------------------------------------------------
# Import: each PKI's collateral becomes latest under its own root


ORDERS = [("intel", "emulated", "synthetic"), ("synthetic", "emulated", "intel")]


@pytest.mark.parametrize("order", ORDERS, ids=["intel-first", "intel-last"])
def test_each_pki_is_latest_under_its_own_root_and_each_quote_gets_its_own(
    service: VerifierService, clock: Clock, pkis: dict[str, Pki], order: tuple[str, ...]
) -> None:
    for name in order:
        pki = pkis[name]
        results = service.import_items(pki.named(), source=name)
        assert [r.placement for r in results] == [Placement.BECAME_LATEST] * 4, [
            r.reason for r in results
        ]
        assert {split_key(r.key)[1] for r in results} == {pki.anchor.key_sha256}
    assert len(service.store.latest_all()) == 12

    for name, pki in pkis.items():
        root = pki.anchor.key_sha256
        for item in pki.items:
            latest = service.store.latest(item.kind, anchored_key(item.key, root))
            assert latest is not None and latest.id == item.id, (name, item.description)

        # At the present (no collateral, no time in the request): the PKI's own collateral.
        result = verify(service, clock, pki)
        assert result.verdict.verified, (name, result.verdict.failures)
        assert result.verdict.trust_anchor is not None
        assert result.verdict.trust_anchor.key_sha256 == root
        assert dict(result.collateral) == pki.ids()
        # As of the same time: the same set.
        at = service.verify(
            VerificationRequest(quote=pki.quote, pck_chain=pki.pck_chain, at=pki.now)
        )
        assert at.verdict.verified and dict(at.collateral) == pki.ids()

    intel = verify(service, clock, pkis["intel"]).verdict
    assert intel.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED
    assert intel.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert verify(service, clock, pkis["emulated"]).verdict.tcb_status is TcbStatus.UP_TO_DATE


def test_rollback_protection_still_holds_within_one_root(
    service: VerifierService, clock: Clock, pkis: dict[str, Pki], real_vectors: Path
) -> None:
    """Fortanix's evaluation 17/18/19 Intel collateral for the automata quote's FMSPC, in a
    store that also holds the emulated world's: 17 after 19 stays behind, the emulated items
    are untouched, and the automata quote is appraised with evaluation 19."""
    service.import_items(pkis["emulated"].named(), source="emulated")
    base = real_vectors / "fortanix-rust-sgx" / "collateral-2025"
    tcb = {n: items_from_file(base / f"00606a000000-{n}.tcb")[0] for n in (17, 18, 19)}
    qe = {n: items_from_file(base / f"qe3_identity-{n}.id")[0] for n in (17, 18, 19)}

    def placements(items: list[CollateralItem]) -> list[Placement]:
        return [r.placement for r in service.import_items([("f", i) for i in items], source="f")]

    # (Intel issued QE Identity 19 before 17 and 18: a QE 19 after a 17 would stay behind on
    # its issue date, as in test_store.py, so the QE identities come 19 first.)
    assert placements([tcb[17], qe[19]]) == [Placement.BECAME_LATEST] * 2
    assert placements([tcb[19]]) == [Placement.BECAME_LATEST]
    assert placements([tcb[17], qe[17]]) == [Placement.OLDER_THAN_LATEST] * 2
    assert placements([tcb[18], qe[18]]) == [Placement.OLDER_THAN_LATEST] * 2
    latest_qe = service.store.latest(CollateralKind.ENCLAVE_IDENTITY, f"QE@{INTEL}")
    assert latest_qe is not None and latest_qe.id == qe[19].id
    emulated_root = pkis["emulated"].anchor.key_sha256
    emulated_qe = service.store.latest(CollateralKind.ENCLAVE_IDENTITY, f"QE@{emulated_root}")
    assert emulated_qe is not None and emulated_qe.id == pkis["emulated"].items[1].id

    automata = real_vectors / "automata-dcap-attestation"
    pck_chain = b"".join(
        _pem(automata / "common" / name) for name in ("pck_platform_ca.der", "root_ca.der")
    )
    crls = [
        CollateralItem.crl(
            (automata / "tdx-v4-2025-06" / "pck_platform_crl.der").read_bytes(), pck_chain
        ),
        items_from_file(automata / "common" / "root_ca_crl.der")[0],
    ]
    assert [r.latest for r in service.import_items([("c", c) for c in crls], source="c")] == [
        True,
        True,
    ]
    clock.now = 1751000000  # sets.json: cross-automata-quote-fortanix-eval-17-18-19
    quote = (automata / "sgx-v3-2025-08" / "quote.bin").read_bytes()
    result = service.verify(VerificationRequest(quote=quote))
    assert result.verdict.verified, result.verdict.failures
    assert dict(result.collateral)["tcb_info"] == tcb[19].id
    assert dict(result.collateral)["qe_identity"] == qe[19].id
    assert result.verdict.tcb_status is TcbStatus.OUT_OF_DATE
    assert "INTEL-SA-01153" in result.verdict.advisory_ids  # only evaluation 19 lists it


def _pem(path: Path) -> bytes:
    return x509.load_der_x509_certificate(path.read_bytes()).public_bytes(Encoding.PEM)


# ---------------------------------------------------------------------------------------------
# Lookup: under the quote's own root, never another's


def test_collateral_of_another_pki_is_not_used_for_a_quote(
    service: VerifierService, clock: Clock, pkis: dict[str, Pki]
) -> None:
    """Only Intel's collateral stored; the emulated quote has the same FMSPC and a QE of the
    same id: nothing of Intel's is offered for it (the old keys found TCB Info and QE)."""
    service.import_items(pkis["intel"].named(), source="intel")
    with pytest.raises(CollateralUnavailableError) as e:
        verify(service, clock, pkis["emulated"])
    assert set(e.value.missing) == {"tcb_info", "qe_identity", "pck_crl", "root_ca_crl"}
    assert "sgxemu-emulated" in str(e.value)
    with pytest.raises(CollateralUnavailableError) as e:
        verify(service, clock, pkis["synthetic"])  # Intel's names, another key
    assert len(e.value.missing) == 4
    assert verify(service, clock, pkis["intel"]).verdict.verified


def test_a_quote_under_an_untrusted_root_looks_nothing_up(
    tmp_path: Path, service: VerifierService, clock: Clock, pkis: dict[str, Pki]
) -> None:
    """A second verifier on the same store trusts the Intel root only: the emulated quote
    fails its PCK chain as the appraisal reports it, and names no collateral."""
    for pki in pkis.values():
        service.import_items(pki.named(), source="all")
    intel_only = make_service(
        tmp_path / "collateral.sqlite", [intel_sgx_root_ca()], clock, tmp_path / "replay2"
    )
    for name in ("emulated", "synthetic"):
        pki = pkis[name]
        result = verify(intel_only, clock, pki)
        assert not result.verdict.verified and not result.accepted and result.token is None
        assert result.collateral == ()
        assert [(f.check, f.code) for f in result.verdict.failures] == [
            (Check.PCK_CHAIN, FailureCode.CHAIN_UNTRUSTED)
        ]
        # The first failure the appraisal reports for that chain, given that PKI's collateral.
        appraised = appraise(
            pki.quote,
            _assembled(service, pki),
            at=pki.now,
            anchors=intel_only.anchors,
            pck_chain=pki.pck_chain,
        )
        assert appraised.error is not None
        assert (appraised.error.check, appraised.error.code) == (
            Check.PCK_CHAIN,
            FailureCode.CHAIN_UNTRUSTED,
        )
    assert verify(intel_only, clock, pkis["intel"]).verdict.verified


def _assembled(service: VerifierService, pki: Pki) -> Collateral:
    root = pki.anchor.key_sha256
    items = {}
    for name, item in zip(pki.ids(), pki.items, strict=True):
        stored = service.store.latest(item.kind, anchored_key(item.key, root))
        assert stored is not None
        items[name] = stored.item
    return assemble(items)


def test_a_root_crl_is_stored_under_the_anchor_whose_key_signed_it(
    tmp_path: Path, clock: Clock, pkis: dict[str, Pki]
) -> None:
    """Intel's root and the synthetic sample root share a name: each root CRL is checked
    against every anchor of its issuer's name and kept under the one whose key signed it; with
    no such anchor configured, it is refused."""
    intel_crl, synthetic_crl = pkis["intel"].items[3], pkis["synthetic"].items[3]
    assert intel_crl.key == synthetic_crl.key  # SHA-256 of the same issuer name
    both = make_service(
        tmp_path / "c.sqlite",
        [pkis["intel"].anchor, pkis["synthetic"].anchor],
        clock,
        tmp_path / "replay",
    )
    results = both.import_items([("s", synthetic_crl), ("i", intel_crl)], source="t")
    assert [split_key(r.key)[1] for r in results] == [
        pkis["synthetic"].anchor.key_sha256,
        INTEL,
    ]
    assert all(r.placement is Placement.BECAME_LATEST for r in results)

    intel_only = make_service(
        tmp_path / "d.sqlite", [pkis["intel"].anchor], clock, tmp_path / "replay2"
    )
    with pytest.raises(ImportRejectedError) as e:
        intel_only.import_items([("s", synthetic_crl)], source="t")
    assert e.value.code is FailureCode.CRL_SIGNATURE_INVALID
    assert intel_only.store.latest_all() == []
