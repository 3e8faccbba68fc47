"""The emulated PCS output compared field by field with Intel's real certificates and collateral.

Certificates: the same profile (version, algorithms, name layout and string types, validity
encoding and length, extension order and criticality, key identifier and CRL distribution point
shapes, key usage, basic constraints, CA serial = SKI) and, for PCK certificates, the same SGX
extension tree (OIDs, ASN.1 types, sizes). CRLs: the same layout. Collateral: the same JSON keys
in the same order, with values of the same kind (timestamps, upper-case hex of the same length).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core, parser
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgx_platform.arch.dcap.quote import parse_quote
from sgx_quoting.fixtures import Fixture, fixture
from sgx_quoting.pki import PckCa, Revocation

# -- certificate profiles ---------------------------------------------------------------------


def _name_layout(name: asn1_x509.Name) -> list[tuple[str, str]]:
    layout = []
    for rdn in name.chosen:
        assert len(rdn) == 1, "one attribute per RDN"
        for attribute in rdn:
            layout.append((attribute["type"].dotted, attribute["value"].name))
    return layout


def _years(start: dt.datetime, end: dt.datetime) -> tuple[int, bool]:
    """Whole years between two instants and whether ``end`` is exactly that many years on."""
    years = end.year - start.year
    return years, end == start.replace(year=start.year + years)


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER element in ``data``, in order."""
    out = []
    pos = 0
    while pos < len(data):
        _cls, _method, tag, header, contents, trailer = parser.parse(data[pos:])
        out.append((tag, contents))
        pos += len(header) + len(contents) + len(trailer)
    return out


def _sgx_tree(contents: bytes) -> list[Any]:
    """The (OID, ASN.1 type, size or subtree) tree inside an SGX extension SEQUENCE."""
    out: list[Any] = []
    for tag, pair in _tlvs(contents):
        assert tag == 16
        (oid_tag, oid), (value_tag, value) = _tlvs(pair)
        assert oid_tag == 6
        dotted = core.ObjectIdentifier.load(b"\x06" + bytes([len(oid)]) + oid).dotted
        if value_tag == 16:
            out.append((dotted, "SEQUENCE", _sgx_tree(value)))
        elif value_tag == 4:
            out.append((dotted, "OCTET STRING", len(value)))
        else:
            out.append((dotted, value_tag))
    return out


def certificate_profile(der: bytes) -> dict[str, Any]:
    cert = asn1_x509.Certificate.load(der)
    tbs = cert["tbs_certificate"]
    validity = tbs["validity"]
    start = validity["not_before"].native
    end = validity["not_after"].native
    profile: dict[str, Any] = {
        "version": tbs["version"].native,
        "signature_algorithm": cert["signature_algorithm"]["algorithm"].dotted,
        "tbs_signature_algorithm": tbs["signature"]["algorithm"].dotted,
        "issuer_layout": _name_layout(tbs["issuer"]),
        "subject_layout": _name_layout(tbs["subject"]),
        "validity_encoding": (validity["not_before"].name, validity["not_after"].name),
        "public_key": (
            tbs["subject_public_key_info"]["algorithm"]["algorithm"].dotted,
            tbs["subject_public_key_info"]["algorithm"]["parameters"].chosen.dotted,
        ),
        "unique_ids": (tbs["issuer_unique_id"].native, tbs["subject_unique_id"].native),
        "extensions": [(e["extn_id"].dotted, e["critical"].native) for e in tbs["extensions"]],
        "serial_bytes_max_21": len(tbs["serial_number"].contents) <= 21,
    }
    if end.year == 2049 and (end.month, end.day) == (12, 31):
        profile["validity"] = "until the end of 2049"
    else:
        profile["validity"] = _years(start, end)
    for extension in tbs["extensions"]:
        name = extension["extn_id"].native
        value = extension["extn_value"].parsed
        if name == "authority_key_identifier":
            profile["aki"] = sorted(k for k, v in value.native.items() if v is not None)
            profile["aki_length"] = len(value["key_identifier"].native)
        elif name == "crl_distribution_points":
            profile["crl_distribution_points"] = [
                (
                    [general.name for general in point["distribution_point"].chosen],
                    point["reasons"].native,
                    point["crl_issuer"].native,
                )
                for point in value
            ]
        elif name == "key_identifier":
            profile["ski_length"] = len(value.native)
            profile["serial_is_ski"] = value.native == tbs["serial_number"].native.to_bytes(
                20, "big"
            )
        elif name == "key_usage":
            profile["key_usage"] = sorted(value.native)
        elif name == "basic_constraints":
            profile["basic_constraints"] = value.native
        elif extension["extn_id"].dotted == "1.2.840.113741.1.13.1":
            ((tag, contents),) = _tlvs(extension["extn_value"].contents)
            assert tag == 16
            profile["sgx_extension"] = _sgx_tree(contents)
    return profile


def _assert_same_profile(real: bytes, emulated: bytes, *, leaf: bool = False) -> None:
    a, b = certificate_profile(real), certificate_profile(emulated)
    if leaf:
        # PCK leaves: Intel's serials are random, so "serial is SKI" is false for both.
        assert a.pop("serial_is_ski") is False
        assert b.pop("serial_is_ski") is False
    assert a == b
    real_subject = x509.load_der_x509_certificate(real).subject
    emulated_subject = x509.load_der_x509_certificate(emulated).subject
    real_cn = real_subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    emulated_cn = emulated_subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(emulated_cn) == str(real_cn).replace("Intel SGX", "sgxemu")


def _der(pem_or_der: bytes) -> bytes:
    if pem_or_der.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(pem_or_der).public_bytes(serialization.Encoding.DER)
    return pem_or_der


def _quote_chain(path: Path) -> list[bytes]:
    quote = parse_quote(path.read_bytes(), allow_trailing_zero_padding=True)
    data = quote.certification_data
    chain = data.ordered_chain()  # type: ignore[union-attr]
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


@pytest.fixture(scope="module")
def fx() -> Fixture:
    return fixture()


def test_processor_pck_certificate_has_intels_profile(real_vectors: Path, fx: Fixture) -> None:
    emulated = fx.pcs().select_pck(fx.tcb, pce_id=fx.platform.pce_id)
    for quote in ("phala-dcap-qvl/sgx_quote", "mobilecoin-attestation/hw_quote.dat"):
        leaf, ca, root = _quote_chain(real_vectors / quote)
        _assert_same_profile(
            leaf, emulated.leaf.public_bytes(serialization.Encoding.DER), leaf=True
        )
        _assert_same_profile(ca, emulated.ca.public_bytes(serialization.Encoding.DER))
        _assert_same_profile(root, emulated.root.public_bytes(serialization.Encoding.DER))


def test_platform_pck_certificate_has_intels_profile(real_vectors: Path, fx: Fixture) -> None:
    leaf, ca, root = _quote_chain(
        real_vectors / "automata-dcap-attestation/sgx-v3-2025-08/quote.bin"
    )
    emulated = fx.issue_pck(ca=PckCa.PLATFORM)
    _assert_same_profile(leaf, emulated.public_bytes(serialization.Encoding.DER), leaf=True)
    _assert_same_profile(ca, fx.pki.platform_ca.der)
    _assert_same_profile(root, fx.pki.root.der)
    common = real_vectors / "automata-dcap-attestation/common"
    _assert_same_profile((common / "pck_platform_ca.der").read_bytes(), fx.pki.platform_ca.der)


def test_root_and_tcb_signing_have_intels_profile(real_vectors: Path, fx: Fixture) -> None:
    common = real_vectors / "automata-dcap-attestation/common"
    _assert_same_profile((common / "root_ca.der").read_bytes(), fx.pki.root.der)
    _assert_same_profile((common / "tcb_signing_2025.der").read_bytes(), fx.pki.tcb_signing.der)
    mobilecoin = (real_vectors / "mobilecoin-attestation/tcb_signer.pem").read_bytes()
    _assert_same_profile(_der(mobilecoin), fx.pki.tcb_signing.der)


def test_profile_detects_a_difference(real_vectors: Path, fx: Fixture) -> None:
    """The comparison is not vacuous: a CA against a leaf, or the TCB signer against the
    root, differ."""
    common = real_vectors / "automata-dcap-attestation/common"
    with pytest.raises(AssertionError):
        _assert_same_profile((common / "root_ca.der").read_bytes(), fx.pki.platform_ca.der)
    with pytest.raises(AssertionError):
        _assert_same_profile((common / "tcb_signing_2025.der").read_bytes(), fx.pki.root.der)
    leaf, _, _ = _quote_chain(real_vectors / "phala-dcap-qvl/sgx_quote")
    with pytest.raises(AssertionError):  # a Processor PCK leaf has no platform fields
        _assert_same_profile(
            leaf,
            fx.issue_pck(ca=PckCa.PLATFORM).public_bytes(serialization.Encoding.DER),
            leaf=True,
        )


# -- CRLs -------------------------------------------------------------------------------------


def crl_profile(der: bytes) -> dict[str, Any]:
    crl = asn1_crl.CertificateList.load(der)
    tbs = crl["tbs_cert_list"]
    entries = tbs["revoked_certificates"]
    return {
        "version": tbs["version"].native,
        "signature_algorithm": crl["signature_algorithm"]["algorithm"].dotted,
        "issuer_layout": _name_layout(tbs["issuer"]),
        "times": (tbs["this_update"].name, tbs["next_update"].name),
        "extensions": [(e["extn_id"].dotted, e["critical"].native) for e in tbs["crl_extensions"]],
        "aki": sorted(
            k
            for e in tbs["crl_extensions"]
            if e["extn_id"].native == "authority_key_identifier"
            for k, v in e["extn_value"].parsed.native.items()
            if v is not None
        ),
        "entry_layouts": sorted(
            {
                tuple(
                    (x["extn_id"].dotted, x["critical"].native, x["extn_value"].parsed.native)
                    for x in entry["crl_entry_extensions"]
                )
                for entry in entries
            }
        ),
        "entry_time": sorted({entry["revocation_date"].name for entry in entries}),
    }


def test_crls_have_intels_layout(real_vectors: Path, fx: Fixture) -> None:
    real_pck = real_vectors / "automata-dcap-attestation/sgx-v3-2025-08/pck_platform_crl.der"
    assert len(x509.load_der_x509_crl(real_pck.read_bytes())) > 0
    emulated_pck = fx.pki.pck_crl(
        PckCa.PLATFORM,
        this_update=fx.now,
        next_update=fx.now + dt.timedelta(days=30),
        revoked=[Revocation(0x6FC34E5023E728923435D61AA4B83C618166AD35, fx.now)],
    )
    assert crl_profile(real_pck.read_bytes()) == crl_profile(emulated_pck)
    real_root = (real_vectors / "automata-dcap-attestation/common/root_ca_crl.der").read_bytes()
    assert crl_profile(real_root) == crl_profile(fx.pcs().root_ca_crl())
    real_processor = (real_vectors / "mobilecoin-attestation/processor_crl.der").read_bytes()
    assert crl_profile(real_processor) == crl_profile(fx.pcs().pck_crl(PckCa.PROCESSOR))


# -- collateral JSON ---------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_UPPER_HEX = re.compile(r"[0-9A-F]+")
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def _kind(value: str) -> str:
    if _TIMESTAMP.fullmatch(value):
        return "timestamp"
    if value.startswith("-----BEGIN CERTIFICATE-----"):
        return f"pem x{value.count('-----BEGIN CERTIFICATE-----')}"
    if len(value) >= 4 and _UPPER_HEX.fullmatch(value):
        return f"HEX{len(value)}"
    if len(value) >= 4 and _LOWER_HEX.fullmatch(value):
        return "hex" if len(value) != 128 else "hex128"
    return "str"


def shape(value: Any) -> Any:
    """Keys in order and the kind of every value; arrays as the set of their element shapes."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # an object
        return tuple((k, shape(v)) for k, v in value)
    if isinstance(value, list):
        shapes = []
        for item in value:
            s = shape(item)
            if s not in shapes:
                shapes.append(s)
        return ("array", tuple(shapes))
    if isinstance(value, str):
        return _kind(value)
    return type(value).__name__


def _load(text: str | bytes) -> Any:
    return json.loads(text, object_pairs_hook=list)


def _level_shapes(body: Any) -> dict[str, Any]:
    """Each TCB level's shape by status, with advisoryIDs present exactly when not UpToDate."""
    levels = dict(body)["tcbLevels"]
    out: dict[str, Any] = {}
    for level in levels:
        fields = dict(level)
        assert ("advisoryIDs" in fields) == (fields["tcbStatus"] != "UpToDate")
        out.setdefault("advisories" if "advisoryIDs" in fields else "none", shape(level))
    return out


def _without(document: Any, key: str) -> Any:
    return [(k, v) for k, v in document if k != key]


def test_collateral_json_has_dcap_qvl_layout(real_vectors: Path, fx: Fixture) -> None:
    real = _load((real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json").read_text())
    pcs = fx.pcs()
    pcs.tcb_recovery()  # so that levels with and without advisories exist
    emulated_text = pcs.collateral_for_quote(fx.quote()).to_json(indent=2, trailing_newline=True)
    emulated = _load(emulated_text)
    assert [k for k, _ in emulated] == [k for k, _ in real]
    # Signed bodies are compared below; the rest must have the same kinds of values.
    assert shape(_without(_without(emulated, "tcb_info"), "qe_identity")) == shape(
        _without(_without(real, "tcb_info"), "qe_identity")
    )
    real_tcb, emulated_tcb = _load(dict(real)["tcb_info"]), _load(dict(emulated)["tcb_info"])
    assert shape(_without(emulated_tcb, "tcbLevels")) == shape(_without(real_tcb, "tcbLevels"))
    real_levels, emulated_levels = _level_shapes(real_tcb), _level_shapes(emulated_tcb)
    assert emulated_levels["advisories"] == real_levels["advisories"]
    # Intel's UpToDate level is the same object without advisoryIDs.
    assert emulated_levels["none"] == tuple(
        kv for kv in real_levels["advisories"] if kv[0] != "advisoryIDs"
    )
    real_qe, emulated_qe = _load(dict(real)["qe_identity"]), _load(dict(emulated)["qe_identity"])
    assert shape(_without(emulated_qe, "tcbLevels")) == shape(_without(real_qe, "tcbLevels"))
    real_qe_levels = _level_shapes(real_qe)
    for kind, level_shape in _level_shapes(emulated_qe).items():
        assert level_shape == real_qe_levels[kind]
    # Signed text is compact like Intel's.
    assert dict(emulated)["tcb_info"] == json.dumps(
        json.loads(dict(emulated)["tcb_info"]), separators=(",", ":")
    )


def test_pcs_response_bodies_have_intels_layout(real_vectors: Path, fx: Fixture) -> None:
    pcs = fx.pcs()
    real_tcb = _load(
        (real_vectors / "mobilecoin-attestation/fmspc_00906ED50000_2023_07_12.json").read_text()
    )
    emulated_tcb = _load(pcs.tcb_info().to_response_body())
    assert [k for k, _ in emulated_tcb] == [k for k, _ in real_tcb] == ["tcbInfo", "signature"]
    assert shape(dict(emulated_tcb)["signature"]) == shape(dict(real_tcb)["signature"])
    real_qe = _load((real_vectors / "mobilecoin-attestation/qe_identity.json").read_text())
    emulated_qe = _load(pcs.qe_identity().to_response_body())
    assert (
        [k for k, _ in emulated_qe] == [k for k, _ in real_qe] == ["enclaveIdentity", "signature"]
    )
    assert shape(_without(dict(emulated_qe)["enclaveIdentity"], "tcbLevels")) == shape(
        _without(dict(real_qe)["enclaveIdentity"], "tcbLevels")
    )


def test_shape_detects_a_difference() -> None:
    a = _load('{"id":"QE","issueDate":"2025-01-01T00:00:00Z","mrsigner":"ABCD"}')
    assert shape(a) != shape(
        _load('{"issueDate":"2025-01-01T00:00:00Z","id":"QE","mrsigner":"ABCD"}')
    )
    assert shape(a) != shape(
        _load('{"id":"QE","issueDate":"2025-01-01T00:00:00Z","mrsigner":"abcd"}')
    )
    assert shape(a) != shape(_load('{"id":"QE","issueDate":"2025-01-01","mrsigner":"ABCD"}'))
