"""The audit log: a hash chain of every change, lock, boot configuration and launch decision.

Entry ``n`` (1-based) has ``hash_n = SHA-256("sgxemu-launchctl-audit-v1" || hash_{n-1} ||
n || time || event || caller || details)`` with every field length-prefixed and
``hash_0`` = 32 zero bytes, and ``mac_n = HMAC-SHA256(audit key, hash_n)`` where the audit key
comes from the daemon's sealed key (EGETKEY through the platform).

Invariants:

* An entry is written in the same SQLite transaction as the change it records (``store.py``),
  so a change and its entry are both durable or both absent.
* The head hash and the length are part of the authenticated state: removing entries from the
  end (truncation) or appending entries offline is detected, not only edits in the middle.
* :func:`verify_chain` raises :class:`AuditChainError` naming the *first* entry that fails
  (wrong sequence, wrong link, wrong hash, wrong MAC, missing or extra entries); it never
  returns a bool.
* Details are canonical JSON (sorted keys, no whitespace) so a hash never depends on how a
  dict happened to be ordered. Keys and handles never appear in details.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sgx_launchctl.errors import AuditChainError

GENESIS_HASH = bytes(32)
_DOMAIN = b"sgxemu-launchctl-audit-v1"
_SEQ = struct.Struct("<Q")
_LEN = struct.Struct("<I")


def canonical_json(value: Any) -> str:
    """Deterministic JSON text: sorted keys, compact separators, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditRecord:
    """What is to be recorded: the event name, who caused it, and its details."""

    event: str
    caller: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    """One stored entry of the chain."""

    sequence: int
    time: str
    event: str
    caller: str
    details: str
    prev_hash: bytes
    hash: bytes
    mac: bytes

    def details_dict(self) -> dict[str, Any]:
        value = json.loads(self.details)
        return value if isinstance(value, dict) else {"value": value}


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _LEN.pack(len(raw)) + raw


def entry_hash(
    prev_hash: bytes, sequence: int, time: str, event: str, caller: str, details: str
) -> bytes:
    h = hashlib.sha256(_DOMAIN)
    h.update(prev_hash)
    h.update(_SEQ.pack(sequence))
    for text in (time, event, caller, details):
        h.update(_field(text))
    return h.digest()


def entry_mac(key: bytes, digest: bytes) -> bytes:
    return hmac.new(key, digest, hashlib.sha256).digest()


def make_entry(
    key: bytes, prev_hash: bytes, sequence: int, record: AuditRecord, time: str | None = None
) -> AuditEntry:
    """The next entry of the chain after ``prev_hash`` (whose length was ``sequence - 1``)."""
    when = time or utc_now()
    details = canonical_json(dict(record.details))
    digest = entry_hash(prev_hash, sequence, when, record.event, record.caller, details)
    return AuditEntry(
        sequence=sequence,
        time=when,
        event=record.event,
        caller=record.caller,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
        mac=entry_mac(key, digest),
    )


def remac(key: bytes, entry: AuditEntry) -> AuditEntry:
    """The same entry MAC'd under ``key`` (re-sealing after a TCB update)."""
    return AuditEntry(
        entry.sequence, entry.time, entry.event, entry.caller, entry.details,
        entry.prev_hash, entry.hash, entry_mac(key, entry.hash),
    )


def verify_chain(
    entries: Iterable[AuditEntry], key: bytes, *, head: bytes, length: int
) -> None:
    """Check every link, hash and MAC, and that the chain ends at ``head`` after ``length``.

    Raises :class:`AuditChainError` for the first entry that fails.
    """
    running = GENESIS_HASH
    count = 0
    for entry in entries:
        expected = count + 1
        if entry.sequence != expected:
            raise AuditChainError(
                expected,
                f"found entry {entry.sequence} where entry {expected} belongs (entries were "
                "removed or reordered)",
            )
        if expected > length:
            raise AuditChainError(
                expected,
                f"the authenticated state covers {length} entries; entry {expected} was added "
                "outside the daemon",
            )
        if not hmac.compare_digest(entry.prev_hash, running):
            raise AuditChainError(expected, "its link to the previous entry is wrong")
        digest = entry_hash(
            running, entry.sequence, entry.time, entry.event, entry.caller, entry.details
        )
        if not hmac.compare_digest(digest, entry.hash):
            raise AuditChainError(expected, "its contents do not match its hash (edited)")
        if not hmac.compare_digest(entry_mac(key, digest), entry.mac):
            raise AuditChainError(expected, "its MAC does not verify under the sealed key")
        running = digest
        count = expected
    if count < length:
        raise AuditChainError(
            count + 1,
            f"missing: the log ends after {count} entries but the authenticated state says "
            f"{length} (truncated)",
        )
    if not hmac.compare_digest(running, head):
        raise AuditChainError(count, "the last entry is not the authenticated head of the chain")
