"""``sgxemu pcs``: root-ca, collateral, tcb-recovery, revoke-pck, clock, status, through main()."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest

import sgxemu_cli.main as cli_main
from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.quote import PckCertChainCertificationData
from sgx_quoting.fixtures import fixture
from sgx_quoting.state import PcsStore, create_pcs


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "state"
    assert cli_main.main(["--state", str(root), "init"]) == 0
    f = fixture()
    # Replace the PCS init made (it names this state's own QE) by one naming the fixture's QE,
    # whose quotes these tests assemble.
    shutil.rmtree(root / "pcs")
    create_pcs(root / "pcs", qe_mrsigner=f.qe_identity.mrsigner, qe_isvsvn=f.qe_svn, now=f.now)
    yield root


def _run(state: Path, *args: str) -> int:
    return cli_main.main(["--state", str(state), "pcs", *args])


def _quote(state: Path, tmp_path: Path) -> Path:
    """A quote whose PCK key the PCE registered with this PCS (through the store, as the
    ProvisioningService does)."""
    f = fixture()
    with PcsStore(state / "pcs").session() as pcs:
        chain = pcs.register_pck(public_key_to_raw(f.pck_key.public_key()), f.tcb, pce_id=bytes(2))
    path = tmp_path / "q.bin"
    path.write_bytes(
        f.quote(certification_data=PckCertChainCertificationData(chain.pem() + b"\x00"))
    )
    return path


def _verify(state: Path, tmp_path: Path, quote: Path) -> dcap_qvl.VerifiedReport:
    assert _run(state, "root-ca", "--out", str(tmp_path / "root.der")) == 0
    assert _run(state, "collateral", "--quote", str(quote), "--out", str(tmp_path / "c.json")) == 0
    return dcap_qvl.verify_with_root_ca(
        quote.read_bytes(),
        dcap_qvl.QuoteCollateralV3.from_json((tmp_path / "c.json").read_text()),
        (tmp_path / "root.der").read_bytes(),
        int(time.time()),
    )


def test_scenarios(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quote = _quote(state, tmp_path)
    assert _verify(state, tmp_path, quote).status == "UpToDate"
    assert (tmp_path / "root.der").read_bytes() == PcsStore(state / "pcs").load_pki().root_ca_der

    capsys.readouterr()
    assert _run(state, "tcb-recovery", "--advisory-id", "INTEL-SA-01234", "--json") == 0
    recovery = json.loads(capsys.readouterr().out)
    assert recovery["advisory_id"] == "INTEL-SA-01234"
    report = _verify(state, tmp_path, quote)
    assert (report.status, report.advisory_ids) == ("OutOfDate", ["INTEL-SA-01234"])

    capsys.readouterr()
    assert _run(state, "revoke-pck", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["revoked"]) == 1
    with pytest.raises(ValueError, match="CertRevoked"):
        _verify(state, tmp_path, quote)

    capsys.readouterr()
    assert _run(state, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert [lv["status"] for lv in status["tcb_levels"]] == ["UpToDate", "OutOfDate"]
    assert status["pck_certificates"][0]["revoked"] is True


def test_clock_makes_expired_collateral(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = _quote(state, tmp_path)
    assert _run(state, "clock", "--offset", str(-40 * 86400), "--json") == 0
    clock = json.loads(capsys.readouterr().out)
    assert clock["offset_seconds"] == -40 * 86400
    with pytest.raises(ValueError, match="expired"):
        _verify(state, tmp_path, quote)
    assert _run(state, "clock", "--reset") == 0
    assert _verify(state, tmp_path, quote).status == "UpToDate"
    capsys.readouterr()
    assert _run(state, "clock", "--at", "2030-01-01T00:00:00Z", "--json") == 0
    assert json.loads(capsys.readouterr().out)["now"] == "2030-01-01T00:00:00Z"


def test_collateral_by_fmspc(state: Path, tmp_path: Path) -> None:
    fmspc = json.loads((state / "pcs" / "pcs.json").read_text())["platform"]["fmspc"]
    out = tmp_path / "c.json"
    assert _run(state, "collateral", "--fmspc", fmspc, "--ca", "processor", "--out", str(out)) == 0
    document = json.loads(out.read_text())
    assert json.loads(document["tcb_info"])["fmspc"] == fmspc.upper()


def test_unusable_input_exits_64(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.json")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x03\x00" + bytes(10))
    assert _run(state, "collateral", "--quote", str(tmp_path / "missing"), "--out", out) == 64
    assert _run(state, "collateral", "--quote", str(junk), "--out", out) == 64
    assert _run(state, "collateral", "--fmspc", "001122334455", "--out", out) == 1  # not ours
    with pytest.raises(SystemExit) as raised:
        _run(state, "collateral", "--fmspc", "zz", "--out", out)
    assert raised.value.code == 64
    assert _run(state, "revoke-pck", "--serial", "1234") == 1  # no such certificate
    assert _run(state, "tcb-recovery", "--advisory-id", 'a"b') == 64
    assert not (tmp_path / "c.json").exists()
    errors = capsys.readouterr().err
    assert "does not exist" in errors


def test_uninitialized_or_missing_pcs(tmp_path: Path) -> None:
    assert cli_main.main(["--state", str(tmp_path / "none"), "pcs", "status"]) == 64
    root = tmp_path / "state"
    assert cli_main.main(["--state", str(root), "init"]) == 0
    (root / "pcs" / "pcs.json").unlink(missing_ok=True)
    assert cli_main.main(["--state", str(root), "pcs", "status"]) == 1
