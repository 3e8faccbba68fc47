"""QuoteCollateralV3 and the Fortanix wrappers: real files round-trip exactly, agree with
dcap-qvl, and malformed files are rejected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest

from sgx_platform.arch.dcap.collateral import (
    FortanixEnclaveIdentity,
    FortanixTcbInfo,
    QuoteCollateralV3,
)
from sgx_platform.arch.dcap.quote import load_pem_certificates
from sgx_platform.arch.dcap.tcb_info import SignedTcbInfo, TcbInfoId
from sgx_platform.arch.errors import MalformedStructureError


def test_collateral_round_trips(collateral_file: tuple[str, str, int | None, bool]) -> None:
    _, text, indent, newline = collateral_file
    collateral = QuoteCollateralV3.from_json(text)
    assert collateral.to_json(indent=indent, trailing_newline=newline) == text
    assert QuoteCollateralV3.from_json(collateral.to_json(indent=None)) == collateral
    raw = json.loads(text)
    assert collateral.tcb_info == raw["tcb_info"]
    assert collateral.root_ca_crl.hex() == raw["root_ca_crl"]
    assert collateral.signed_tcb_info.tcb_info.to_json() == raw["tcb_info"]
    assert collateral.signed_qe_identity.identity.to_json() == raw["qe_identity"]
    for chain in (
        collateral.pck_crl_issuer_chain,
        collateral.tcb_info_issuer_chain,
        collateral.qe_identity_issuer_chain,
    ):
        assert len(load_pem_certificates(chain.encode())) == 2


def test_collateral_agrees_with_dcap_qvl(
    collateral_file: tuple[str, str, int | None, bool],
) -> None:
    _, text, _, _ = collateral_file
    ours = QuoteCollateralV3.from_json(text)
    theirs = dcap_qvl.QuoteCollateralV3.from_json(text)
    for name in (
        "pck_crl_issuer_chain",
        "tcb_info_issuer_chain",
        "tcb_info",
        "qe_identity_issuer_chain",
        "qe_identity",
    ):
        assert getattr(theirs, name) == getattr(ours, name), name
    for name in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        assert bytes(getattr(theirs, name)) == getattr(ours, name), name
    # dcap-qvl's own writer is our default layout, and it reads what we write.
    assert theirs.to_json() == ours.to_json()
    assert (
        dcap_qvl.QuoteCollateralV3.from_json(ours.to_json(indent=None)).to_json() == ours.to_json()
    )


def test_collateral_kinds(real_vectors: Path) -> None:
    sgx = QuoteCollateralV3.from_json(
        (real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json").read_text()
    )
    tdx = QuoteCollateralV3.from_json(
        (real_vectors / "phala-dcap-qvl/tdx_quote_collateral.json").read_text()
    )
    assert sgx.signed_tcb_info.tcb_info.id is TcbInfoId.SGX
    assert sgx.signed_tcb_info.tcb_info.fmspc == bytes.fromhex("00a067110000")
    assert tdx.signed_tcb_info.tcb_info.id is TcbInfoId.TDX
    assert tdx.signed_qe_identity.identity.id.value == "TD_QE"


def test_optional_pck_certificate_chain(real_vectors: Path) -> None:
    text = (real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json").read_text()
    raw = json.loads(text)
    raw["pck_certificate_chain"] = raw["pck_crl_issuer_chain"]
    with_chain = json.dumps(raw, indent=2)
    collateral = QuoteCollateralV3.from_json(with_chain)
    assert collateral.pck_certificate_chain == raw["pck_crl_issuer_chain"]
    assert collateral.to_json() == with_chain
    assert QuoteCollateralV3.from_json(text).pck_certificate_chain is None
    assert '"pck_certificate_chain"' not in QuoteCollateralV3.from_json(text).to_json()


def _collateral(real_vectors: Path) -> dict[str, Any]:
    text = (real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json").read_text()
    return dict(json.loads(text))


@pytest.mark.parametrize(
    "change",
    [
        {"root_ca_crl": "abc"},
        {"root_ca_crl": "zz"},
        {"root_ca_crl": ""},
        {"pck_crl": [1, 2]},
        {"tcb_info_signature": "00" * 63},
        {"tcb_info_signature": "00" * 65},
        {"qe_identity_signature": None},
        {"tcb_info": "{}"},
        {"tcb_info": 5},
        {"qe_identity": '{"id":"QE"}'},
        {"pck_crl_issuer_chain": ["x"]},
        {"pck_certificate_chain": 7},
        {"extra": "x"},
    ],
)
def test_collateral_rejects_bad_fields(real_vectors: Path, change: dict[str, Any]) -> None:
    raw = {**_collateral(real_vectors), **change}
    with pytest.raises(MalformedStructureError):
        QuoteCollateralV3.from_json(json.dumps(raw))


def test_collateral_rejects_missing_fields_and_bad_json(real_vectors: Path) -> None:
    raw = _collateral(real_vectors)
    for key in raw:
        with pytest.raises(MalformedStructureError, match="missing"):
            QuoteCollateralV3.from_json(json.dumps({k: v for k, v in raw.items() if k != key}))
    for text in ("", "[]", "{", json.dumps(raw)[:-1]):
        with pytest.raises(MalformedStructureError):
            QuoteCollateralV3.from_json(text)
    # A TCB info that is valid JSON but not its exact signed form (re-indented) is refused.
    raw["tcb_info"] = json.dumps(json.loads(raw["tcb_info"]))
    with pytest.raises(MalformedStructureError, match="compact JSON form"):
        QuoteCollateralV3.from_json(json.dumps(raw))


# --------------------------------------------------------------------------------------------
# Fortanix


def test_fortanix_wrappers_round_trip(fortanix_file: tuple[str, str]) -> None:
    name, text = fortanix_file
    raw = json.loads(text)
    if name.endswith(".tcb"):
        tcb = FortanixTcbInfo.from_json(text)
        assert tcb.to_json() == text
        assert tcb.signed.body_text == raw["raw_tcb_info"]
        assert tcb.signed.tcb_info.to_json() == raw["raw_tcb_info"]
        chain = tcb.ca_chain
    else:
        ident = FortanixEnclaveIdentity.from_json(text)
        assert ident.to_json() == text
        assert ident.signed.identity.to_json() == raw["raw_enclave_identity"]
        chain = ident.ca_chain
    assert list(chain) == raw["ca_chain"]
    assert len(load_pem_certificates("".join(chain).encode())) == len(chain)


def test_fortanix_and_pcs_forms_give_the_same_model(real_vectors: Path) -> None:
    """The same TCB Info through two wrappers: same model, same signature."""
    wrapped = FortanixTcbInfo.from_json(
        (real_vectors / "fortanix-rust-sgx/collateral-2025/00606a000000-19.tcb").read_text()
    )
    body = wrapped.signed.to_response_body()
    assert SignedTcbInfo.from_response_body(body) == wrapped.signed


@pytest.mark.parametrize(
    "change",
    [
        {"signature": [256] + [0] * 70},
        {"signature": "3045"},
        {"signature": [48, 6, 2, 1, 0, 2, 1, 1]},  # r = 0
        {"signature": [48, 7, 2, 2, 0, 5, 2, 1, 7]},  # non-minimal INTEGER
        {"ca_chain": "pem"},
        {"ca_chain": [1]},
        {"raw_tcb_info": {}},
        {"raw_enclave_identity": "{}"},
        {"extra": 1},
    ],
)
def test_fortanix_rejects_bad_fields(real_vectors: Path, change: dict[str, Any]) -> None:
    raw = json.loads((real_vectors / "fortanix-rust-sgx/pcs-2020-05/00906ea10000.tcb").read_text())
    with pytest.raises(MalformedStructureError):
        FortanixTcbInfo.from_json(json.dumps({**raw, **change}))
    for key in raw:
        with pytest.raises(MalformedStructureError):
            FortanixTcbInfo.from_json(json.dumps({k: v for k, v in raw.items() if k != key}))
    ident = json.loads((real_vectors / "fortanix-rust-sgx/pcs-2020-05/qe3_identity.id").read_text())
    with pytest.raises(MalformedStructureError):
        FortanixEnclaveIdentity.from_json(json.dumps(raw))  # a .tcb is not an .id
    with pytest.raises(MalformedStructureError):
        FortanixEnclaveIdentity.from_json(json.dumps({**ident, "signature": [1, 2, 3]}))
