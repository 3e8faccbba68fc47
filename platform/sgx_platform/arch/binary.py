"""Bounds-checked reading of variable-length binary data.

:class:`Reader` never returns short reads: asking for more bytes than remain raises
:class:`MalformedStructureError` naming the field, and :meth:`Reader.finish` rejects trailing
bytes. Fixed-size structures use ``struct.Struct`` layouts directly; this module serves the
variable-length ones (quotes, certification data, SGXS streams).
"""

from __future__ import annotations

import struct

from sgx_platform.arch.errors import MalformedStructureError


class Reader:
    """A cursor over ``data`` that refuses truncation and, at :meth:`finish`, trailing bytes."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0:
            raise MalformedStructureError(f"{self._what}: negative length for {field}")
        if self.remaining < n:
            raise MalformedStructureError(
                f"{self._what}: truncated at {field}: need {n} bytes at offset {self._pos}, "
                f"{self.remaining} remain"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def unpack(self, layout: struct.Struct, field: str) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size, field))

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def finish(self) -> None:
        if self.remaining:
            raise MalformedStructureError(
                f"{self._what}: {self.remaining} trailing bytes at offset {self._pos}"
            )


def require_length(data: bytes, size: int, what: str) -> None:
    """Raise unless ``data`` is exactly ``size`` bytes long."""
    if len(data) != size:
        raise MalformedStructureError(f"{what}: expected {size} bytes, got {len(data)}")


def require_zero(data: bytes, what: str) -> None:
    """Raise unless every byte of a reserved field is zero."""
    if any(data):
        raise MalformedStructureError(f"{what}: reserved bytes must be zero")


def require_bytes(value: object, size: int, what: str) -> None:
    """Raise unless a field value is ``bytes`` of exactly ``size`` bytes (dataclass checks)."""
    if not isinstance(value, bytes):
        raise MalformedStructureError(f"{what}: must be bytes, got {type(value).__name__}")
    require_length(value, size, what)


def require_uint(value: object, bits: int, what: str) -> None:
    """Raise unless a field value is an ``int`` in ``0 .. 2**bits - 1`` (dataclass checks)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise MalformedStructureError(f"{what}: must be an unsigned {bits}-bit integer")
