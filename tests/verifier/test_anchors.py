"""Trust anchors: the shipped Intel root, pinning by key, refusal of unusable anchors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_verifier.anchors import (
    INTEL_SGX_ROOT_CA,
    INTEL_SGX_ROOT_KEY_SHA256,
    AnchorSet,
    TrustAnchor,
    intel_sgx_root_ca,
    load_anchor,
)
from sgx_verifier.errors import AnchorError


def test_shipped_root_is_byte_identical_to_the_real_vector(real_vectors: Path) -> None:
    anchor = intel_sgx_root_ca()
    real = (real_vectors / "intel-root" / "Intel_SGX_Root_CA_2049.der").read_bytes()
    assert anchor.certificate_der == real
    assert hashlib.sha256(real).hexdigest() == (
        "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    )
    assert anchor.name == INTEL_SGX_ROOT_CA
    assert anchor.production
    assert anchor.key_sha256 == INTEL_SGX_ROOT_KEY_SHA256


def test_default_set_is_only_intel() -> None:
    anchors = AnchorSet.default()
    assert [a.name for a in anchors] == [INTEL_SGX_ROOT_CA]


def test_legacy_2033_issuance_is_the_same_anchor(real_vectors: Path) -> None:
    legacy = (real_vectors / "intel-root" / "Intel_SGX_Root_CA_2033_legacy.der").read_bytes()
    anchor = load_anchor(legacy, "whatever-the-user-called-it")
    assert anchor.name == INTEL_SGX_ROOT_CA
    assert anchor.production
    assert anchor.spki_der == intel_sgx_root_ca().spki_der
    # The union of both issuances' validity.
    assert anchor.not_after == intel_sgx_root_ca().not_after


def test_look_alike_root_is_not_production(real_vectors: Path) -> None:
    pem = real_vectors / "intel-dcap-sampledata-synthetic" / "sgx" / "trustedRootCaCert.pem"
    anchor = load_anchor(pem.read_bytes(), "intel-sample")
    assert anchor.name == "intel-sample"
    assert not anchor.production
    assert anchor.subject_der == intel_sgx_root_ca().subject_der  # same name ...
    assert anchor.spki_der != intel_sgx_root_ca().spki_der  # ... other key
    assert anchor.ref().production is False


def test_garbage_is_refused() -> None:
    with pytest.raises(AnchorError, match=r"not an X\.509"):
        TrustAnchor.from_certificate(b"\x30\x03\x02\x01\x00", "junk")


def test_non_ca_is_refused(mini_pki) -> None:  # type: ignore[no-untyped-def]
    root = mini_pki.issue("root", seed=1)
    leaf = mini_pki.leaf("leaf", seed=2, issuer=root)
    with pytest.raises(AnchorError, match="not a CA"):
        TrustAnchor.from_certificate(leaf.der, "leaf")
    no_bc = mini_pki.issue("nobc", seed=3, ca=None)
    with pytest.raises(AnchorError, match="no basicConstraints"):
        TrustAnchor.from_certificate(no_bc.der, "nobc")


def test_rsa_anchor_is_refused() -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(k.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    with pytest.raises(AnchorError, match="P-256"):
        TrustAnchor.from_certificate(cert.public_bytes(Encoding.DER), "rsa")


def test_pem_and_der_give_the_same_anchor(mini_pki) -> None:  # type: ignore[no-untyped-def]
    root = mini_pki.issue("root", seed=1)
    assert TrustAnchor.from_certificate(root.pem, "a") == TrustAnchor.from_certificate(
        root.der, "a"
    )


def test_anchor_set_refuses_duplicates_and_emptiness(mini_pki) -> None:  # type: ignore[no-untyped-def]
    root = TrustAnchor.from_certificate(mini_pki.issue("root", seed=1).der, "a")
    other = TrustAnchor.from_certificate(mini_pki.issue("other", seed=2).der, "a")
    same_key = TrustAnchor.from_certificate(mini_pki.issue("root2", seed=1).der, "b")
    with pytest.raises(AnchorError, match="duplicate"):
        AnchorSet.of([root, other])
    with pytest.raises(AnchorError, match="same key"):
        AnchorSet.of([root, same_key])
    with pytest.raises(AnchorError, match="at least one"):
        AnchorSet.of([])
    both = AnchorSet.of([intel_sgx_root_ca(), root])
    assert both.by_key(root.spki_der) is root
    assert both.by_key(b"nope") is None
