"""CRLs: Intel's real root and PCK CRLs, and one vector per failure."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import intel_sgx_root_ca
from sgx_verifier.certificates import parse_certificate, parse_pem_chain
from sgx_verifier.crl import check_crl, check_not_revoked, parse_crl
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.verdict import Check, FailureCode

NOW = 1752919277  # inside the phala 2025-06 window


@pytest.fixture(scope="module")
def phala(real_vectors: Path) -> dict[str, str]:
    doc: dict[str, str] = json.loads(
        (real_vectors / "phala-dcap-qvl" / "sgx_quote_collateral.json").read_text()
    )
    return doc


def expect(code: FailureCode, fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(CheckFailedError) as info:
        fn(*args)
    assert info.value.code is code, info.value
    assert info.value.hint
    return info.value


def test_real_root_crl(phala: dict[str, str]) -> None:
    crl = parse_crl(bytes.fromhex(phala["root_ca_crl"]))
    root = intel_sgx_root_ca()
    check_crl(crl, root.subject_der, root.public_point, "root", NOW, Check.ROOT_CRL, "root CRL")
    assert crl.next_update is not None
    expect(
        FailureCode.CRL_EXPIRED,
        check_crl,
        crl,
        root.subject_der,
        root.public_point,
        "root",
        crl.next_update,
        Check.ROOT_CRL,
        "root CRL",
    )
    expect(
        FailureCode.CRL_NOT_YET_VALID,
        check_crl,
        crl,
        root.subject_der,
        root.public_point,
        "root",
        crl.this_update - 1,
        Check.ROOT_CRL,
        "root CRL",
    )
    # thisUpdate is inside the window, nextUpdate is not (the next CRL is due then).
    for at in (crl.this_update, crl.next_update - 1):
        check_crl(crl, root.subject_der, root.public_point, "root", at, Check.ROOT_CRL, "r")


def test_real_pck_crl_and_wrong_issuer(phala: dict[str, str]) -> None:
    crl = parse_crl(bytes.fromhex(phala["pck_crl"]))
    chain = parse_pem_chain(phala["pck_crl_issuer_chain"].encode())
    processor_ca = chain[0]
    assert processor_ca.public_point is not None
    check_crl(
        crl,
        processor_ca.subject,
        processor_ca.public_point,
        processor_ca.subject_text,
        NOW,
        Check.PCK_CRL,
        "PCK CRL",
    )
    root = intel_sgx_root_ca()
    expect(
        FailureCode.CRL_ISSUER_MISMATCH,
        check_crl,
        crl,
        root.subject_der,
        root.public_point,
        "root",
        NOW,
        Check.PCK_CRL,
        "PCK CRL",
    )
    # Right name, wrong key.
    expect(
        FailureCode.CRL_SIGNATURE_INVALID,
        check_crl,
        crl,
        processor_ca.subject,
        root.public_point,
        processor_ca.subject_text,
        NOW,
        Check.PCK_CRL,
        "PCK CRL",
    )


def test_tampered_crl_signature(phala: dict[str, str]) -> None:
    der = bytearray(bytes.fromhex(phala["root_ca_crl"]))
    der[-5] ^= 0x01  # inside the signature's s value
    crl = parse_crl(bytes(der))
    root = intel_sgx_root_ca()
    expect(
        FailureCode.CRL_SIGNATURE_INVALID,
        check_crl,
        crl,
        root.subject_der,
        root.public_point,
        "root",
        NOW,
        Check.ROOT_CRL,
        "root CRL",
    )


def test_mobilecoin_processor_crl_is_stale_when_its_tcb_info_is_fresh(real_vectors: Path) -> None:
    folder = real_vectors / "mobilecoin-attestation"
    crl = parse_crl((folder / "processor_crl.der").read_bytes())
    ca = parse_pem_chain((folder / "processor_ca.pem").read_bytes())[0]
    assert ca.public_point is not None
    failure = expect(
        FailureCode.CRL_EXPIRED,
        check_crl,
        crl,
        ca.subject,
        ca.public_point,
        ca.subject_text,
        1689195000,
        Check.PCK_CRL,
        "PCK CRL",
    )
    assert "stale" in failure.message


def test_revocation_and_missing_next_update(mini_pki) -> None:  # type: ignore[no-untyped-def]
    root = mini_pki.issue("Root", seed=1)
    leaf = mini_pki.leaf("Leaf", seed=2, issuer=root, serial=0xABCDEF)
    other = mini_pki.leaf("Other", seed=3, issuer=root, serial=0x123)
    crl = parse_crl(mini_pki.crl(root, revoked=(0xABCDEF,)))
    assert crl.revoked == frozenset({0xABCDEF})
    expect(
        FailureCode.CERT_REVOKED,
        check_not_revoked,
        parse_certificate(leaf.der),
        crl,
        Check.PCK_REVOCATION,
        "PCK certificate",
    )
    check_not_revoked(parse_certificate(other.der), crl, Check.PCK_REVOCATION, "PCK")
    at = int(dt.datetime(2024, 1, 2, tzinfo=dt.UTC).timestamp())
    point = parse_certificate(root.der).public_point
    assert point is not None
    forever = parse_crl(mini_pki.crl(root, next_update=None))
    expect(
        FailureCode.CRL_EXPIRED,
        check_crl,
        forever,
        parse_certificate(root.der).subject,
        point,
        "Root",
        at,
        Check.ROOT_CRL,
        "CRL",
    )


def test_malformed_crl() -> None:
    with pytest.raises(MalformedStructureError):
        parse_crl(b"\x30\x00")
    with pytest.raises(MalformedStructureError):
        parse_crl(b"")
