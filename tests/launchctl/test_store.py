"""The SQLite store: sealing, authentication of state and audit, offline edits, re-sealing,
atomic and durable changes (including a writer killed with SIGKILL at random moments).

The key source here is a stand-in for EGETKEY (an HMAC of a fixed root over the KEYREQUEST);
the real one, through the platform, is exercised by test_service.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sgx_launchctl.allowlist import Allowlist, SignerEntry
from sgx_launchctl.audit import AuditRecord
from sgx_launchctl.errors import AuditChainError, StateIntegrityError, StateUnsealError
from sgx_launchctl.policy import LoadPolicy
from sgx_launchctl.store import LaunchState, Store, create_pending
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement

POLICY = LoadPolicy.defaults("/s/enclaves")
VENDOR = SignerEntry(Measurement(b"\x99" * 32), allow_provision_key=True, comment="vendor")


class Keys:
    """EGETKEY stand-in: a key per (root, KEYREQUEST); refuses a CPUSVN beyond the current."""

    def __init__(self, root: bytes = b"root", cpusvn: bytes = bytes(16), isvsvn: int = 1) -> None:
        self.root, self.cpusvn, self.isvsvn = root, cpusvn, isvsvn

    def tcb(self) -> tuple[bytes, int]:
        return self.cpusvn, self.isvsvn

    def derive(self, key_request: bytes) -> bytes:
        if KeyRequest.from_bytes(key_request).cpusvn > self.cpusvn:
            raise StateUnsealError("CPUSVN beyond the platform's")
        return hmac.new(self.root, key_request, hashlib.sha256).digest()[:16]


def signer(i: int) -> SignerEntry:
    return SignerEntry(Measurement(i.to_bytes(32, "big")), comment=f"entry {i}")


def add(store: Store, entry: SignerEntry) -> LaunchState:
    return store.apply(
        lambda s: replace(s, allowlist=s.allowlist.with_entry(entry)),
        lambda old, new: AuditRecord("signer_added", "admin:test", {"entry": entry.canonical()}),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "launchctl.db"
    create_pending(path, Allowlist.of([VENDOR]))
    return path


def reopen(db: Path, keys: Keys | None = None) -> Store:
    return Store.open(db, keys or Keys(), default_policy=POLICY)


def test_a_pending_database_is_sealed_at_first_open(db: Path) -> None:
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    store = reopen(db)
    assert list(store.state.allowlist) == [VENDOR] and store.state.load_policy == POLICY
    assert [e.event for e in store.audit_entries()] == ["state_sealed"]
    add(store, signer(1))
    store.close()
    again = reopen(db)
    assert list(again.state.allowlist) == [signer(1), VENDOR]
    assert again.audit_length == 2 and again.verify_audit() == 2
    again.close()


def test_durability_settings(db: Path) -> None:
    store = reopen(db)
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_a_failed_change_leaves_nothing(db: Path) -> None:
    store = reopen(db)

    def refuse(state: LaunchState) -> None:
        raise StateIntegrityError("no")

    with pytest.raises(StateIntegrityError):
        store.apply(lambda s: s, lambda o, n: AuditRecord("x", "y", {}), check=refuse)

    def bad_record(old: LaunchState, new: LaunchState) -> AuditRecord:
        raise ValueError("boom")

    entry = signer(5)
    with pytest.raises(ValueError):
        store.apply(lambda s: replace(s, allowlist=s.allowlist.with_entry(entry)), bad_record)
    assert entry.mrsigner not in store.state.allowlist and store.audit_length == 1
    store.close()
    assert entry.mrsigner not in reopen(db).state.allowlist


def test_missing_and_foreign_databases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateIntegrityError) as e:
        reopen(tmp_path / "nothing.db")
    assert e.value.reason == "STATE_MISSING"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StateIntegrityError):
        reopen(junk)


def test_another_platform_cannot_open_it(db: Path) -> None:
    reopen(db).close()
    with pytest.raises(StateIntegrityError, match="does not authenticate"):
        reopen(db, Keys(root=b"another platform"))


def _edit(db: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def _sealed_with_entries(db: Path, n: int = 3) -> None:
    store = reopen(db)
    for i in range(n):
        add(store, signer(i))
    store.close()


OFFLINE_EDITS = {
    "signer constraint": ("UPDATE signers SET entry = replace(entry, "
                          "'\"allow_debug\":false', '\"allow_debug\":true')",),
    "signer added": ("INSERT INTO signers VALUES (?, ?)", "ab" * 32,
                     '{"mrsigner":"' + "ab" * 32 + '"}'),
    "signer removed": ("DELETE FROM signers WHERE mrsigner = ?", "00" * 31 + "01"),
    "load policy": ("UPDATE meta SET value = replace(value, 'true', 'false') "
                    "WHERE key = 'load_policy'",),
    "audit edited": ("UPDATE audit SET caller = 'someone else' WHERE sequence = 2",),
    "audit truncated": ("DELETE FROM audit WHERE sequence > 2",),
    "audit length": ("UPDATE meta SET value = '2' WHERE key = 'audit_length'",),
    "state mac": ("UPDATE meta SET value = ? WHERE key = 'state_mac'", "00" * 32),
    "key request": ("DELETE FROM meta WHERE key = 'key_request'",),
    "status pending": ("UPDATE meta SET value = 'pending' WHERE key = 'status'",),
}


@pytest.mark.parametrize("edit", sorted(OFFLINE_EDITS))
def test_offline_edits_are_detected_at_open(db: Path, edit: str) -> None:
    _sealed_with_entries(db)
    sql, *args = OFFLINE_EDITS[edit]
    _edit(db, sql, *args)
    with pytest.raises(StateIntegrityError):
        reopen(db)


def test_truncating_both_audit_and_its_length_is_still_detected(db: Path) -> None:
    _sealed_with_entries(db)
    _edit(db, "DELETE FROM audit WHERE sequence > 2")
    conn = sqlite3.connect(db)
    head = conn.execute("SELECT hash FROM audit WHERE sequence = 2").fetchone()[0]
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'audit_length'")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (bytes(head).hex(),))
    conn.commit()
    conn.close()
    with pytest.raises(StateIntegrityError, match="does not authenticate"):
        reopen(db)


def test_verify_names_the_first_broken_entry_of_a_live_store(db: Path) -> None:
    _sealed_with_entries(db, 5)
    store = reopen(db)
    _edit(db, "UPDATE audit SET details = '{}' WHERE sequence = 4")
    with pytest.raises(AuditChainError) as e:
        store.verify_audit()
    assert e.value.sequence == 4
    store.close()
    with pytest.raises(AuditChainError) as e:
        reopen(db)
    assert e.value.sequence == 4


def test_after_a_tcb_update_the_state_opens_and_is_resealed(db: Path) -> None:
    _sealed_with_entries(db, 2)
    newer = Keys(cpusvn=b"\x01" + bytes(15))
    store = reopen(db, newer)
    assert store.key_request.cpusvn == newer.cpusvn
    assert store.audit_entries()[-1].event == "state_resealed"
    assert store.verify_audit() == 4
    store.close()
    again = reopen(db, newer)
    assert again.audit_length == 4 and len(again.state.allowlist) == 3
    again.close()
    with pytest.raises(StateUnsealError):  # the old TCB cannot derive the new key
        reopen(db, Keys())


_WRITER = textwrap.dedent(
    """
    import hashlib, hmac, sys
    from dataclasses import replace
    from pathlib import Path
    from sgx_launchctl.allowlist import SignerEntry
    from sgx_launchctl.audit import AuditRecord
    from sgx_launchctl.policy import LoadPolicy
    from sgx_launchctl.store import Store
    from sgx_platform.arch.measurement import Measurement

    class Keys:
        def tcb(self):
            return bytes(16), 1
        def derive(self, request):
            return hmac.new(b"root", request, hashlib.sha256).digest()[:16]

    store = Store.open(Path(sys.argv[1]), Keys(), default_policy=LoadPolicy.defaults("/s/e"))
    for i in range(int(sys.argv[2]), int(sys.argv[2]) + 10000):
        entry = SignerEntry(Measurement(i.to_bytes(32, "big")), comment=f"entry {i}")
        store.apply(
            lambda s: replace(s, allowlist=s.allowlist.with_entry(entry)),
            lambda o, n: AuditRecord("signer_added", "writer", {"entry": entry.canonical()}),
        )
        print(f"ACK {i}", flush=True)
    """
)


def test_a_writer_killed_at_random_moments_loses_no_acknowledged_change(db: Path) -> None:
    rng = random.Random(0x5EED)
    acknowledged: set[int] = set()
    durable: set[int] = set()  # acknowledged, or found present after an earlier kill
    next_index = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), str(next_index)],
            stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ACK")  # the store is open and writing
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked = {next_index} | {int(line.split()[1]) for line in out.splitlines() if line}
        acknowledged |= acked
        store = reopen(db)  # verifies the state MAC and the whole audit chain
        present = {int.from_bytes(e.mrsigner.value, "big") for e in store.state.allowlist
                   if e != VENDOR}
        assert acknowledged <= present, sorted(acknowledged - present)[:5]
        # At most the one change in flight when the kill came is there unacknowledged.
        assert present - durable - acked <= {max(acked) + 1}
        # None half-applied: every signer has exactly its own audit entry, nothing else.
        events = [e for e in store.audit_entries(limit=100000) if e.event == "signer_added"]
        assert len(events) == len(present)
        assert store.verify_audit() == store.audit_length
        durable = present
        next_index = max(present) + 1
        store.close()
    assert len(acknowledged) > 4
