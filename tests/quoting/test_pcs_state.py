"""Persistence of the PCS: round trip, file modes, strict loading, sessions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import dcap_qvl
import pytest

from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.pck import SgxType, sgx_extension_from_certificate
from sgx_platform.arch.dcap.quote import PckCertChainCertificationData
from sgx_platform.arch.dcap.tcb_info import TcbStatus
from sgx_quoting.errors import PcsStateError
from sgx_quoting.fixtures import fixture
from sgx_quoting.pcs import PcsState
from sgx_quoting.pki import PckCa
from sgx_quoting.state import PcsStore, create_pcs, state_from_json, state_to_json


def _busy_state() -> PcsState:
    pcs = fixture().pcs()
    pcs.tcb_recovery()
    pcs.revoke_pck()
    pcs.set_clock(offset_seconds=-5)
    return pcs.state


def test_state_json_round_trip() -> None:
    state = _busy_state()
    data = state_to_json(state)
    assert state_from_json(data) == state
    assert state_to_json(state_from_json(data)) == data


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("recoveries"),
        lambda d: d.update(extra=1),
        lambda d: d.update(version=2),
        lambda d: d.update(format="other"),
        lambda d: d["platform"].update(fmspc="00"),
        lambda d: d["platform"].update(ca="root"),
        lambda d: d["platform"].update(sgx_type=7),
        lambda d: d["tcb_levels"][0].update(status="Fine"),
        lambda d: d["tcb_levels"][0].update(tcb_date="yesterday"),
        lambda d: d["tcb_levels"][0].update(pcesvn="13"),
        lambda d: d["tcb_levels"].clear(),
        lambda d: d["qe_identity"].update(mrsigner="zz"),
        lambda d: d["pck_certificates"][0].update(certificate="AAAA"),
        lambda d: d["pck_certificates"][0].update(revoked_at=5),
        lambda d: d["clock"].update(offset_seconds=True),
    ],
)
def test_state_json_is_strict(mutate: object) -> None:
    document = json.loads(state_to_json(_busy_state()))
    mutate(document)  # type: ignore[operator]
    with pytest.raises(PcsStateError):
        state_from_json(json.dumps(document).encode())


def test_not_json() -> None:
    with pytest.raises(PcsStateError):
        state_from_json(b"\xff")
    with pytest.raises(PcsStateError):
        state_from_json(b"[]")


def test_store_create_load_and_modes(tmp_path: Path) -> None:
    f = fixture()
    store = PcsStore(tmp_path / "pcs")
    store.create(f.pki, f.state())
    assert stat.S_IMODE((tmp_path / "pcs").stat().st_mode) == 0o700
    for name in ("root-ca.key", "platform-ca.key", "processor-ca.key", "tcb-signing.key"):
        assert stat.S_IMODE((tmp_path / "pcs" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "pcs" / "pcs.json").stat().st_mode) == 0o600
    loaded = store.load_pki()
    for a, b in zip(
        (loaded.root, loaded.platform_ca, loaded.processor_ca, loaded.tcb_signing),
        (f.pki.root, f.pki.platform_ca, f.pki.processor_ca, f.pki.tcb_signing),
        strict=True,
    ):
        assert a.certificate == b.certificate
        assert a.private_key.private_numbers() == b.private_key.private_numbers()
    assert store.load_state() == f.state()
    with pytest.raises(PcsStateError):
        store.create(f.pki, f.state())


def test_session_saves_changes_only(tmp_path: Path) -> None:
    f = fixture()
    store = PcsStore(tmp_path)
    store.create(f.pki, f.state())
    state_file = tmp_path / "pcs.json"
    before = state_file.stat().st_mtime_ns, state_file.stat().st_ino
    with store.session(system_clock=f.clock) as pcs:
        pcs.root_ca_crl()
    assert (state_file.stat().st_mtime_ns, state_file.stat().st_ino) == before
    with store.session(system_clock=f.clock) as pcs:
        pcs.tcb_recovery()
    assert store.load_state().recoveries == 1
    with pytest.raises(RuntimeError), store.session(system_clock=f.clock) as pcs:
        pcs.tcb_recovery()
        raise RuntimeError("abandoned")
    assert store.load_state().recoveries == 1


def test_store_detects_missing_and_mismatched_files(tmp_path: Path) -> None:
    f = fixture()
    with pytest.raises(PcsStateError), PcsStore(tmp_path / "nothing").session():
        pass
    store = PcsStore(tmp_path)
    store.create(f.pki, f.state())
    (tmp_path / "tcb-signing.key").write_bytes((tmp_path / "root-ca.key").read_bytes())
    with pytest.raises(PcsStateError):
        store.load_pki()
    (tmp_path / "tcb-signing.key").unlink()
    with pytest.raises(PcsStateError):
        store.load_pki()
    (tmp_path / "root-ca.der").write_bytes(b"junk")
    with pytest.raises(PcsStateError):
        store.load_pki()


def test_store_refuses_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    f = fixture()
    with pytest.raises(PcsStateError):
        PcsStore(tmp_path / "link").create(f.pki, f.state())


@pytest.mark.parametrize("ca", [PckCa.PROCESSOR, PckCa.PLATFORM])
def test_create_pcs_for_init(tmp_path: Path, ca: PckCa) -> None:
    f = fixture()
    store = create_pcs(tmp_path / ca.value, qe_mrsigner=f.qe_identity.mrsigner, ca=ca, now=f.now)
    state = store.load_state()
    assert state.platform.ca is ca
    assert state.platform.fmspc[0] == 0 and state.platform.fmspc[4:] == bytes(2)
    assert (state.platform.platform_instance_id is None) == (ca is PckCa.PROCESSOR)
    with store.session(system_clock=f.clock) as pcs:
        # The zero baseline: any platform TCB starts UpToDate.
        assert pcs.platform_status(f.tcb).tcb_status is TcbStatus.UP_TO_DATE
        chain = pcs.register_pck(public_key_to_raw(f.pck_key.public_key()), f.tcb, pce_id=bytes(2))
        quote = f.quote(certification_data=PckCertChainCertificationData(chain.pem()))
        collateral = pcs.collateral_for_quote(quote)
    report = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
        store.load_pki().root_ca_der,
        int(f.now.timestamp()),
    )
    assert report.status == "UpToDate"
    assert sgx_extension_from_certificate(chain.leaf).sgx_type == (
        SgxType.STANDARD if ca is PckCa.PROCESSOR else SgxType.SCALABLE
    )
    other = create_pcs(tmp_path / "other", qe_mrsigner=bytes(32), now=f.now)
    assert other.load_pki().root_ca_der != store.load_pki().root_ca_der
    assert other.load_state().platform.ppid != state.platform.ppid
