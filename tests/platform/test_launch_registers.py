"""IA32_SGXLEPUBKEYHASH registers and the launch-policy latch."""

from __future__ import annotations

import pytest

from sgx_platform.arch.measurement import Measurement
from sgx_platform.errors import LatchAlreadySetError, RegisterLockedError
from sgx_platform.launch import (
    INTEL_LE_PUBKEYHASH,
    LaunchPolicyLatch,
    LePubKeyHashRegisters,
)

OWNER = Measurement(bytes(range(32)))


def test_reset_value_is_intels_le_hash_and_msr_split() -> None:
    regs = LePubKeyHashRegisters()
    assert regs.value.hex() == "acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4"
    # KVM/QEMU reset values (§1.5): MSR0 = bytes 0..7 little-endian.
    assert [regs.read_msr(m) for m in (0x8C, 0x8D, 0x8E, 0x8F)] == [
        0xA6053E051270B7AC,
        0x6CFBE8BA8B3B413D,
        0xC4916D99F2B3735D,
        0xD4F8C05909F9BB3B,
    ]
    with pytest.raises(ValueError):
        regs.read_msr(0x90)


def test_writable_until_locked_then_held_until_reset() -> None:
    regs = LePubKeyHashRegisters()
    regs.write(OWNER)
    assert regs.value == OWNER
    regs.lock()
    assert regs.locked
    with pytest.raises(RegisterLockedError):
        regs.write(INTEL_LE_PUBKEYHASH)
    assert regs.value == OWNER
    regs.reset()
    assert regs.value == INTEL_LE_PUBKEYHASH and not regs.locked
    regs.write(OWNER)


def test_latch_is_write_once_until_reset() -> None:
    latch = LaunchPolicyLatch()
    assert latch.value is None
    latch.latch(b"\x01" * 32)
    with pytest.raises(LatchAlreadySetError):
        latch.latch(b"\x02" * 32)
    with pytest.raises(LatchAlreadySetError):
        latch.latch(b"\x01" * 32)
    assert latch.value == b"\x01" * 32
    latch.reset()
    assert latch.value is None
    latch.latch(b"\x02" * 32)
    assert latch.value == b"\x02" * 32


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_latch_takes_exactly_32_bytes(bad: bytes) -> None:
    latch = LaunchPolicyLatch()
    with pytest.raises(ValueError):
        latch.latch(bad)
    assert latch.value is None
