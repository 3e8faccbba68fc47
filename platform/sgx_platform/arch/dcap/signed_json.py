"""Intel's signed JSON documents (TCB Info, Enclave Identity): exact text in, exact text out.

The Intel PCS returns ``{"tcbInfo":{...},"signature":"<hex r||s>"}`` (or ``enclaveIdentity``).
Intel signs the exact bytes of the inner value as they appear in that body: ECDSA P-256 over
SHA-256, the signature being 64 bytes ``r || s`` written as 128 hex digits. A verifier must
check the signature over those bytes and parse *the same* bytes, never a re-serialization.

This module holds what TCB Info, Enclave Identity and the collateral formats share:

* :func:`split_signed_response` / :func:`join_signed_response`: PCS response body <-> (signed
  body text, signature), character for character;
* :func:`loads_strict`: JSON decoding that refuses duplicate keys, floats, NaN/Infinity;
* :class:`HexBytes`: bytes read from Intel's hex strings that remember their spelling (Intel's
  older documents use lower case, newer ones upper case) so the text can be rebuilt exactly;
* :func:`parse_timestamp` / :func:`format_timestamp`: Intel's ``YYYY-MM-DDTHH:MM:SSZ``;
* :class:`ObjectReader` and :func:`write_object`: typed, strict access to a JSON object that
  records the order of its keys, and the compact writer that honours it.

Invariants: readers raise :class:`~sgx_platform.arch.errors.MalformedStructureError` for any
unknown key, missing key, wrong type or out-of-range value; writers emit compact JSON
(``,`` and ``:`` separators, no whitespace) with ASCII strings.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sgx_platform.arch.errors import MalformedStructureError

SIGNATURE_SIZE = 64

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_HEX = re.compile(r"[0-9A-Fa-f]*")
_WHITESPACE = " \t\n\r"


# ---------------------------------------------------------------------------------------------
# Values


class HexBytes(bytes):
    """Bytes that came from (or will be written as) a hex string, remembering its spelling.

    Equality and hashing are those of ``bytes``: the spelling only matters when the text is
    written back. A value built from bytes alone is spelled in upper case, as the PCS does now.
    """

    _text: str

    def __new__(cls, value: bytes, text: str | None = None) -> HexBytes:
        obj = super().__new__(cls, value)
        if text is None:
            text = bytes(value).hex().upper()
        elif not _HEX.fullmatch(text) or len(text) != 2 * len(obj) or bytes.fromhex(text) != obj:
            raise MalformedStructureError(f"hex spelling {text!r} does not match the bytes")
        obj._text = text
        return obj

    @classmethod
    def from_hex(cls, text: object, size: int, what: str) -> HexBytes:
        """Decode exactly ``size`` bytes from hex digits (either case)."""
        if not isinstance(text, str) or not _HEX.fullmatch(text) or len(text) != 2 * size:
            raise MalformedStructureError(f"{what}: expected {2 * size} hex digits")
        return cls(bytes.fromhex(text), text)

    @property
    def text(self) -> str:
        """The hex spelling this value is written with."""
        return self._text

    def __repr__(self) -> str:
        return f"HexBytes({self._text!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (HexBytes, (bytes(self), self._text))


def parse_timestamp(text: object, what: str) -> datetime.datetime:
    """Intel's ``YYYY-MM-DDTHH:MM:SSZ`` as an aware UTC datetime."""
    if not isinstance(text, str) or not _TIMESTAMP.fullmatch(text):
        raise MalformedStructureError(f"{what}: expected YYYY-MM-DDTHH:MM:SSZ")
    try:
        parsed = datetime.datetime.strptime(text, _TIMESTAMP_FORMAT)
    except ValueError as e:
        raise MalformedStructureError(f"{what}: {e}") from e
    return parsed.replace(tzinfo=datetime.UTC)


def format_timestamp(when: datetime.datetime) -> str:
    """The inverse of :func:`parse_timestamp` (the datetime must be UTC, whole seconds)."""
    if when.utcoffset() != datetime.timedelta(0) or when.microsecond:
        raise MalformedStructureError("timestamp: must be UTC with whole seconds")
    return when.strftime(_TIMESTAMP_FORMAT)


def check_timestamp(value: object, what: str) -> None:
    """Raise unless ``value`` is a datetime :func:`format_timestamp` can write."""
    if not isinstance(value, datetime.datetime):
        raise MalformedStructureError(f"{what}: must be a datetime")
    format_timestamp(value)


def check_uint(value: object, bits: int, what: str) -> None:
    """Raise unless ``value`` is an ``int`` (not a bool) in ``0 .. 2**bits - 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise MalformedStructureError(f"{what}: must be an integer in 0..2^{bits}-1")


def coerce_hex_field(obj: object, name: str, size: int, what: str) -> None:
    """Dataclass ``__post_init__`` helper: ``obj.name`` must be ``size`` bytes; plain bytes are
    turned into :class:`HexBytes` (upper-case spelling)."""
    value = getattr(obj, name)
    if not isinstance(value, bytes) or len(value) != size:
        raise MalformedStructureError(f"{what}: {name} must be {size} bytes")
    if not isinstance(value, HexBytes):
        object.__setattr__(obj, name, HexBytes(value))


def _reject_constant(name: str) -> Any:
    raise MalformedStructureError(f"JSON: {name} is not allowed")


def _reject_float(text: str) -> Any:
    raise MalformedStructureError(f"JSON: non-integer number {text} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedStructureError(f"JSON: duplicate key {key!r}")
        out[key] = value
    return out


def loads_strict(text: str | bytes, what: str) -> Any:
    """``json.loads`` without duplicate keys, floats, NaN or Infinity; bytes must be UTF-8."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedStructureError(f"{what}: not UTF-8: {e}") from e
    if not isinstance(text, str):
        raise MalformedStructureError(f"{what}: expected text")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except json.JSONDecodeError as e:
        raise MalformedStructureError(f"{what}: bad JSON: {e}") from e
    except RecursionError as e:
        raise MalformedStructureError(f"{what}: nested too deeply") from e


# ---------------------------------------------------------------------------------------------
# Response bodies


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _expect(text: str, pos: int, char: str, what: str) -> int:
    pos = _skip_ws(text, pos)
    if pos >= len(text) or text[pos] != char:
        raise MalformedStructureError(f"{what}: expected {char!r} at offset {pos}")
    return pos + 1


def _top_level_members(text: str, what: str) -> list[tuple[str, int, int]]:
    """(key, start, end) of each top-level member value of a JSON object, exactly as written."""
    decoder = json.JSONDecoder()
    pos = _expect(text, 0, "{", what)
    members: list[tuple[str, int, int]] = []
    pos = _skip_ws(text, pos)
    if pos < len(text) and text[pos] == "}":
        return members
    while True:
        pos = _skip_ws(text, pos)
        try:
            key, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise MalformedStructureError(f"{what}: bad JSON: {e}") from e
        if not isinstance(key, str):
            raise MalformedStructureError(f"{what}: expected a key at offset {pos}")
        pos = _expect(text, pos, ":", what)
        start = _skip_ws(text, pos)
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise MalformedStructureError(f"{what}: bad JSON: {e}") from e
        members.append((key, start, end))
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        pos = _expect(text, pos, "}", what)
        if _skip_ws(text, pos) != len(text):
            raise MalformedStructureError(f"{what}: trailing data at offset {pos}")
        return members


def decode_signature_hex(value: object, what: str) -> bytes:
    """A 64-byte ``r || s`` signature from 128 hex digits."""
    return bytes(HexBytes.from_hex(value, SIGNATURE_SIZE, what))


def split_signed_response(body: str | bytes, field: str) -> tuple[str, bytes]:
    """Split ``{"<field>":{...},"signature":"<hex>"}`` into the exact text of the ``field``
    value (the signed bytes) and the 64-byte ``r || s`` signature.

    The body must be strict JSON with exactly these two members (any order, any JSON
    whitespace between tokens); the field value must be an object.
    """
    what = f"signed {field} response"
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedStructureError(f"{what}: not UTF-8: {e}") from e
    parsed = loads_strict(body, what)  # duplicates, floats, overall validity
    if not isinstance(parsed, dict) or set(parsed) != {field, "signature"}:
        raise MalformedStructureError(f"{what}: expected exactly {field!r} and 'signature'")
    spans = {key: (start, end) for key, start, end in _top_level_members(body, what)}
    start, end = spans[field]
    if not isinstance(parsed[field], dict):
        raise MalformedStructureError(f"{what}: {field} must be an object")
    return body[start:end], decode_signature_hex(parsed["signature"], f"{what}: signature")


def join_signed_response(field: str, body_text: str, signature: bytes) -> str:
    """The PCS response body for a signed body text, as Intel writes it (compact, lower-case
    hex signature)."""
    if len(signature) != SIGNATURE_SIZE:
        raise MalformedStructureError("signature: expected 64 bytes r||s")
    return f'{{"{field}":{body_text},"signature":"{bytes(signature).hex()}"}}'


# ---------------------------------------------------------------------------------------------
# Typed reading and exact writing of objects


class ObjectReader:
    """Typed access to one decoded JSON object; :meth:`finish` rejects keys nobody read."""

    __slots__ = ("_obj", "_read", "_what")

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise MalformedStructureError(f"{what}: expected a JSON object")
        self._obj: dict[str, Any] = value
        self._read: set[str] = set()
        self._what = what

    @property
    def key_order(self) -> tuple[str, ...]:
        return tuple(self._obj)

    def has(self, key: str) -> bool:
        return key in self._obj

    def raw(self, key: str) -> Any:
        if key not in self._obj:
            raise MalformedStructureError(f"{self._what}: missing {key!r}")
        self._read.add(key)
        return self._obj[key]

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise MalformedStructureError(f"{self._what}: {key!r} must be a string")
        return value

    def integer(self, key: str, bits: int) -> int:
        value = self.raw(key)
        check_uint(value, bits, f"{self._what}: {key!r}")
        assert isinstance(value, int)
        return value

    def hex(self, key: str, size: int) -> HexBytes:
        return HexBytes.from_hex(self.raw(key), size, f"{self._what}: {key!r}")

    def timestamp(self, key: str) -> datetime.datetime:
        return parse_timestamp(self.raw(key), f"{self._what}: {key!r}")

    def array(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise MalformedStructureError(f"{self._what}: {key!r} must be an array")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.array(key)
        if not all(isinstance(i, str) for i in items):
            raise MalformedStructureError(f"{self._what}: {key!r} must be an array of strings")
        return tuple(items)

    def objects(self, key: str, decode: Callable[[object, str], Any]) -> tuple[Any, ...]:
        return tuple(
            decode(item, f"{self._what}.{key}[{i}]") for i, item in enumerate(self.array(key))
        )

    def object(self, key: str) -> ObjectReader:
        return ObjectReader(self.raw(key), f"{self._what}.{key}")

    def finish(self) -> None:
        unknown = [k for k in self._obj if k not in self._read]
        if unknown:
            raise MalformedStructureError(f"{self._what}: unknown keys {unknown}")


def write_string(value: str) -> str:
    """A JSON string literal (ASCII; ``/`` not escaped, as Intel writes it)."""
    return json.dumps(value, ensure_ascii=True)


def write_strings(values: Iterable[str]) -> str:
    return "[" + ",".join(write_string(v) for v in values) + "]"


def write_object(members: Sequence[tuple[str, str]], key_order: Sequence[str] = ()) -> str:
    """A compact JSON object from (key, encoded value) pairs given in canonical order.

    ``key_order`` (the order a parsed document used) is honoured when it names exactly these
    keys; otherwise the canonical order is used.
    """
    if key_order and sorted(key_order) == sorted(k for k, _ in members):
        values = dict(members)
        members = [(k, values[k]) for k in key_order]
    return "{" + ",".join(f"{write_string(k)}:{v}" for k, v in members) + "}"
