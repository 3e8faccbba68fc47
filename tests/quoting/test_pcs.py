"""The PCS domain: registration, PCK selection, revocation, TCB recovery, the clock."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.pck import sgx_extension_from_certificate
from sgx_platform.arch.dcap.tcb_info import TcbStatus
from sgx_quoting.errors import PcsInputError, UnknownPlatformError
from sgx_quoting.fixtures import fixture
from sgx_quoting.pcs import (
    ClockSetting,
    PlatformProfile,
    PlatformTcb,
    load_pck_public_key,
    superseded,
)
from sgx_quoting.pki import PckCa, derive_private_key


def _key(label: str) -> bytes:
    return public_key_to_raw(derive_private_key(b"test-pcs-keys-seed", label).public_key())


def _tcb(first: int, pcesvn: int = 13) -> PlatformTcb:
    base = fixture().tcb
    return PlatformTcb(bytes([first]) + base.cpusvn[1:], pcesvn)


def test_registration_issues_a_certificate_per_tcb() -> None:
    f = fixture()
    pcs = f.pcs(register=False)
    chain = pcs.register_pck(_key("a"), f.tcb, pce_id=bytes(2))
    ext = sgx_extension_from_certificate(chain.leaf)
    assert ext.fmspc == f.platform.fmspc
    assert ext.ppid == f.platform.ppid
    assert ext.tcb.cpusvn == f.tcb.cpusvn
    assert ext.tcb.components == tuple(f.tcb.cpusvn)
    assert ext.tcb.pcesvn == f.tcb.pcesvn
    chain.leaf.verify_directly_issued_by(chain.ca)
    chain.ca.verify_directly_issued_by(chain.root)
    assert chain.leaf.not_valid_before_utc == f.now
    # The same key for the same TCB: the same certificate.
    assert pcs.register_pck(_key("a"), f.tcb, pce_id=bytes(2)).leaf == chain.leaf
    # Another TCB: another certificate, another serial.
    other = pcs.register_pck(_key("b"), _tcb(13), pce_id=bytes(2))
    assert other.leaf.serial_number != chain.leaf.serial_number
    assert len(pcs.state.pck_certificates) == 2
    pem = chain.pem()
    assert [c.subject for c in x509.load_pem_x509_certificates(pem)] == [
        chain.leaf.subject,
        chain.ca.subject,
        chain.root.subject,
    ]


def test_registration_rejects_bad_input() -> None:
    f = fixture()
    pcs = f.pcs(register=False)
    with pytest.raises(UnknownPlatformError):
        pcs.register_pck(_key("a"), f.tcb, pce_id=b"\x00\x01")
    with pytest.raises(PcsInputError):
        pcs.register_pck(_key("a"), f.tcb, pce_id=b"\x00")
    with pytest.raises(PcsInputError):
        pcs.register_pck(_key("a")[:63], f.tcb, pce_id=bytes(2))
    with pytest.raises(PcsInputError):
        pcs.register_pck(bytes(64), f.tcb, pce_id=bytes(2))  # not on the curve
    with pytest.raises(PcsInputError):
        pcs.register_pck(_key("a"), f.tcb, pce_id=bytes(2), ppid=bytes(15))
    with pytest.raises(PcsInputError):
        PlatformTcb(bytes(15), 0)
    with pytest.raises(PcsInputError):
        PlatformTcb(bytes(16), 1 << 16)
    with pytest.raises(PcsInputError):
        PlatformProfile(fmspc=bytes(5), ppid=bytes(16))
    assert pcs.state.pck_certificates == ()


def test_public_key_encodings() -> None:
    raw = _key("k")
    a = load_pck_public_key(raw)
    assert load_pck_public_key(b"\x04" + raw) == a
    from cryptography.hazmat.primitives import serialization

    der = a.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_pck_public_key(der) == a
    with pytest.raises(PcsInputError):
        load_pck_public_key(b"\x30\x00")


def test_selection_picks_the_highest_registered_tcb_reached() -> None:
    f = fixture()
    pcs = f.pcs(register=False)
    low = pcs.register_pck(_key("low"), _tcb(10), pce_id=bytes(2))
    mid = pcs.register_pck(_key("mid"), _tcb(12), pce_id=bytes(2))
    high_pce = pcs.register_pck(_key("pce"), _tcb(10, pcesvn=14), pce_id=bytes(2))
    assert pcs.select_pck(_tcb(12), pce_id=bytes(2)).leaf == mid.leaf
    assert pcs.select_pck(_tcb(11), pce_id=bytes(2)).leaf == low.leaf
    assert pcs.select_pck(_tcb(12, pcesvn=14), pce_id=bytes(2)).leaf == high_pce.leaf
    with pytest.raises(UnknownPlatformError):
        pcs.select_pck(_tcb(9), pce_id=bytes(2))
    with pytest.raises(UnknownPlatformError):
        pcs.select_pck(_tcb(12), pce_id=b"\x00\x01")


def test_revocation_goes_on_the_crl_and_sticks() -> None:
    f = fixture()
    pcs = f.pcs()
    chain = pcs.select_pck(f.tcb, pce_id=bytes(2))
    crl = x509.load_der_x509_crl(pcs.pck_crl(PckCa.PROCESSOR))
    assert crl.get_revoked_certificate_by_serial_number(chain.leaf.serial_number) is None
    number_before = pcs.state.pck_crl_number
    assert pcs.revoke_pck() == (chain.leaf.serial_number,)
    crl = x509.load_der_x509_crl(pcs.pck_crl(PckCa.PROCESSOR))
    entry = crl.get_revoked_certificate_by_serial_number(chain.leaf.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == f.now
    assert pcs.state.pck_crl_number == number_before + 1
    # Nothing left to revoke; re-registering the same key returns the revoked certificate.
    assert pcs.revoke_pck() == ()
    again = pcs.register_pck(
        public_key_to_raw(f.pck_key.public_key()), f.tcb, pce_id=f.platform.pce_id
    )
    assert again.leaf == chain.leaf
    assert again.revoked
    assert pcs.revoke_pck(chain.leaf.serial_number) == ()
    with pytest.raises(UnknownPlatformError):
        pcs.revoke_pck(12345)
    # The Platform CA's CRL is not affected.
    platform_crl = x509.load_der_x509_crl(pcs.pck_crl(PckCa.PLATFORM))
    assert len(list(platform_crl)) == 0


def test_tcb_recovery_supersedes_the_current_level() -> None:
    f = fixture()
    pcs = f.pcs()
    assert pcs.platform_status(f.tcb).tcb_status is TcbStatus.UP_TO_DATE
    number = pcs.state.tcb_evaluation_data_number
    recovery = pcs.tcb_recovery()
    assert recovery.advisory_id == "SGXEMU-SA-00001"
    assert recovery.tcb_evaluation_data_number == number + 1
    new_tcb = PlatformTcb.of_level(recovery.new_level)
    assert new_tcb.cpusvn[0] == f.tcb.cpusvn[0] + 1
    assert new_tcb.cpusvn[1:] == f.tcb.cpusvn[1:]
    level = pcs.platform_status(f.tcb)
    assert level.tcb_status is TcbStatus.OUT_OF_DATE
    assert level.advisory_ids == ("SGXEMU-SA-00001",)
    updated = PlatformTcb(new_tcb.cpusvn, f.tcb.pcesvn)
    assert pcs.platform_status(updated).tcb_status is TcbStatus.UP_TO_DATE
    second = pcs.tcb_recovery(advisory_id="INTEL-SA-99999", component=None, raise_pcesvn=True)
    assert second.new_level.tcb.pcesvn == f.tcb.pcesvn + 1
    assert pcs.platform_status(updated).advisory_ids == ("INTEL-SA-99999",)
    assert pcs.platform_status(f.tcb).advisory_ids == ("SGXEMU-SA-00001", "INTEL-SA-99999")
    assert [lvl.tcb_status for lvl in pcs.state.tcb_levels] == [
        TcbStatus.UP_TO_DATE,
        TcbStatus.OUT_OF_DATE,
        TcbStatus.OUT_OF_DATE,
    ]


def test_tcb_recovery_rejects_bad_arguments() -> None:
    pcs = fixture().pcs()
    before = pcs.state
    for kwargs in (
        {"component": None},
        {"component": 16},
        {"component": 4},  # already 255
        {"advisory_id": 'X"Y'},
    ):
        with pytest.raises(PcsInputError):
            pcs.tcb_recovery(**kwargs)  # type: ignore[arg-type]
    assert pcs.state == before


def test_status_superseded_mapping() -> None:
    assert superseded(TcbStatus.SW_HARDENING_NEEDED) is TcbStatus.OUT_OF_DATE
    assert superseded(TcbStatus.CONFIGURATION_NEEDED) is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    assert (
        superseded(TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED)
        is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    )
    assert superseded(TcbStatus.REVOKED) is TcbStatus.REVOKED


def test_clock_offset_and_freeze() -> None:
    system = dt.datetime(2030, 1, 1, 0, 0, 0, 500, tzinfo=dt.UTC)
    assert ClockSetting().now(system) == system.replace(microsecond=0)
    assert ClockSetting(offset_seconds=-60).now(system) == dt.datetime(
        2029, 12, 31, 23, 59, tzinfo=dt.UTC
    )
    frozen = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert ClockSetting(offset_seconds=10, frozen_at=frozen).now(system) == frozen.replace(
        second=10
    )
    pcs = fixture().pcs()
    pcs.set_clock(offset_seconds=3600)
    assert pcs.now() == fixture().now + dt.timedelta(hours=1)
    before = pcs.state
    for bad in (
        {"offset_seconds": 10**12},
        {"offset_seconds": True},
        {"frozen_at": dt.datetime(9999, 12, 31, tzinfo=dt.UTC)},
        {"frozen_at": dt.datetime(2025, 1, 1)},  # naive
    ):
        with pytest.raises(PcsInputError):
            pcs.set_clock(**bad)  # type: ignore[arg-type]
    assert pcs.state == before
    crl = x509.load_der_x509_crl(pcs.root_ca_crl())
    assert crl.last_update_utc == fixture().now + dt.timedelta(hours=1)
    assert crl.next_update_utc == crl.last_update_utc + dt.timedelta(days=365)


_svn = st.integers(min_value=0, max_value=3)
_tcbs = st.builds(
    lambda svns, pcesvn: PlatformTcb(bytes(svns) + bytes(13), pcesvn),
    st.lists(_svn, min_size=3, max_size=3),
    _svn,
)


@settings(max_examples=40, deadline=None)
@given(registered=st.lists(_tcbs, min_size=1, max_size=4, unique=True), raw=_tcbs)
def test_selection_property(registered: list[PlatformTcb], raw: PlatformTcb) -> None:
    """The selected certificate's TCB is reached by the raw TCB, and no reachable registered
    TCB is above it in (PCESVN, components) order."""
    f = fixture()
    pcs = f.pcs(register=False)
    for i, tcb in enumerate(registered):
        pcs.register_pck(_key(f"p{i}"), tcb, pce_id=bytes(2))
    reachable = [t for t in registered if raw.reaches(t)]
    if not reachable:
        with pytest.raises(UnknownPlatformError):
            pcs.select_pck(raw, pce_id=bytes(2))
        return
    chosen = sgx_extension_from_certificate(pcs.select_pck(raw, pce_id=bytes(2)).leaf).tcb
    chosen_tcb = PlatformTcb(chosen.cpusvn, chosen.pcesvn)
    assert raw.reaches(chosen_tcb)
    key = max((t.pcesvn, t.components) for t in reachable)
    assert (chosen_tcb.pcesvn, chosen_tcb.components) == key
