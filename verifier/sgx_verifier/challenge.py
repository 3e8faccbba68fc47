"""Freshness challenges: nonces the verifier MACs, that any replica sharing the key can check,
each redeemable once.

Invariants:

* A challenge is :data:`CHALLENGE_SIZE` (96) bytes, laid out by :data:`Challenge.LAYOUT`:
  version 1, seven zero bytes, the key id (8), ``issued_at`` and ``expires_at`` (u64 Unix
  seconds), 32 random bytes, then HMAC-SHA256 under the challenge key over a domain label and
  the 64 bytes before the MAC. Nothing else about a challenge is stored at issue time: any
  replica holding the same key checks it without shared state.
* The whole 96-byte challenge is the nonce of the binding rule (DESIGN.md), used by every
  component: ``REPORTDATA[0:32] = SHA-256(nonce || user data)``; ``REPORTDATA[32:64]`` is free
  for the application. :func:`sgx_platform.arch.binding.binding_digest` is that rule.
* A challenge is accepted only when its MAC verifies (``hmac.compare_digest``), its key id is
  ours, ``issued_at - leeway <= now < expires_at``, the quote's REPORTDATA binds it, and the
  replay store records it for the first time. The replay store keeps a redeemed challenge until
  it has expired (after that the expiry alone refuses it), so it stays small.
* The key file is 32 random bytes, mode 0600, written atomically; a key file readable by group
  or others is refused. Keys and MACs are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from sgx_platform.arch.binding import binding_digest
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.errors import VerificationError
from sgx_verifier.private_file import read_private, write_private_atomic

log = logging.getLogger(__name__)

CHALLENGE_VERSION = 1
CHALLENGE_SIZE = 96
KEY_SIZE = 32
KEY_ID_SIZE = 8
RANDOM_SIZE = 32
#: The default lifetime of a challenge, and the bounds a caller may choose from.
DEFAULT_TTL = 300
MIN_TTL = 1
MAX_TTL = 24 * 3600
#: Clock difference tolerated between the replica that issued a challenge and the one checking.
DEFAULT_LEEWAY = 5

_MAC_DOMAIN = b"sgxemu/verifier/challenge/v1\x00"
_KEY_ID_DOMAIN = b"sgxemu/verifier/challenge-key-id/v1\x00"

_BODY = struct.Struct(
    "<"
    "B"  # 0  version
    "7s"  # 1  reserved, zero
    "8s"  # 8  key id
    "Q"  # 16 issued_at
    "Q"  # 24 expires_at
    "32s"  # 32 random
)
assert _BODY.size == 64
assert _BODY.size + hashlib.sha256().digest_size == CHALLENGE_SIZE


class ChallengeFailure(StrEnum):
    """Stable codes for a refused challenge."""

    MALFORMED = "CHALLENGE_MALFORMED"
    UNKNOWN_KEY = "CHALLENGE_UNKNOWN_KEY"
    BAD_MAC = "CHALLENGE_BAD_MAC"
    NOT_YET_VALID = "CHALLENGE_NOT_YET_VALID"
    EXPIRED = "CHALLENGE_EXPIRED"
    NOT_BOUND = "CHALLENGE_NOT_BOUND"
    REPLAYED = "CHALLENGE_REPLAYED"


_HINTS = {
    ChallengeFailure.MALFORMED: "send the challenge bytes exactly as CreateChallenge returned them",
    ChallengeFailure.UNKNOWN_KEY: (
        "the challenge was issued by a verifier with another challenge key; replicas must share "
        "one key file"
    ),
    ChallengeFailure.BAD_MAC: "the challenge was altered or forged; request a new one",
    ChallengeFailure.NOT_YET_VALID: "the issuing replica's clock is ahead; synchronize clocks",
    ChallengeFailure.EXPIRED: "request a new challenge and quote again before it expires",
    ChallengeFailure.NOT_BOUND: (
        "the quote's REPORTDATA[0:32] must be SHA-256(challenge || user data); quote again with it"
    ),
    ChallengeFailure.REPLAYED: "each challenge is accepted once; request a new one",
}


class ChallengeError(VerificationError):
    """A challenge was refused: a stable code, a message and a hint."""

    def __init__(self, code: ChallengeFailure, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.hint = _HINTS[code]


class ChallengeConfigError(VerificationError, ValueError):
    """A challenge setting is unusable (a lifetime out of bounds)."""


class ChallengeKeyError(ChallengeConfigError):
    """The challenge key file is missing, unreadable, malformed or too widely readable."""


@dataclass(frozen=True, slots=True, repr=False)
class ChallengeKey:
    """The HMAC key shared by every replica; its id travels in each challenge."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise ChallengeKeyError(f"a challenge key is {KEY_SIZE} bytes, not {len(self.secret)}")

    def __repr__(self) -> str:
        return f"ChallengeKey(id={self.key_id.hex()})"

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(_KEY_ID_DOMAIN + self.secret).digest()[:KEY_ID_SIZE]

    @classmethod
    def generate(cls) -> ChallengeKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def create(cls, path: Path) -> ChallengeKey:
        """A fresh key written to ``path`` (0600, atomic); refuses to overwrite a key."""
        if path.exists() or path.is_symlink():
            raise ChallengeKeyError(f"{path} exists; refusing to replace a challenge key")
        key = cls.generate()
        write_private_atomic(path, key.secret)
        return key

    @classmethod
    def load(cls, path: Path) -> ChallengeKey:
        """Read a key file; refuses symlinks, wrong sizes and modes open to group or others."""
        data = read_private(path, "challenge key", limit=KEY_SIZE + 1, error=ChallengeKeyError)
        if len(data) != KEY_SIZE:
            raise ChallengeKeyError(f"challenge key {path} is not {KEY_SIZE} bytes")
        return cls(data)

    @classmethod
    def load_or_create(cls, path: Path) -> ChallengeKey:
        if path.exists() or path.is_symlink():
            return cls.load(path)
        return cls.create(path)

    def mac(self, body: bytes) -> bytes:
        return hmac.new(self.secret, _MAC_DOMAIN + body, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge; :meth:`to_bytes` is the nonce the binding rule hashes."""

    key_id: bytes
    issued_at: int
    expires_at: int
    random: bytes
    mac: bytes

    LAYOUT = _BODY
    SIZE = CHALLENGE_SIZE

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_SIZE or len(self.random) != RANDOM_SIZE:
            raise MalformedStructureError("challenge: wrong key id or random size")
        if len(self.mac) != hashlib.sha256().digest_size:
            raise MalformedStructureError("challenge: wrong MAC size")
        for name, value in (("issued_at", self.issued_at), ("expires_at", self.expires_at)):
            if not 0 <= value < 1 << 64:
                raise MalformedStructureError(f"challenge: {name} out of range")

    def body(self) -> bytes:
        return _BODY.pack(
            CHALLENGE_VERSION, bytes(7), self.key_id, self.issued_at, self.expires_at, self.random
        )

    def to_bytes(self) -> bytes:
        return self.body() + self.mac

    @property
    def digest(self) -> bytes:
        """The replay store's key for this challenge."""
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Challenge:
        data = bytes(data)
        if len(data) != CHALLENGE_SIZE:
            raise MalformedStructureError(
                f"challenge: {len(data)} bytes, expected exactly {CHALLENGE_SIZE}"
            )
        version, reserved, key_id, issued_at, expires_at, random = _BODY.unpack(
            data[: _BODY.size]
        )
        if version != CHALLENGE_VERSION:
            raise MalformedStructureError(f"challenge: unknown version {version}")
        if reserved != bytes(7):
            raise MalformedStructureError("challenge: reserved bytes are not zero")
        if expires_at <= issued_at:
            raise MalformedStructureError("challenge: expires before it is issued")
        return cls(key_id, issued_at, expires_at, random, data[_BODY.size :])


class ReplayStore(Protocol):
    """Records redeemed challenges; shared by every replica (SQLite here, PostgreSQL later)."""

    def redeem(self, digest: bytes, expires_at: int, now: int) -> None:
        """Record ``digest``; raise :class:`ChallengeError` REPLAYED when it is already there."""
        ...


class SqliteReplayStore:
    """The replay store in SQLite (WAL), safe for several threads and processes.

    Each thread has its own connection; every redeem is one ``INSERT`` in an immediate
    transaction, so two replicas racing on the same challenge cannot both succeed.
    """

    PURGE_EVERY = 256

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._count = 0
        self._lock = threading.Lock()
        conn = self._connection()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS redeemed_challenges ("
            " digest BLOB PRIMARY KEY,"
            " expires_at INTEGER NOT NULL,"
            " redeemed_at INTEGER NOT NULL)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS redeemed_challenges_expiry"
            " ON redeemed_challenges (expires_at)"
        )

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def redeem(self, digest: bytes, expires_at: int, now: int) -> None:
        conn = self._connection()
        try:
            conn.execute(
                "INSERT INTO redeemed_challenges (digest, expires_at, redeemed_at) "
                "VALUES (?, ?, ?)",
                (digest, expires_at, now),
            )
        except sqlite3.IntegrityError:
            raise ChallengeError(
                ChallengeFailure.REPLAYED, "this challenge was already redeemed"
            ) from None
        with self._lock:
            self._count += 1
            purge = self._count % self.PURGE_EVERY == 0
        if purge:
            self.purge(now)

    def purge(self, now: int, leeway: int = DEFAULT_LEEWAY) -> int:
        """Forget challenges that expired (their expiry alone refuses them now)."""
        cur = self._connection().execute(
            "DELETE FROM redeemed_challenges WHERE expires_at < ?", (now - leeway,)
        )
        return cur.rowcount

    def count(self) -> int:
        row = self._connection().execute("SELECT COUNT(*) FROM redeemed_challenges").fetchone()
        return int(row[0])

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class ChallengeService:
    """Issues challenges and redeems them against a quote's REPORTDATA."""

    def __init__(
        self,
        key: ChallengeKey,
        replay: ReplayStore,
        *,
        ttl: int = DEFAULT_TTL,
        leeway: int = DEFAULT_LEEWAY,
    ) -> None:
        _check_ttl(ttl)
        self._key = key
        self._replay = replay
        self._ttl = ttl
        self._leeway = leeway

    @property
    def ttl(self) -> int:
        return self._ttl

    def issue(self, *, now: int | None = None, ttl: int | None = None) -> Challenge:
        """A fresh challenge valid from ``now`` for ``ttl`` seconds (default: the service's)."""
        issued = int(time.time()) if now is None else now
        lifetime = self._ttl if ttl is None else ttl
        _check_ttl(lifetime)
        body = _BODY.pack(
            CHALLENGE_VERSION,
            bytes(7),
            self._key.key_id,
            issued,
            issued + lifetime,
            secrets.token_bytes(RANDOM_SIZE),
        )
        return Challenge.from_bytes(body + self._key.mac(body))

    def check(self, nonce: bytes, *, now: int | None = None) -> Challenge:
        """Parse and authenticate a challenge and check its window; does not redeem it."""
        at = int(time.time()) if now is None else now
        try:
            challenge = Challenge.from_bytes(nonce)
        except MalformedStructureError as e:
            raise ChallengeError(ChallengeFailure.MALFORMED, str(e)) from None
        if not hmac.compare_digest(challenge.key_id, self._key.key_id):
            raise ChallengeError(
                ChallengeFailure.UNKNOWN_KEY,
                f"challenge key id {challenge.key_id.hex()} is not this verifier's "
                f"({self._key.key_id.hex()})",
            )
        if not hmac.compare_digest(challenge.mac, self._key.mac(challenge.body())):
            raise ChallengeError(ChallengeFailure.BAD_MAC, "the challenge MAC does not verify")
        if at + self._leeway < challenge.issued_at:
            raise ChallengeError(
                ChallengeFailure.NOT_YET_VALID,
                f"issued at {challenge.issued_at}, now is {at}",
            )
        if at >= challenge.expires_at:
            raise ChallengeError(
                ChallengeFailure.EXPIRED,
                f"expired at {challenge.expires_at}, now is {at}",
            )
        return challenge

    def redeem(
        self, nonce: bytes, report_data: bytes, user_data: bytes = b"", *, now: int | None = None
    ) -> Challenge:
        """Accept ``nonce`` once, for a quote whose REPORTDATA binds it with ``user_data``."""
        at = int(time.time()) if now is None else now
        challenge = self.check(nonce, now=at)
        if len(report_data) != 64:
            raise ChallengeError(
                ChallengeFailure.NOT_BOUND, f"REPORTDATA is {len(report_data)} bytes, not 64"
            )
        if not hmac.compare_digest(report_data[:32], binding_digest(nonce, user_data)):
            raise ChallengeError(
                ChallengeFailure.NOT_BOUND,
                "REPORTDATA[0:32] is not SHA-256(challenge || user data)",
            )
        self._replay.redeem(challenge.digest, challenge.expires_at, at)
        return challenge


def _check_ttl(ttl: int) -> None:
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ChallengeConfigError(
            f"a challenge lifetime is {MIN_TTL}..{MAX_TTL} seconds, not {ttl}"
        )
