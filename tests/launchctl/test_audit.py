"""The audit hash chain: every edit, truncation, extension and reordering is found, and the
first broken entry is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sgx_launchctl.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    canonical_json,
    make_entry,
    remac,
    verify_chain,
)
from sgx_launchctl.errors import AuditChainError

KEY = b"k" * 32


def chain(n: int, key: bytes = KEY) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    head = GENESIS_HASH
    for i in range(1, n + 1):
        e = make_entry(key, head, i, AuditRecord("signer_added", "admin:test", {"i": i, "b": [1]}),
                       time=f"2026-01-01T00:00:{i:02d}+00:00")
        entries.append(e)
        head = e.hash
    return entries


def verify(entries: list[AuditEntry], *, length: int, head: bytes, key: bytes = KEY) -> None:
    verify_chain(entries, key, head=head, length=length)


def broken_at(entries: list[AuditEntry], length: int, head: bytes) -> int:
    with pytest.raises(AuditChainError) as e:
        verify(entries, length=length, head=head)
    return e.value.sequence


def test_a_good_chain_verifies() -> None:
    entries = chain(5)
    verify(entries, length=5, head=entries[-1].hash)
    verify([], length=0, head=GENESIS_HASH)
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[2].details_dict() == {"b": [1], "i": 3}
    assert canonical_json({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'


@pytest.mark.parametrize("field", ["time", "event", "caller", "details"])
def test_an_edit_names_its_entry(field: str) -> None:
    entries = chain(6)
    entries[3] = replace(entries[3], **{field: getattr(entries[3], field) + "x"})
    assert broken_at(entries, 6, entries[-1].hash) == 4


def test_a_recomputed_hash_without_the_key_fails_the_mac() -> None:
    entries = chain(4)
    forged = make_entry(b"wrong key" * 4, entries[1].prev_hash, 2,
                        AuditRecord("signer_removed", "admin", {}))
    entries[1] = forged
    assert broken_at(entries, 4, entries[-1].hash) == 2


def test_truncation_is_found() -> None:
    entries = chain(5)
    assert broken_at(entries[:3], 5, entries[-1].hash) == 4
    assert broken_at([], 5, entries[-1].hash) == 1


def test_an_entry_added_offline_is_found() -> None:
    entries = chain(5)
    assert broken_at(entries, 4, entries[3].hash) == 5


def test_removal_in_the_middle_and_reordering_are_found() -> None:
    entries = chain(5)
    assert broken_at(entries[:2] + entries[3:], 5, entries[-1].hash) == 3
    swapped = [entries[0], entries[2], entries[1], *entries[3:]]
    assert broken_at(swapped, 5, entries[-1].hash) == 2


def test_a_wrong_head_is_found() -> None:
    entries = chain(3)
    assert broken_at(entries, 3, b"\x00" * 32) == 3


def test_a_wrong_key_fails_at_the_first_entry() -> None:
    entries = chain(3)
    with pytest.raises(AuditChainError) as e:
        verify(entries, length=3, head=entries[-1].hash, key=b"other" * 8)
    assert e.value.sequence == 1 and "MAC" in str(e.value)


def test_remac_moves_the_chain_to_a_new_key() -> None:
    entries = chain(3)
    new_key = b"n" * 32
    moved = [remac(new_key, e) for e in entries]
    verify(moved, length=3, head=entries[-1].hash, key=new_key)
    assert [e.hash for e in moved] == [e.hash for e in entries]
