"""Enclave Identity v2 (QE, QVE, TD_QE): real documents round-trip and agree with plain ``json``
and with the QE reports of real quotes; malformed documents are rejected."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgx_platform.arch.dcap.qe_identity import (
    EnclaveIdentity,
    EnclaveIdentityId,
    SignedEnclaveIdentity,
)
from sgx_platform.arch.dcap.quote import parse_quote
from sgx_platform.arch.dcap.tcb_info import EnclaveTcbLevel, TcbStatus
from sgx_platform.arch.errors import MalformedStructureError


def _id_texts(signed_texts: list[Any]) -> list[Any]:
    return [d for d in signed_texts if d.kind == "enclaveIdentity"]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_every_real_identity_round_trips_and_matches_plain_json(signed_texts: list[Any]) -> None:
    docs = _id_texts(signed_texts)
    assert len(docs) == 6 + 4 + 4
    ids = set()
    for doc in docs:
        identity = EnclaveIdentity.from_json(doc.text)
        assert identity.to_json() == doc.text, doc.source
        raw = json.loads(doc.text)
        ids.add(identity.id)
        assert identity.id.value == raw["id"]
        assert identity.version == raw["version"] == 2
        assert identity.tcb_evaluation_data_number == raw["tcbEvaluationDataNumber"]
        for ours, key in (
            (identity.miscselect, "miscselect"),
            (identity.miscselect_mask, "miscselectMask"),
            (identity.attributes, "attributes"),
            (identity.attributes_mask, "attributesMask"),
            (identity.mrsigner, "mrsigner"),
        ):
            assert ours == bytes.fromhex(raw[key]) and ours.text == raw[key]
        assert identity.isvprodid == raw["isvprodid"]
        assert len(identity.tcb_levels) == len(raw["tcbLevels"])
        for level, theirs in zip(identity.tcb_levels, raw["tcbLevels"], strict=True):
            assert level.isvsvn == theirs["tcb"]["isvsvn"]
            assert level.tcb_status.value == theirs["tcbStatus"]
            assert level.tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ") == theirs["tcbDate"]
            assert level.advisory_ids == tuple(theirs.get("advisoryIDs", ()))
    assert ids == set(EnclaveIdentityId)


def test_response_bodies_round_trip(pcs_body_texts: list[tuple[str, str, str]]) -> None:
    bodies = [body for _, field, body in pcs_body_texts if field == "enclaveIdentity"]
    assert len(bodies) == 6
    for body in bodies:
        signed = SignedEnclaveIdentity.from_response_body(body)
        assert signed.to_response_body() == body
        assert signed.identity.to_json() == signed.body_text


def test_real_qe_reports_match_the_real_qe_identity(real_vectors: Path) -> None:
    """Cross-check against a different source: the QE in Intel's quotes is Intel's QE."""
    collateral = json.loads((real_vectors / "phala-dcap-qvl/sgx_quote_collateral.json").read_text())
    identity = EnclaveIdentity.from_json(collateral["qe_identity"])
    quote = parse_quote((real_vectors / "phala-dcap-qvl/sgx_quote").read_bytes())
    assert quote.qe_report.mrsigner.value == identity.mrsigner
    assert quote.qe_report.isvprodid == identity.isvprodid == 1
    assert quote.qe_report.isvsvn >= identity.tcb_levels[0].isvsvn
    assert identity.tcb_levels[0].tcb_status is TcbStatus.UP_TO_DATE


# --------------------------------------------------------------------------------------------
# Negative


def _qe(signed_texts: list[Any]) -> dict[str, Any]:
    (doc,) = [d for d in signed_texts if d.source.endswith("sgx-v3-2025-08/qe_identity.json")]
    raw = json.loads(doc.text)
    assert _compact(raw) == doc.text
    return dict(raw)


def _rejects(doc: Any, match: str | None = None) -> None:
    with pytest.raises(MalformedStructureError, match=match):
        EnclaveIdentity.from_json(_compact(doc))


def test_missing_and_unknown_keys(signed_texts: list[Any]) -> None:
    doc = _qe(signed_texts)
    for key in doc:
        _rejects({k: v for k, v in doc.items() if k != key})
    _rejects({**doc, "isvsvn": 1}, "unknown keys")
    level = copy.deepcopy(doc)
    level["tcbLevels"][0]["tcb"]["pcesvn"] = 1
    _rejects(level, "unknown keys")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", "QE3"),
        ("id", "qe"),
        ("version", 1),
        ("version", 3),
        ("version", "2"),
        ("miscselect", "0000000"),
        ("miscselect", 0),
        ("miscselectMask", "FFFFFFFFFF"),
        ("attributes", "11" * 15),
        ("attributesMask", "FB" * 17),
        ("mrsigner", "8C4F" * 15),
        ("mrsigner", "Z" * 64),
        ("isvprodid", 1 << 16),
        ("isvprodid", -1),
        ("isvprodid", True),
        ("tcbEvaluationDataNumber", 1.0),
        ("issueDate", "2025-08-15T00:00:00"),
        ("tcbLevels", []),
        ("tcbLevels", [{"tcb": {"isvsvn": 8}, "tcbDate": "2024-03-13T00:00:00Z"}]),
        ("tcbLevels", [{"tcb": {"isvsvn": 8}, "tcbDate": "x", "tcbStatus": "UpToDate"}]),
        (
            "tcbLevels",
            [{"tcb": {"isvsvn": "8"}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}],
        ),
        ("tcbLevels", [{"tcb": {}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}]),
        (
            "tcbLevels",
            [{"tcb": {"isvsvn": 8}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "Fine"}],
        ),
    ],
)
def test_wrong_values(signed_texts: list[Any], key: str, value: Any) -> None:
    _rejects({**_qe(signed_texts), key: value})


def test_non_canonical_text_is_rejected(signed_texts: list[Any]) -> None:
    doc = _qe(signed_texts)
    for variant in (json.dumps(doc), _compact(doc) + " ", json.dumps(doc, indent=2)):
        with pytest.raises(MalformedStructureError, match="compact JSON form"):
            EnclaveIdentity.from_json(variant)


# --------------------------------------------------------------------------------------------
# Building


def test_built_identity_uses_intel_order() -> None:
    when = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    identity = EnclaveIdentity(
        id=EnclaveIdentityId.QE,
        version=2,
        issue_date=when,
        next_update=when + datetime.timedelta(days=30),
        tcb_evaluation_data_number=17,
        miscselect=bytes(4),  # type: ignore[arg-type]
        miscselect_mask=b"\xff" * 4,  # type: ignore[arg-type]
        attributes=b"\x11" + bytes(15),  # type: ignore[arg-type]
        attributes_mask=b"\xfb" + b"\xff" * 7 + bytes(8),  # type: ignore[arg-type]
        mrsigner=bytes(range(32)),  # type: ignore[arg-type]
        isvprodid=1,
        tcb_levels=(EnclaveTcbLevel(8, when, TcbStatus.UP_TO_DATE),),
    )
    text = identity.to_json()
    assert text.startswith(
        '{"id":"QE","version":2,"issueDate":"2025-06-01T00:00:00Z",'
        '"nextUpdate":"2025-07-01T00:00:00Z","tcbEvaluationDataNumber":17,'
        '"miscselect":"00000000","miscselectMask":"FFFFFFFF",'
        '"attributes":"11000000000000000000000000000000",'
    )
    assert text.endswith(
        '"isvprodid":1,"tcbLevels":[{"tcb":{"isvsvn":8},'
        '"tcbDate":"2025-06-01T00:00:00Z","tcbStatus":"UpToDate"}]}'
    )
    assert EnclaveIdentity.from_json(text) == identity
    for change in ({"version": 1}, {"mrsigner": bytes(31)}, {"id": "QE"}, {"tcb_levels": ()}):
        with pytest.raises(MalformedStructureError):
            dataclasses.replace(identity, **change)  # type: ignore[arg-type]
    with pytest.raises(MalformedStructureError):
        SignedEnclaveIdentity(text, bytes(63))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position=st.integers(min_value=0, max_value=5000),
    replacement=st.sampled_from(list('0123456789aAfF"{}[],:xyz ')),
)
def test_mutated_text_parses_only_if_it_reserializes(
    signed_texts: list[Any], position: int, replacement: str
) -> None:
    text = _id_texts(signed_texts)[0].text
    i = position % len(text)
    mutated = text[:i] + replacement + text[i + 1 :]
    try:
        identity = EnclaveIdentity.from_json(mutated)
    except MalformedStructureError:
        return
    assert identity.to_json() == mutated
