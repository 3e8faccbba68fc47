"""The ASN.1 shape of Intel's SGX certificate extensions, through asn1crypto (private).

Intel's PCK certificate extension (OID 1.2.840.113741.1.13.1) is a tree of
``SEQUENCE { OBJECT IDENTIFIER, value }`` pairs; a value is an INTEGER, OCTET STRING,
ENUMERATED, BOOLEAN or again a SEQUENCE OF such pairs. This module turns that tree into plain
Python values and back and knows nothing about what the OIDs mean (``pck.py`` does).

Invariants: decoding accepts only DER that re-encodes to exactly the same bytes (no BER
leftovers, no trailing data); any other type of value raises. asn1crypto stays inside this
module and every error it raises is wrapped in
:class:`~sgx_platform.arch.errors.MalformedStructureError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from asn1crypto import core

from sgx_platform.arch.errors import MalformedStructureError


@dataclass(frozen=True, slots=True)
class Enumerated:
    """An ASN.1 ENUMERATED value (kept apart from INTEGER: the tag differs)."""

    value: int


PairValue: TypeAlias = "bool | int | bytes | Enumerated | tuple[Pair, ...]"
Pair: TypeAlias = "tuple[str, PairValue]"

_TAG_BOOLEAN = 1
_TAG_INTEGER = 2
_TAG_OCTET_STRING = 4
_TAG_ENUMERATED = 10
_TAG_SEQUENCE = 16
_MAX_DEPTH = 4


class _Enumerated(core.Integer):  # type: ignore[misc]
    """ENUMERATED read as a plain integer (asn1crypto's Enumerated wants a name map)."""

    tag = _TAG_ENUMERATED


class _Pair(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[str, type]]] = [
        ("type", core.ObjectIdentifier),
        ("value", core.Any),
    ]


class _Pairs(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _Pair


def _decode_value(value: core.Any, what: str, depth: int) -> PairValue:
    identifier = value.dump()[0]
    if identifier >> 6 != 0:
        raise MalformedStructureError(f"{what}: non-universal tag")
    tag = identifier & 0x1F
    if tag == _TAG_SEQUENCE:
        if depth >= _MAX_DEPTH:
            raise MalformedStructureError(f"{what}: nested too deeply")
        return _decode_pairs(value.parse(_Pairs), what, depth + 1)
    if tag == _TAG_INTEGER:
        number = value.parse(core.Integer).native
        assert isinstance(number, int)
        return number
    if tag == _TAG_OCTET_STRING:
        octets = value.parse(core.OctetString).native
        assert isinstance(octets, bytes)
        return octets
    if tag == _TAG_ENUMERATED:
        return Enumerated(int(value.parse(_Enumerated).native))
    if tag == _TAG_BOOLEAN:
        flag = value.parse(core.Boolean).native
        assert isinstance(flag, bool)
        return flag
    raise MalformedStructureError(f"{what}: unsupported ASN.1 tag {tag}")


def _decode_pairs(pairs: _Pairs, what: str, depth: int) -> tuple[Pair, ...]:
    out: list[Pair] = []
    for pair in pairs:
        oid = pair["type"].dotted
        assert isinstance(oid, str)
        out.append((oid, _decode_value(pair["value"], f"{what} {oid}", depth)))
    return tuple(out)


def decode_pairs(der: bytes, what: str) -> tuple[Pair, ...]:
    """Decode a DER ``SEQUENCE OF SEQUENCE { OID, value }`` tree."""
    try:
        parsed = _Pairs.load(der, strict=True)
        tree = _decode_pairs(parsed, what, 0)
    except MalformedStructureError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise MalformedStructureError(f"{what}: bad DER: {e}") from e
    if encode_pairs(tree) != der:
        raise MalformedStructureError(f"{what}: not DER (does not re-encode identically)")
    return tree


def _encode_value(value: PairValue) -> core.Asn1Value:
    if isinstance(value, bool):  # before int: bool is an int
        return core.Boolean(value)
    if isinstance(value, int):
        return core.Integer(value)
    if isinstance(value, bytes):
        return core.OctetString(value)
    if isinstance(value, Enumerated):
        return _Enumerated(value.value)
    return _build_pairs(value)


def _build_pairs(pairs: Sequence[Pair]) -> _Pairs:
    return _Pairs([_Pair({"type": oid, "value": _encode_value(v)}) for oid, v in pairs])


def encode_pairs(pairs: Sequence[Pair]) -> bytes:
    """DER of a ``SEQUENCE OF SEQUENCE { OID, value }`` tree."""
    try:
        der = _build_pairs(pairs).dump(force=True)
    except (ValueError, TypeError) as e:
        raise MalformedStructureError(f"ASN.1 encoding failed: {e}") from e
    assert isinstance(der, bytes)
    return der
