"""Enclave handles and leases: unguessable, renewable, expiring, stale after a new boot."""

from __future__ import annotations

import errno

import pytest

from sgx_platform.driver_errors import (
    LeaseExpiredError,
    StaleHandleError,
    UnknownHandleError,
)
from sgx_platform.lease import HANDLE_SIZE, LeaseRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_handles_are_random_and_carry_the_boot() -> None:
    registry: LeaseRegistry[str] = LeaseRegistry(b"boot-1", 10)
    handles = {registry.add(f"e{i}")[0] for i in range(50)}
    assert len(handles) == 50
    assert all(len(h) == HANDLE_SIZE for h in handles)
    assert len({h[:8] for h in handles}) == 1, "one boot tag per boot"
    assert len({h[8:] for h in handles}) == 50


def test_get_renew_remove() -> None:
    clock = Clock()
    registry: LeaseRegistry[str] = LeaseRegistry(b"boot", 10, clock=clock)
    handle, enclave_id = registry.add("enclave")
    assert len(enclave_id) == 16 and enclave_id not in handle.hex()
    assert registry.get(handle) == "enclave"
    assert registry.enclave_id(handle) == enclave_id
    clock.now += 9
    assert registry.renew(handle) == 10
    clock.now += 9
    assert registry.get(handle) == "enclave", "renewal extended the lease"
    assert registry.remove(handle) == "enclave"
    with pytest.raises(UnknownHandleError) as e:
        registry.get(handle)
    assert (e.value.errno, e.value.reason) == (errno.EBADF, "UNKNOWN_HANDLE")


def test_an_expired_lease_is_never_returned_and_is_reaped() -> None:
    clock = Clock()
    registry: LeaseRegistry[str] = LeaseRegistry(b"boot", 5, clock=clock)
    old, _ = registry.add("old")
    clock.now += 3
    young, _ = registry.add("young")
    clock.now += 2
    with pytest.raises(LeaseExpiredError) as e:
        registry.get(old)
    assert e.value.reason == "LEASE_EXPIRED"
    with pytest.raises(LeaseExpiredError):
        registry.renew(old)
    assert registry.expired() == ["old"]
    assert registry.expired() == []
    assert registry.get(young) == "young"
    assert len(registry) == 1


def test_a_new_boot_makes_old_handles_stale() -> None:
    registry: LeaseRegistry[str] = LeaseRegistry(b"boot-1", 10)
    handle, _ = registry.add("a")
    assert registry.new_boot(b"boot-2") == ["a"]
    with pytest.raises(StaleHandleError) as e:
        registry.get(handle)
    assert (e.value.errno, e.value.reason) == (errno.ESTALE, "STALE_HANDLE")
    fresh, _ = registry.add("b")
    assert fresh[:8] != handle[:8]


def test_invented_and_malformed_handles_are_unknown() -> None:
    registry: LeaseRegistry[str] = LeaseRegistry(b"boot", 10)
    real, _ = registry.add("a")
    forged = real[:8] + bytes(HANDLE_SIZE - 8)
    for bad in (forged, b"", real[:-1], real + b"\x00"):
        with pytest.raises(UnknownHandleError):
            registry.get(bad)
    with pytest.raises(ValueError):
        LeaseRegistry(b"boot", 0)
