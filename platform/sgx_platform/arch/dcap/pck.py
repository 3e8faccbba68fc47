"""The SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1).

Intel "SGX PCK Certificate and CRL Profile": the extension value is a SEQUENCE of
(OID, value) pairs under 1.2.840.113741.1.13.1, in this order:

* ``.1`` PPID, OCTET STRING (16);
* ``.2`` TCB, a SEQUENCE of ``.2.1`` … ``.2.16`` (SGX TCB component SVNs, INTEGER 0-255),
  ``.2.17`` PCESVN (INTEGER 0-65535), ``.2.18`` CPUSVN (OCTET STRING 16);
* ``.3`` PCE-ID, OCTET STRING (2);
* ``.4`` FMSPC, OCTET STRING (6);
* ``.5`` SGX Type, ENUMERATED (0 Standard, 1 Scalable, 2 Scalable with integrity);
* optional ``.6`` PlatformInstanceID, OCTET STRING (16) and ``.7`` Configuration, a SEQUENCE
  of optional ``.7.1`` dynamicPlatform, ``.7.2`` cachedKeys, ``.7.3`` SMTEnabled (BOOLEAN),
  present in certificates issued by the PCK Platform CA.

Invariants: :meth:`SgxExtension.from_der` accepts exactly this shape (known OIDs, this order,
these types and sizes, canonical DER) and raises
:class:`~sgx_platform.arch.errors.MalformedStructureError` otherwise; :meth:`SgxExtension.to_der`
is its exact inverse, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509

from sgx_platform.arch.binary import require_bytes, require_uint
from sgx_platform.arch.dcap._asn1 import Enumerated, Pair, PairValue, decode_pairs, encode_pairs
from sgx_platform.arch.errors import MalformedStructureError

#: The SGX extension of PCK certificates.
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = f"{SGX_EXTENSION_OID}.1"
_TCB = f"{SGX_EXTENSION_OID}.2"
_PCE_ID = f"{SGX_EXTENSION_OID}.3"
_FMSPC = f"{SGX_EXTENSION_OID}.4"
_SGX_TYPE = f"{SGX_EXTENSION_OID}.5"
_PLATFORM_INSTANCE_ID = f"{SGX_EXTENSION_OID}.6"
_CONFIGURATION = f"{SGX_EXTENSION_OID}.7"
_DYNAMIC_PLATFORM = f"{_CONFIGURATION}.1"
_CACHED_KEYS = f"{_CONFIGURATION}.2"
_SMT_ENABLED = f"{_CONFIGURATION}.3"
_COMPONENTS = tuple(f"{_TCB}.{i}" for i in range(1, 17))
_PCESVN = f"{_TCB}.17"
_CPUSVN = f"{_TCB}.18"

_WHAT = "PCK SGX extension"


class SgxType(IntEnum):
    """The platform's SGX type (extension ``.5``)."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True, slots=True)
class PckTcb:
    """The TCB the PCK was issued for: 16 component SVNs, PCESVN and the raw CPUSVN."""

    components: tuple[int, ...]
    pcesvn: int
    cpusvn: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.components, tuple) or len(self.components) != 16:
            raise MalformedStructureError(f"{_WHAT}: TCB needs 16 component SVNs")
        for i, svn in enumerate(self.components, start=1):
            require_uint(svn, 8, f"{_WHAT}: TCB component {i}")
        require_uint(self.pcesvn, 16, f"{_WHAT}: PCESVN")
        require_bytes(self.cpusvn, 16, f"{_WHAT}: CPUSVN")


@dataclass(frozen=True, slots=True)
class PlatformConfiguration:
    """Extension ``.7``: each flag is ``None`` when the certificate omits it."""

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None

    def __post_init__(self) -> None:
        for name in ("dynamic_platform", "cached_keys", "smt_enabled"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise MalformedStructureError(f"{_WHAT}: {name} must be a bool or None")


@dataclass(frozen=True, slots=True)
class SgxExtension:
    """The decoded SGX extension of a PCK certificate."""

    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: SgxType
    platform_instance_id: bytes | None = None
    configuration: PlatformConfiguration | None = None

    def __post_init__(self) -> None:
        require_bytes(self.ppid, 16, f"{_WHAT}: PPID")
        if not isinstance(self.tcb, PckTcb):
            raise MalformedStructureError(f"{_WHAT}: tcb must be a PckTcb")
        require_bytes(self.pce_id, 2, f"{_WHAT}: PCE-ID")
        require_bytes(self.fmspc, 6, f"{_WHAT}: FMSPC")
        if not isinstance(self.sgx_type, SgxType):
            raise MalformedStructureError(f"{_WHAT}: sgx_type must be an SgxType")
        if self.platform_instance_id is not None:
            require_bytes(self.platform_instance_id, 16, f"{_WHAT}: PlatformInstanceID")
        if self.configuration is not None and not isinstance(
            self.configuration, PlatformConfiguration
        ):
            raise MalformedStructureError(f"{_WHAT}: configuration type")

    # -- decoding ------------------------------------------------------------------------------

    @classmethod
    def from_der(cls, der: bytes) -> SgxExtension:
        """Decode the extension value (the DER inside the extension's OCTET STRING)."""
        if not isinstance(der, bytes):
            raise MalformedStructureError(f"{_WHAT}: must be bytes")
        items = _Items(decode_pairs(der, _WHAT), _WHAT)
        ppid = items.octets(_PPID, 16)
        tcb = _decode_tcb(items.sequence(_TCB))
        pce_id = items.octets(_PCE_ID, 2)
        fmspc = items.octets(_FMSPC, 6)
        raw_type = items.enumerated(_SGX_TYPE)
        try:
            sgx_type = SgxType(raw_type)
        except ValueError:
            raise MalformedStructureError(f"{_WHAT}: unknown SGX type {raw_type}") from None
        instance_id = (
            items.octets(_PLATFORM_INSTANCE_ID, 16)
            if items.next_is(_PLATFORM_INSTANCE_ID)
            else None
        )
        configuration = (
            _decode_configuration(items.sequence(_CONFIGURATION))
            if items.next_is(_CONFIGURATION)
            else None
        )
        items.finish()
        return cls(ppid, tcb, pce_id, fmspc, sgx_type, instance_id, configuration)

    # -- encoding ------------------------------------------------------------------------------

    def to_der(self) -> bytes:
        """The extension value's DER (exact inverse of :meth:`from_der`)."""
        tcb: list[Pair] = [
            (oid, svn) for oid, svn in zip(_COMPONENTS, self.tcb.components, strict=True)
        ]
        tcb += [(_PCESVN, self.tcb.pcesvn), (_CPUSVN, self.tcb.cpusvn)]
        pairs: list[Pair] = [
            (_PPID, self.ppid),
            (_TCB, tuple(tcb)),
            (_PCE_ID, self.pce_id),
            (_FMSPC, self.fmspc),
            (_SGX_TYPE, Enumerated(int(self.sgx_type))),
        ]
        if self.platform_instance_id is not None:
            pairs.append((_PLATFORM_INSTANCE_ID, self.platform_instance_id))
        if self.configuration is not None:
            flags: list[Pair] = []
            c = self.configuration
            for oid, flag in (
                (_DYNAMIC_PLATFORM, c.dynamic_platform),
                (_CACHED_KEYS, c.cached_keys),
                (_SMT_ENABLED, c.smt_enabled),
            ):
                if flag is not None:
                    flags.append((oid, flag))
            pairs.append((_CONFIGURATION, tuple(flags)))
        return encode_pairs(pairs)

    def to_x509_extension(self) -> x509.UnrecognizedExtension:
        """The extension for ``x509.CertificateBuilder.add_extension(..., critical=False)``."""
        return x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), self.to_der())


def sgx_extension_from_certificate(cert: x509.Certificate) -> SgxExtension:
    """Decode the SGX extension of a PCK certificate; raises if it is missing or malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise MalformedStructureError("certificate has no SGX extension") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise MalformedStructureError(f"{_WHAT}: unexpected extension type")
    return SgxExtension.from_der(value.value)


class _Items:
    """A cursor over decoded (OID, value) pairs that insists on the documented order."""

    __slots__ = ("_pairs", "_pos", "_what")

    def __init__(self, pairs: tuple[Pair, ...], what: str) -> None:
        self._pairs = pairs
        self._pos = 0
        self._what = what

    def next_is(self, oid: str) -> bool:
        return self._pos < len(self._pairs) and self._pairs[self._pos][0] == oid

    def _take(self, oid: str) -> PairValue:
        if not self.next_is(oid):
            found = self._pairs[self._pos][0] if self._pos < len(self._pairs) else "end"
            raise MalformedStructureError(f"{self._what}: expected {oid}, found {found}")
        value = self._pairs[self._pos][1]
        self._pos += 1
        return value

    def octets(self, oid: str, size: int) -> bytes:
        value = self._take(oid)
        if not isinstance(value, bytes) or len(value) != size:
            raise MalformedStructureError(f"{self._what}: {oid} must be an OCTET STRING({size})")
        return value

    def integer(self, oid: str, bits: int) -> int:
        value = self._take(oid)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise MalformedStructureError(f"{self._what}: {oid} must be an INTEGER < 2^{bits}")
        return value

    def enumerated(self, oid: str) -> int:
        value = self._take(oid)
        if not isinstance(value, Enumerated):
            raise MalformedStructureError(f"{self._what}: {oid} must be ENUMERATED")
        return value.value

    def boolean(self, oid: str) -> bool:
        value = self._take(oid)
        if not isinstance(value, bool):
            raise MalformedStructureError(f"{self._what}: {oid} must be a BOOLEAN")
        return value

    def sequence(self, oid: str) -> _Items:
        value = self._take(oid)
        if not isinstance(value, tuple):
            raise MalformedStructureError(f"{self._what}: {oid} must be a SEQUENCE")
        return _Items(value, f"{self._what} {oid}")

    def finish(self) -> None:
        if self._pos != len(self._pairs):
            raise MalformedStructureError(f"{self._what}: unexpected {self._pairs[self._pos][0]}")


def _decode_tcb(items: _Items) -> PckTcb:
    components = tuple(items.integer(oid, 8) for oid in _COMPONENTS)
    pcesvn = items.integer(_PCESVN, 16)
    cpusvn = items.octets(_CPUSVN, 16)
    items.finish()
    return PckTcb(components, pcesvn, cpusvn)


def _decode_configuration(items: _Items) -> PlatformConfiguration:
    flags: list[bool | None] = []
    for oid in (_DYNAMIC_PLATFORM, _CACHED_KEYS, _SMT_ENABLED):
        flags.append(items.boolean(oid) if items.next_is(oid) else None)
    items.finish()
    return PlatformConfiguration(*flags)
