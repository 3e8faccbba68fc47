"""TCB evaluation: Intel's convergence table, canonical level order, QE levels, TDX module."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from sgx_platform.arch.dcap.quote import parse_quote
from sgx_platform.arch.dcap.signed_json import HexBytes
from sgx_platform.arch.dcap.tcb_info import (
    EnclaveTcbLevel,
    Tcb,
    TcbComponent,
    TcbInfo,
    TcbLevel,
)
from sgx_platform.arch.dcap.tcb_info import TcbStatus as JsonStatus
from sgx_quoting.fixtures import fixture
from sgx_verifier import appraisal
from sgx_verifier.tcb import (
    canonical_levels,
    converge,
    enclave_levels,
    match_platform_level,
    merge_advisories,
    qe_level,
)
from sgx_verifier.verdict import Check, FailureCode, StatusDetail, TcbStatus

S = TcbStatus
DATE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

# Intel QVL convergeTcbStatus: (platform, QE) -> final, spelled out for every pair.
LOWERED = {
    (S.UP_TO_DATE, S.OUT_OF_DATE): S.OUT_OF_DATE,
    (S.SW_HARDENING_NEEDED, S.OUT_OF_DATE): S.OUT_OF_DATE,
    (S.CONFIGURATION_NEEDED, S.OUT_OF_DATE): S.OUT_OF_DATE_CONFIGURATION_NEEDED,
    (S.CONFIGURATION_AND_SW_HARDENING_NEEDED, S.OUT_OF_DATE): S.OUT_OF_DATE_CONFIGURATION_NEEDED,
}


@pytest.mark.parametrize("platform", list(TcbStatus))
@pytest.mark.parametrize("qe", list(TcbStatus))
def test_convergence_table(platform: TcbStatus, qe: TcbStatus) -> None:
    if qe is S.REVOKED:
        expected = S.REVOKED
    else:
        expected = LOWERED.get((platform, qe), platform)
    assert converge(platform, qe) is expected


def test_merge_advisories_keeps_first_seen_order() -> None:
    assert merge_advisories(("A", "B"), ("B", "C"), ("A", "D")) == ("A", "B", "C", "D")
    assert merge_advisories((), ()) == ()


def _level(svns: tuple[int, ...], pcesvn: int, status: str) -> TcbLevel:
    return TcbLevel(Tcb(tuple(TcbComponent(s) for s in svns), pcesvn), DATE, JsonStatus(status), ())


def _info(*levels: TcbLevel) -> TcbInfo:
    template = fixture().pcs().tcb_info().tcb_info  # the fixture PCS's SGX TCB Info
    return dataclasses.replace(template, tcb_levels=levels, key_order=())


def test_levels_are_matched_in_canonical_order_not_json_order() -> None:
    platform = (5,) * 16
    low = _level((4,) * 16, 10, "OutOfDate")
    exact = _level((5,) * 16, 10, "SWHardeningNeeded")
    exact_higher_pce = _level((5,) * 16, 11, "UpToDate")
    above = _level((6,) + (5,) * 15, 10, "UpToDate")
    info = _info(low, above, exact, exact_higher_pce)
    ordered = canonical_levels(info)
    assert [p.level for p in ordered] == [above, exact_higher_pce, exact, low]

    def match(components: tuple[int, ...], pcesvn: int) -> TcbLevel | None:
        found = match_platform_level(ordered, components, pcesvn)
        return None if found is None else found.level

    assert match(platform, 10) is exact
    assert match(platform, 11) is exact_higher_pce
    assert match((4,) * 16, 10) is low
    assert match((3,) * 16, 10) is None
    assert match(platform, 9) is None
    # One component below is enough to skip a level.
    assert match((5,) * 15 + (4,), 10) is low
    assert match_platform_level(ordered, platform, 10).detail.status is S.SW_HARDENING_NEEDED  # type: ignore[union-attr]


def test_qe_levels_in_json_order_and_revoked_below_all() -> None:
    levels = enclave_levels(
        (
            EnclaveTcbLevel(8, DATE, JsonStatus("UpToDate"), ()),
            EnclaveTcbLevel(6, DATE, JsonStatus("OutOfDate"), ("INTEL-SA-00615",)),
        )
    )
    assert qe_level(levels, 9).status is S.UP_TO_DATE
    assert qe_level(levels, 7) == StatusDetail(
        S.OUT_OF_DATE, ("INTEL-SA-00615",), "2025-01-01T00:00:00Z"
    )
    assert qe_level(levels, 5).status is S.REVOKED
    assert qe_level((), 5).status is S.REVOKED


# -- the TDX module ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tdx(real_sets):  # type: ignore[no-untyped-def]
    quote = parse_quote(real_sets.quote("phala-tdx-v4-2025-06"), allow_trailing_zero_padding=True)
    collateral = real_sets.collateral("phala-tdx-v4-2025-06")
    return quote.body, TcbInfo.from_json(collateral.tcb_info.text)


def _module(td, info):  # type: ignore[no-untyped-def]
    run = appraisal._Run(0, None, [])  # type: ignore[arg-type]
    return appraisal._check_tdx_module(run, info, td), run.failures


def test_real_tdx_module_is_identified(tdx) -> None:  # type: ignore[no-untyped-def]
    td, info = tdx
    assert td.tee_tcb_svn[1] == 1  # module version 1: identity TDX_01 decides
    detail, failures = _module(td, info)
    assert failures == []
    assert detail is not None and detail.status is S.UP_TO_DATE


def _identity_01(info: TcbInfo, **changes: object) -> TcbInfo:
    ids = tuple(
        dataclasses.replace(i, **changes) if i.id == "TDX_01" else i
        for i in info.tdx_module_identities or ()
    )
    return dataclasses.replace(info, tdx_module_identities=ids)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"mrsigner": HexBytes(b"\x01" * 48)}, FailureCode.TDX_MODULE_MISMATCH),
        ({"attributes": HexBytes(b"\x01" + bytes(7))}, FailureCode.TDX_MODULE_MISMATCH),
        ({"id": "TDX_07"}, FailureCode.TDX_MODULE_MISMATCH),
        (
            {"tcb_levels": (EnclaveTcbLevel(200, DATE, JsonStatus("UpToDate"), ()),)},
            FailureCode.TCB_LEVEL_NOT_FOUND,
        ),
    ],
)
def test_tdx_module_failures(tdx, change, code) -> None:  # type: ignore[no-untyped-def]
    td, info = tdx
    detail, failures = _module(td, _identity_01(info, **change))
    assert detail is None
    assert [(f.check, f.code) for f in failures] == [(Check.TDX_MODULE, code)]


def test_tdx_module_out_of_date_lowers_the_platform(tdx) -> None:  # type: ignore[no-untyped-def]
    td, info = tdx
    stale = (EnclaveTcbLevel(0, DATE, JsonStatus("OutOfDate"), ("INTEL-SA-99999",)),)
    detail, failures = _module(td, _identity_01(info, tcb_levels=stale))
    assert failures == [] and detail is not None
    assert detail.status is S.OUT_OF_DATE
    assert converge(S.UP_TO_DATE, detail.status) is S.OUT_OF_DATE
