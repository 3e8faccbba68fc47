"""Launch-control state of the CPU: IA32_SGXLEPUBKEYHASH0..3 and the launch-policy latch.

Invariants:

* The LE hash registers hold a 32-byte SHA-256 value (MSR 0x8C + i = bytes 8i..8i+7,
  little-endian). At reset they hold Intel's launch-enclave signer hash (§1.5) and are
  writable; :meth:`LePubKeyHashRegisters.lock` makes them read-only until the next reset.
* The launch-policy latch holds at most one 32-byte digest per boot: the first write is final,
  any later write raises :class:`LatchAlreadySetError` (even with the same value, so a second
  writer always learns it was not first). Only a reset clears it.
* Neither survives a reset or a restart: they are CPU registers, not fuses.
"""

from __future__ import annotations

from sgx_platform.arch.measurement import Measurement
from sgx_platform.errors import LatchAlreadySetError, RegisterLockedError

#: IA32_SGXLEPUBKEYHASH reset value: SHA-256 of Intel's launch-enclave signing key (§1.5).
INTEL_LE_PUBKEYHASH = Measurement(
    bytes.fromhex("acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4")
)
#: MSR numbers of IA32_SGXLEPUBKEYHASH0..3.
LEPUBKEYHASH_MSRS = (0x8C, 0x8D, 0x8E, 0x8F)
LATCH_SIZE = 32


class LePubKeyHashRegisters:
    """IA32_SGXLEPUBKEYHASH0..3: writable until locked, reset to Intel's LE hash."""

    __slots__ = ("_locked", "_value")

    def __init__(self) -> None:
        self._value = INTEL_LE_PUBKEYHASH
        self._locked = False

    @property
    def value(self) -> Measurement:
        return self._value

    @property
    def locked(self) -> bool:
        return self._locked

    def write(self, value: Measurement) -> None:
        """Write all four registers at once (the hash of the LE signer's modulus)."""
        if not isinstance(value, Measurement):
            raise TypeError("IA32_SGXLEPUBKEYHASH takes a Measurement")
        if self._locked:
            raise RegisterLockedError(
                "IA32_SGXLEPUBKEYHASH is locked until the next platform reset"
            )
        self._value = value

    def lock(self) -> None:
        """Make the registers read-only until reset (idempotent)."""
        self._locked = True

    def read_msr(self, msr: int) -> int:
        """RDMSR of one of 0x8C..0x8F: 8 bytes of the hash, little-endian."""
        if msr not in LEPUBKEYHASH_MSRS:
            raise ValueError(f"MSR {msr:#x} is not an IA32_SGXLEPUBKEYHASH register")
        i = LEPUBKEYHASH_MSRS.index(msr)
        return int.from_bytes(self._value.value[8 * i : 8 * i + 8], "little")

    def reset(self) -> None:
        self._value = INTEL_LE_PUBKEYHASH
        self._locked = False


class LaunchPolicyLatch:
    """A write-once 32-byte register for the digest of the launch policy, cleared by reset."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: bytes | None = None

    @property
    def value(self) -> bytes | None:
        """The latched digest, or ``None`` when nothing was latched since reset."""
        return self._value

    def latch(self, digest: bytes) -> None:
        if not isinstance(digest, bytes) or len(digest) != LATCH_SIZE:
            raise ValueError(f"the launch-policy latch takes exactly {LATCH_SIZE} bytes")
        if self._value is not None:
            raise LatchAlreadySetError(
                f"the launch-policy latch already holds {self._value.hex()} until reset"
            )
        self._value = bytes(digest)

    def reset(self) -> None:
        self._value = None
