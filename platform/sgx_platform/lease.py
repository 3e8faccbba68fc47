"""Enclave handles and leases: who may act as an enclave, and for how long it lives.

Invariants:

* A handle is ``boot tag (8 bytes) || 32 random bytes`` from :func:`secrets.token_bytes`: the
  random part makes it unguessable; the boot tag (a hash of the boot epoch) lets a handle from
  an earlier boot fail with the distinct :class:`StaleHandleError` instead of "unknown".
* The registry never stores a handle: entries are keyed by SHA-256 of the handle, so neither a
  memory dump of the table nor the timing of a dictionary lookup gives a usable handle.
* Every entry has a lease that ends ``lease_seconds`` after its creation or last renewal. An
  expired entry is never returned (:class:`LeaseExpiredError`); :meth:`LeaseRegistry.expired`
  hands expired entries to the owner (the driver), which destroys them and returns their EPC
  pages. A new boot epoch (:meth:`LeaseRegistry.new_boot`) drops every entry at once.
* Thread-safe: one lock guards the table; callers never hold it while doing other work.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sgx_platform.driver_errors import (
    LeaseExpiredError,
    StaleHandleError,
    UnknownHandleError,
)

BOOT_TAG_SIZE = 8
HANDLE_RANDOM_SIZE = 32
HANDLE_SIZE = BOOT_TAG_SIZE + HANDLE_RANDOM_SIZE
#: Length of the public enclave id (hex characters).
ENCLAVE_ID_HEX = 16

T = TypeVar("T")


def boot_tag(boot_epoch: bytes) -> bytes:
    """The 8-byte tag of a boot epoch carried at the start of every handle of that boot."""
    return hashlib.sha256(b"sgxemu-handle-boot-tag\x00" + boot_epoch).digest()[:BOOT_TAG_SIZE]


def _key(handle: bytes) -> bytes:
    return hashlib.sha256(handle).digest()


@dataclass
class _Lease(Generic[T]):
    value: T
    enclave_id: str
    expires: float


class LeaseRegistry(Generic[T]):
    """Live enclaves of one boot, each behind an unguessable handle and a renewable lease."""

    def __init__(
        self,
        boot_epoch: bytes,
        lease_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("the lease period must be positive")
        self._lock = threading.Lock()
        self._clock = clock
        self._lease_seconds = float(lease_seconds)
        self._tag = boot_tag(boot_epoch)
        self._entries: dict[bytes, _Lease[T]] = {}

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, value: T) -> tuple[bytes, str]:
        """Register ``value``; returns its new handle and a public enclave id."""
        handle = self._tag + secrets.token_bytes(HANDLE_RANDOM_SIZE)
        enclave_id = secrets.token_hex(ENCLAVE_ID_HEX // 2)
        with self._lock:
            self._entries[_key(handle)] = _Lease(
                value, enclave_id, self._clock() + self._lease_seconds
            )
        return handle, enclave_id

    def _lookup(self, handle: bytes) -> tuple[bytes, _Lease[T]]:
        if not isinstance(handle, bytes) or len(handle) != HANDLE_SIZE:
            raise UnknownHandleError(
                "the enclave handle is malformed (not one this platform issued)"
            )
        if not hmac.compare_digest(handle[:BOOT_TAG_SIZE], self._tag):
            raise StaleHandleError()
        key = _key(handle)
        entry = self._entries.get(key)
        if entry is None:
            raise UnknownHandleError()
        if entry.expires <= self._clock():
            raise LeaseExpiredError()
        return key, entry

    def get(self, handle: bytes) -> T:
        """The entry of a live handle; stale, unknown or expired handles raise."""
        with self._lock:
            return self._lookup(handle)[1].value

    def enclave_id(self, handle: bytes) -> str:
        with self._lock:
            return self._lookup(handle)[1].enclave_id

    def renew(self, handle: bytes) -> float:
        """Extend the lease by a full period from now; returns the seconds granted."""
        with self._lock:
            _, entry = self._lookup(handle)
            entry.expires = self._clock() + self._lease_seconds
        return self._lease_seconds

    def remove(self, handle: bytes) -> T:
        """Take the entry out (explicit destroy); stale, unknown or expired handles raise."""
        with self._lock:
            key, entry = self._lookup(handle)
            del self._entries[key]
            return entry.value

    def expired(self) -> list[T]:
        """Remove and return every entry whose lease has ended."""
        now = self._clock()
        with self._lock:
            gone = [k for k, e in self._entries.items() if e.expires <= now]
            return [self._entries.pop(k).value for k in gone]

    def new_boot(self, boot_epoch: bytes) -> list[T]:
        """Switch to a new boot epoch: every entry is dropped (and returned), old handles stale."""
        with self._lock:
            dropped = [e.value for e in self._entries.values()]
            self._entries.clear()
            self._tag = boot_tag(boot_epoch)
        return dropped

    def values(self) -> list[T]:
        with self._lock:
            return [e.value for e in self._entries.values()]
