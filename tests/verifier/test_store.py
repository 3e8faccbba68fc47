"""The collateral store: content addressing, every version kept, a rollback-protected latest
pointer, as-of selection and expiry reported ahead of time; on real Intel collateral, keyed
under the Intel root's key (``<base>@<root>``; two PKIs in one store: test_store_anchors.py)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.anchors import INTEL_SGX_ROOT_KEY_SHA256 as INTEL
from sgx_verifier.store import (
    CollateralItem,
    CollateralKind,
    Placement,
    SqliteCollateralStore,
    StoreError,
)


def ts(text: str) -> int:
    return int(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


def fortanix_body(path: Path) -> tuple[str, bytes]:
    """A Fortanix wrapper file as a PCS response body and its issuer chain."""
    doc = json.loads(path.read_text())
    field, raw = (
        ("tcbInfo", doc["raw_tcb_info"])
        if "raw_tcb_info" in doc
        else ("enclaveIdentity", doc["raw_enclave_identity"])
    )
    r, s = decode_dss_signature(bytes(doc["signature"]))
    sig = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    return f'{{"{field}":{raw},"signature":"{sig}"}}', "".join(doc["ca_chain"]).encode()


@pytest.fixture()
def store(tmp_path: Path) -> SqliteCollateralStore:
    return SqliteCollateralStore(tmp_path / "collateral.sqlite")


@pytest.fixture()
def eval_versions(real_vectors: Path) -> dict[int, CollateralItem]:
    base = real_vectors / "fortanix-rust-sgx" / "collateral-2025"
    out = {}
    for n in (17, 18, 19):
        body, chain = fortanix_body(base / f"00606a000000-{n}.tcb")
        out[n] = CollateralItem.tcb_info(body, chain).under(INTEL)
    return out


TCB_KEY = f"SGX/00606a000000@{INTEL}"


def test_items_are_indexed_from_their_content(eval_versions: dict[int, CollateralItem]) -> None:
    item = eval_versions[19]
    assert item.kind is CollateralKind.TCB_INFO
    assert item.key == TCB_KEY and item.root == INTEL
    unanchored = CollateralItem.tcb_info(item.content)
    assert unanchored.key == "SGX/00606a000000" and unanchored.root is None
    assert item.evaluation_number == 19
    assert item.issue_date == ts("2025-06-06T12:30:47Z")
    assert item.next_update == ts("2025-07-06T12:30:47Z")
    assert item.content.startswith(b'{"tcbInfo":{"id":"SGX"')
    # Content addressing: the same document in another whitespace layout has the same id.
    spaced = item.content.decode().replace('{"tcbInfo":', '{ "tcbInfo" : ', 1)
    assert CollateralItem.tcb_info(spaced).id == item.id


def test_rollback_imports_do_not_replace_latest(
    store: SqliteCollateralStore, eval_versions: dict[int, CollateralItem], real_vectors: Path
) -> None:
    now = ts("2025-06-10T00:00:00Z")
    first = store.put(eval_versions[17], source="test", now=now)
    assert first.new and first.placement is Placement.BECAME_LATEST
    up = store.put(eval_versions[19], source="test", now=now)
    assert up.placement is Placement.BECAME_LATEST
    # Lower evaluation number (17 after 19): stored, but latest stays.
    back = store.put(eval_versions[17], source="test", now=now)
    assert not back.new and back.placement is Placement.OLDER_THAN_LATEST
    assert "evaluation number 17" in back.reason
    # Higher than 17 but lower than 19, and issued earlier: refused as latest too.
    eighteen = store.put(eval_versions[18], source="test", now=now)
    assert eighteen.new and eighteen.placement is Placement.OLDER_THAN_LATEST
    # A newer document with a lower evaluation number (Aug 2025, eval 17) is a rollback of
    # the TCB recovery and does not replace eval 19 either.
    automata = CollateralItem.tcb_info(
        (real_vectors / "automata-dcap-attestation/sgx-v3-2025-08/tcbinfo_00606a000000.json")
        .read_bytes()
    ).under(INTEL)
    assert automata.issue_date > eval_versions[19].issue_date
    assert store.put(automata, source="test", now=now).placement is Placement.OLDER_THAN_LATEST
    latest = store.latest(CollateralKind.TCB_INFO, TCB_KEY)
    assert latest is not None and latest.id == eval_versions[19].id
    assert store.put(eval_versions[19], source="t", now=now).placement is Placement.ALREADY_LATEST
    # Every version is kept.
    assert {s.id for s in store.versions(CollateralKind.TCB_INFO, TCB_KEY)} == {
        eval_versions[17].id,
        eval_versions[18].id,
        eval_versions[19].id,
        automata.id,
    }


def test_same_evaluation_and_date_with_other_content_keeps_the_latest(
    store: SqliteCollateralStore, eval_versions: dict[int, CollateralItem]
) -> None:
    item = eval_versions[19]
    twin = CollateralItem(
        item.kind, item.key, item.content + b" ", item.issue_date, item.next_update, 19
    )
    store.put(item, source="t", now=0)
    assert store.put(twin, source="t", now=0).placement is Placement.OLDER_THAN_LATEST


def test_as_of_selects_the_version_valid_at_that_time(
    store: SqliteCollateralStore, real_vectors: Path
) -> None:
    base = real_vectors / "phala-dcap-qvl"
    items = {}
    for name in ("sgx_quote_collateral.json", "sgx_quote_collateral_2023-11.json"):
        doc = json.loads((base / name).read_text())
        body = f'{{"tcbInfo":{doc["tcb_info"]},"signature":"{doc["tcb_info_signature"]}"}}'
        items[name] = CollateralItem.tcb_info(
            body, doc["tcb_info_issuer_chain"].encode()
        ).under(INTEL)
    new, old = items["sgx_quote_collateral.json"], items["sgx_quote_collateral_2023-11.json"]
    store.put(new, source="t", now=ts("2025-06-20T00:00:00Z"))
    # Importing the 2023 version later does not roll latest back, but it is kept for as-of.
    assert store.put(old, source="t").placement is Placement.OLDER_THAN_LATEST
    key = f"SGX/00a067110000@{INTEL}"
    at_2023 = store.as_of(CollateralKind.TCB_INFO, key, ts("2023-11-22T00:00:00Z"))
    at_2025 = store.as_of(CollateralKind.TCB_INFO, key, ts("2025-07-01T00:00:00Z"))
    assert at_2023 is not None and at_2023.id == old.id
    assert at_2025 is not None and at_2025.id == new.id
    assert store.as_of(CollateralKind.TCB_INFO, key, ts("2024-06-01T00:00:00Z")) is None
    assert store.get(old.id).item == old


def test_enclave_identities_and_crls_are_keyed_and_ordered(
    store: SqliteCollateralStore, real_vectors: Path
) -> None:
    base = real_vectors / "fortanix-rust-sgx" / "collateral-2025"
    qe = {
        n: CollateralItem.enclave_identity(*fortanix_body(base / f"qe3_identity-{n}.id")).under(
            INTEL
        )
        for n in (17, 19)
    }
    assert qe[19].key == f"QE@{INTEL}" and qe[19].evaluation_number == 19
    store.put(qe[19], source="t", now=0)
    assert store.put(qe[17], source="t", now=0).placement is Placement.OLDER_THAN_LATEST

    mc = real_vectors / "mobilecoin-attestation"
    pck = CollateralItem.crl((mc / "processor_crl.der").read_bytes()).under(INTEL)
    root = CollateralItem.crl((mc / "root_crl.der").read_bytes()).under(INTEL)
    assert pck.kind is CollateralKind.CRL and pck.key != root.key
    assert pck.issue_date == ts("2023-04-21T00:00:00Z") or pck.issue_date > 0
    root_2025 = CollateralItem.crl(
        (real_vectors / "automata-dcap-attestation/common/root_ca_crl.der").read_bytes()
    ).under(INTEL)
    assert root_2025.key == root.key  # same issuer: Intel SGX Root CA
    store.put(root_2025, source="t", now=0)
    assert store.put(root, source="t", now=0).placement is Placement.OLDER_THAN_LATEST
    latest = store.latest(CollateralKind.CRL, root.key)
    assert latest is not None and latest.id == root_2025.id


def test_crl_encodings_are_one_item(real_vectors: Path) -> None:
    der = (real_vectors / "mobilecoin-attestation/root_crl.der").read_bytes()
    import base64

    pem = (
        b"-----BEGIN X509 CRL-----\n"
        + base64.encodebytes(der)
        + b"-----END X509 CRL-----\n"
    )
    ids = {CollateralItem.crl(x).id for x in (der, pem, der.hex().encode())}
    assert len(ids) == 1


@pytest.mark.parametrize(
    "maker, data",
    [
        (CollateralItem.tcb_info, b'{"tcbInfo":{},"signature":"00"}'),
        (CollateralItem.tcb_info, b"not json"),
        (CollateralItem.enclave_identity, b'{"tcbInfo":{},"signature":"00"}'),
        (CollateralItem.crl, b"\x30\x03\x02\x01\x00"),
        (CollateralItem.crl, b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
    ],
)
def test_malformed_collateral_is_refused(maker: object, data: bytes) -> None:
    with pytest.raises(MalformedStructureError):
        maker(data)  # type: ignore[operator]


def test_expiry_is_reported_ahead_of_time(
    store: SqliteCollateralStore, eval_versions: dict[int, CollateralItem]
) -> None:
    store.put(eval_versions[19], source="t", now=0)
    expiry = eval_versions[19].next_update
    assert store.expiring(now=expiry - 10 * 86400, within=7 * 86400) == []
    soon = store.expiring(now=expiry - 3 * 86400, within=7 * 86400)
    assert [(n.id, n.seconds_left) for n in soon] == [(eval_versions[19].id, 3 * 86400)]
    late = store.expiring(now=expiry + 60, within=0)
    assert late[0].seconds_left == -60


def test_two_stores_on_one_file_race_without_rollback(
    tmp_path: Path, eval_versions: dict[int, CollateralItem]
) -> None:
    path = tmp_path / "shared.sqlite"
    a, b = SqliteCollateralStore(path), SqliteCollateralStore(path)
    errors: list[BaseException] = []

    def put_all(store: SqliteCollateralStore, order: list[int]) -> None:
        try:
            for _ in range(10):
                for n in order:
                    store.put(eval_versions[n], source="race")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=put_all, args=(a, [19, 18, 17])),
        threading.Thread(target=put_all, args=(b, [17, 18, 19])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for s in (a, b):
        latest = s.latest(CollateralKind.TCB_INFO, TCB_KEY)
        assert latest is not None and latest.id == eval_versions[19].id


def test_tampered_rows_are_detected(
    tmp_path: Path, eval_versions: dict[int, CollateralItem]
) -> None:
    path = tmp_path / "c.sqlite"
    store = SqliteCollateralStore(path)
    store.put(eval_versions[19], source="t", now=0)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE collateral SET content = CAST(content || x'20' AS BLOB)")
    with pytest.raises(StoreError, match="corrupt"):
        store.get(eval_versions[19].id)
    with pytest.raises(StoreError, match="no collateral"):
        store.get("00" * 32)
