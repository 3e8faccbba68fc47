"""TCB evaluation: the platform's level from TCB Info, the QE's level from QE Identity, and the
final status merged as Intel's Quote Verification Library merges them.

Invariants (Intel QVL ``TcbInfo``/``EnclaveIdentityV2``/``convergeTcbStatus``; dcap-qvl
``match_platform_tcb``/``TcbStatus::converge_with_component`` agree):

* Platform levels are considered in Intel's canonical order, not the JSON order: SGX component
  SVNs descending (lexicographically), then PCESVN descending, then (TDX) TDX component SVNs
  descending. The first level whose 16 SGX component SVNs are each <= the PCK certificate's,
  whose PCESVN is <= the certificate's and (TDX) whose TDX component SVNs are each <= the TD's
  TEE_TCB_SVN is the platform's level. The platform's SVNs come from the PCK certificate, never
  from the quote header.
* QE levels are considered in JSON order; the first whose ISVSVN is <= the QE report's ISVSVN
  decides. None matching means ``Revoked`` (Intel QVL ``EnclaveIdentityV2::getTcbStatus``).
* Merge: a QE ``OutOfDate`` lowers a platform ``UpToDate``/``SWHardeningNeeded`` to ``OutOfDate``
  and ``ConfigurationNeeded``/``ConfigurationAndSWHardeningNeeded`` to
  ``OutOfDateConfigurationNeeded``; a QE ``Revoked`` makes it ``Revoked``; anything else keeps
  the platform's status. Advisory IDs are the platform's, then the QE's not already listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sgx_platform.arch.dcap.tcb_info import EnclaveTcbLevel, TcbInfo, TcbInfoId, TcbLevel
from sgx_verifier.verdict import StatusDetail, TcbStatus


@dataclass(frozen=True, slots=True)
class PreparedLevel:
    """A platform level reduced to plain integers and its status, for fast repeated matching."""

    sgx: tuple[int, ...]
    pcesvn: int
    tdx: tuple[int, ...] | None
    level: TcbLevel
    detail: StatusDetail


def canonical_levels(info: TcbInfo) -> tuple[PreparedLevel, ...]:
    """The platform levels of ``info`` in Intel's canonical (descending) order."""
    tdx = info.id is TcbInfoId.TDX
    prepared = [
        PreparedLevel(
            level.tcb.sgx_svns, level.tcb.pcesvn, level.tcb.tdx_svns, level, _detail(level)
        )
        for level in info.tcb_levels
    ]
    prepared.sort(
        key=lambda p: (p.sgx, p.pcesvn, (p.tdx or ()) if tdx else ()),
        reverse=True,
    )
    return tuple(prepared)


def _at_most(required: Sequence[int], actual: Sequence[int]) -> bool:
    return all(r <= a for r, a in zip(required, actual, strict=True))


def match_platform_level(
    levels: Sequence[PreparedLevel],
    components: Sequence[int],
    pcesvn: int,
    tee_tcb_svn: Sequence[int] | None = None,
) -> PreparedLevel | None:
    """The first canonical level the platform meets, or None."""
    for candidate in levels:
        if candidate.pcesvn > pcesvn or not _at_most(candidate.sgx, components):
            continue
        if tee_tcb_svn is not None:
            if candidate.tdx is None or not _at_most(candidate.tdx, tee_tcb_svn):
                continue
        return candidate
    return None


def enclave_levels(levels: Sequence[EnclaveTcbLevel]) -> tuple[tuple[int, StatusDetail], ...]:
    """QE (or TDX module) levels as (ISVSVN, status), in JSON order."""
    return tuple((level.isvsvn, _detail(level)) for level in levels)


def qe_level(levels: Sequence[tuple[int, StatusDetail]], isvsvn: int) -> StatusDetail:
    """The QE's status: the first level (JSON order) with ISVSVN <= the report's, else Revoked."""
    for level_isvsvn, detail in levels:
        if level_isvsvn <= isvsvn:
            return detail
    return StatusDetail(TcbStatus.REVOKED)


def _detail(level: TcbLevel | EnclaveTcbLevel) -> StatusDetail:
    return StatusDetail(
        TcbStatus(level.tcb_status.value),
        tuple(level.advisory_ids),
        level.tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def converge(platform: TcbStatus, component: TcbStatus) -> TcbStatus:
    """Intel QVL ``convergeTcbStatus`` of a platform status with a QE (or module) status."""
    if component is TcbStatus.OUT_OF_DATE:
        if platform in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE
        if platform in (
            TcbStatus.CONFIGURATION_NEEDED,
            TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        ):
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    if component is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    return platform


def merge_advisories(*groups: Sequence[str]) -> tuple[str, ...]:
    """The union of advisory IDs, in first-seen order."""
    out: list[str] = []
    for group in groups:
        for advisory in group:
            if advisory not in out:
                out.append(advisory)
    return tuple(out)
