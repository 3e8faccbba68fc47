"""PCK certificate SGX extension: every real PCK certificate decodes and re-encodes to the same
DER, values agree with dcap-qvl, and every deviation from Intel's shape is rejected."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap._asn1 import Enumerated, Pair, decode_pairs, encode_pairs
from sgx_platform.arch.dcap.pck import (
    SGX_EXTENSION_OID,
    PckTcb,
    PlatformConfiguration,
    SgxExtension,
    SgxType,
    sgx_extension_from_certificate,
)
from sgx_platform.arch.dcap.quote import (
    PckCertChainCertificationData,
    load_pem_certificates,
    parse_quote,
)
from sgx_platform.arch.errors import MalformedStructureError

_QUOTES_WITH_PEM_CHAINS = [
    "phala-dcap-qvl/sgx_quote",
    "phala-dcap-qvl/tdx_quote",
    "phala-dcap-qvl/tdx_quote_outdated",
    "automata-dcap-attestation/sgx-v3-2025-08/quote.bin",
    "automata-dcap-attestation/tdx-v4-2025-06/quote.bin",
    "mobilecoin-attestation/hw_quote.dat",
    "fortanix-rust-sgx/pcs-2020-05/quote.bin",
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin",
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain_corrupted.bin",
]
_PEM_LEAVES = [
    "intel-dcap-sampledata-synthetic/sgx/pckCert.pem",
    "intel-dcap-sampledata-synthetic/tdx/pckCert.pem",
]
_DER_CHAIN_QUOTE = "intel-dcap-sampledata-synthetic/tdx/quote.dat"

# Expected FMSPCs (sets.json / SOURCES.md) and SGX types.
_EXPECTED = {
    "phala-dcap-qvl/sgx_quote": ("00a067110000", SgxType.STANDARD),
    "phala-dcap-qvl/tdx_quote": ("b0c06f000000", SgxType.SCALABLE),
    "phala-dcap-qvl/tdx_quote_outdated": ("90c06f000000", SgxType.SCALABLE),
    "automata-dcap-attestation/sgx-v3-2025-08/quote.bin": ("00606a000000", SgxType.SCALABLE),
    "automata-dcap-attestation/tdx-v4-2025-06/quote.bin": ("00806f050000", SgxType.SCALABLE),
    "mobilecoin-attestation/hw_quote.dat": ("00906ed50000", SgxType.STANDARD),
    "fortanix-rust-sgx/pcs-2020-05/quote.bin": ("00906ea10000", SgxType.STANDARD),
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain.bin": ("00906ea10000", SgxType.STANDARD),
    "fortanix-rust-sgx/dcap-ql/quote_pck_cert_chain_corrupted.bin": (
        "00906ea10000",
        SgxType.STANDARD,
    ),
    "intel-dcap-sampledata-synthetic/sgx/pckCert.pem": ("00707f000000", SgxType.STANDARD),
}


def _split_der(data: bytes) -> list[bytes]:
    """Concatenated DER certificates (the synthetic TDX quote's type-5 data)."""
    out = []
    pos = 0
    while pos < len(data):
        assert data[pos] == 0x30 and data[pos + 1] == 0x82
        size = 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append(data[pos : pos + size])
        pos += size
    return out


def _leaf_certificates(real_vectors: Path) -> dict[str, x509.Certificate]:
    leaves: dict[str, x509.Certificate] = {}
    for name in _QUOTES_WITH_PEM_CHAINS:
        quote = parse_quote((real_vectors / name).read_bytes(), allow_trailing_zero_padding=True)
        cert = quote.certification_data
        assert isinstance(cert, PckCertChainCertificationData)
        leaves[name] = cert.ordered_chain()[0]
    for name in _PEM_LEAVES:
        (leaves[name],) = load_pem_certificates((real_vectors / name).read_bytes())
    quote = parse_quote((real_vectors / _DER_CHAIN_QUOTE).read_bytes())
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    leaves[_DER_CHAIN_QUOTE] = x509.load_der_x509_certificate(_split_der(cert.data)[-1])
    return leaves


def _raw_extension(cert: x509.Certificate) -> bytes:
    value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


def test_every_real_pck_certificate_round_trips(real_vectors: Path) -> None:
    leaves = _leaf_certificates(real_vectors)
    assert len(leaves) == len(_QUOTES_WITH_PEM_CHAINS) + len(_PEM_LEAVES) + 1
    for name, cert in leaves.items():
        raw = _raw_extension(cert)
        ext = sgx_extension_from_certificate(cert)
        assert ext.to_der() == raw, name
        assert SgxExtension.from_der(raw) == ext
        if name in _EXPECTED:
            fmspc, sgx_type = _EXPECTED[name]
            assert (ext.fmspc.hex(), ext.sgx_type) == (fmspc, sgx_type), name
        # Platform CA certificates carry the platform fields; Processor CA ones do not.
        platform_ca = "Platform" in cert.issuer.rfc4514_string()
        assert (ext.platform_instance_id is not None) == platform_ca, name
        assert (ext.configuration is not None) == platform_ca, name


def test_ca_certificates_of_real_chains_round_trip_too(real_vectors: Path) -> None:
    """Only leaves carry the extension; the CA certificates must say so clearly."""
    quote = parse_quote((real_vectors / "phala-dcap-qvl/sgx_quote").read_bytes())
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    for ca in cert.ordered_chain()[1:]:
        with pytest.raises(MalformedStructureError, match="no SGX extension"):
            sgx_extension_from_certificate(ca)


@pytest.mark.parametrize("name", _QUOTES_WITH_PEM_CHAINS + _PEM_LEAVES)
def test_extension_matches_dcap_qvl(real_vectors: Path, name: str) -> None:
    cert = _leaf_certificates(real_vectors)[name]
    ours = sgx_extension_from_certificate(cert)
    theirs = dcap_qvl.parse_pck_extension_from_pem(cert.public_bytes(serialization.Encoding.PEM))
    assert bytes(theirs.ppid) == ours.ppid
    assert bytes(theirs.cpu_svn) == ours.tcb.cpusvn
    assert theirs.pce_svn == ours.tcb.pcesvn
    assert bytes(theirs.pce_id) == ours.pce_id
    assert bytes(theirs.fmspc) == ours.fmspc
    assert theirs.sgx_type == int(ours.sgx_type)
    instance = theirs.platform_instance_id
    assert (bytes(instance) if instance is not None else None) == ours.platform_instance_id
    for i, svn in enumerate(ours.tcb.components, start=1):
        raw = theirs.get_value(f"{SGX_EXTENSION_OID}.2.{i}")
        assert raw is not None
        assert int.from_bytes(bytes(raw), "big") == svn


def test_real_component_svns_spell_out_cpusvn(real_vectors: Path) -> None:
    for name, cert in _leaf_certificates(real_vectors).items():
        ext = sgx_extension_from_certificate(cert)
        assert bytes(ext.tcb.components) == ext.tcb.cpusvn, name


def test_quote_pce_svn_is_not_below_the_certificate(real_vectors: Path) -> None:
    quote = parse_quote((real_vectors / "phala-dcap-qvl/sgx_quote").read_bytes())
    cert = quote.certification_data
    assert isinstance(cert, PckCertChainCertificationData)
    ext = sgx_extension_from_certificate(cert.ordered_chain()[0])
    assert (quote.header.pce_svn, ext.tcb.pcesvn) == (15, 13)


# --------------------------------------------------------------------------------------------
# Negative: the shape is enforced


def _real_tree(real_vectors: Path, name: str) -> list[Pair]:
    raw = _raw_extension(_leaf_certificates(real_vectors)[name])
    return list(decode_pairs(raw, "test"))


def _expect_rejected(tree: list[Pair] | tuple[Pair, ...], match: str | None = None) -> None:
    with pytest.raises(MalformedStructureError, match=match):
        SgxExtension.from_der(encode_pairs(tree))


def test_missing_or_reordered_or_unknown_items(real_vectors: Path) -> None:
    tree = _real_tree(real_vectors, "phala-dcap-qvl/tdx_quote")
    assert [oid.rsplit(".", 1)[1] for oid, _ in tree] == ["1", "2", "3", "4", "5", "6", "7"]
    for i in range(5):  # every mandatory item missing in turn
        _expect_rejected(tree[:i] + tree[i + 1 :], "expected")
    swapped = [tree[0], tree[1], tree[3], tree[2], *tree[4:]]
    _expect_rejected(swapped, "expected")
    _expect_rejected([*tree, (f"{SGX_EXTENSION_OID}.8", b"\x00")], "unexpected")
    _expect_rejected([*tree[:5], tree[6], tree[5]], "unexpected")  # .7 before .6
    _expect_rejected([*tree, tree[6]], "unexpected")  # duplicate
    # Optional items may be absent.
    assert SgxExtension.from_der(encode_pairs(tree[:5])).platform_instance_id is None
    assert SgxExtension.from_der(encode_pairs(tree[:6])).configuration is None
    assert SgxExtension.from_der(encode_pairs([*tree[:5], tree[6]])).configuration is not None


def test_wrong_types_and_sizes(real_vectors: Path) -> None:
    tree = _real_tree(real_vectors, "phala-dcap-qvl/tdx_quote")
    tcb, config = tree[1], tree[6]

    def with_item(i: int, value: object) -> list[Pair]:
        out = list(tree)
        out[i] = (tree[i][0], value)  # type: ignore[assignment]
        return out

    _expect_rejected(with_item(0, b"\x00" * 15), "OCTET STRING")
    _expect_rejected(with_item(0, 5), "OCTET STRING")
    _expect_rejected(with_item(2, b"\x00" * 3), "OCTET STRING")
    _expect_rejected(with_item(3, b"\x00" * 5), "OCTET STRING")
    _expect_rejected(with_item(4, 1), "ENUMERATED")  # INTEGER instead of ENUMERATED
    _expect_rejected(with_item(4, Enumerated(3)), "unknown SGX type")
    _expect_rejected(with_item(5, b"\x00" * 17), "OCTET STRING")
    _expect_rejected(with_item(1, b"\x00"), "SEQUENCE")

    components = list(tcb[1])  # type: ignore[arg-type]
    for bad in (256, -1, True, b"\x01"):
        edited = list(components)
        edited[0] = (components[0][0], bad)
        _expect_rejected(with_item(1, tuple(edited)))
    edited = list(components)
    edited[16] = (components[16][0], 65536)  # PCESVN
    _expect_rejected(with_item(1, tuple(edited)), "INTEGER")
    edited = list(components)
    edited[17] = (components[17][0], b"\x00" * 15)  # CPUSVN
    _expect_rejected(with_item(1, tuple(edited)), "OCTET STRING")
    _expect_rejected(with_item(1, tuple(components[:17])), "expected")
    _expect_rejected(with_item(1, (*components, components[0])), "unexpected")

    flags = list(config[1])  # type: ignore[arg-type]
    _expect_rejected(with_item(6, ((flags[0][0], 1),)), "BOOLEAN")
    _expect_rejected(with_item(6, (flags[1], flags[0])), "unexpected")


def test_non_der_and_trailing_bytes_are_rejected(real_vectors: Path) -> None:
    raw = _raw_extension(_leaf_certificates(real_vectors)["phala-dcap-qvl/tdx_quote"])
    with pytest.raises(MalformedStructureError):
        SgxExtension.from_der(raw + b"\x00")
    with pytest.raises(MalformedStructureError):
        SgxExtension.from_der(raw[:-1])
    with pytest.raises(MalformedStructureError):
        SgxExtension.from_der(b"")
    # BOOLEAN TRUE as 0x01 is valid BER but not DER.
    assert raw.endswith(b"\x01\x01\xff")
    with pytest.raises(MalformedStructureError, match="DER"):
        SgxExtension.from_der(raw[:-1] + b"\x01")
    # A length in long form where short form is required.
    short = encode_pairs([(f"{SGX_EXTENSION_OID}.1", b"\x00" * 16)])
    assert short[0] == 0x30 and short[1] < 0x80
    with pytest.raises(MalformedStructureError):
        SgxExtension.from_der(b"\x30\x81" + short[1:])
    with pytest.raises(MalformedStructureError):
        SgxExtension.from_der("not bytes")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=600),
    value=st.integers(min_value=0, max_value=255),
)
def test_mutated_der_parses_only_if_it_reencodes(position: int, value: int) -> None:
    tree = [
        (f"{SGX_EXTENSION_OID}.1", b"\x11" * 16),
        (
            f"{SGX_EXTENSION_OID}.2",
            (
                *((f"{SGX_EXTENSION_OID}.2.{i}", i) for i in range(1, 17)),
                (f"{SGX_EXTENSION_OID}.2.17", 200),
                (f"{SGX_EXTENSION_OID}.2.18", bytes(16)),
            ),
        ),
        (f"{SGX_EXTENSION_OID}.3", b"\x00\x00"),
        (f"{SGX_EXTENSION_OID}.4", b"\x00\x90\x6e\xa1\x00\x00"),
        (f"{SGX_EXTENSION_OID}.5", Enumerated(1)),
        (f"{SGX_EXTENSION_OID}.6", b"\x22" * 16),
        (f"{SGX_EXTENSION_OID}.7", ((f"{SGX_EXTENSION_OID}.7.3", False),)),
    ]
    der = bytearray(encode_pairs(tree))  # type: ignore[arg-type]
    der[position % len(der)] = value
    try:
        ext = SgxExtension.from_der(bytes(der))
    except MalformedStructureError:
        return
    assert ext.to_der() == bytes(der)


# --------------------------------------------------------------------------------------------
# Building


_extensions = st.builds(
    SgxExtension,
    ppid=st.binary(min_size=16, max_size=16),
    tcb=st.builds(
        PckTcb,
        components=st.tuples(*[st.integers(0, 255)] * 16),
        pcesvn=st.integers(0, 0xFFFF),
        cpusvn=st.binary(min_size=16, max_size=16),
    ),
    pce_id=st.binary(min_size=2, max_size=2),
    fmspc=st.binary(min_size=6, max_size=6),
    sgx_type=st.sampled_from(SgxType),
    platform_instance_id=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
    configuration=st.one_of(
        st.none(),
        st.builds(
            PlatformConfiguration,
            dynamic_platform=st.one_of(st.none(), st.booleans()),
            cached_keys=st.one_of(st.none(), st.booleans()),
            smt_enabled=st.one_of(st.none(), st.booleans()),
        ),
    ),
)


@settings(max_examples=100, deadline=None)
@given(ext=_extensions)
def test_built_extensions_round_trip(ext: SgxExtension) -> None:
    assert SgxExtension.from_der(ext.to_der()) == ext


def test_extension_in_a_generated_certificate_reads_back_in_dcap_qvl() -> None:
    ext = SgxExtension(
        ppid=bytes(range(16)),
        tcb=PckTcb(
            tuple([3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8),
            11,
            bytes([3, 3, 2, 2, 4, 1, 0, 5]) + bytes(8),
        ),
        pce_id=b"\x00\x00",
        fmspc=bytes.fromhex("00906ed50000"),
        sgx_type=SgxType.SCALABLE,
        platform_instance_id=b"\x42" * 16,
        configuration=PlatformConfiguration(dynamic_platform=True, smt_enabled=False),
    )
    key = ec.derive_private_key(7, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX PCK Certificate")])
    when = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(when)
        .not_valid_after(when + datetime.timedelta(days=1))
        .add_extension(ext.to_x509_extension(), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert sgx_extension_from_certificate(cert) == ext
    theirs = dcap_qvl.parse_pck_extension_from_pem(cert.public_bytes(serialization.Encoding.PEM))
    assert bytes(theirs.fmspc) == ext.fmspc
    assert bytes(theirs.ppid) == ext.ppid
    assert theirs.pce_svn == 11
    assert theirs.sgx_type == 1
    assert bytes(theirs.platform_instance_id) == b"\x42" * 16


def test_dataclass_validation() -> None:
    tcb = PckTcb((0,) * 16, 0, bytes(16))
    with pytest.raises(MalformedStructureError):
        PckTcb((0,) * 15, 0, bytes(16))
    with pytest.raises(MalformedStructureError):
        PckTcb((256,) + (0,) * 15, 0, bytes(16))
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(tcb, cpusvn=bytes(15))
    ext = SgxExtension(bytes(16), tcb, bytes(2), bytes(6), SgxType.STANDARD)
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(ext, fmspc=bytes(5))
    with pytest.raises(MalformedStructureError):
        dataclasses.replace(ext, sgx_type=1)  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError):
        PlatformConfiguration(dynamic_platform=1)  # type: ignore[arg-type]
