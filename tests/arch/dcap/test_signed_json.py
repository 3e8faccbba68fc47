"""PCS response bodies split into the exact signed text and back; the strict JSON building
blocks (hex spelling, timestamps, duplicate keys, key order)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.dcap.ecdsa import der_to_raw_rs, raw_rs_to_der
from sgx_platform.arch.dcap.signed_json import (
    HexBytes,
    ObjectReader,
    format_timestamp,
    join_signed_response,
    loads_strict,
    parse_timestamp,
    split_signed_response,
    write_object,
)
from sgx_platform.arch.errors import MalformedStructureError


def test_every_signed_document_in_the_vectors_is_covered(
    real_vectors: Path, all_signed_json_files: set[str]
) -> None:
    found = set()
    for path in real_vectors.rglob("*"):
        if path.suffix in (".json", ".tcb", ".id") and path.name != "sets.json":
            found.add(path.relative_to(real_vectors).as_posix())
    assert found == all_signed_json_files


def test_split_and_join_are_exact(pcs_body: tuple[str, str, str]) -> None:
    _, field, body = pcs_body
    text, signature = split_signed_response(body, field)
    assert len(signature) == 64
    prefix = f'{{"{field}":'
    assert body.startswith(prefix + text)
    assert body == f'{prefix}{text},"signature":"{signature.hex()}"}}'
    assert join_signed_response(field, text, signature) == body
    # Bytes in, same answer.
    assert split_signed_response(body.encode(), field) == (text, signature)
    # The other field name is refused.
    other = "enclaveIdentity" if field == "tcbInfo" else "tcbInfo"
    with pytest.raises(MalformedStructureError, match="expected exactly"):
        split_signed_response(body, other)


def test_signatures_of_every_real_document_verify_over_the_exact_text(
    signed_texts: list[Any], real_vectors: Path
) -> None:
    """The signed bytes are the text exactly as in the body: Intel's signatures verify."""
    assert len(signed_texts) == 11 + 10 + 8
    for doc in signed_texts:
        if doc.source.endswith((".json",)) and "#" not in doc.source:
            body = (real_vectors / doc.source).read_text()
            text, signature = split_signed_response(body, doc.kind)
            assert text == doc.text, doc.source
        elif doc.source.endswith((".tcb", ".id")):
            raw = json.loads((real_vectors / doc.source).read_text())
            signature = der_to_raw_rs(bytes(raw["signature"]))
        else:
            name, part = doc.source.split("#")
            raw = json.loads((real_vectors / name).read_text())
            signature = bytes.fromhex(raw[f"{part}_signature"])
        doc.signer.verify(raw_rs_to_der(signature), doc.text.encode(), ec.ECDSA(hashes.SHA256()))
        # One changed character breaks it: the signature really covers these bytes.
        tampered = doc.text.replace('"version":', '"version": ', 1)
        with pytest.raises(InvalidSignature):
            doc.signer.verify(
                raw_rs_to_der(signature), tampered.encode(), ec.ECDSA(hashes.SHA256())
            )


def test_split_keeps_whitespace_inside_the_value_and_tolerates_it_outside() -> None:
    sig = "ab" * 64
    body = f' {{ "signature" : "{sig}" ,\n "tcbInfo" : {{ "a" : [1, 2] }} }} '
    text, signature = split_signed_response(body, "tcbInfo")
    assert text == '{ "a" : [1, 2] }'
    assert signature == bytes.fromhex(sig)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[]",
        '{"tcbInfo":{}}',
        '{"signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":{},"signature":"' + "00" * 64 + '","x":1}',
        '{"tcbInfo":{},"signature":"' + "00" * 63 + '"}',
        '{"tcbInfo":{},"signature":"' + "00" * 65 + '"}',
        '{"tcbInfo":{},"signature":"' + "zz" * 64 + '"}',
        '{"tcbInfo":{},"signature":' + str([0] * 64) + "}",
        '{"tcbInfo":[],"signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":"{}","signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":{},"tcbInfo":{},"signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":{"a":1,"a":2},"signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":{},"signature":"' + "00" * 64 + '"} x',
        '{"tcbInfo":{},"signature":"' + "00" * 64 + '"',
        '{"tcbInfo":{"n":1.5},"signature":"' + "00" * 64 + '"}',
        '{"tcbInfo":{"n":NaN},"signature":"' + "00" * 64 + '"}',
    ],
)
def test_split_rejects_malformed_bodies(body: str) -> None:
    with pytest.raises(MalformedStructureError):
        split_signed_response(body, "tcbInfo")


def test_split_rejects_non_utf8() -> None:
    with pytest.raises(MalformedStructureError, match="UTF-8"):
        split_signed_response(b'{"tcbInfo":{"a":"\xff"},"signature":"' + b"00" * 64 + b'"}', "x")


def test_join_rejects_bad_signature() -> None:
    with pytest.raises(MalformedStructureError):
        join_signed_response("tcbInfo", "{}", bytes(63))


def test_hex_bytes_keep_their_spelling() -> None:
    lower = HexBytes.from_hex("00906ea10000", 6, "fmspc")
    upper = HexBytes.from_hex("00906EA10000", 6, "fmspc")
    assert lower == upper == bytes.fromhex("00906ea10000")
    assert hash(lower) == hash(upper)
    assert (lower.text, upper.text) == ("00906ea10000", "00906EA10000")
    assert HexBytes(b"\xab\x01").text == "AB01"
    assert HexBytes(b"\xab\x01", "aB01").text == "aB01"
    for bad in ("00906ea1000", "00906ea100000", "00906ea1000g", " 00906ea1000", 906, None):
        with pytest.raises(MalformedStructureError):
            HexBytes.from_hex(bad, 6, "fmspc")
    with pytest.raises(MalformedStructureError):
        HexBytes(b"\xab\x01", "ab02")
    with pytest.raises(MalformedStructureError):
        HexBytes(b"\xab\x01", "ab0")


def test_timestamps() -> None:
    when = parse_timestamp("2025-06-19T10:56:11Z", "t")
    assert when == datetime.datetime(2025, 6, 19, 10, 56, 11, tzinfo=datetime.UTC)
    assert format_timestamp(when) == "2025-06-19T10:56:11Z"
    for bad in (
        "2025-06-19T10:56:11.000Z",
        "2025-06-19T10:56:11+00:00",
        "2025-06-19 10:56:11Z",
        "2025-02-30T00:00:00Z",
        "2025-06-19T24:00:00Z",
        "2025-06-19T10:56:11z",
        20250619,
    ):
        with pytest.raises(MalformedStructureError):
            parse_timestamp(bad, "t")
    with pytest.raises(MalformedStructureError):
        format_timestamp(datetime.datetime(2025, 1, 1))  # naive
    with pytest.raises(MalformedStructureError):
        format_timestamp(when.replace(microsecond=1))
    with pytest.raises(MalformedStructureError):
        format_timestamp(when.astimezone(datetime.timezone(datetime.timedelta(hours=1))))


def test_loads_strict() -> None:
    assert loads_strict('{"a":[1,"x",true,null]}', "t") == {"a": [1, "x", True, None]}
    for bad in ('{"a":1,"a":1}', '{"a":1.0}', '{"a":1e3}', "[Infinity]", "[-Infinity]", "{", ""):
        with pytest.raises(MalformedStructureError):
            loads_strict(bad, "t")
    with pytest.raises(MalformedStructureError):
        loads_strict("[" * 100_000 + "]" * 100_000, "t")
    with pytest.raises(MalformedStructureError):
        loads_strict(b"\xff", "t")


def test_object_reader_is_strict() -> None:
    r = ObjectReader({"n": 5, "s": "x", "b": True, "l": ["a"], "o": {}}, "t")
    assert r.key_order == ("n", "s", "b", "l", "o")
    assert r.integer("n", 8) == 5
    with pytest.raises(MalformedStructureError):
        r.integer("n", 2)
    with pytest.raises(MalformedStructureError):
        r.integer("b", 8)  # a bool is not an integer
    with pytest.raises(MalformedStructureError):
        r.integer("s", 8)
    with pytest.raises(MalformedStructureError):
        r.string("n")
    with pytest.raises(MalformedStructureError, match="missing"):
        r.string("absent")
    assert r.strings("l") == ("a",)
    with pytest.raises(MalformedStructureError, match="unknown keys"):
        r.finish()
    r.object("o").finish()
    r.finish()
    with pytest.raises(MalformedStructureError):
        ObjectReader([], "t")


def test_write_object_honours_a_matching_key_order_only() -> None:
    members = [("a", "1"), ("b", '"x"')]
    assert write_object(members) == '{"a":1,"b":"x"}'
    assert write_object(members, ("b", "a")) == '{"b":"x","a":1}'
    assert write_object(members, ("b", "a", "c")) == '{"a":1,"b":"x"}'
    assert write_object(members, ("a",)) == '{"a":1,"b":"x"}'
