"""DCAP quote layout: real quotes round-trip, cross-checked against dcap-qvl and its snapshots;
every malformation is rejected."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import struct
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap.quote import (
    INTEL_QE_VENDOR_ID,
    BodyType,
    CertificationDataType,
    EcdsaSignatureData,
    PckCertChainCertificationData,
    PckLeafCertificationData,
    PpidCertificationData,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    TdReport10,
    TdReport15,
    TeeType,
    build_quote_v3,
    decode_certification_data,
    load_pem_certificates,
    order_certificate_chain,
    parse_quote,
    qe_report_data,
    signed_region,
    split_pem_certificates,
)
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.report import ReportBody

# Every quote among the real vectors, with whether it carries trailing zero padding.
QUOTES: dict[str, bool] = {
    "phala-dcap-qvl/sgx_quote": False,
    "phala-dcap-qvl/tdx_quote": True,
    "phala-dcap-qvl/tdx_quote_outdated": False,
    "automata-dcap-attestation/sgx-v3-2025-08/quote.bin": False,
    "automata-dcap-attestation/tdx-v4-2025-06/quote.bin": True,
    "mobilecoin-attestation/hw_quote.dat": False,
    "fortanix-rust-sgx/pcs-2020-05/quote.bin": False,
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin": False,
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain_corrupted.bin": False,
    "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin": False,
    "intel-dcap-sampledata-synthetic/sgx/quote.dat": False,
    "intel-dcap-sampledata-synthetic/tdx/quote.dat": False,
}

SGX_V3 = "phala-dcap-qvl/sgx_quote"
TDX_V4 = "phala-dcap-qvl/tdx_quote"
TDX_V5 = "phala-dcap-qvl/tdx_quote_outdated"


def _read(real_vectors: Path, name: str) -> bytes:
    return (real_vectors / name).read_bytes()


def _quote(real_vectors: Path, name: str) -> tuple[Quote, bytes]:
    """The parsed quote and its exact bytes (padding removed)."""
    data = _read(real_vectors, name)
    quote = parse_quote(data, allow_trailing_zero_padding=QUOTES[name])
    return quote, data[: len(quote.to_bytes())]


# --------------------------------------------------------------------------------------------
# Real vectors: coverage, round trip, oracles


def test_every_quote_in_sets_json_is_covered(real_vectors: Path) -> None:
    sets = json.loads((real_vectors / "sets.json").read_text())
    listed = {s["quote"] for s in sets["quote_sets"]}
    for entry in sets["negative_and_parse_only"]:
        if "file" in entry:
            listed.add(entry["file"])
        else:
            listed.add(entry["dir"] + "/quote.dat")
    assert listed == set(QUOTES)


@pytest.mark.parametrize("name", sorted(QUOTES))
def test_real_quote_round_trips(real_vectors: Path, name: str) -> None:
    data = _read(real_vectors, name)
    if QUOTES[name]:
        with pytest.raises(MalformedStructureError, match="trailing"):
            Quote.from_bytes(data)
        quote = parse_quote(data, allow_trailing_zero_padding=True)
        encoded = quote.to_bytes()
        assert len(encoded) < len(data)
        assert data[: len(encoded)] == encoded
        assert not any(data[len(encoded) :])
        assert Quote.from_bytes(encoded) == quote
    else:
        quote = Quote.from_bytes(data)
        assert quote.to_bytes() == data
        assert parse_quote(data) == quote
    assert quote.header.attestation_key_type == 2
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID


@pytest.mark.parametrize("name", sorted(QUOTES))
def test_real_quote_qe_report_binds_attestation_key(real_vectors: Path, name: str) -> None:
    quote, _ = _quote(real_vectors, name)
    expected = qe_report_data(quote.signature_data.attestation_public_key, quote.qe_auth_data)
    assert quote.qe_report.report_data == expected


@pytest.mark.parametrize("name", sorted(QUOTES))
def test_real_quote_matches_dcap_qvl(real_vectors: Path, name: str) -> None:
    quote, exact = _quote(real_vectors, name)
    theirs = dcap_qvl.parse_quote(exact)
    h = theirs.header
    assert (h.version, h.attestation_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (
        quote.header.version,
        quote.header.attestation_key_type,
        int(quote.header.tee_type),
        quote.header.qe_svn,
        quote.header.pce_svn,
    )
    assert bytes(h.qe_vendor_id) == quote.header.qe_vendor_id
    assert bytes(h.user_data) == quote.header.user_data
    r = theirs.report
    body = quote.body
    if isinstance(body, ReportBody):
        assert bytes(r.cpu_svn) == body.cpusvn
        assert bytes(r.attributes) == body.attributes.to_bytes()
        assert bytes(r.mr_enclave) == body.mrenclave.value
        assert bytes(r.mr_signer) == body.mrsigner.value
        assert bytes(r.report_data) == body.report_data
    else:
        td = body.base if isinstance(body, TdReport15) else body
        for field in (
            "tee_tcb_svn",
            "mr_seam",
            "mr_signer_seam",
            "seam_attributes",
            "td_attributes",
            "xfam",
            "mr_td",
            "mr_config_id",
            "mr_owner",
            "mr_owner_config",
            "report_data",
        ):
            assert bytes(getattr(r, field)) == getattr(td, field), field
        assert [bytes(getattr(r, f"rt_mr{i}")) for i in range(4)] == list(td.rtmr)
        if isinstance(body, TdReport15):
            assert bytes(r.tee_tcb_svn2) == body.tee_tcb_svn2
            assert bytes(r.mr_service_td) == body.mr_servicetd
    cert = quote.certification_data
    pem = theirs.cert_chain_pem_bytes()
    if isinstance(cert, PckCertChainCertificationData) and pem is not None:
        # dcap-qvl hands out the chain without the C string terminator.
        assert cert.data.rstrip(b"\x00") == bytes(pem).rstrip(b"\x00")


def test_body_kinds_and_versions(real_vectors: Path) -> None:
    sgx, sgx_bytes = _quote(real_vectors, SGX_V3)
    tdx4, tdx4_bytes = _quote(real_vectors, TDX_V4)
    tdx5, tdx5_bytes = _quote(real_vectors, TDX_V5)
    assert (sgx.version, sgx.header.tee_type, type(sgx.body)) == (3, TeeType.SGX, ReportBody)
    assert (tdx4.version, tdx4.header.tee_type, type(tdx4.body)) == (4, TeeType.TDX, TdReport10)
    assert (tdx5.version, tdx5.header.tee_type, type(tdx5.body)) == (5, TeeType.TDX, TdReport15)
    assert sgx.signed_region == sgx_bytes[: 48 + 384]
    assert tdx4.signed_region == tdx4_bytes[: 48 + 584]
    assert tdx5.signed_region == tdx5_bytes[: 48 + 6 + 648]
    assert struct.unpack_from("<HI", tdx5_bytes, 48) == (BodyType.TD_REPORT_15, 648)
    assert sgx.isv_report is sgx.body
    with pytest.raises(MalformedStructureError):
        _ = tdx4.isv_report


def test_certification_data_types_in_real_quotes(real_vectors: Path) -> None:
    raw_tcb, _ = _quote(real_vectors, "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin")
    cert = raw_tcb.certification_data
    assert isinstance(cert, PpidCertificationData)
    assert cert.cert_type is CertificationDataType.PPID_RSA3072_ENCRYPTED
    assert len(cert.ppid) == 384
    assert cert.pcesvn == raw_tcb.header.pce_svn == 6
    assert cert.pce_id == b"\x00\x00"
    assert cert.cpusvn == raw_tcb.isv_report.cpusvn

    synthetic, _ = _quote(real_vectors, "intel-dcap-sampledata-synthetic/sgx/quote.dat")
    short = synthetic.certification_data
    assert isinstance(short, PpidCertificationData)
    assert short.cert_type is CertificationDataType.PPID_CLEARTEXT
    assert short.pce_id is None  # the 34-byte form without PCE ID
    assert short.pcesvn == synthetic.header.pce_svn == 3

    tdx, _ = _quote(real_vectors, TDX_V4)
    assert isinstance(tdx.signature_data.qe_certification, QeReportCertificationData)
    assert isinstance(tdx.certification_data, PckCertChainCertificationData)


# --------------------------------------------------------------------------------------------
# Upstream snapshots (Rust Debug text) as an oracle


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:<[^>]*>)?)'
    r"|(?P<punct>[{}\[\](),:]))"
)
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]+\}|.)")


def _unescape(s: str) -> str:
    simple = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\", "'": "'"}

    def sub(m: re.Match[str]) -> str:
        e = m.group(1)
        return chr(int(e[2:-1], 16)) if e.startswith("u{") else simple[e]

    return _ESCAPE.sub(sub, s)


def _parse_debug(text: str) -> Any:
    """Parse Rust ``{:#?}`` output: structs become dicts, tuple variants 1-tuples of
    (name, value), integer lists bytes."""
    tokens = [(m.lastgroup, m.group(m.lastgroup or "")) for m in _TOKEN.finditer(text)]
    pos = 0

    def peek() -> str:
        return tokens[pos][1]

    def take() -> tuple[str | None, str]:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value() -> Any:
        kind, tok = take()
        if kind == "num":
            return int(tok)
        if kind == "str":
            return _unescape(tok[1:-1])
        if tok == "[":
            items = []
            while peek() != "]":
                items.append(value())
                if peek() == ",":
                    take()
            take()
            if items and all(isinstance(i, int) for i in items):
                return bytes(items)
            return items
        assert kind == "ident", tok
        if pos < len(tokens) and peek() == "{":
            take()
            fields: dict[str, Any] = {"__type__": tok}
            while peek() != "}":
                _, name = take()
                assert take()[1] == ":"
                fields[name] = value()
                if peek() == ",":
                    take()
            take()
            return fields
        if pos < len(tokens) and peek() == "(":
            take()
            inner = value()
            if peek() == ",":
                take()
            assert take()[1] == ")"
            return (tok, inner)
        return tok

    body = text.split("---", 2)[2]
    tokens = [(m.lastgroup, m.group(m.lastgroup or "")) for m in _TOKEN.finditer(body)]
    return value()


@pytest.mark.parametrize(
    ("snap", "name"),
    [
        ("verify_quote__could_parse_sgx_quote.snap", SGX_V3),
        ("verify_quote__could_parse_tdx_quote.snap", TDX_V4),
    ],
)
def test_quote_matches_upstream_snapshot(real_vectors: Path, snap: str, name: str) -> None:
    tree = _parse_debug((real_vectors / "phala-dcap-qvl" / snap).read_text())
    quote, _ = _quote(real_vectors, name)
    header = tree["header"]
    assert header["version"] == quote.header.version
    assert header["tee_type"] == int(quote.header.tee_type)
    assert header["qe_svn"] == quote.header.qe_svn
    assert header["pce_svn"] == quote.header.pce_svn
    assert header["qe_vendor_id"] == quote.header.qe_vendor_id
    assert header["user_data"] == quote.header.user_data

    variant, report = tree["report"]
    if variant == "SgxEnclave":
        assert isinstance(quote.body, ReportBody)
        assert report["cpu_svn"] == quote.body.cpusvn
        assert report["misc_select"] == quote.body.miscselect
        assert report["attributes"] == quote.body.attributes.to_bytes()
        assert report["mr_enclave"] == quote.body.mrenclave.value
        assert report["mr_signer"] == quote.body.mrsigner.value
        assert report["isv_prod_id"] == quote.body.isvprodid
        assert report["isv_svn"] == quote.body.isvsvn
        assert report["report_data"] == quote.body.report_data
    else:
        assert variant == "TD10"
        assert isinstance(quote.body, TdReport10)
        assert report["mr_td"] == quote.body.mr_td
        assert report["rt_mr3"] == quote.body.rtmr[3]
        assert report["tee_tcb_svn"] == quote.body.tee_tcb_svn
        assert report["report_data"] == quote.body.report_data

    auth_variant, auth = tree["auth_data"]
    assert auth["ecdsa_signature"] == quote.signature_data.signature
    assert auth["ecdsa_attestation_key"] == quote.signature_data.attestation_public_key
    if auth_variant == "V3":
        qe = auth
        assert qe["certification_data"]["cert_type"] == 5
    else:
        assert auth["certification_data"]["cert_type"] == 6
        qe = auth["qe_report_data"]
    assert qe["qe_report"] == quote.qe_report.to_bytes()
    assert qe["qe_report_signature"] == quote.qe_report_signature
    assert qe["qe_auth_data"]["data"] == quote.qe_auth_data
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    assert qe["certification_data"]["cert_type"] == 5
    assert qe["certification_data"]["body"].encode() == cert.data


# --------------------------------------------------------------------------------------------
# PEM chains


def _cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(QUOTES) if "raw_tcb" not in n and "synthetic" not in n],
)
def test_pck_chain_orders_leaf_to_root(real_vectors: Path, name: str) -> None:
    quote, _ = _quote(real_vectors, name)
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    chain = cert.ordered_chain()
    assert len(chain) == 3
    assert _cn(chain[0]) == "Intel SGX PCK Certificate"
    assert _cn(chain[1]) in ("Intel SGX PCK Processor CA", "Intel SGX PCK Platform CA")
    assert _cn(chain[2]) == "Intel SGX Root CA"
    assert chain[2].issuer == chain[2].subject
    for child, parent in itertools.pairwise(chain):
        assert child.issuer == parent.subject


def test_out_of_order_chain_is_reordered(real_vectors: Path) -> None:
    quote, _ = _quote(real_vectors, "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin")
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    as_written = [_cn(c) for c in cert.certificates()]
    assert as_written == [
        "Intel SGX PCK Certificate",
        "Intel SGX Root CA",
        "Intel SGX PCK Processor CA",
    ]
    assert [_cn(c) for c in cert.ordered_chain()] == [
        "Intel SGX PCK Certificate",
        "Intel SGX PCK Processor CA",
        "Intel SGX Root CA",
    ]


def test_chain_order_rejects_broken_sets(real_vectors: Path) -> None:
    quote, _ = _quote(real_vectors, SGX_V3)
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    leaf, ca, root = cert.ordered_chain()
    other, _ = _quote(real_vectors, TDX_V4)  # Platform CA chain
    assert isinstance(other.certification_data, PckCertChainCertificationData)
    other_leaf = other.certification_data.ordered_chain()[0]
    with pytest.raises(MalformedStructureError, match="empty"):
        order_certificate_chain([])
    with pytest.raises(MalformedStructureError, match="duplicate"):
        order_certificate_chain([leaf, ca, ca, root])
    with pytest.raises(MalformedStructureError, match="one leaf"):
        order_certificate_chain([leaf, other_leaf, ca, root])
    with pytest.raises(MalformedStructureError, match="one leaf"):
        order_certificate_chain([leaf, root])  # the intermediate is missing
    legacy, _ = _quote(real_vectors, "fortanix-rust-sgx/pcs-2020-05/quote.bin")
    assert isinstance(legacy.certification_data, PckCertChainCertificationData)
    legacy_root = legacy.certification_data.ordered_chain()[2]
    assert legacy_root.subject == root.subject and legacy_root != root
    with pytest.raises(MalformedStructureError, match="one chain"):
        order_certificate_chain([leaf, ca, root, legacy_root])  # two candidate issuers
    assert order_certificate_chain([root, leaf, ca]) == [leaf, ca, root]
    assert order_certificate_chain([ca, leaf]) == [leaf, ca]


def test_pem_splitting_is_strict(real_vectors: Path) -> None:
    quote, _ = _quote(real_vectors, SGX_V3)
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    blocks = split_pem_certificates(cert.data)
    assert len(blocks) == 3
    assert len(load_pem_certificates(b"\n".join(blocks) + b"\n\x00\x00")) == 3
    for bad in (
        b"junk" + b"\n".join(blocks),
        blocks[0] + b"\nhello\n" + blocks[1],
        b"\n".join(blocks) + b"x",
        b"",
        b"\x00\n",
    ):
        with pytest.raises(MalformedStructureError):
            split_pem_certificates(bad)
    broken = blocks[0].replace(b"MII", b"AAA", 1)
    with pytest.raises(MalformedStructureError, match="certificate 0"):
        load_pem_certificates(broken)


def test_der_in_type_5_parses_but_certificates_refuse(real_vectors: Path) -> None:
    quote, _ = _quote(real_vectors, "intel-dcap-sampledata-synthetic/tdx/quote.dat")
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    assert cert.data.startswith(b"\x30\x82")  # DER, not PEM
    with pytest.raises(MalformedStructureError):
        cert.certificates()


# --------------------------------------------------------------------------------------------
# Negative: truncation, trailing bytes, constants, lengths


def _sig_offset(data: bytes) -> int:
    """Offset of the ECDSA signature data in a v3/v4 quote."""
    version, _, tee = struct.unpack_from("<HHI", data)
    body = 584 if tee == 0x81 else 384
    return 48 + (6 + struct.unpack_from("<HI", data, 48)[1] if version == 5 else body) + 4


def _v3_cert_offset(data: bytes) -> int:
    """Offset of the certification data header in a v3 quote."""
    s = _sig_offset(data)
    (auth,) = struct.unpack_from("<H", data, s + 128 + 384 + 64)
    return s + 128 + 384 + 64 + 2 + auth


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_truncation_at_every_offset_is_rejected(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, SGX_V3)
    for cut in range(len(data)):
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(data[:cut])


@pytest.mark.parametrize("name", [TDX_V4, TDX_V5, "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin"])
def test_truncation_at_boundaries_is_rejected(real_vectors: Path, name: str) -> None:
    _, data = _quote(real_vectors, name)
    s = _sig_offset(data)
    cuts = {0, 1, 47, 48, 49, 53, 54, s - 4, s - 1, s, s + 64, s + 128, s + 129, s + 134}
    cuts |= {s + 134 + 384, s + 134 + 448, s + 134 + 450, s + 134 + 482, len(data) - 1}
    cuts |= set(range(0, len(data), 97))
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(data[:cut])
        with pytest.raises(MalformedStructureError):
            parse_quote(data[:cut], allow_trailing_zero_padding=True)


@pytest.mark.parametrize("name", [SGX_V3, TDX_V4, TDX_V5])
def test_trailing_bytes(real_vectors: Path, name: str) -> None:
    _, data = _quote(real_vectors, name)
    for extra in (b"\x00", b"\x01", b"\x00" * 64):
        with pytest.raises(MalformedStructureError, match="trailing"):
            Quote.from_bytes(data + extra)
    assert parse_quote(data + bytes(64), allow_trailing_zero_padding=True).to_bytes() == data
    for extra in (b"\x01", bytes(63) + b"\x01", b"\x80" + bytes(10)):
        with pytest.raises(MalformedStructureError, match="non-zero trailing"):
            parse_quote(data + extra, allow_trailing_zero_padding=True)


@pytest.mark.parametrize("version", [0, 1, 2, 6, 0x0103, 0xFFFF])
def test_bad_version(real_vectors: Path, version: int) -> None:
    _, data = _quote(real_vectors, SGX_V3)
    with pytest.raises(MalformedStructureError, match="version"):
        Quote.from_bytes(_patch(data, 0, "<H", version))


@pytest.mark.parametrize("key_type", [0, 1, 3, 4, 0x0200])
def test_unknown_attestation_key_type(real_vectors: Path, key_type: int) -> None:
    for name in (SGX_V3, TDX_V4):
        _, data = _quote(real_vectors, name)
        with pytest.raises(MalformedStructureError, match="attestation key type"):
            Quote.from_bytes(_patch(data, 2, "<H", key_type))


def test_tee_type_checks(real_vectors: Path) -> None:
    _, sgx = _quote(real_vectors, SGX_V3)
    _, tdx = _quote(real_vectors, TDX_V4)
    with pytest.raises(MalformedStructureError, match="v3 quote must have TEE type 0"):
        Quote.from_bytes(_patch(sgx, 4, "<I", 0x81))
    for tee in (1, 0x80, 0x82, 0x81000000):
        with pytest.raises(MalformedStructureError, match="TEE type"):
            Quote.from_bytes(_patch(tdx, 4, "<I", tee))
    # A TDX v4 header relabelled SGX: the body is then misread and the rest does not line up.
    with pytest.raises(MalformedStructureError):
        Quote.from_bytes(_patch(tdx, 4, "<I", 0))


def test_v5_body_descriptor_checks(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, TDX_V5)
    for body_type in (0, 4, 5, 0xFFFF):
        with pytest.raises(MalformedStructureError, match="body type"):
            Quote.from_bytes(_patch(data, 48, "<H", body_type))
    for size in (0, 584, 647, 649, 0xFFFFFFFF):
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(_patch(data, 50, "<I", size))
    # Body type 1 (SGX) under a TDX header is inconsistent.
    with pytest.raises(MalformedStructureError):
        Quote.from_bytes(_patch(data, 48, "<HI", 1, 384))


def test_signature_data_length_must_match(real_vectors: Path) -> None:
    for name in (SGX_V3, TDX_V4):
        _, data = _quote(real_vectors, name)
        off = _sig_offset(data) - 4
        (length,) = struct.unpack_from("<I", data, off)
        for bad in (length - 1, length + 1, 0, 127, 0xFFFFFFFF):
            patched = _patch(data, off, "<I", bad)
            with pytest.raises(MalformedStructureError):
                Quote.from_bytes(patched)
        # A shorter length with the bytes also removed: the signature data is incomplete.
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(_patch(data, off, "<I", length - 1)[:-1])
        # A longer length with one more byte: the inner structure leaves a trailing byte.
        with pytest.raises(MalformedStructureError, match="trailing"):
            Quote.from_bytes(_patch(data, off, "<I", length + 1) + b"\x00")


def test_qe_auth_data_length_must_match(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, SGX_V3)
    off = _sig_offset(data) + 128 + 384 + 64
    (auth,) = struct.unpack_from("<H", data, off)
    for bad in (auth - 1, auth + 1, 0, 0xFFFF):
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(_patch(data, off, "<H", bad))


def test_certification_data_size_must_match(real_vectors: Path) -> None:
    for name in (SGX_V3, "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin"):
        _, data = _quote(real_vectors, name)
        off = _v3_cert_offset(data)
        (size,) = struct.unpack_from("<I", data, off + 2)
        for bad in (size - 1, size + 1, 0, 0xFFFFFFFF):
            with pytest.raises(MalformedStructureError):
                Quote.from_bytes(_patch(data, off + 2, "<I", bad))


@pytest.mark.parametrize("cert_type", [0, 6, 7, 8, 0x0105, 0xFFFF])
def test_unknown_or_misplaced_certification_data_type_v3(
    real_vectors: Path, cert_type: int
) -> None:
    _, data = _quote(real_vectors, SGX_V3)
    with pytest.raises(MalformedStructureError, match="type"):
        Quote.from_bytes(_patch(data, _v3_cert_offset(data), "<H", cert_type))


def test_v4_certification_data_must_be_type_6(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, TDX_V4)
    outer = _sig_offset(data) + 128
    for outer_type in (0, 1, 4, 5, 7):
        with pytest.raises(MalformedStructureError):
            Quote.from_bytes(_patch(data, outer, "<H", outer_type))
    inner = outer + 6 + 384 + 64
    (auth,) = struct.unpack_from("<H", data, inner)
    inner += 2 + auth
    assert struct.unpack_from("<H", data, inner) == (5,)
    for inner_type in (0, 6, 7):
        with pytest.raises(MalformedStructureError, match="type"):
            Quote.from_bytes(_patch(data, inner, "<H", inner_type))


def test_ppid_certification_data_lengths(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin")
    off = _v3_cert_offset(data)
    element = data[off:]
    assert decode_certification_data(element).to_bytes() == element
    payload = element[6:]
    assert len(payload) == 404
    # Type 3 expects 402 or 404 bytes; type 2 expects 274 or 276.
    for cert_type, bad in ((3, payload[:-1]), (3, payload + b"\x00"), (2, payload), (1, payload)):
        with pytest.raises(MalformedStructureError, match="expected"):
            decode_certification_data(struct.pack("<HI", cert_type, len(bad)) + bad)
    short = decode_certification_data(struct.pack("<HI", 3, 402) + payload[:402])
    assert isinstance(short, PpidCertificationData)
    assert short.pce_id is None
    assert short.to_bytes() == struct.pack("<HI", 3, 402) + payload[:402]
    with pytest.raises(MalformedStructureError, match="trailing"):
        decode_certification_data(element + b"\x00")
    with pytest.raises(MalformedStructureError):
        decode_certification_data(element[:-1])


def test_empty_pck_certificate_payloads_are_rejected() -> None:
    for cert_type in (4, 5):
        with pytest.raises(MalformedStructureError, match="empty"):
            decode_certification_data(struct.pack("<HI", cert_type, 0))
    leaf = decode_certification_data(struct.pack("<HI", 4, 3) + b"abc")
    assert leaf == PckLeafCertificationData(b"abc")


def test_nonzero_reserved_bytes_in_report_bodies_are_rejected(real_vectors: Path) -> None:
    _, data = _quote(real_vectors, SGX_V3)
    isv_reserved = 48 + 96  # REPORTBODY reserved @96
    qe_reserved = _sig_offset(data) + 128 + 262  # QE REPORTBODY reserved @262
    for off in (isv_reserved, qe_reserved):
        patched = bytearray(data)
        patched[off] ^= 1
        with pytest.raises(MalformedStructureError, match="reserved"):
            Quote.from_bytes(bytes(patched))


def test_dataclass_validation() -> None:
    header = QuoteHeader.for_v3(qe_svn=1, pce_svn=2)
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(header, user_data=bytes(19))
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(header, qe_svn=1 << 16)
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(header, version=4, tee_type=0)  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError, match="SGX report body"):
        signed_region(header, _td10())
    v4 = dataclasses.replace(header, version=4, tee_type=TeeType.TDX)
    with pytest.raises(MalformedStructureError, match="cannot carry"):
        signed_region(v4, TdReport15(_td10(), bytes(16), bytes(48)))
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(_td10(), rtmr=(bytes(48),) * 3)  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError):
        qe_report_data(bytes(63), b"")
    with pytest.raises(MalformedStructureError, match="65535"):
        QeReportCertificationData(
            ReportBody(), bytes(64), bytes(0x10000), PckLeafCertificationData(b"x")
        )


# --------------------------------------------------------------------------------------------
# Building quotes


def _td10() -> TdReport10:
    return TdReport10(
        tee_tcb_svn=bytes(range(16)),
        mr_seam=b"\x01" * 48,
        mr_signer_seam=bytes(48),
        seam_attributes=bytes(8),
        td_attributes=b"\x10" + bytes(7),
        xfam=b"\xe7\x02" + bytes(6),
        mr_td=b"\x02" * 48,
        mr_config_id=bytes(48),
        mr_owner=bytes(48),
        mr_owner_config=bytes(48),
        rtmr=(b"\x03" * 48, b"\x04" * 48, b"\x05" * 48, b"\x06" * 48),
        report_data=b"\x07" * 64,
    )


def test_build_quote_v3_signs_and_round_trips(real_vectors: Path) -> None:
    template, _ = _quote(real_vectors, SGX_V3)
    key = ec.derive_private_key(0x1234567, ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    att_key = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    auth = bytes(range(32))
    qe_report = dataclasses.replace(template.qe_report, report_data=qe_report_data(att_key, auth))
    header = QuoteHeader.for_v3(qe_svn=10, pce_svn=15, user_data=b"\xaa" * 20)
    isv = dataclasses.replace(template.isv_report, report_data=b"\x55" * 64)
    message = signed_region(header, isv)
    assert message == header.to_bytes() + isv.to_bytes()
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    quote = build_quote_v3(
        header=header,
        isv_report=isv,
        signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
        attestation_public_key=att_key,
        qe_report=qe_report,
        qe_report_signature=template.qe_report_signature,
        qe_auth_data=auth,
        certification_data=template.certification_data,
    )
    data = quote.to_bytes()
    assert data[:2] == b"\x03\x00" and data[12:28] == INTEL_QE_VENDOR_ID
    assert Quote.from_bytes(data) == quote
    assert quote.signed_region == message
    assert quote.qe_report.report_data == qe_report_data(att_key, auth)
    # dcap-qvl reads what we wrote.
    theirs = dcap_qvl.parse_quote(data)
    assert bytes(theirs.report.report_data) == b"\x55" * 64
    assert bytes(theirs.header.user_data) == b"\xaa" * 20
    with pytest.raises(MalformedStructureError, match="version 3"):
        build_quote_v3(
            header=dataclasses.replace(header, version=4),
            isv_report=isv,
            signature=bytes(64),
            attestation_public_key=att_key,
            qe_report=qe_report,
            qe_report_signature=bytes(64),
            qe_auth_data=b"",
            certification_data=template.certification_data,
        )


@pytest.mark.parametrize("version", [4, 5])
def test_sgx_quote_v4_v5_round_trip(real_vectors: Path, version: int) -> None:
    template, _ = _quote(real_vectors, SGX_V3)
    header = dataclasses.replace(template.header, version=version)
    quote = Quote(header, template.body, template.signature_data)
    data = quote.to_bytes()
    assert Quote.from_bytes(data) == quote
    if version == 5:
        assert struct.unpack_from("<HI", data, 48) == (BodyType.SGX_ENCLAVE_REPORT, 384)
    # The type-6 wrapper is 6 bytes longer than the v3 layout.
    assert len(data) == len(template.to_bytes()) + {4: 6, 5: 12}[version]


def test_tdx_v5_with_td10_body_round_trips(real_vectors: Path) -> None:
    template, _ = _quote(real_vectors, TDX_V5)
    quote = Quote(template.header, _td10(), template.signature_data)
    data = quote.to_bytes()
    assert struct.unpack_from("<HI", data, 48) == (BodyType.TD_REPORT_10, 584)
    assert Quote.from_bytes(data) == quote


def test_signature_data_v3_and_v4_encodings_differ_only_by_wrapper(real_vectors: Path) -> None:
    quote, _ = _quote(real_vectors, SGX_V3)
    v3 = quote.signature_data.to_bytes(3)
    v4 = quote.signature_data.to_bytes(4)
    assert v4[:128] == v3[:128]
    assert v4[128:134] == struct.pack("<HI", 6, len(v3) - 128)
    assert v4[134:] == v3[128:]
    assert EcdsaSignatureData.from_bytes(v4, 4) == EcdsaSignatureData.from_bytes(v3, 3)


# --------------------------------------------------------------------------------------------
# Property: whatever parses re-encodes to the same bytes


_SEEDS = [SGX_V3, TDX_V4, TDX_V5, "fortanix-rust-sgx/dcap-ql/quote_raw_tcb.bin"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=6000), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=6000)),
)
def test_whatever_parses_reencodes_identically(
    real_vectors: Path, seed: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    _, data = _quote(real_vectors, seed)
    mutated = bytearray(data)
    for pos, value in edits:
        mutated[pos % len(mutated)] = value
    blob = bytes(mutated[:cut] if cut is not None else mutated)
    try:
        quote = Quote.from_bytes(blob)
    except MalformedStructureError:
        return
    assert quote.to_bytes() == blob


@settings(max_examples=100, deadline=None)
@given(
    cert_type=st.integers(min_value=0, max_value=8),
    payload=st.binary(min_size=0, max_size=420),
    size_delta=st.sampled_from([0, 0, 0, -1, 1]),
)
def test_random_certification_data_round_trips_or_is_rejected(
    cert_type: int, payload: bytes, size_delta: int
) -> None:
    blob = struct.pack("<HI", cert_type, max(0, len(payload) + size_delta)) + payload
    try:
        cert = decode_certification_data(blob)
    except MalformedStructureError:
        return
    assert cert.to_bytes() == blob
