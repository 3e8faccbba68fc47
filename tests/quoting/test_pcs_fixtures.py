"""The committed PCS fixtures are exactly what the deterministic generator produces."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import dcap_qvl
import pytest

from sgx_quoting.fixtures import FIXTURE_NOW, fixture, fixture_files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcs"


def test_regenerating_reproduces_the_committed_fixtures() -> None:
    fresh = fixture_files()
    committed = {p.name: p.read_bytes() for p in FIXTURES.iterdir() if p.is_file()}
    assert sorted(committed) == sorted(fresh), "regenerate: python -m sgx_quoting.fixtures"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale fixtures {stale}; regenerate: python -m sgx_quoting.fixtures"


def test_manifest_hashes_match() -> None:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest


def test_generation_depends_on_the_seed() -> None:
    other = fixture_files(fixture(b"another fixture seed", FIXTURE_NOW))
    fresh = fixture_files()
    assert all(other[name] != fresh[name] for name in fresh)


@pytest.mark.parametrize(
    ("collateral", "status", "advisories"),
    [
        ("collateral.json", "UpToDate", []),
        ("collateral_tcb_recovery.json", "OutOfDate", ["SGXEMU-SA-00001"]),
    ],
)
def test_committed_collateral_verifies_with_dcap_qvl(
    collateral: str, status: str, advisories: list[str]
) -> None:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert manifest["expected"][collateral] == {"tcb_status": status, "advisory_ids": advisories}
    report = dcap_qvl.verify_with_root_ca(
        (FIXTURES / "quote.bin").read_bytes(),
        dcap_qvl.QuoteCollateralV3.from_json((FIXTURES / collateral).read_text()),
        (FIXTURES / "root_ca.der").read_bytes(),
        manifest["suggested_now"],
    )
    assert (report.status, report.advisory_ids) == (status, advisories)


def test_committed_revoked_collateral_is_rejected() -> None:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    with pytest.raises(ValueError, match="CertRevoked"):
        dcap_qvl.verify_with_root_ca(
            (FIXTURES / "quote.bin").read_bytes(),
            dcap_qvl.QuoteCollateralV3.from_json(
                (FIXTURES / "collateral_revoked.json").read_text()
            ),
            (FIXTURES / "root_ca.der").read_bytes(),
            manifest["suggested_now"],
        )
    valid_until = dt.datetime.strptime(manifest["valid_until"], "%Y-%m-%dT%H:%M:%SZ")
    assert valid_until > FIXTURE_NOW.replace(tzinfo=None)
