"""The 32-byte measurement value type (MRENCLAVE, MRSIGNER, SIGSTRUCT.ENCLAVEHASH, ...).

Invariant: a :class:`Measurement` always holds exactly 32 bytes. It is a public identity, not a
secret, so ordinary equality is fine; hex is lower-case without a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgx_platform.arch.errors import MalformedStructureError

MEASUREMENT_SIZE = 32


@dataclass(frozen=True, slots=True)
class Measurement:
    """A SHA-256 sized enclave measurement (MRENCLAVE or MRSIGNER)."""

    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes):
            raise MalformedStructureError("measurement must be bytes")
        if len(self.value) != MEASUREMENT_SIZE:
            raise MalformedStructureError(
                f"measurement: expected {MEASUREMENT_SIZE} bytes, got {len(self.value)}"
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> Measurement:
        return cls(bytes(data))

    @classmethod
    def from_hex(cls, text: str) -> Measurement:
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError as e:
            raise MalformedStructureError(f"measurement: not hex: {e}") from None
        return cls(raw)

    @classmethod
    def zero(cls) -> Measurement:
        return cls(bytes(MEASUREMENT_SIZE))

    def to_bytes(self) -> bytes:
        return self.value

    def hex(self) -> str:
        return self.value.hex()

    def __bytes__(self) -> bytes:
        return self.value

    def __str__(self) -> str:
        return self.value.hex()


#: The all-zero measurement (a default for unset MRENCLAVE/MRSIGNER fields).
ZERO_MEASUREMENT = Measurement(bytes(MEASUREMENT_SIZE))
