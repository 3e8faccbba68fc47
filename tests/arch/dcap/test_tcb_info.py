"""TCB Info v2/v3: every real document parses from its exact text, agrees field by field with a
plain ``json`` reading, and serializes back to the same text; malformed documents are rejected."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap.ecdsa import der_to_raw_rs, raw_rs_to_der
from sgx_platform.arch.dcap.signed_json import HexBytes
from sgx_platform.arch.dcap.tcb_info import (
    EnclaveTcbLevel,
    SignedTcbInfo,
    Tcb,
    TcbComponent,
    TcbInfo,
    TcbInfoId,
    TcbLevel,
    TcbStatus,
    TdxModule,
    TdxModuleIdentity,
)
from sgx_platform.arch.errors import MalformedStructureError


def _tcb_texts(signed_texts: list[Any]) -> list[Any]:
    return [d for d in signed_texts if d.kind == "tcbInfo"]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _check_levels_against_raw(levels: Any, raw_levels: list[dict[str, Any]], v2: bool) -> None:
    assert len(levels) == len(raw_levels)
    for level, raw in zip(levels, raw_levels, strict=True):
        assert level.tcb_status.value == raw["tcbStatus"]
        assert level.tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ") == raw["tcbDate"]
        assert level.advisory_ids == tuple(raw.get("advisoryIDs", ()))
        tcb = raw["tcb"]
        assert level.tcb.pcesvn == tcb["pcesvn"]
        if v2:
            assert level.tcb.sgx_svns == tuple(tcb[f"sgxtcbcomp{i:02d}svn"] for i in range(1, 17))
            continue
        assert level.tcb.sgx_svns == tuple(c["svn"] for c in tcb["sgxtcbcomponents"])
        for ours, theirs in zip(level.tcb.sgx_components, tcb["sgxtcbcomponents"], strict=True):
            assert (ours.category, ours.type) == (theirs.get("category"), theirs.get("type"))
        if "tdxtcbcomponents" in tcb:
            assert level.tcb.tdx_svns == tuple(c["svn"] for c in tcb["tdxtcbcomponents"])
        else:
            assert level.tcb.tdx_components is None


def test_every_real_tcb_info_round_trips_and_matches_plain_json(
    signed_texts: list[Any],
) -> None:
    docs = _tcb_texts(signed_texts)
    assert len(docs) == 5 + 6 + 4
    versions = set()
    for doc in docs:
        info = TcbInfo.from_json(doc.text)
        assert info.to_json() == doc.text, doc.source
        assert TcbInfo.from_json(doc.text.encode()) == info
        raw = json.loads(doc.text)
        versions.add((raw["version"], raw.get("id")))
        assert info.version == raw["version"]
        assert (info.id.value if info.id else None) == raw.get("id")
        assert info.fmspc == bytes.fromhex(raw["fmspc"]) and info.fmspc.text == raw["fmspc"]
        assert info.pce_id == bytes.fromhex(raw["pceId"])
        assert info.tcb_type == raw["tcbType"]
        assert info.tcb_evaluation_data_number == raw["tcbEvaluationDataNumber"]
        assert info.issue_date.strftime("%Y-%m-%dT%H:%M:%SZ") == raw["issueDate"]
        assert info.next_update.strftime("%Y-%m-%dT%H:%M:%SZ") == raw["nextUpdate"]
        _check_levels_against_raw(info.tcb_levels, raw["tcbLevels"], raw["version"] == 2)
        if "tdxModule" in raw:
            assert info.tdx_module is not None
            assert info.tdx_module.mrsigner == bytes.fromhex(raw["tdxModule"]["mrsigner"])
        if "tdxModuleIdentities" in raw:
            assert info.tdx_module_identities is not None
            for ours, theirs in zip(
                info.tdx_module_identities, raw["tdxModuleIdentities"], strict=True
            ):
                assert ours.id == theirs["id"]
                assert [lv.isvsvn for lv in ours.tcb_levels] == [
                    lv["tcb"]["isvsvn"] for lv in theirs["tcbLevels"]
                ]
    assert versions == {(2, None), (3, "SGX"), (3, "TDX")}


def test_known_values(real_vectors: Path) -> None:
    def load(name: str) -> TcbInfo:
        raw = json.loads((real_vectors / name).read_text())
        return TcbInfo.from_json(raw["raw_tcb_info"])

    for n in (17, 18, 19):
        info = load(f"fortanix-rust-sgx/collateral-2025/00606a000000-{n}.tcb")
        assert info.tcb_evaluation_data_number == n
        assert info.fmspc == bytes.fromhex("00606a000000")
    v2 = load("fortanix-rust-sgx/pcs-2020-05/00906ea10000.tcb")
    assert (v2.version, v2.id, v2.fmspc.text) == (2, None, "00906ea10000")
    assert v2.tcb_levels[0].tcb_status is TcbStatus.SW_HARDENING_NEEDED
    assert v2.tcb_levels[0].tcb.sgx_svns[:7] == (14, 14, 2, 4, 1, 128, 7)
    assert v2.tcb_levels[0].tcb.pcesvn == 10

    body = real_vectors / "automata-dcap-attestation/tdx-v4-2025-06/tcbinfo_00806f050000.json"
    signed = SignedTcbInfo.from_response_body(body.read_text())
    tdx = signed.tcb_info
    assert tdx.id is TcbInfoId.TDX
    assert tdx.tdx_module is not None and tdx.tdx_module_identities is not None
    assert {i.id for i in tdx.tdx_module_identities} == {"TDX_01", "TDX_03"}
    assert all(level.tcb.tdx_components is not None for level in tdx.tcb_levels)


def test_signed_tcb_info_round_trips_response_bodies(
    pcs_body_texts: list[tuple[str, str, str]],
) -> None:
    bodies = [body for _, field, body in pcs_body_texts if field == "tcbInfo"]
    assert len(bodies) == 5
    for body in bodies:
        signed = SignedTcbInfo.from_response_body(body)
        assert signed.to_response_body() == body
        assert signed.signed_bytes == signed.body_text.encode()
        assert signed.tcb_info.to_json() == signed.body_text


def test_fortanix_signatures_match_the_model(real_vectors: Path) -> None:
    raw = json.loads(
        (real_vectors / "fortanix-rust-sgx/collateral-2025/00606a000000-19.tcb").read_text()
    )
    signed = SignedTcbInfo(raw["raw_tcb_info"], der_to_raw_rs(bytes(raw["signature"])))
    assert list(raw_rs_to_der(signed.signature)) == raw["signature"]


# --------------------------------------------------------------------------------------------
# Negative


def _sgx_v3(signed_texts: list[Any]) -> dict[str, Any]:
    (doc,) = [
        d
        for d in signed_texts
        if d.source == "automata-dcap-attestation/sgx-v3-2025-08/tcbinfo_00606a000000.json"
    ]
    raw = json.loads(doc.text)
    assert _compact(raw) == doc.text  # mutations below change only what they mean to
    return dict(raw)


def _tdx_v3(signed_texts: list[Any]) -> dict[str, Any]:
    (doc,) = [
        d
        for d in signed_texts
        if d.source == "automata-dcap-attestation/tdx-v4-2025-06/tcbinfo_00806f050000.json"
    ]
    return dict(json.loads(doc.text))


def _v2(signed_texts: list[Any]) -> dict[str, Any]:
    (doc,) = [d for d in signed_texts if d.source.endswith("00906ea10000.tcb")]
    return dict(json.loads(doc.text))


def _rejects(doc: Any, match: str | None = None) -> None:
    with pytest.raises(MalformedStructureError, match=match):
        TcbInfo.from_json(_compact(doc))


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", "null", '"x"', "{}", '{"version":3}', "{'version':3}"],
)
def test_malformed_text(text: str) -> None:
    with pytest.raises(MalformedStructureError):
        TcbInfo.from_json(text)


def test_missing_and_unknown_keys(signed_texts: list[Any]) -> None:
    doc = _sgx_v3(signed_texts)
    for key in doc:
        broken = {k: v for k, v in doc.items() if k != key}
        _rejects(broken)
    _rejects({**doc, "extra": 1}, "unknown keys")
    level = copy.deepcopy(doc)
    level["tcbLevels"][0]["extra"] = "x"
    _rejects(level, "unknown keys")
    level = copy.deepcopy(doc)
    del level["tcbLevels"][0]["tcbStatus"]
    _rejects(level, "missing")
    level = copy.deepcopy(doc)
    level["tcbLevels"][0]["tcb"]["sgxtcbcomponents"][0]["x"] = 1
    _rejects(level, "unknown keys")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", "3"),
        ("version", 3.0),
        ("version", True),
        ("version", 1),
        ("version", 4),
        ("id", "sgx"),
        ("id", "TDX"),  # TDX without tdxModule / tdxtcbcomponents
        ("id", 3),
        ("fmspc", "00606a00000"),
        ("fmspc", "00606a00000g"),
        ("fmspc", 0x00606A000000),
        ("pceId", "000"),
        ("tcbType", -1),
        ("tcbType", None),
        ("tcbEvaluationDataNumber", 1 << 32),
        ("tcbEvaluationDataNumber", "17"),
        ("issueDate", "2025-08-15T00:00:00.000Z"),
        ("issueDate", "2025-08-15"),
        ("nextUpdate", 1755216000),
        ("tcbLevels", []),
        ("tcbLevels", {}),
        ("tdxModule", {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}),
    ],
)
def test_wrong_values(signed_texts: list[Any], key: str, value: Any) -> None:
    _rejects({**_sgx_v3(signed_texts), key: value})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tcbStatus",), "upToDate"),
        (("tcbStatus",), "Unknown"),
        (("tcbDate",), "yesterday"),
        (("advisoryIDs",), "INTEL-SA-00615"),
        (("advisoryIDs",), [615]),
        (("tcb", "pcesvn"), 1 << 16),
        (("tcb", "pcesvn"), -1),
        (("tcb", "sgxtcbcomponents"), [{"svn": 1}] * 15),
        (("tcb", "sgxtcbcomponents"), [{"svn": 1}] * 17),
        (("tcb", "sgxtcbcomponents"), [{"svn": "1"}] * 16),
        (("tcb", "sgxtcbcomponents"), [{"svn": 1, "category": 5}] * 16),
        (("tcb", "tdxtcbcomponents"), [{"svn": 1}] * 16),  # TDX parts in an SGX document
        (("tcb",), {"sgxtcbcomp01svn": 1}),
    ],
)
def test_wrong_level_values(signed_texts: list[Any], path: tuple[str, ...], value: Any) -> None:
    doc = copy.deepcopy(_sgx_v3(signed_texts))
    target = doc["tcbLevels"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _rejects(doc)


def test_tdx_rules(signed_texts: list[Any]) -> None:
    doc = _tdx_v3(signed_texts)
    TcbInfo.from_json(_compact(doc))
    _rejects({k: v for k, v in doc.items() if k != "tdxModule"})
    no_tdx_components = copy.deepcopy(doc)
    del no_tdx_components["tcbLevels"][0]["tcb"]["tdxtcbcomponents"]
    _rejects(no_tdx_components, "tdxtcbcomponents")
    _rejects({**doc, "tdxModule": {**doc["tdxModule"], "mrsigner": "00" * 32}})
    _rejects({**doc, "tdxModuleIdentities": [{"id": "TDX_01"}]})
    # Without tdxModuleIdentities (older TDX documents) it is fine.
    TcbInfo.from_json(_compact({k: v for k, v in doc.items() if k != "tdxModuleIdentities"}))


def test_v2_rules(signed_texts: list[Any]) -> None:
    doc = _v2(signed_texts)
    TcbInfo.from_json(_compact(doc))
    _rejects({"id": "SGX", **doc}, "unknown keys")
    bad = copy.deepcopy(doc)
    bad["tcbLevels"][0]["tcb"]["sgxtcbcomponents"] = [{"svn": 1}] * 16
    _rejects(bad)
    bad = copy.deepcopy(doc)
    del bad["tcbLevels"][0]["tcb"]["sgxtcbcomp16svn"]
    _rejects(bad, "missing")


def test_non_canonical_text_is_rejected(signed_texts: list[Any]) -> None:
    doc = _sgx_v3(signed_texts)
    text = _compact(doc)
    TcbInfo.from_json(text)
    for variant in (
        json.dumps(doc),  # spaces after separators
        json.dumps(doc, indent=1),
        text + "\n",
        " " + text,
        text.replace('"fmspc"', '"\\u0066mspc"'),
        text.replace('"OS/VMM"', '"OS\\/VMM"'),
    ):
        assert variant != text
        with pytest.raises(MalformedStructureError, match="compact JSON form"):
            TcbInfo.from_json(variant)
    with pytest.raises(MalformedStructureError, match="duplicate"):
        TcbInfo.from_json(text[:-1] + ',"version":3}')


def test_signed_tcb_info_checks() -> None:
    with pytest.raises(MalformedStructureError):
        SignedTcbInfo("{}", bytes(64))
    with pytest.raises(MalformedStructureError):
        SignedTcbInfo.from_response_body('{"enclaveIdentity":{},"signature":"' + "0" * 128 + '"}')


# --------------------------------------------------------------------------------------------
# Building, key order, hex spelling


def _when(day: int) -> datetime.datetime:
    return datetime.datetime(2025, 6, day, tzinfo=datetime.UTC)


def _built_sgx() -> TcbInfo:
    components = tuple(TcbComponent(svn=i, category="BIOS" if i < 2 else None) for i in range(16))
    return TcbInfo(
        id=TcbInfoId.SGX,
        version=3,
        issue_date=_when(1),
        next_update=_when(30),
        fmspc=bytes.fromhex("00906ed50000"),  # type: ignore[arg-type]
        pce_id=b"\x00\x00",  # type: ignore[arg-type]
        tcb_type=0,
        tcb_evaluation_data_number=17,
        tcb_levels=(
            TcbLevel(Tcb(components, 13), _when(1), TcbStatus.UP_TO_DATE),
            TcbLevel(Tcb(components, 5), _when(2), TcbStatus.OUT_OF_DATE, ("INTEL-SA-00615",)),
        ),
    )


def test_built_documents_use_intel_order_and_upper_case() -> None:
    info = _built_sgx()
    text = info.to_json()
    assert text.startswith(
        '{"id":"SGX","version":3,"issueDate":"2025-06-01T00:00:00Z",'
        '"nextUpdate":"2025-06-30T00:00:00Z","fmspc":"00906ED50000","pceId":"0000",'
        '"tcbType":0,"tcbEvaluationDataNumber":17,"tcbLevels":[{"tcb":{"sgxtcbcomponents":'
        '[{"svn":0,"category":"BIOS"},'
    )
    assert '"tcbStatus":"UpToDate"}' in text  # no advisoryIDs when there are none
    assert '"advisoryIDs":["INTEL-SA-00615"]' in text
    assert TcbInfo.from_json(text) == info
    assert isinstance(info.fmspc, HexBytes)


def test_key_order_and_spelling_are_not_part_of_equality(signed_texts: list[Any]) -> None:
    (doc,) = [
        d
        for d in signed_texts
        if d.source.endswith("intel-dcap-sampledata-synthetic/tdx/tcbInfo.json")
    ]
    parsed = TcbInfo.from_json(doc.text)
    assert not doc.text.startswith('{"id":"TDX","version"')  # Intel's sample has its own order
    canonical = dataclasses.replace(parsed, key_order=())
    assert canonical == parsed
    assert canonical.to_json() != doc.text
    assert canonical.to_json().startswith('{"id":"TDX","version":3,')
    assert TcbInfo.from_json(canonical.to_json()) == parsed
    # An empty advisory list is written only where the recorded key order has the key.
    level = parsed.tcb_levels[0]
    assert "advisoryIDs" in level.key_order
    kept = dataclasses.replace(level, advisory_ids=())
    assert kept.key_order == level.key_order
    assert kept.encode(3).endswith(',"advisoryIDs":[]}')
    fresh = dataclasses.replace(level, advisory_ids=(), key_order=())
    assert "advisoryIDs" not in fresh.encode(3)


def test_signed_tcb_info_from_a_generated_key() -> None:
    key = ec.derive_private_key(1234, ec.SECP256R1())
    text = _built_sgx().to_json()
    der = key.sign(text.encode(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    signed = SignedTcbInfo(text, der_to_raw_rs(der))
    again = SignedTcbInfo.from_response_body(signed.to_response_body())
    assert again == signed
    key.public_key().verify(
        raw_rs_to_der(again.signature), again.signed_bytes, ec.ECDSA(hashes.SHA256())
    )


def test_dataclass_validation() -> None:
    info = _built_sgx()
    for change in (
        {"version": 2},
        {"id": None},
        {"fmspc": b"\x00" * 5},
        {"tcb_levels": ()},
        {"tcb_type": -1},
        {"issue_date": datetime.datetime(2025, 1, 1)},
        {"tdx_module": TdxModule(bytes(48), bytes(8), bytes(8))},  # type: ignore[arg-type]
    ):
        with pytest.raises(MalformedStructureError):
            dataclasses.replace(info, **change)  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError):
        TcbComponent(svn=1 << 16)
    with pytest.raises(MalformedStructureError):
        Tcb((TcbComponent(1),) * 15, 1)
    with pytest.raises(MalformedStructureError):
        EnclaveTcbLevel(1, _when(1), "UpToDate")  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError):
        TdxModuleIdentity("TDX_01", bytes(48), bytes(8), bytes(8), (None,))  # type: ignore[arg-type,arg-type]


# --------------------------------------------------------------------------------------------
# Property: whatever parses re-serializes to the same text


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position=st.integers(min_value=0, max_value=20000),
    replacement=st.sampled_from(list('0123456789aAfF"{}[],:xyz \\')),
    doc_index=st.integers(min_value=0, max_value=14),
)
def test_mutated_text_parses_only_if_it_reserializes(
    signed_texts: list[Any], position: int, replacement: str, doc_index: int
) -> None:
    docs = _tcb_texts(signed_texts)
    text = docs[doc_index % len(docs)].text
    i = position % len(text)
    mutated = text[:i] + replacement + text[i + 1 :]
    try:
        info = TcbInfo.from_json(mutated)
    except MalformedStructureError:
        return
    assert info.to_json() == mutated
