"""The binding rule REPORTDATA[0:32] = SHA-256(challenge || user data) (``arch.binding``)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.binding import (
    BINDING_SIZE,
    REPORT_DATA_SIZE,
    binding_digest,
    report_data_for,
)
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.report import ReportBody


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_application_data_of_any_other_size_is_refused(size: int) -> None:
    with pytest.raises(MalformedStructureError, match=r"REPORTDATA\[32:64\]"):
        report_data_for(b"challenge", b"", bytes(size))


def test_application_data_must_be_bytes() -> None:
    with pytest.raises(MalformedStructureError):
        report_data_for(b"challenge", b"", bytearray(32))  # type: ignore[arg-type]


def test_the_rule_is_sha256_of_the_challenge_then_the_user_data() -> None:
    assert binding_digest(b"abc", b"def") == hashlib.sha256(b"abcdef").digest()
    assert binding_digest(b"abc") == hashlib.sha256(b"abc").digest()
    assert report_data_for(b"abc", b"def") == hashlib.sha256(b"abcdef").digest() + bytes(32)
    tail = bytes(range(32))
    assert report_data_for(b"abc", b"def", tail)[BINDING_SIZE:] == tail


@settings(max_examples=50, deadline=None)
@given(
    challenge=st.binary(max_size=128),
    user=st.binary(max_size=64),
    tail=st.binary(min_size=32, max_size=32),
)
def test_report_data_fits_a_report_body_and_binds_its_inputs(
    challenge: bytes, user: bytes, tail: bytes
) -> None:
    data = report_data_for(challenge, user, tail)
    assert len(data) == REPORT_DATA_SIZE
    assert data[:BINDING_SIZE] == binding_digest(challenge, user)
    assert data[BINDING_SIZE:] == tail
    body = ReportBody(report_data=data)
    assert ReportBody.from_bytes(body.to_bytes()).report_data == data
