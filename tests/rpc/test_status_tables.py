"""Every component's status table chooses only STYLE.md's codes (``sgx_rpc.errors.TABLE_CODES``),
and what a table does not know leaves as INTERNAL with the generic message."""

from __future__ import annotations

import errno

import grpc
import pytest

from sgx_launchctl.errors import (
    LaunchctlError,
    NotFoundError,
    PolicyLockedError,
    RollbackError,
)
from sgx_launchctl.rpc import status as launchctl_status
from sgx_platform.driver_errors import DriverError
from sgx_platform.rpc import status as platform_status
from sgx_quoting.enclave_errors import EnclaveLaunchError, PlatformCallError
from sgx_quoting.errors import PcsInputError
from sgx_quoting.rpc import quoting_status
from sgx_quoting.rpc import status as pcs_status
from sgx_rpc.errors import TABLE_CODES, StatusTable, code_for

S = grpc.StatusCode


@pytest.mark.parametrize(
    "codes",
    [
        pytest.param(platform_status.ERRNO_STATUS.values(), id="platform errno"),
        pytest.param(platform_status.REASON_STATUS.values(), id="platform reason"),
        pytest.param([c for _, c in launchctl_status.STATUS], id="launchctl"),
        pytest.param([c for _, c in pcs_status.STATUS_TABLE], id="pcs"),
        pytest.param([c for _, c in quoting_status.STATUS_TABLE], id="quoting"),
    ],
)
def test_tables_choose_only_the_house_codes(codes: list[grpc.StatusCode]) -> None:
    assert set(codes) <= TABLE_CODES, set(codes) - TABLE_CODES


def test_the_most_specific_class_decides() -> None:
    table: StatusTable = ((RollbackError, S.ABORTED), (LaunchctlError, S.FAILED_PRECONDITION))
    assert code_for(table, RollbackError("rolled back")) == S.ABORTED
    assert code_for(table, NotFoundError("gone")) == S.FAILED_PRECONDITION
    assert code_for(table, ValueError("not ours")) is None


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (DriverError(errno.EFAULT, "no page", reason="PAGE_NOT_PRESENT"), S.INVALID_ARGUMENT,
         "PAGE_NOT_PRESENT"),
        (DriverError(errno.EFAULT, "past the end", reason="OUT_OF_RANGE"), S.INVALID_ARGUMENT,
         "OUT_OF_RANGE"),
        (DriverError(errno.EIO, "replayed", reason="SGX_MAC_COMPARE_FAIL"),
         S.FAILED_PRECONDITION, "SGX_MAC_COMPARE_FAIL"),
        (DriverError(errno.EBUSY, "busy", reason="ENCLAVE_BUSY"), S.ABORTED, "ENCLAVE_BUSY"),
        (DriverError(errno.ENOMEM, "full", reason="EPC_EXHAUSTED"), S.RESOURCE_EXHAUSTED,
         "EPC_EXHAUSTED"),
        (DriverError(errno.ESTALE, "old", reason="STALE_HANDLE"), S.NOT_FOUND, "STALE_HANDLE"),
    ],
)
def test_platform_errors_map_to_the_house_codes(
    error: DriverError, code: grpc.StatusCode, reason: str
) -> None:
    report = platform_status.status_of(error)
    assert report is not None
    assert (report.code, report.reason) == (code, reason)
    assert report.metadata["errno"] == errno.errorcode[error.errno]


def test_an_unknown_errno_or_a_foreign_error_is_internal() -> None:
    assert platform_status.status_of(DriverError(errno.ENOSPC, "odd")) is None
    for status_of in (platform_status.status_of, launchctl_status.status_of,
                      pcs_status.status_of, quoting_status.status_of):
        assert status_of(RuntimeError("a bug")) is None


def test_other_components_carry_their_reason() -> None:
    locked = launchctl_status.status_of(PolicyLockedError())
    assert locked is not None and (locked.code, locked.reason) == (
        S.FAILED_PRECONDITION, "POLICY_LOCKED"
    )
    assert "hint" in locked.metadata
    bad = pcs_status.status_of(PcsInputError("bad FMSPC"))
    assert bad is not None and bad.code == S.INVALID_ARGUMENT
    refused = PlatformCallError("platform", "LoadEnclaveFromFile", "PERMISSION_DENIED",
                                "denied", "LAUNCH_SIGNER_NOT_LISTED", {"rule": "signer"})
    launch = quoting_status.status_of(EnclaveLaunchError("the QE cannot launch", refused))
    assert launch is not None and launch.code == S.FAILED_PRECONDITION
    assert launch.metadata["remote_reason"] == "LAUNCH_SIGNER_NOT_LISTED"
    assert launch.metadata["rule"] == "signer"
