"""The real signed JSON documents among the vectors, by format, with the certificate that signed
each (for signature checks over the exact signed text)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

# Intel PCS response bodies: file -> (field, signer certificate file, PEM or DER).
PCS_BODIES: dict[str, tuple[str, str]] = {
    "automata-dcap-attestation/sgx-v3-2025-08/tcbinfo_00606a000000.json": (
        "tcbInfo",
        "automata-dcap-attestation/common/tcb_signing_2025.der",
    ),
    "automata-dcap-attestation/sgx-v3-2025-08/qe_identity.json": (
        "enclaveIdentity",
        "automata-dcap-attestation/common/tcb_signing_2025.der",
    ),
    "automata-dcap-attestation/tdx-v4-2025-06/tcbinfo_00806f050000.json": (
        "tcbInfo",
        "automata-dcap-attestation/common/tcb_signing_2025.der",
    ),
    "automata-dcap-attestation/tdx-v4-2025-06/qe_identity_td.json": (
        "enclaveIdentity",
        "automata-dcap-attestation/common/tcb_signing_2025.der",
    ),
    "mobilecoin-attestation/fmspc_00906ED50000_2023_07_12.json": (
        "tcbInfo",
        "mobilecoin-attestation/tcb_signer.pem",
    ),
    "mobilecoin-attestation/qe_identity.json": (
        "enclaveIdentity",
        "mobilecoin-attestation/tcb_signer.pem",
    ),
    "intel-dcap-sampledata-synthetic/sgx/tcbInfo.json": (
        "tcbInfo",
        "intel-dcap-sampledata-synthetic/sgx/tcbSignChain.pem",
    ),
    "intel-dcap-sampledata-synthetic/sgx/qeIdentity.json": (
        "enclaveIdentity",
        "intel-dcap-sampledata-synthetic/sgx/tcbSignChain.pem",
    ),
    "intel-dcap-sampledata-synthetic/sgx/qveIdentity.json": (
        "enclaveIdentity",
        "intel-dcap-sampledata-synthetic/sgx/tcbSignChain.pem",
    ),
    "intel-dcap-sampledata-synthetic/tdx/tcbInfo.json": (
        "tcbInfo",
        "intel-dcap-sampledata-synthetic/tdx/tcbSignChain.pem",
    ),
    "intel-dcap-sampledata-synthetic/tdx/qeIdentity.json": (
        "enclaveIdentity",
        "intel-dcap-sampledata-synthetic/tdx/tcbSignChain.pem",
    ),
}

FORTANIX_TCB = [
    "fortanix-rust-sgx/pcs-2020-05/00906ea10000.tcb",
    "fortanix-rust-sgx/collateral-2025/00606a000000-17.tcb",
    "fortanix-rust-sgx/collateral-2025/00606a000000-18.tcb",
    "fortanix-rust-sgx/collateral-2025/00606a000000-19.tcb",
    "fortanix-rust-sgx/collateral-2025/00906ed50000-19.tcb",
    "fortanix-rust-sgx/collateral-2025/90806f000000-19.tcb",
]
FORTANIX_ID = [
    "fortanix-rust-sgx/pcs-2020-05/qe3_identity.id",
    "fortanix-rust-sgx/collateral-2025/qe3_identity-17.id",
    "fortanix-rust-sgx/collateral-2025/qe3_identity-18.id",
    "fortanix-rust-sgx/collateral-2025/qe3_identity-19.id",
]

# dcap-qvl QuoteCollateralV3 files and the layout each one uses: (indent, final newline).
COLLATERAL: dict[str, tuple[int | None, bool]] = {
    "phala-dcap-qvl/sgx_quote_collateral.json": (2, False),
    "phala-dcap-qvl/sgx_quote_collateral_2023-11.json": (2, True),
    "phala-dcap-qvl/tdx_quote_collateral.json": (2, False),
    "phala-dcap-qvl/tdx_quote_outdated_collateral.json": (None, True),
}


@dataclass(frozen=True)
class SignedText:
    """One signed document: where it came from, its exact signed text and its signer's key."""

    source: str
    kind: str  # "tcbInfo" or "enclaveIdentity"
    text: str
    signer: ec.EllipticCurvePublicKey


def _key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _first_cert(path: Path) -> x509.Certificate:
    """The signing (non-self-signed) certificate of a PEM chain (either order) or DER file."""
    data = path.read_bytes()
    if not data.startswith(b"-----BEGIN"):
        return x509.load_der_x509_certificate(data)
    (signer,) = [c for c in x509.load_pem_x509_certificates(data) if c.issuer != c.subject]
    return signer


def collect_signed_texts(real_vectors: Path) -> list[SignedText]:
    """Every signed TCB Info / Enclave Identity text in the vectors, read independently of the
    code under test (plain ``json``)."""
    out: list[SignedText] = []
    for name, (field, signer) in PCS_BODIES.items():
        raw = json.loads((real_vectors / name).read_text())
        # The exact value text: json.dumps of the decoded value is compact and key-ordered as read;
        # the tests check separately that the body really contains it verbatim.
        text = json.dumps(raw[field], separators=(",", ":"))
        out.append(SignedText(name, field, text, _key(_first_cert(real_vectors / signer))))
    for name in FORTANIX_TCB + FORTANIX_ID:
        raw = json.loads((real_vectors / name).read_text())
        field = "tcbInfo" if name.endswith(".tcb") else "enclaveIdentity"
        text = raw["raw_tcb_info" if field == "tcbInfo" else "raw_enclave_identity"]
        signer = x509.load_pem_x509_certificate(raw["ca_chain"][0].encode())
        out.append(SignedText(name, field, text, _key(signer)))
    for name in COLLATERAL:
        raw = json.loads((real_vectors / name).read_text())
        tcb_signer = x509.load_pem_x509_certificates(raw["tcb_info_issuer_chain"].encode())[0]
        qe_signer = x509.load_pem_x509_certificates(raw["qe_identity_issuer_chain"].encode())[0]
        out.append(SignedText(f"{name}#tcb_info", "tcbInfo", raw["tcb_info"], _key(tcb_signer)))
        out.append(
            SignedText(
                f"{name}#qe_identity", "enclaveIdentity", raw["qe_identity"], _key(qe_signer)
            )
        )
    return out


@pytest.fixture(scope="session")
def signed_texts(real_vectors: Path) -> list[SignedText]:
    return collect_signed_texts(real_vectors)


@pytest.fixture(params=sorted(PCS_BODIES))
def pcs_body(request: pytest.FixtureRequest, real_vectors: Path) -> tuple[str, str, str]:
    """(file name, field, exact body text) of each Intel PCS response body."""
    name: str = request.param
    return name, PCS_BODIES[name][0], (real_vectors / name).read_text()


@pytest.fixture(params=FORTANIX_TCB + FORTANIX_ID)
def fortanix_file(request: pytest.FixtureRequest, real_vectors: Path) -> tuple[str, str]:
    """(file name, exact text) of each Fortanix .tcb / .id wrapper."""
    name: str = request.param
    return name, (real_vectors / name).read_text()


@pytest.fixture(params=sorted(COLLATERAL))
def collateral_file(
    request: pytest.FixtureRequest, real_vectors: Path
) -> tuple[str, str, int | None, bool]:
    """(file name, exact text, indent, final newline) of each QuoteCollateralV3 file."""
    name: str = request.param
    indent, newline = COLLATERAL[name]
    return name, (real_vectors / name).read_text(), indent, newline


@pytest.fixture(scope="session")
def all_signed_json_files() -> set[str]:
    """Every file this conftest classifies (to check nothing in the vectors is missed)."""
    return set(PCS_BODIES) | set(FORTANIX_TCB) | set(FORTANIX_ID) | set(COLLATERAL)


@pytest.fixture(scope="session")
def pcs_body_texts(real_vectors: Path) -> list[tuple[str, str, str]]:
    """(file name, field, exact body text) of every Intel PCS response body."""
    return [(n, f, (real_vectors / n).read_text()) for n, (f, _) in sorted(PCS_BODIES.items())]
