"""The collateral store: every version of every TCB Info, Enclave Identity and CRL the verifier
has accepted, content-addressed, with a rollback-protected "latest" pointer.

Invariants:

* An item's id is the SHA-256 (hex) of its canonical content: the PCS response body
  ``{"tcbInfo"|"enclaveIdentity":<exact signed text>,"signature":"<hex r||s>"}`` for signed
  JSON, the DER bytes for a CRL. Items are immutable: storing the same content twice is a
  no-op, and no version is ever deleted, so a verdict can be re-checked "as of" its time with
  the exact collateral it named.
* Each item has a key ``<base>@<root>``. The base comes from the content: ``SGX/<fmspc>`` or
  ``TDX/<fmspc>`` for TCB Info, the identity id (``QE``, ``QVE``, ``TD_QE``) for Enclave
  Identity, the SHA-256 of the issuer's DER name for a CRL. The root is the SHA-256 (hex) of the
  SubjectPublicKeyInfo of the trust anchor the item's signer chains to
  (:attr:`sgx_verifier.anchors.TrustAnchor.key_sha256`), set by :meth:`CollateralItem.under`
  once the signer is verified. So two PKIs (Intel's and an emulated world's, whose names,
  FMSPCs and identity ids may all coincide) never share a key, and :meth:`CollateralStore.put`
  refuses an item without a root: there is no "latest" that two signers compete for.
* The "latest" pointer per (kind, key) only moves forward: a version replaces it only when
  neither its evaluation number (tcbEvaluationDataNumber, or the CRL number) nor its issue date
  (issueDate, or thisUpdate) is lower, and at least one is higher. Rollback protection thereby
  compares only versions under one root. An older version is still stored for as-of checks.
  The comparison and the move happen in one immediate transaction, so replicas importing
  concurrently cannot roll the pointer back.
* The store does not judge signatures: callers put only items they verified, under the root
  they verified them to (:class:`sgx_verifier.service.CollateralImporter` does). It parses what
  it indexes, strictly, with ``sgx_platform.arch.dcap`` and ``cryptography``.
* The schema version is kept in the file (``store_meta``). Schema 1 keyed items without their
  root; a schema-1 file that holds collateral is refused at open (the store cannot tell, by
  itself, which anchor each old item chains to: import the collateral again into a new file),
  an empty one is upgraded in place.
* :meth:`CollateralStore.expiring` reports latest items whose ``nextUpdate`` falls within a
  horizon, ahead of time, so expiry is never first discovered at verification.
* SQLite in WAL mode, one connection per thread; a PostgreSQL store implements the same
  :class:`CollateralStore` protocol.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_platform.arch.dcap.qe_identity import SignedEnclaveIdentity
from sgx_platform.arch.dcap.tcb_info import SignedTcbInfo
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.errors import VerificationError

SCHEMA_VERSION = 2
#: Schema 1: keys without the anchor's root (readable only when empty).
_SCHEMA_UNANCHORED = 1
_ROOT = re.compile(r"[0-9a-f]{64}")


class CollateralKind(StrEnum):
    TCB_INFO = "tcb_info"
    ENCLAVE_IDENTITY = "enclave_identity"
    CRL = "crl"


class StoreError(VerificationError):
    """The store cannot answer (unknown id, unusable database)."""


def content_id(content: bytes) -> str:
    """The id of an item: SHA-256 of its canonical content, lowercase hex."""
    return hashlib.sha256(content).hexdigest()


def issuer_key(issuer_der: bytes) -> str:
    """The key of a CRL: SHA-256 of its issuer's DER-encoded name."""
    return hashlib.sha256(issuer_der).hexdigest()


def tcb_info_key(tee: str, fmspc: bytes) -> str:
    return f"{tee}/{fmspc.hex()}"


def anchored_key(base: str, root: str) -> str:
    """The store key of ``base`` under the anchor whose SubjectPublicKeyInfo hashes to ``root``
    (SHA-256, lowercase hex: :attr:`sgx_verifier.anchors.TrustAnchor.key_sha256`)."""
    if not _ROOT.fullmatch(root):
        raise StoreError(f"{root!r} is not a SHA-256 of an anchor's key (64 lowercase hex)")
    if not base or "@" in base:
        raise StoreError(f"{base!r} is not a base key")
    return f"{base}@{root}"


def split_key(key: str) -> tuple[str, str]:
    """(base, root) of a store key; :class:`StoreError` when it names no anchor's root."""
    base, at, root = key.rpartition("@")
    if not at or not base or "@" in base or not _ROOT.fullmatch(root):
        raise StoreError(
            f"store key {key!r} does not name the anchor it is kept under (<base>@<root>)"
        )
    return base, root


@dataclass(frozen=True, slots=True)
class CollateralItem:
    """One version of one piece of collateral, with what the store indexes it by."""

    kind: CollateralKind
    key: str
    content: bytes
    issue_date: int
    next_update: int
    evaluation_number: int | None
    issuer_chain: bytes | None = None
    description: str = ""

    @property
    def id(self) -> str:
        return content_id(self.content)

    @property
    def root(self) -> str | None:
        """The SHA-256 of the key of the anchor this item is kept under; None before
        :meth:`under` (as constructed from content)."""
        return split_key(self.key)[1] if "@" in self.key else None

    def under(self, root: str) -> CollateralItem:
        """This item keyed under the anchor whose key hashes to ``root``: for a caller that
        verified the item's signer chains to that anchor."""
        if self.root is not None:
            if self.root != root:
                raise StoreError(f"{self.description}: already kept under root {self.root}")
            return self
        return replace(self, key=anchored_key(self.key, root))

    # -- construction from the formats the PCS serves -------------------------------------

    @classmethod
    def tcb_info(cls, body: str | bytes, issuer_chain: bytes | None = None) -> CollateralItem:
        """From a PCS TCB Info response body (``{"tcbInfo":...,"signature":...}``)."""
        signed = SignedTcbInfo.from_response_body(body)
        info = signed.tcb_info
        tee = info.id.value if info.id is not None else "SGX"
        return cls(
            kind=CollateralKind.TCB_INFO,
            key=tcb_info_key(tee, bytes(info.fmspc)),
            content=signed.to_response_body().encode(),
            issue_date=int(info.issue_date.timestamp()),
            next_update=int(info.next_update.timestamp()),
            evaluation_number=info.tcb_evaluation_data_number,
            issuer_chain=issuer_chain,
            description=(
                f"{tee} TCB Info v{info.version} for FMSPC {bytes(info.fmspc).hex()}, "
                f"evaluation {info.tcb_evaluation_data_number}"
            ),
        )

    @classmethod
    def enclave_identity(
        cls, body: str | bytes, issuer_chain: bytes | None = None
    ) -> CollateralItem:
        """From a PCS Enclave Identity response body (``{"enclaveIdentity":...}``)."""
        signed = SignedEnclaveIdentity.from_response_body(body)
        identity = signed.identity
        return cls(
            kind=CollateralKind.ENCLAVE_IDENTITY,
            key=identity.id.value,
            content=signed.to_response_body().encode(),
            issue_date=int(identity.issue_date.timestamp()),
            next_update=int(identity.next_update.timestamp()),
            evaluation_number=identity.tcb_evaluation_data_number,
            issuer_chain=issuer_chain,
            description=(
                f"{identity.id.value} identity, evaluation {identity.tcb_evaluation_data_number}"
            ),
        )

    @classmethod
    def crl(cls, data: bytes, issuer_chain: bytes | None = None) -> CollateralItem:
        """From a CRL in DER, PEM, or hex-encoded DER (as dcap-qvl's collateral JSON has it)."""
        der = _crl_der(data)
        try:
            crl = x509.load_der_x509_crl(der)
            next_update = crl.next_update_utc
            this_update = crl.last_update_utc
            number: int | None
            try:
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            except x509.ExtensionNotFound:
                number = None
            issuer = crl.issuer
            issuer_der = issuer.public_bytes()
        except ValueError as e:
            raise MalformedStructureError(f"CRL: {e}") from None
        if next_update is None:
            raise MalformedStructureError("CRL: no nextUpdate; its freshness cannot be judged")
        if der != crl.public_bytes(Encoding.DER):
            raise MalformedStructureError("CRL: not in DER's one encoding")
        return cls(
            kind=CollateralKind.CRL,
            key=issuer_key(issuer_der),
            content=der,
            issue_date=int(this_update.timestamp()),
            next_update=int(next_update.timestamp()),
            evaluation_number=number,
            issuer_chain=issuer_chain,
            description=f"CRL of {issuer.rfc4514_string()}",
        )

    @classmethod
    def parse(
        cls, kind: CollateralKind, content: bytes, issuer_chain: bytes | None = None
    ) -> CollateralItem:
        """Re-parse stored content (the inverse of :attr:`content`)."""
        if kind is CollateralKind.TCB_INFO:
            return cls.tcb_info(content, issuer_chain)
        if kind is CollateralKind.ENCLAVE_IDENTITY:
            return cls.enclave_identity(content, issuer_chain)
        return cls.crl(content, issuer_chain)


def _crl_der(data: bytes) -> bytes:
    stripped = bytes(data).strip()
    if stripped.startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except ValueError as e:
            raise MalformedStructureError(f"CRL: bad PEM: {e}") from None
    if stripped[:2] in (b"30",) and all(c in b"0123456789abcdefABCDEF" for c in stripped):
        return bytes.fromhex(stripped.decode())
    return bytes(data)


class Placement(StrEnum):
    """What :meth:`CollateralStore.put` did with the latest pointer."""

    BECAME_LATEST = "became_latest"
    ALREADY_LATEST = "already_latest"
    OLDER_THAN_LATEST = "older_than_latest"


@dataclass(frozen=True, slots=True)
class PutResult:
    id: str
    kind: CollateralKind
    key: str
    new: bool
    placement: Placement
    reason: str

    @property
    def latest(self) -> bool:
        return self.placement is not Placement.OLDER_THAN_LATEST


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as stored: the item, when and from where it was imported."""

    item: CollateralItem
    imported_at: int
    source: str

    @property
    def id(self) -> str:
        return self.item.id


@dataclass(frozen=True, slots=True)
class ExpiryNotice:
    """A latest item that expires within the horizon (``seconds_left`` < 0: expired)."""

    id: str
    kind: CollateralKind
    key: str
    description: str
    next_update: int
    seconds_left: int


class CollateralStore(Protocol):
    """What the verifier needs from a collateral store.

    Keys are ``<base>@<root>`` (:func:`anchored_key`): :meth:`put` refuses an item that is not
    keyed under its anchor, the lookups a key that names none (:class:`StoreError`).
    """

    def put(self, item: CollateralItem, *, source: str, now: int | None = None) -> PutResult: ...

    def get(self, item_id: str) -> StoredItem: ...

    def latest(self, kind: CollateralKind, key: str) -> StoredItem | None: ...

    def as_of(self, kind: CollateralKind, key: str, at: int) -> StoredItem | None: ...

    def versions(self, kind: CollateralKind, key: str) -> Sequence[StoredItem]: ...

    def latest_all(self) -> Sequence[StoredItem]: ...

    def expiring(self, *, now: int, within: int) -> Sequence[ExpiryNotice]: ...


def _replaces(new: CollateralItem, current: CollateralItem) -> tuple[bool, str]:
    """Whether ``new`` may move the latest pointer off ``current``, and why (not)."""
    if new.evaluation_number is not None and current.evaluation_number is not None:
        if new.evaluation_number < current.evaluation_number:
            return False, (
                f"evaluation number {new.evaluation_number} is lower than the latest's "
                f"{current.evaluation_number}"
            )
    elif (new.evaluation_number is None) != (current.evaluation_number is None):
        return False, "the versions cannot be ordered (only one has an evaluation number)"
    if new.issue_date < current.issue_date:
        return False, f"issued {new.issue_date}, before the latest ({current.issue_date})"
    if (new.evaluation_number, new.issue_date) == (current.evaluation_number, current.issue_date):
        return False, "same evaluation number and issue date as the latest; the latest stays"
    return True, "newer than the latest"


_SELECT_ITEM = (
    "SELECT id, kind, key, content, issuer_chain, issue_date, next_update, evaluation_number,"
    " description, imported_at, source FROM collateral"
)
_SELECT_LATEST = (
    "SELECT c.id, c.kind, c.key, c.content, c.issuer_chain, c.issue_date, c.next_update,"
    " c.evaluation_number, c.description, c.imported_at, c.source"
    " FROM latest l JOIN collateral c ON c.id = l.id"
)


class SqliteCollateralStore:
    """:class:`CollateralStore` in one SQLite file (WAL), shared by threads and processes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        conn = self._connection()
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS collateral (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                content BLOB NOT NULL,
                issuer_chain BLOB,
                issue_date INTEGER NOT NULL,
                next_update INTEGER NOT NULL,
                evaluation_number INTEGER,
                description TEXT NOT NULL,
                imported_at INTEGER NOT NULL,
                source TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS collateral_by_key
                ON collateral (kind, key, issue_date);
            CREATE TABLE IF NOT EXISTS latest (
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                id TEXT NOT NULL REFERENCES collateral (id),
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (kind, key)
            );
            CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            """
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO store_meta (name, value) VALUES ('schema', ?)",
            (str(SCHEMA_VERSION),),
        )
        row = conn.execute("SELECT value FROM store_meta WHERE name = 'schema'").fetchone()
        found = str(row[0])
        if found == str(SCHEMA_VERSION):
            return
        if found == str(_SCHEMA_UNANCHORED):
            if conn.execute("SELECT 1 FROM collateral LIMIT 1").fetchone() is None:
                conn.execute(
                    "UPDATE store_meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION),)
                )
                return
            raise StoreError(
                f"{self._path}: collateral store schema {found} keeps each item's 'latest' "
                "without the trust anchor it chains to, so collateral of two PKIs (Intel's and "
                f"an emulated world's) competes for one pointer; this verifier reads schema "
                f"{SCHEMA_VERSION} and cannot tell which anchor each old item belongs to. Move "
                "the file aside and import the collateral again (sgxemu verifier collateral "
                "import FILES, or collateral refresh)"
            )
        raise StoreError(
            f"{self._path}: collateral store schema {found!r}; this verifier reads schema "
            f"{SCHEMA_VERSION} (a newer sgxemu wrote it?)"
        )

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _row(row: tuple[object, ...]) -> StoredItem:
        (item_id, kind, key, content, chain, issue, nxt, number, desc, imported, source) = row
        if not (
            isinstance(content, bytes)
            and isinstance(key, str)
            and isinstance(desc, str)
            and isinstance(issue, int)
            and isinstance(nxt, int)
            and isinstance(imported, int)
            and (chain is None or isinstance(chain, bytes))
            and (number is None or isinstance(number, int))
            and kind in {k.value for k in CollateralKind}
        ):
            raise StoreError(f"stored item {item_id} has unexpected types: the store is corrupt")
        item = CollateralItem(
            kind=CollateralKind(str(kind)),
            key=key,
            content=content,
            issue_date=issue,
            next_update=nxt,
            evaluation_number=number,
            issuer_chain=chain,
            description=desc,
        )
        if item.id != item_id:
            raise StoreError(f"stored item {item_id} does not hash to its id: the store is corrupt")
        return StoredItem(item, imported, str(source))

    def put(self, item: CollateralItem, *, source: str, now: int | None = None) -> PutResult:
        if item.root is None:
            raise StoreError(
                f"{item.description}: not keyed under the anchor it chains to; verify it and "
                "put item.under(anchor.key_sha256) (CollateralImporter does)"
            )
        at = int(time.time()) if now is None else now
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT OR IGNORE INTO collateral (id, kind, key, content, issuer_chain,"
                " issue_date, next_update, evaluation_number, description, imported_at, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.id,
                    item.kind.value,
                    item.key,
                    item.content,
                    item.issuer_chain,
                    item.issue_date,
                    item.next_update,
                    item.evaluation_number,
                    item.description,
                    at,
                    source,
                ),
            )
            new = cur.rowcount == 1
            row = conn.execute(
                _SELECT_LATEST + " WHERE l.kind = ? AND l.key = ?",
                (item.kind.value, item.key),
            ).fetchone()
            if row is None:
                placement, reason = Placement.BECAME_LATEST, "the first version of this key"
            else:
                current = self._row(row).item
                if current.id == item.id:
                    placement, reason = Placement.ALREADY_LATEST, "already the latest"
                else:
                    moves, reason = _replaces(item, current)
                    placement = Placement.BECAME_LATEST if moves else Placement.OLDER_THAN_LATEST
            if placement is Placement.BECAME_LATEST:
                conn.execute(
                    "INSERT INTO latest (kind, key, id, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET id = excluded.id, "
                    "updated_at = excluded.updated_at",
                    (item.kind.value, item.key, item.id, at),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return PutResult(item.id, item.kind, item.key, new, placement, reason)

    def get(self, item_id: str) -> StoredItem:
        row = self._connection().execute(
            _SELECT_ITEM + " WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no collateral with id {item_id}")
        return self._row(row)

    def latest(self, kind: CollateralKind, key: str) -> StoredItem | None:
        split_key(key)
        row = self._connection().execute(
            "SELECT l.id FROM latest l WHERE l.kind = ? AND l.key = ?", (kind.value, key)
        ).fetchone()
        return None if row is None else self.get(str(row[0]))

    def as_of(self, kind: CollateralKind, key: str, at: int) -> StoredItem | None:
        """The best version whose window covers ``at``: highest evaluation number, then the
        latest issue date."""
        split_key(key)
        row = self._connection().execute(
            _SELECT_ITEM + " WHERE kind = ? AND key = ?"
            " AND issue_date <= ? AND ? <= next_update"
            " ORDER BY COALESCE(evaluation_number, -1) DESC, issue_date DESC, id LIMIT 1",
            (kind.value, key, at, at),
        ).fetchone()
        return None if row is None else self._row(row)

    def versions(self, kind: CollateralKind, key: str) -> list[StoredItem]:
        split_key(key)
        rows = self._connection().execute(
            _SELECT_ITEM + " WHERE kind = ? AND key = ?"
            " ORDER BY issue_date, COALESCE(evaluation_number, -1), id",
            (kind.value, key),
        ).fetchall()
        return [self._row(r) for r in rows]

    def latest_all(self) -> list[StoredItem]:
        rows = self._connection().execute(
            _SELECT_LATEST + " ORDER BY l.kind, l.key"
        ).fetchall()
        return [self._row(r) for r in rows]

    def expiring(self, *, now: int, within: int) -> list[ExpiryNotice]:
        notices = [
            ExpiryNotice(
                s.id,
                s.item.kind,
                s.item.key,
                s.item.description,
                s.item.next_update,
                s.item.next_update - now,
            )
            for s in self.latest_all()
            if s.item.next_update - now <= within
        ]
        return sorted(notices, key=lambda n: n.next_update)
