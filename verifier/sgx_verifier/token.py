"""Signed attestation results: JWTs (ES256) under a rotating keyring, published as a JWKS.

Invariants:

* Every token is a JWS compact serialization with header ``{"alg": "ES256", "typ": "JWT",
  "kid": ...}``; the ``kid`` is the RFC 7638 thumbprint of the signing key's public JWK, so
  the same key has the same id on every replica. Tokens carry ``iss``, ``aud``, ``iat``,
  ``nbf``, ``exp`` and a random ``jti``; the caller's claims can never override them.
* One key signs at a time (the active key). :meth:`TokenKeyring.rotate` makes a new active
  key; the retired one stays in the JWKS until every token it signed has expired
  (``retired_at + max_lifetime + leeway``), then :meth:`TokenKeyring.prune` removes it. A token
  lifetime longer than the keyring's ``max_lifetime`` is refused, so that promise holds.
* The keyring lives in one directory: ``<kid>.pem`` private keys (mode 0600, PKCS#8) and
  ``keyring.json`` (the index), each written atomically (temp file, fsync, rename, fsync the
  directory). Replicas sharing the directory share the keys: a replica reloads the index when
  it changes on disk, and rotation holds an exclusive ``flock`` so two replicas cannot rotate
  at once. Private keys are never logged.
* Verification (:meth:`TokenIssuer.verify`) accepts ES256 only, with a ``kid`` this keyring
  publishes, and checks signature, issuer, audience and times; it raises
  :class:`TokenError`, never returns a bool.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_verifier.errors import VerificationError
from sgx_verifier.private_file import read_private, write_private_atomic

ALGORITHM = "ES256"
DEFAULT_LIFETIME = 600
#: The longest a token may live (and so the longest a retired key stays published).
DEFAULT_MAX_LIFETIME = 3600
MAX_MAX_LIFETIME = 7 * 24 * 3600
#: Clock difference tolerated between replicas and relying parties.
LEEWAY = 30
INDEX_NAME = "keyring.json"
LOCK_NAME = "keyring.lock"
INDEX_VERSION = 1
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "nbf", "exp", "jti"})


class TokenError(VerificationError):
    """A token was refused (bad signature, unknown key, wrong audience, expired, malformed)."""


class KeyringError(VerificationError):
    """The keyring directory is unusable (missing, malformed, unsafe file modes)."""


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7517 JWK of a P-256 public key (members ``crv``, ``kty``, ``x``, ``y``)."""
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64u(numbers.x.to_bytes(32, "big")),
        "y": _b64u(numbers.y.to_bytes(32, "big")),
    }


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key."""
    jwk = public_jwk(key)
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return _b64u(hashlib.sha256(canonical).digest())


def _read_private(path: Path, what: str) -> bytes:
    return read_private(path, what, limit=1 << 20, error=KeyringError)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key of the index: when it started signing and when it stopped."""

    kid: str
    created_at: int
    retired_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "created_at": self.created_at, "retired_at": self.retired_at}


@dataclass(frozen=True, slots=True)
class _Index:
    max_lifetime: int
    active: str
    keys: tuple[KeyEntry, ...]

    def to_bytes(self) -> bytes:
        doc = {
            "version": INDEX_VERSION,
            "max_lifetime": self.max_lifetime,
            "active": self.active,
            "keys": [k.to_json() for k in self.keys],
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: Path) -> _Index:
        try:
            doc = json.loads(data)
            members = {"version", "max_lifetime", "active", "keys"}
            if not isinstance(doc, dict) or set(doc) != members:
                raise ValueError("unexpected members")
            if doc["version"] != INDEX_VERSION:
                raise ValueError(f"unknown version {doc['version']!r}")
            keys = []
            for k in doc["keys"]:
                if set(k) != {"kid", "created_at", "retired_at"}:
                    raise ValueError("unexpected key members")
                retired = k["retired_at"]
                if not isinstance(k["kid"], str) or not isinstance(k["created_at"], int):
                    raise ValueError("bad key entry")
                if retired is not None and not isinstance(retired, int):
                    raise ValueError("bad retired_at")
                keys.append(KeyEntry(k["kid"], k["created_at"], retired))
            max_lifetime = doc["max_lifetime"]
            active = doc["active"]
            if not isinstance(max_lifetime, int) or not isinstance(active, str):
                raise ValueError("bad max_lifetime or active")
        except (ValueError, TypeError, KeyError) as e:
            raise KeyringError(f"{where}: malformed keyring index: {e}") from None
        index = cls(max_lifetime, active, tuple(keys))
        if [k.kid for k in index.keys if k.retired_at is None] != [active]:
            raise KeyringError(f"{where}: the index must have exactly one active key, {active!r}")
        return index


class TokenKeyring:
    """The signing keys of one verifier deployment (shared by its replicas)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._index: _Index | None = None
        self._private: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._refresh()

    # -- creation and loading ------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, *, max_lifetime: int = DEFAULT_MAX_LIFETIME, now: int | None = None
    ) -> TokenKeyring:
        """A new keyring with one active key; refuses a directory that already has one."""
        _check_lifetime(max_lifetime, MAX_MAX_LIFETIME)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (directory / INDEX_NAME).exists():
            raise KeyringError(f"{directory} already holds a keyring")
        with _flock(directory):
            created = int(time.time()) if now is None else now
            kid = _new_key_file(directory)
            index = _Index(max_lifetime, kid, (KeyEntry(kid, created),))
            write_private_atomic(directory / INDEX_NAME, index.to_bytes())
        return cls(directory)

    @classmethod
    def load_or_create(
        cls, directory: Path, *, max_lifetime: int = DEFAULT_MAX_LIFETIME
    ) -> TokenKeyring:
        if (directory / INDEX_NAME).exists():
            return cls(directory)
        return cls.create(directory, max_lifetime=max_lifetime)

    def _refresh(self) -> _Index:
        path = self._dir / INDEX_NAME
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            raise KeyringError(f"{self._dir} holds no keyring ({INDEX_NAME} is missing)") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._index is not None and stamp == self._stamp:
                return self._index
            index = _Index.from_bytes(_read_private(path, "keyring index"), path)
            private = {}
            for entry in index.keys:
                known = self._private.get(entry.kid)
                private[entry.kid] = known if known is not None else self._load_key(entry.kid)
            self._index, self._stamp, self._private = index, stamp, private
            return index

    def _load_key(self, kid: str) -> ec.EllipticCurvePrivateKey:
        path = self._dir / f"{kid}.pem"
        data = _read_private(path, "signing key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as e:
            raise KeyringError(f"{path}: not a PEM private key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise KeyringError(f"{path}: not a P-256 key")
        if key_id(key.public_key()) != kid:
            raise KeyringError(f"{path}: the key's thumbprint is not {kid}")
        return key

    # -- queries -------------------------------------------------------------------------

    @property
    def max_lifetime(self) -> int:
        return self._refresh().max_lifetime

    @property
    def active_kid(self) -> str:
        return self._refresh().active

    def entries(self) -> tuple[KeyEntry, ...]:
        return self._refresh().keys

    def signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        index = self._refresh()
        return index.active, self._private[index.active]

    def _published(self, index: _Index, now: int) -> list[KeyEntry]:
        return [
            k
            for k in index.keys
            if k.retired_at is None or now < k.retired_at + index.max_lifetime + LEEWAY
        ]

    def public_key(self, kid: str, *, now: int | None = None) -> ec.EllipticCurvePublicKey:
        """The public key ``kid`` while it is published; :class:`TokenError` otherwise."""
        at = int(time.time()) if now is None else now
        index = self._refresh()
        for entry in self._published(index, at):
            if entry.kid == kid:
                return self._private[kid].public_key()
        raise TokenError(f"unknown or withdrawn signing key {kid!r}")

    def jwks(self, *, now: int | None = None) -> dict[str, Any]:
        """The JWK Set: the active key first, then retired keys still covering live tokens."""
        at = int(time.time()) if now is None else now
        index = self._refresh()
        published = sorted(
            self._published(index, at), key=lambda k: (k.retired_at is not None, -k.created_at)
        )
        keys = []
        for entry in published:
            jwk: dict[str, Any] = public_jwk(self._private[entry.kid].public_key())
            jwk.update({"kid": entry.kid, "use": "sig", "alg": ALGORITHM})
            keys.append(jwk)
        return {"keys": keys}

    # -- changes -------------------------------------------------------------------------

    def rotate(self, *, now: int | None = None) -> str:
        """Make a new active key; the old one stays published until its tokens expire."""
        at = int(time.time()) if now is None else now
        with _flock(self._dir):
            self._stamp = None
            index = self._refresh()
            kid = _new_key_file(self._dir)
            retired = [
                KeyEntry(k.kid, k.created_at, at) if k.retired_at is None else k
                for k in index.keys
            ]
            keys = (*retired, KeyEntry(kid, at))
            write_private_atomic(
                self._dir / INDEX_NAME, _Index(index.max_lifetime, kid, keys).to_bytes()
            )
        self._stamp = None
        self._refresh()
        return kid

    def prune(self, *, now: int | None = None) -> tuple[str, ...]:
        """Delete retired keys whose tokens have all expired; returns their ids."""
        at = int(time.time()) if now is None else now
        with _flock(self._dir):
            self._stamp = None
            index = self._refresh()
            keep = tuple(self._published(index, at))
            gone = tuple(k.kid for k in index.keys if k not in keep)
            if gone:
                write_private_atomic(
                    self._dir / INDEX_NAME,
                    _Index(index.max_lifetime, index.active, keep).to_bytes(),
                )
                for kid in gone:
                    try:
                        (self._dir / f"{kid}.pem").unlink()
                    except FileNotFoundError:
                        pass
        self._stamp = None
        self._refresh()
        return gone


@contextmanager
def _flock(directory: Path) -> Iterator[None]:
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _new_key_file(directory: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    kid = key_id(key.public_key())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_atomic(directory / f"{kid}.pem", pem)
    return kid


def _check_lifetime(lifetime: int, limit: int) -> None:
    if not 1 <= lifetime <= limit:
        raise KeyringError(f"a token lifetime is 1..{limit} seconds, not {lifetime}")


class TokenIssuer:
    """Signs attestation results and checks tokens this deployment issued."""

    def __init__(
        self, keyring: TokenKeyring, *, issuer: str, lifetime: int = DEFAULT_LIFETIME
    ) -> None:
        _check_lifetime(lifetime, keyring.max_lifetime)
        self._keyring = keyring
        self._issuer = issuer
        self._lifetime = lifetime

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def keyring(self) -> TokenKeyring:
        return self._keyring

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        audience: str,
        subject: str | None = None,
        now: int | None = None,
        lifetime: int | None = None,
    ) -> str:
        """A token over ``claims`` for ``audience``; reserved claims are set here only."""
        clash = RESERVED_CLAIMS & set(claims)
        if clash:
            raise TokenError(f"claims may not set the reserved names {sorted(clash)}")
        if not audience:
            raise TokenError("a token needs an audience")
        span = self._lifetime if lifetime is None else lifetime
        _check_lifetime(span, self._keyring.max_lifetime)
        at = int(time.time()) if now is None else now
        payload: dict[str, Any] = dict(claims)
        payload.update(
            {
                "iss": self._issuer,
                "aud": audience,
                "iat": at,
                "nbf": at,
                "exp": at + span,
                "jti": secrets.token_hex(16),
            }
        )
        if subject is not None:
            payload["sub"] = subject
        kid, key = self._keyring.signing_key()
        return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})

    def verify(self, token: str, *, audience: str, now: int | None = None) -> dict[str, Any]:
        """The claims of a token this deployment issued for ``audience``, or TokenError."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise TokenError(f"malformed token: {e}") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("the token names no signing key (kid)")
        at = int(time.time()) if now is None else now
        key = self._keyring.public_key(kid, now=at)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self._issuer,
                # PyJWT reads the wall clock; the time checks are made below against ``now``.
                options={
                    "require": ["iss", "aud", "iat", "nbf", "exp", "jti"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as e:
            raise TokenError(f"token refused: {e}") from None
        times = {name: claims.get(name) for name in ("iat", "nbf", "exp")}
        for name, value in times.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TokenError(f"token refused: {name} is not an integer")
        if at + LEEWAY < claims["nbf"] or at + LEEWAY < claims["iat"]:
            raise TokenError(f"token refused: not valid before {claims['nbf']} (now {at})")
        if at >= claims["exp"] + LEEWAY:
            raise TokenError(f"token refused: expired at {claims['exp']} (now {at})")
        return claims
