"""Certificate chains to a pinned anchor: real Intel chains and one vector per failure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sgx_platform.arch.dcap.quote import parse_quote
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import AnchorSet, TrustAnchor, intel_sgx_root_ca, load_anchor
from sgx_verifier.certificates import (
    parse_certificate,
    parse_certificates,
    parse_der_concatenation,
    parse_pem_chain,
    validate_chain,
)
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.verdict import Check, FailureCode

INTEL = AnchorSet.default()
CHECK = Check.PCK_CHAIN


def quote_chain(real_vectors: Path, rel: str) -> bytes:
    quote = parse_quote((real_vectors / rel).read_bytes(), allow_trailing_zero_padding=True)
    data = quote.certification_data.payload()
    return data


def expect(code: FailureCode, fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(CheckFailedError) as info:
        fn(*args)
    assert info.value.code is code, info.value
    assert info.value.check is CHECK
    assert info.value.hint
    return info.value


@pytest.mark.parametrize(
    ("rel", "at"),
    [
        ("phala-dcap-qvl/sgx_quote", 1752919277),
        ("automata-dcap-attestation/sgx-v3-2025-08/quote.bin", 1755236700),
        ("mobilecoin-attestation/hw_quote.dat", 1689195000),
        ("fortanix-rust-sgx/pcs-2020-05/quote.bin", 1589860000),
        # Leaf, root, intermediate order, with the legacy 2033 root certificate.
        ("fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin", 1589860000),
        ("phala-dcap-qvl/tdx_quote", 1752919234),
    ],
)
def test_real_pck_chains_reach_the_intel_anchor(real_vectors: Path, rel: str, at: int) -> None:
    certs = parse_certificates(quote_chain(real_vectors, rel))
    leaf = next(c for c in certs if not c.is_ca)
    chain = validate_chain(leaf, certs, INTEL, at, CHECK, "PCK chain")
    assert chain.anchor is intel_sgx_root_ca()
    assert chain.leaf.subject_text == "Intel SGX PCK Certificate"
    assert len(chain.path) == 2  # leaf and PCK CA; never a copy of the root


def test_synthetic_sample_chain_is_untrusted_under_intel_and_trusted_under_its_root(
    real_vectors: Path,
) -> None:
    folder = real_vectors / "intel-dcap-sampledata-synthetic" / "sgx"
    leaf = parse_pem_chain((folder / "pckCert.pem").read_bytes())[0]
    pool = parse_pem_chain((folder / "pckSignChain.pem").read_bytes())
    failure = expect(
        FailureCode.CHAIN_UNTRUSTED, validate_chain, leaf, pool, INTEL, 1600000000, CHECK, "PCK"
    )
    assert "not its key" in failure.message
    own = AnchorSet.of([load_anchor((folder / "trustedRootCaCert.pem").read_bytes(), "sample")])
    chain = validate_chain(leaf, pool, own, 1600000000, CHECK, "PCK")
    assert chain.anchor.name == "sample"


def test_validity_windows_are_checked_at_the_given_time(real_vectors: Path) -> None:
    certs = parse_certificates(quote_chain(real_vectors, "phala-dcap-qvl/sgx_quote"))
    leaf = certs[0]
    validate_chain(leaf, certs, INTEL, leaf.not_before, CHECK, "PCK")
    validate_chain(leaf, certs, INTEL, leaf.not_after, CHECK, "PCK")
    expect(
        FailureCode.CERT_NOT_YET_VALID,
        validate_chain,
        leaf,
        certs,
        INTEL,
        leaf.not_before - 1,
        CHECK,
        "PCK",
    )
    expect(
        FailureCode.CERT_EXPIRED,
        validate_chain,
        leaf,
        certs,
        INTEL,
        leaf.not_after + 1,
        CHECK,
        "PCK",
    )


def test_missing_intermediate(real_vectors: Path) -> None:
    certs = parse_certificates(quote_chain(real_vectors, "phala-dcap-qvl/sgx_quote"))
    expect(
        FailureCode.CHAIN_INCOMPLETE,
        validate_chain,
        certs[0],
        [certs[0], certs[2]],
        INTEL,
        1752919277,
        CHECK,
        "PCK",
    )


@pytest.fixture
def pki(mini_pki):  # type: ignore[no-untyped-def]
    root = mini_pki.issue("Test Root", seed=1, path_length=1)
    ca = mini_pki.issue("Test CA", seed=2, issuer=root, path_length=0)
    leaf = mini_pki.leaf("Test Leaf", seed=3, issuer=ca)
    anchors = AnchorSet.of([TrustAnchor.from_certificate(root.der, "test-root")])
    return mini_pki, root, ca, leaf, anchors


AT = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp())


def test_mini_chain_validates(pki) -> None:  # type: ignore[no-untyped-def]
    _, root, ca, leaf, anchors = pki
    pool = [parse_certificate(c.der) for c in (leaf, root, ca)]
    chain = validate_chain(pool[0], pool, anchors, AT, CHECK, "x")
    assert [c.subject_text for c in chain.path] == ["Test Leaf", "Test CA"]


def test_forged_signature(pki) -> None:  # type: ignore[no-untyped-def]
    mini, _root, ca, _leaf, anchors = pki
    forged = mini.leaf("Test Leaf", seed=3, issuer=ca, signing_key=mini.issue("x", seed=9).key)
    expect(
        FailureCode.CERT_SIGNATURE_INVALID,
        validate_chain,
        parse_certificate(forged.der),
        [parse_certificate(ca.der)],
        anchors,
        AT,
        CHECK,
        "x",
    )


def test_intermediate_not_signed_by_the_anchor_key(pki) -> None:  # type: ignore[no-untyped-def]
    mini, root, _ca, _leaf, anchors = pki
    rogue_ca = mini.issue("Test CA", seed=2, issuer=root, signing_key=mini.issue("y", seed=8).key)
    leaf = mini.leaf("Test Leaf", seed=3, issuer=rogue_ca)
    expect(
        FailureCode.CERT_SIGNATURE_INVALID,
        validate_chain,
        parse_certificate(leaf.der),
        [parse_certificate(rogue_ca.der)],
        anchors,
        AT,
        CHECK,
        "x",
    )


def test_unknown_root(pki) -> None:  # type: ignore[no-untyped-def]
    mini, *_rest, anchors = pki
    other_root = mini.issue("Other Root", seed=20)
    other_leaf = mini.leaf("L", seed=21, issuer=other_root)
    failure = expect(
        FailureCode.CHAIN_UNTRUSTED,
        validate_chain,
        parse_certificate(other_leaf.der),
        [parse_certificate(other_root.der)],
        anchors,
        AT,
        CHECK,
        "x",
    )
    assert "not a configured trust anchor" in failure.message


@pytest.mark.parametrize(
    ("ca_kwargs", "code"),
    [
        ({"ca": False}, FailureCode.CERT_NOT_CA),
        ({"ca": None}, FailureCode.CERT_NOT_CA),
        ({"key_cert_sign": False}, FailureCode.CERT_KEY_USAGE),
        ({"key_usage": False}, FailureCode.CERT_KEY_USAGE),
    ],
)
def test_issuer_constraints(pki, ca_kwargs, code) -> None:  # type: ignore[no-untyped-def]
    mini, root, _ca, _leaf, anchors = pki
    bad_ca = mini.issue("Test CA", seed=2, issuer=root, **ca_kwargs)
    leaf = mini.leaf("Test Leaf", seed=3, issuer=bad_ca)
    expect(
        code,
        validate_chain,
        parse_certificate(leaf.der),
        [parse_certificate(bad_ca.der)],
        anchors,
        AT,
        CHECK,
        "x",
    )


def test_leaf_constraints(pki) -> None:  # type: ignore[no-untyped-def]
    mini, _root, ca, _leaf, anchors = pki
    pool = [parse_certificate(ca.der)]
    ca_leaf = mini.issue("Leaf CA", seed=3, issuer=ca)
    expect(
        FailureCode.CERT_KEY_USAGE,
        validate_chain,
        parse_certificate(ca_leaf.der),
        pool,
        anchors,
        AT,
        CHECK,
        "x",
    )
    no_sign = mini.leaf("Leaf", seed=3, issuer=ca, digital_signature=False)
    expect(
        FailureCode.CERT_KEY_USAGE,
        validate_chain,
        parse_certificate(no_sign.der),
        pool,
        anchors,
        AT,
        CHECK,
        "x",
    )


def test_path_length(pki) -> None:  # type: ignore[no-untyped-def]
    mini, _root, ca, _leaf, anchors = pki
    sub = mini.issue("Sub CA", seed=4, issuer=ca)  # ca has pathLen 0
    leaf = mini.leaf("Leaf", seed=5, issuer=sub)
    expect(
        FailureCode.CERT_KEY_USAGE,
        validate_chain,
        parse_certificate(leaf.der),
        [parse_certificate(sub.der), parse_certificate(ca.der)],
        anchors,
        AT,
        CHECK,
        "x",
    )


def test_anchor_window(pki) -> None:  # type: ignore[no-untyped-def]
    _mini, root, ca, leaf, anchors = pki
    pool = [parse_certificate(ca.der)]
    anchor = anchors.anchors[0]
    expect(
        FailureCode.ANCHOR_EXPIRED,
        validate_chain,
        parse_certificate(leaf.der),
        pool,
        anchors,
        anchor.not_after + 1,
        CHECK,
        "x",
    )
    expect(
        FailureCode.ANCHOR_NOT_YET_VALID,
        validate_chain,
        parse_certificate(leaf.der),
        pool,
        anchors,
        anchor.not_before - 1,
        CHECK,
        "x",
    )
    assert root


def test_pem_chain_parsing(pki) -> None:  # type: ignore[no-untyped-def]
    _mini, root, ca, leaf, _anchors = pki
    bundle = leaf.pem + b"\n" + ca.pem + root.pem + b"\x00"
    assert [c.der for c in parse_pem_chain(bundle)] == [leaf.der, ca.der, root.der]
    with pytest.raises(MalformedStructureError):
        parse_pem_chain(b"no certificates here")
    with pytest.raises(MalformedStructureError):
        parse_pem_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_der_concatenation(pki) -> None:  # type: ignore[no-untyped-def]
    _mini, root, ca, leaf, _anchors = pki
    joined = root.der + ca.der + leaf.der
    assert [c.der for c in parse_der_concatenation(joined)] == [root.der, ca.der, leaf.der]
    assert [c.der for c in parse_certificates(joined)] == [root.der, ca.der, leaf.der]
    for cut in (1, len(root.der) - 1, len(joined) - 3):
        with pytest.raises(MalformedStructureError):
            parse_der_concatenation(joined[:cut])
    with pytest.raises(MalformedStructureError):
        parse_der_concatenation(joined + b"\x00")
    with pytest.raises(MalformedStructureError):
        parse_der_concatenation(b"")
    with pytest.raises(MalformedStructureError):
        parse_certificate(root.der[:-1])
