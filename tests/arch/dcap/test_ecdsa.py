"""Raw r||s and x||y encodings: real quote signatures verify through them; bad input is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap.ecdsa import (
    P256_ORDER,
    der_to_raw_rs,
    public_key_from_raw,
    public_key_to_raw,
    raw_rs_to_der,
)
from sgx_platform.arch.dcap.quote import PckCertChainCertificationData, parse_quote
from sgx_platform.arch.errors import MalformedStructureError

_CHAIN_QUOTES = [
    "phala-dcap-qvl/sgx_quote",
    "phala-dcap-qvl/tdx_quote",
    "phala-dcap-qvl/tdx_quote_outdated",
    "automata-dcap-attestation/sgx-v3-2025-08/quote.bin",
    "automata-dcap-attestation/tdx-v4-2025-06/quote.bin",
    "mobilecoin-attestation/hw_quote.dat",
    "fortanix-rust-sgx/pcs-2020-05/quote.bin",
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin",
]
_ECDSA = ec.ECDSA(hashes.SHA256())


@pytest.mark.parametrize("name", _CHAIN_QUOTES)
def test_real_quote_signatures_verify_through_the_conversions(
    real_vectors: Path, name: str
) -> None:
    quote = parse_quote((real_vectors / name).read_bytes(), allow_trailing_zero_padding=True)
    attestation_key = public_key_from_raw(quote.signature_data.attestation_public_key)
    assert public_key_to_raw(attestation_key) == quote.signature_data.attestation_public_key
    attestation_key.verify(
        raw_rs_to_der(quote.signature_data.signature), quote.signed_region, _ECDSA
    )
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    pck_key = cert.ordered_chain()[0].public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    pck_key.verify(raw_rs_to_der(quote.qe_report_signature), quote.qe_report.to_bytes(), _ECDSA)
    assert der_to_raw_rs(raw_rs_to_der(quote.qe_report_signature)) == quote.qe_report_signature


def test_corrupted_quote_fails_only_the_isv_signature(real_vectors: Path) -> None:
    name = "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain_corrupted.bin"
    quote = parse_quote((real_vectors / name).read_bytes())
    key = public_key_from_raw(quote.signature_data.attestation_public_key)
    with pytest.raises(InvalidSignature):
        key.verify(raw_rs_to_der(quote.signature_data.signature), quote.signed_region, _ECDSA)
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    pck_key = cert.ordered_chain()[0].public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    pck_key.verify(raw_rs_to_der(quote.qe_report_signature), quote.qe_report.to_bytes(), _ECDSA)


@settings(max_examples=50, deadline=None)
@given(r=st.integers(1, P256_ORDER - 1), s=st.integers(1, P256_ORDER - 1))
def test_conversions_are_inverse(r: int, s: int) -> None:
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    der = raw_rs_to_der(raw)
    assert der == encode_dss_signature(r, s)
    assert der_to_raw_rs(der) == raw


def test_out_of_range_scalars_are_rejected() -> None:
    n = P256_ORDER.to_bytes(32, "big")
    one = (1).to_bytes(32, "big")
    for raw in (bytes(32) + one, one + bytes(32), n + one, one + n, b"\xff" * 64):
        with pytest.raises(MalformedStructureError, match="out of range"):
            raw_rs_to_der(raw)
    for r, s in ((0, 1), (1, P256_ORDER), (P256_ORDER + 5, 1)):
        with pytest.raises(MalformedStructureError, match="out of range"):
            der_to_raw_rs(encode_dss_signature(r, s))


def test_bad_lengths_and_encodings_are_rejected() -> None:
    for raw in (b"", bytes(63), bytes(65)):
        with pytest.raises(MalformedStructureError):
            raw_rs_to_der(raw)
    der = encode_dss_signature(5, 7)
    assert der == bytes.fromhex("3006020105020107")
    for bad in (
        b"",
        der[:-1],
        der + b"\x00",
        bytes.fromhex("300702020005020107"),  # r with a superfluous leading zero
        bytes.fromhex("30810602010502010" + "7"),  # long-form length
        b"\x31" + der[1:],
    ):
        with pytest.raises(MalformedStructureError):
            der_to_raw_rs(bad)


def test_public_key_checks() -> None:
    key = ec.derive_private_key(99, ec.SECP256R1()).public_key()
    raw = public_key_to_raw(key)
    assert public_key_from_raw(raw).public_numbers() == key.public_numbers()
    off_curve = raw[:63] + bytes([raw[63] ^ 1])
    with pytest.raises(MalformedStructureError, match="curve"):
        public_key_from_raw(off_curve)
    with pytest.raises(MalformedStructureError):
        public_key_from_raw(raw[:63])
    with pytest.raises(MalformedStructureError, match="P-256"):
        public_key_to_raw(ec.derive_private_key(99, ec.SECP384R1()).public_key())
