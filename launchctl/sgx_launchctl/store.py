"""The daemon's durable, authenticated state: SQLite with a sealed-key MAC.

What is stored: the allowlist (``signers``), the load policy, the boot epoch at which the boot
configuration was last applied, the audit chain (``audit``), and in ``meta`` the KEYREQUEST
the authentication key comes from, the audit head and length, a change counter and the state
MAC.

Invariants:

* Durability: the database runs in WAL mode with ``synchronous=FULL``; every change is one
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction holding the new state, its audit entry, the
  new head/length and the new MAC. :meth:`Store.apply` and :meth:`Store.record` return only
  after ``COMMIT`` returned, i.e. once the change is durable; a crash at any moment leaves the
  change wholly present or wholly absent.
* Authentication: the key is a SEAL key the launch enclave obtains with EGETKEY through the
  platform (KEYPOLICY MRSIGNER, the SDK's attribute and MISC masks, a random KEYID, the LE's
  ISVSVN and CPUSVN at sealing time). The KEYREQUEST is stored beside the state, so after a TCB
  update the old key is still derivable (EGETKEY accepts an older CPUSVN) and the state is
  re-sealed under the new TCB in one transaction that re-MACs the state and every audit entry.
* The state MAC covers the allowlist, the load policy, the boot epoch, the change counter, the
  KEYREQUEST and the audit head and length; together with the chain's per-entry MACs any
  offline edit, truncation or extension of the database is detected when it is opened
  (:meth:`Store.open` raises :class:`StateIntegrityError` and serves nothing).
* The in-memory state is authoritative while the daemon runs; reads never trust the file.
* A new database is *pending* (created by ``initialize_state`` before any platform exists):
  it has initial contents but no key and no MAC. The first open seals it and records that in
  the audit. A pending database with audit entries is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sgx_launchctl.allowlist import Allowlist, SignerEntry
from sgx_launchctl.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    canonical_json,
    make_entry,
    remac,
    verify_chain,
)
from sgx_launchctl.errors import (
    LaunchctlError,
    StateIntegrityError,
    StateUnsealError,
)
from sgx_launchctl.policy import LoadPolicy
from sgx_platform.arch.attributes import Attributes, KeyName, KeyPolicy
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_rpc.files import fsync_directory

log = logging.getLogger(__name__)

FORMAT = 1
#: SDK ``TSEAL_DEFAULT_FLAGSMASK`` and ``TSEAL_DEFAULT_MISCMASK``.
SEAL_ATTRIBUTE_MASK = Attributes(0xFF00_0000_0000_000B, 0)
SEAL_MISC_MASK = 0xF000_0000
_STATE_LABEL = b"sgxemu-launchctl state mac v1"
_AUDIT_LABEL = b"sgxemu-launchctl audit mac v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS signers (
    mrsigner TEXT PRIMARY KEY,
    entry TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit (
    sequence INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    event TEXT NOT NULL,
    caller TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    mac BLOB NOT NULL
) STRICT;
"""


@dataclass(frozen=True)
class LaunchState:
    """What the daemon decides with: the allowlist, the load policy, and boot bookkeeping."""

    allowlist: Allowlist
    load_policy: LoadPolicy
    #: The boot epoch at which the boot configuration was last applied (b"": never).
    boot_applied: bytes = b""
    #: The boot epoch whose lock the audit records (b"": none); the latch itself is the truth.
    locked_boot: bytes = b""

    def canonical(self) -> dict[str, Any]:
        return {
            "allowlist": self.allowlist.canonical(),
            "load_policy": self.load_policy.canonical(),
            "boot_applied": self.boot_applied.hex(),
            "locked_boot": self.locked_boot.hex(),
        }


class SealKeySource(Protocol):
    """EGETKEY through the platform, from inside the launch enclave."""

    def tcb(self) -> tuple[bytes, int]:
        """The launch enclave's (CPUSVN, ISVSVN) now (from its own REPORT)."""
        ...

    def derive(self, key_request: bytes) -> bytes:
        """The 16-byte key for a KEYREQUEST; raises :class:`StateUnsealError` if refused."""
        ...


def seal_key_request(cpusvn: bytes, isvsvn: int, key_id: bytes | None = None) -> KeyRequest:
    """The KEYREQUEST of the state key: SEAL, MRSIGNER policy, SDK masks, random KEYID."""
    return KeyRequest(
        keyname=int(KeyName.SEAL),
        keypolicy=int(KeyPolicy.MRSIGNER),
        isvsvn=isvsvn,
        cpusvn=cpusvn,
        attribute_mask=SEAL_ATTRIBUTE_MASK,
        key_id=key_id if key_id is not None else secrets.token_bytes(32),
        miscmask=SEAL_MISC_MASK,
    )


@dataclass(frozen=True)
class _Keys:
    state: bytes
    audit: bytes

    @classmethod
    def derive(cls, seal_key: bytes) -> _Keys:
        return cls(
            hmac.new(seal_key, _STATE_LABEL, hashlib.sha256).digest(),
            hmac.new(seal_key, _AUDIT_LABEL, hashlib.sha256).digest(),
        )


@dataclass(frozen=True)
class _Meta:
    key_request: bytes
    head: bytes
    length: int
    generation: int


def _state_mac(keys: _Keys, state: LaunchState, meta: _Meta) -> bytes:
    document = {
        "format": FORMAT,
        "state": state.canonical(),
        "key_request": meta.key_request.hex(),
        "audit_head": meta.head.hex(),
        "audit_length": meta.length,
        "generation": meta.generation,
    }
    return hmac.new(keys.state, canonical_json(document).encode(), hashlib.sha256).digest()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def _read_state(
    conn: sqlite3.Connection, meta: dict[str, str], default_policy: LoadPolicy | None = None
) -> LaunchState:
    entries = []
    for mrsigner, text in conn.execute("SELECT mrsigner, entry FROM signers ORDER BY mrsigner"):
        entry = SignerEntry.from_canonical(json.loads(text))
        if entry.mrsigner.hex() != mrsigner:
            raise StateIntegrityError(f"signer row {mrsigner} holds another MRSIGNER's entry")
        entries.append(entry)
    row = meta.get("load_policy")
    if row is not None:
        policy = LoadPolicy.from_canonical(json.loads(row))
    elif default_policy is not None:
        policy = default_policy
    else:
        raise StateIntegrityError("the database has no load policy")
    return LaunchState(
        Allowlist.of(entries),
        policy,
        bytes.fromhex(meta.get("boot_applied", "")),
        bytes.fromhex(meta.get("locked_boot", "")),
    )


def _write_state(conn: sqlite3.Connection, state: LaunchState, old: LaunchState | None) -> None:
    """Write the rows that differ from ``old`` (everything when ``old`` is None)."""
    before = {} if old is None else {e.mrsigner.value: e for e in old.allowlist}
    after = {e.mrsigner.value: e for e in state.allowlist}
    if old is None:
        conn.execute("DELETE FROM signers")
    for key in before.keys() - after.keys():
        conn.execute("DELETE FROM signers WHERE mrsigner = ?", (key.hex(),))
    for key, entry in after.items():
        if before.get(key) != entry:
            conn.execute(
                "INSERT OR REPLACE INTO signers (mrsigner, entry) VALUES (?, ?)",
                (key.hex(), canonical_json(entry.canonical())),
            )
    if old is None or old.load_policy != state.load_policy:
        _set_meta(conn, "load_policy", canonical_json(state.load_policy.canonical()))
    if old is None or old.boot_applied != state.boot_applied:
        _set_meta(conn, "boot_applied", state.boot_applied.hex())
    if old is None or old.locked_boot != state.locked_boot:
        _set_meta(conn, "locked_boot", state.locked_boot.hex())


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _insert_entry(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit (sequence, time, event, caller, details, prev_hash, hash, mac) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.sequence, entry.time, entry.event, entry.caller, entry.details,
            entry.prev_hash, entry.hash, entry.mac,
        ),
    )


def _entries(conn: sqlite3.Connection, start: int = 1, limit: int = -1) -> Iterator[AuditEntry]:
    cursor = conn.execute(
        "SELECT sequence, time, event, caller, details, prev_hash, hash, mac FROM audit "
        "WHERE sequence >= ? ORDER BY sequence LIMIT ?",
        (start, limit),
    )
    for row in cursor:
        seq, time, event, caller, details, prev_hash, digest, mac = row
        yield AuditEntry(
            int(seq), str(time), str(event), str(caller), str(details),
            bytes(prev_hash), bytes(digest), bytes(mac),
        )


def create_pending(path: Path, allowlist: Allowlist) -> None:
    """Create a new database (mode 0600) holding ``allowlist``, to be sealed at first open
    (which also sets the default load policy of the state directory it is opened in).

    Refuses an existing file.
    """
    path = Path(path)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    os.close(fd)
    conn = _connect(path)
    try:
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        _set_meta(conn, "format", str(FORMAT))
        _set_meta(conn, "status", "pending")
        for entry in allowlist:
            conn.execute(
                "INSERT INTO signers (mrsigner, entry) VALUES (?, ?)",
                (entry.mrsigner.hex(), canonical_json(entry.canonical())),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    fsync_directory(path.parent)


class Store:
    """The open, verified state; every change goes through :meth:`apply` or :meth:`record`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        keys: _Keys,
        state: LaunchState,
        meta: _Meta,
    ) -> None:
        self._conn = conn
        self._path = path
        self._keys = keys
        self._state = state
        self._meta = meta
        self._lock = threading.Lock()

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        key_source: SealKeySource,
        *,
        default_policy: LoadPolicy,
        caller: str = "launchctl",
    ) -> Store:
        """Open and verify the database; seal a pending one (with ``default_policy``);
        re-seal after a TCB update.

        Raises :class:`StateIntegrityError` (edited, truncated, extended or replaced database)
        or :class:`StateUnsealError` (the key cannot be derived on this platform).
        """
        path = Path(path)
        if not path.is_file():
            raise StateIntegrityError(
                f"the launch-control database {path} does not exist",
                hint="create the state with sgxemu init; a deleted database is not recreated "
                "silently",
                reason="STATE_MISSING",
            )
        try:
            conn = _connect(path)
        except sqlite3.Error as e:
            raise StateIntegrityError(f"{path} is not a launch-control database: {e}") from None
        try:
            store = cls._open(conn, path, key_source, default_policy, caller)
        except sqlite3.Error as e:
            conn.close()
            raise StateIntegrityError(
                f"the launch-control database {path} is damaged or was changed outside the "
                f"daemon: {e}"
            ) from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _open(
        cls,
        conn: sqlite3.Connection,
        path: Path,
        source: SealKeySource,
        default_policy: LoadPolicy,
        caller: str,
    ) -> Store:
        meta = _read_meta(conn)
        if meta.get("format") != str(FORMAT):
            raise StateIntegrityError(
                f"{path}: unknown database format {meta.get('format')!r} (expected {FORMAT})"
            )
        status = meta.get("status")
        try:
            state = _read_state(conn, meta, default_policy if status == "pending" else None)
        except (ValueError, KeyError, TypeError, LaunchctlError) as e:
            raise StateIntegrityError(
                f"the launch-control database {path} holds unreadable state ({e}); it was "
                "changed outside the daemon"
            ) from None
        if status == "pending":
            return cls._seal_pending(conn, path, source, state, caller)
        if status != "sealed":
            raise StateIntegrityError(f"{path}: unknown database status {status!r}")
        try:
            stored = _Meta(
                key_request=bytes.fromhex(meta["key_request"]),
                head=bytes.fromhex(meta["audit_head"]),
                length=int(meta["audit_length"]),
                generation=int(meta["generation"]),
            )
            mac = bytes.fromhex(meta["state_mac"])
            request = KeyRequest.from_bytes(stored.key_request)
        except (KeyError, ValueError, MalformedStructureError):
            raise StateIntegrityError(
                f"the launch-control database {path} lacks its authentication data; it was "
                "changed outside the daemon"
            ) from None
        keys = _Keys.derive(source.derive(stored.key_request))
        if not hmac.compare_digest(_state_mac(keys, state, stored), mac):
            raise StateIntegrityError(
                f"the launch-control database {path} does not authenticate: it was changed "
                "outside the daemon (or the platform's owner epoch changed since it was sealed)",
                hint="restore the database from a trusted copy, or re-create the state",
            )
        verify_chain(_entries(conn), keys.audit, head=stored.head, length=stored.length)
        store = cls(conn, path, keys, state, stored)
        cpusvn, isvsvn = source.tcb()
        if (request.cpusvn, request.isvsvn) != (cpusvn, isvsvn):
            store._reseal(source, cpusvn, isvsvn, caller)
        return store

    @classmethod
    def _seal_pending(
        cls,
        conn: sqlite3.Connection,
        path: Path,
        source: SealKeySource,
        state: LaunchState,
        caller: str,
    ) -> Store:
        if conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]:
            raise StateIntegrityError(
                f"{path} claims to be new but holds audit entries; it was changed outside the "
                "daemon"
            )
        cpusvn, isvsvn = source.tcb()
        request = seal_key_request(cpusvn, isvsvn).to_bytes()
        keys = _Keys.derive(source.derive(request))
        meta = _Meta(request, GENESIS_HASH, 0, 0)
        store = cls(conn, path, keys, state, meta)
        details = {
            "signers": [e.canonical() for e in state.allowlist],
            "load_policy": state.load_policy.canonical(),
            "cpusvn": cpusvn.hex(),
            "isvsvn": isvsvn,
        }
        store._commit(state, AuditRecord("state_sealed", caller, details), status="sealed")
        log.info("launch-control state sealed for the first time (%s)", path)
        return store

    def _reseal(self, source: SealKeySource, cpusvn: bytes, isvsvn: int, caller: str) -> None:
        """Re-MAC everything under a key for the current TCB, in one transaction."""
        old = KeyRequest.from_bytes(self._meta.key_request)
        request = seal_key_request(cpusvn, isvsvn).to_bytes()
        keys = _Keys.derive(source.derive(request))
        record = AuditRecord(
            "state_resealed",
            caller,
            {
                "old_cpusvn": old.cpusvn.hex(), "old_isvsvn": old.isvsvn,
                "cpusvn": cpusvn.hex(), "isvsvn": isvsvn,
            },
        )
        with self._lock:
            saved = (self._keys, self._state, self._meta)
            try:
                with self._transaction() as conn:
                    entries = list(_entries(conn))
                    conn.execute("DELETE FROM audit")
                    for entry in entries:
                        _insert_entry(conn, remac(keys.audit, entry))
                    self._keys = keys
                    self._meta = replace(self._meta, key_request=request)
                    self._append(conn, self._state, record)
            except BaseException:
                self._keys, self._state, self._meta = saved
                raise
        log.warning("launch-control state re-sealed for CPUSVN %s ISVSVN %d", cpusvn.hex(),
                    isvsvn)

    # -- reading --------------------------------------------------------------------------------

    @property
    def state(self) -> LaunchState:
        return self._state

    @property
    def audit_length(self) -> int:
        return self._meta.length

    @property
    def audit_head(self) -> bytes:
        return self._meta.head

    @property
    def key_request(self) -> KeyRequest:
        return KeyRequest.from_bytes(self._meta.key_request)

    @property
    def path(self) -> Path:
        return self._path

    def audit_entries(self, start: int = 1, limit: int = 1000) -> list[AuditEntry]:
        with self._lock:
            return list(_entries(self._conn, max(1, start), limit))

    def verify_audit(self) -> int:
        """Check the whole chain on disk against the authenticated head; returns its length.

        Raises :class:`AuditChainError` naming the first broken entry.
        """
        with self._lock:
            verify_chain(
                _entries(self._conn), self._keys.audit,
                head=self._meta.head, length=self._meta.length,
            )
            return self._meta.length

    # -- changing -------------------------------------------------------------------------------

    def apply(
        self,
        change: Callable[[LaunchState], LaunchState],
        record: Callable[[LaunchState, LaunchState], AuditRecord],
        *,
        check: Callable[[LaunchState], None] | None = None,
    ) -> LaunchState:
        """Apply ``change`` and its audit entry in one durable transaction.

        ``check`` runs under the store's lock before the change (e.g. "not locked"); whatever
        it or ``change`` raises aborts the change. Returns the new state once committed.
        """
        with self._lock:
            if check is not None:
                check(self._state)
            old = self._state
            new = change(old)
            self._commit(new, record(old, new))
            return new

    def record(self, record: AuditRecord) -> int:
        """Append an audit entry without changing the state; returns its sequence number."""
        with self._lock:
            self._commit(self._state, record)
            return self._meta.length

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _commit(self, state: LaunchState, record: AuditRecord, *, status: str | None = None) -> (
        None
    ):
        """One transaction: state rows, audit entry, meta; memory updated only after COMMIT."""
        saved = (self._state, self._meta)
        try:
            with self._transaction() as conn:
                if status is not None:
                    _write_state(conn, state, None)
                    _set_meta(conn, "status", status)
                else:
                    _write_state(conn, state, self._state)
                self._append(conn, state, record)
        except BaseException:
            self._state, self._meta = saved
            raise

    def _append(self, conn: sqlite3.Connection, state: LaunchState, record: AuditRecord) -> None:
        meta = self._meta
        entry = make_entry(self._keys.audit, meta.head, meta.length + 1, record)
        _insert_entry(conn, entry)
        new_meta = _Meta(meta.key_request, entry.hash, entry.sequence, meta.generation + 1)
        _set_meta(conn, "key_request", new_meta.key_request.hex())
        _set_meta(conn, "audit_head", new_meta.head.hex())
        _set_meta(conn, "audit_length", str(new_meta.length))
        _set_meta(conn, "generation", str(new_meta.generation))
        _set_meta(conn, "state_mac", _state_mac(self._keys, state, new_meta).hex())
        self._state, self._meta = state, new_meta

    def close(self) -> None:
        with self._lock:
            self._conn.close()


__all__ = [
    "LaunchState",
    "SealKeySource",
    "StateIntegrityError",
    "StateUnsealError",
    "Store",
    "create_pending",
    "seal_key_request",
]
