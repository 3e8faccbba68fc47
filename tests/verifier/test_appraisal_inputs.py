"""Bad input never crashes the appraisal: truncation at every boundary, trailing bytes, junk,
unreadable collateral items; readers refuse unreadable files with CollateralInputError."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_verifier.appraisal import appraise
from sgx_verifier.collateral import (
    Collateral,
    read_certificates,
    read_crl,
    read_signed_item,
)
from sgx_verifier.errors import CollateralInputError
from sgx_verifier.verdict import Check, FailureCode

AT = 1752919277


@pytest.fixture(scope="module")
def phala(real_sets):  # type: ignore[no-untyped-def]
    return real_sets.quote("phala-sgx-v3-2025-06"), real_sets.collateral("phala-sgx-v3-2025-06")


def test_every_truncation_is_a_malformed_quote(phala) -> None:  # type: ignore[no-untyped-def]
    quote, collateral = phala
    # Every length up to past the QE report, then a stride through the certificates.
    lengths = [*range(0, 1100), *range(1100, len(quote), 37)]
    for n in lengths:
        verdict = appraise(quote[:n], collateral, at=AT)
        assert not verdict.verified
        assert verdict.codes() == (FailureCode.QUOTE_MALFORMED,), n
        assert verdict.error is not None and verdict.error.check is Check.QUOTE_FORMAT


def test_trailing_bytes(phala) -> None:  # type: ignore[no-untyped-def]
    quote, collateral = phala
    assert appraise(quote + bytes(64), collateral, at=AT).verified  # zero padding: a buffer
    verdict = appraise(quote + b"\x00\x01", collateral, at=AT)
    assert verdict.codes() == (FailureCode.QUOTE_MALFORMED,)


@pytest.mark.parametrize(
    ("offset", "value", "code"),
    [
        (0, 2, FailureCode.QUOTE_VERSION_UNSUPPORTED),
        (0, 9, FailureCode.QUOTE_VERSION_UNSUPPORTED),
        (2, 3, FailureCode.QUOTE_KEY_TYPE_UNSUPPORTED),
        (4, 0x80, FailureCode.QUOTE_TEE_UNSUPPORTED),
    ],
)
def test_header_constants(phala, offset: int, value: int, code: FailureCode) -> None:  # type: ignore[no-untyped-def]
    quote, collateral = phala
    bad = quote[:offset] + bytes([value]) + quote[offset + 1 :]
    verdict = appraise(bad, collateral, at=AT)
    assert verdict.codes() == (code,)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=700))
def test_junk_never_crashes(junk: bytes) -> None:
    verdict = appraise(junk, Collateral(), at=AT)
    assert not verdict.verified and verdict.failures


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=900))
def test_junk_after_a_valid_header_never_crashes(junk: bytes) -> None:
    header = bytes.fromhex("0300020000000000")
    verdict = appraise(header + junk, Collateral(), at=AT)
    assert not verdict.verified and verdict.failures


def test_unreadable_collateral_items_are_named(phala) -> None:  # type: ignore[no-untyped-def]
    quote, collateral = phala
    tcb = dataclasses.replace(collateral.tcb_info, text="not a TCB Info")
    verdict = appraise(quote, dataclasses.replace(collateral, tcb_info=tcb), at=AT)
    assert [(f.check, f.code) for f in verdict.failures] == [
        (Check.TCB_INFO_SIGNATURE, FailureCode.COLLATERAL_SIGNATURE_INVALID),
        (Check.TCB_INFO_FORMAT, FailureCode.COLLATERAL_MALFORMED),
    ]
    chain = dataclasses.replace(collateral.qe_identity, issuer_chain=b"-----BEGIN CERTIFICATE-----")
    verdict = appraise(quote, dataclasses.replace(collateral, qe_identity=chain), at=AT)
    assert [(f.check, f.code) for f in verdict.failures] == [
        (Check.QE_IDENTITY_CHAIN, FailureCode.CERT_MALFORMED)
    ]
    short_sig = dataclasses.replace(collateral.tcb_info, signature=b"\x01" * 10)
    verdict = appraise(quote, dataclasses.replace(collateral, tcb_info=short_sig), at=AT)
    assert verdict.codes() == (FailureCode.COLLATERAL_SIGNATURE_INVALID,)
    verdict = appraise(
        quote, dataclasses.replace(collateral, pck_crl=b"\x30\x03\x02\x01\x00"), at=AT
    )
    assert verdict.codes() == (FailureCode.CRL_MALFORMED,)
    swapped = dataclasses.replace(
        collateral, pck_crl=collateral.root_ca_crl, root_ca_crl=collateral.pck_crl
    )
    verdict = appraise(quote, swapped, at=AT)
    assert verdict.codes() == (FailureCode.CRL_ISSUER_MISMATCH, FailureCode.CRL_ISSUER_MISMATCH)
    empty = appraise(quote, Collateral(), at=AT)
    assert set(empty.codes()) == {
        FailureCode.CRL_MISSING,
        FailureCode.COLLATERAL_MISSING,
    }


@pytest.mark.parametrize(
    "reader",
    [
        lambda d: read_signed_item(d, "tcbInfo"),
        lambda d: read_signed_item(d, "enclaveIdentity"),
        lambda d: read_crl(d, "CRL"),
        lambda d: read_certificates(d, "chain"),
        Collateral.from_json,
    ],
)
@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b"\x00\xff junk", b'{"tcbInfo": 1}'])
def test_readers_refuse_unreadable_files(reader, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CollateralInputError):
        reader(data)


def test_readers_accept_every_real_form(real_vectors) -> None:  # type: ignore[no-untyped-def]
    pcs = real_vectors / "mobilecoin-attestation"
    fortanix = real_vectors / "fortanix-rust-sgx" / "pcs-2020-05"
    assert read_signed_item((pcs / "qe_identity.json").read_bytes(), "enclaveIdentity").text
    item = read_signed_item((fortanix / "00906ea10000.tcb").read_bytes(), "tcbInfo")
    assert item.issuer_chain.count(b"BEGIN CERTIFICATE") == 2  # Fortanix ca_chain
    der, chain = read_crl((fortanix / "processor.crl").read_bytes(), "PCK CRL")
    assert der[:1] == b"\x30" and chain is not None
    pem_der, _ = read_crl((fortanix / "IntelSGXRootCA_2026.crl.pem").read_bytes(), "root CRL")
    raw_der, _ = read_crl((pcs / "root_crl.der").read_bytes(), "root CRL")
    hex_der, _ = read_crl(raw_der.hex().encode(), "root CRL")
    assert hex_der == raw_der and pem_der[:1] == b"\x30"
    assert read_certificates((pcs / "tcb_signer.pem").read_bytes(), "TCB signer")
