"""TCB Info, versions 2 and 3 (Intel PCS API v3/v4 ``tcbInfo``), SGX and TDX.

Version 3 (``"id":"SGX"`` or ``"TDX"``)::

    {"id","version","issueDate","nextUpdate","fmspc","pceId","tcbType","tcbEvaluationDataNumber",
     ["tdxModule",] ["tdxModuleIdentities",] "tcbLevels":[{"tcb":{"sgxtcbcomponents":[{"svn",
     ["category"], ["type"]} x16],"pcesvn",["tdxtcbcomponents":[... x16]]},"tcbDate","tcbStatus",
     ["advisoryIDs"]}]}

Version 2 has no ``id``, no TDX parts, and spells the TCB as ``sgxtcbcomp01svn`` …
``sgxtcbcomp16svn``, ``pcesvn``.

Invariants:

* :meth:`TcbInfo.from_json` parses the exact signed text (see
  :func:`~sgx_platform.arch.dcap.signed_json.split_signed_response`) and accepts it only if
  :meth:`TcbInfo.to_json` rebuilds it character for character: compact JSON, integers only, no
  unknown, missing or duplicate keys, known statuses, hex of the right length. Hex case and the
  order of keys are remembered per object (``key_order``, excluded from equality), so Intel's
  older lower-case documents round-trip too; objects built in code use Intel's current order
  and upper-case hex.
* Nothing here checks a signature or a date; :class:`SignedTcbInfo` only pairs the signed text
  with its signature for the verifier.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sgx_platform.arch.dcap.signed_json import (
    SIGNATURE_SIZE,
    HexBytes,
    ObjectReader,
    check_timestamp,
    check_uint,
    coerce_hex_field,
    format_timestamp,
    join_signed_response,
    loads_strict,
    split_signed_response,
    write_object,
    write_string,
    write_strings,
)
from sgx_platform.arch.errors import MalformedStructureError

TCB_INFO_FIELD = "tcbInfo"
_SVN_BITS = 16  # Intel's SVNs fit a byte; Intel's synthetic samples use up to 16 bits.


class TcbStatus(StrEnum):
    """A TCB level's status, spelled as in Intel's JSON."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


class TcbInfoId(StrEnum):
    SGX = "SGX"
    TDX = "TDX"


def _status(value: str, what: str) -> TcbStatus:
    try:
        return TcbStatus(value)
    except ValueError:
        raise MalformedStructureError(f"{what}: unknown tcbStatus {value!r}") from None


def _check_advisories(value: object, what: str) -> None:
    if not isinstance(value, tuple) or not all(isinstance(a, str) for a in value):
        raise MalformedStructureError(f"{what}: advisory_ids must be a tuple of strings")


def _advisories_member(ids: tuple[str, ...], key_order: tuple[str, ...]) -> list[tuple[str, str]]:
    if ids or "advisoryIDs" in key_order:
        return [("advisoryIDs", write_strings(ids))]
    return []


# ---------------------------------------------------------------------------------------------
# Levels with an ISV SVN (QE identity, TDX module identities)


@dataclass(frozen=True, slots=True)
class EnclaveTcbLevel:
    """``{"tcb":{"isvsvn"},"tcbDate","tcbStatus",["advisoryIDs"]}``."""

    isvsvn: int
    tcb_date: datetime.datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        check_uint(self.isvsvn, _SVN_BITS, "TCB level isvsvn")
        check_timestamp(self.tcb_date, "TCB level tcbDate")
        if not isinstance(self.tcb_status, TcbStatus):
            raise MalformedStructureError("TCB level: tcb_status must be a TcbStatus")
        _check_advisories(self.advisory_ids, "TCB level")

    @classmethod
    def decode(cls, value: object, what: str) -> EnclaveTcbLevel:
        r = ObjectReader(value, what)
        tcb = r.object("tcb")
        isvsvn = tcb.integer("isvsvn", _SVN_BITS)
        tcb.finish()
        level = cls(
            isvsvn=isvsvn,
            tcb_date=r.timestamp("tcbDate"),
            tcb_status=_status(r.string("tcbStatus"), what),
            advisory_ids=r.strings("advisoryIDs") if r.has("advisoryIDs") else (),
            key_order=r.key_order,
        )
        r.finish()
        return level

    def encode(self) -> str:
        return write_object(
            [
                ("tcb", write_object([("isvsvn", str(self.isvsvn))])),
                ("tcbDate", write_string(format_timestamp(self.tcb_date))),
                ("tcbStatus", write_string(self.tcb_status.value)),
                *_advisories_member(self.advisory_ids, self.key_order),
            ],
            self.key_order,
        )


# ---------------------------------------------------------------------------------------------
# Platform TCB levels


@dataclass(frozen=True, slots=True)
class TcbComponent:
    """One TCB component: its SVN and, in v3, an optional category and type."""

    svn: int
    category: str | None = None
    type: str | None = None
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        check_uint(self.svn, _SVN_BITS, "TCB component svn")
        for name in ("category", "type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise MalformedStructureError(f"TCB component: {name} must be a string")

    @classmethod
    def decode(cls, value: object, what: str) -> TcbComponent:
        r = ObjectReader(value, what)
        component = cls(
            svn=r.integer("svn", _SVN_BITS),
            category=r.string("category") if r.has("category") else None,
            type=r.string("type") if r.has("type") else None,
            key_order=r.key_order,
        )
        r.finish()
        return component

    def encode(self) -> str:
        members = [("svn", str(self.svn))]
        if self.category is not None:
            members.append(("category", write_string(self.category)))
        if self.type is not None:
            members.append(("type", write_string(self.type)))
        return write_object(members, self.key_order)


def _components(value: object, what: str) -> tuple[TcbComponent, ...]:
    if not isinstance(value, list) or len(value) != 16:
        raise MalformedStructureError(f"{what}: expected 16 TCB components")
    return tuple(TcbComponent.decode(v, f"{what}[{i}]") for i, v in enumerate(value))


_V2_KEYS = tuple(f"sgxtcbcomp{i:02d}svn" for i in range(1, 17))


@dataclass(frozen=True, slots=True)
class Tcb:
    """A level's TCB: 16 SGX components, PCESVN and (TDX) 16 TDX components."""

    sgx_components: tuple[TcbComponent, ...]
    pcesvn: int
    tdx_components: tuple[TcbComponent, ...] | None = None
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("sgx_components", "tdx_components"):
            value = getattr(self, name)
            if value is None and name == "tdx_components":
                continue
            if not isinstance(value, tuple) or len(value) != 16:
                raise MalformedStructureError(f"TCB: {name} must be 16 components")
            if not all(isinstance(c, TcbComponent) for c in value):
                raise MalformedStructureError(f"TCB: {name} must hold TcbComponent")
        check_uint(self.pcesvn, _SVN_BITS, "TCB pcesvn")

    @property
    def sgx_svns(self) -> tuple[int, ...]:
        return tuple(c.svn for c in self.sgx_components)

    @property
    def tdx_svns(self) -> tuple[int, ...] | None:
        return None if self.tdx_components is None else tuple(c.svn for c in self.tdx_components)

    @classmethod
    def decode(cls, value: object, what: str, version: int) -> Tcb:
        r = ObjectReader(value, what)
        if version == 2:
            svns = tuple(TcbComponent(r.integer(k, _SVN_BITS)) for k in _V2_KEYS)
            tcb = cls(svns, r.integer("pcesvn", _SVN_BITS), None, r.key_order)
        else:
            tcb = cls(
                sgx_components=_components(r.raw("sgxtcbcomponents"), f"{what}.sgxtcbcomponents"),
                pcesvn=r.integer("pcesvn", _SVN_BITS),
                tdx_components=(
                    _components(r.raw("tdxtcbcomponents"), f"{what}.tdxtcbcomponents")
                    if r.has("tdxtcbcomponents")
                    else None
                ),
                key_order=r.key_order,
            )
        r.finish()
        return tcb

    def encode(self, version: int) -> str:
        if version == 2:
            if self.tdx_components is not None or any(
                c.category is not None or c.type is not None for c in self.sgx_components
            ):
                raise MalformedStructureError("TCB Info v2 has no component details or TDX")
            members = [(k, str(c.svn)) for k, c in zip(_V2_KEYS, self.sgx_components, strict=True)]
            members.append(("pcesvn", str(self.pcesvn)))
            return write_object(members, self.key_order)
        members = [
            ("sgxtcbcomponents", "[" + ",".join(c.encode() for c in self.sgx_components) + "]"),
            ("pcesvn", str(self.pcesvn)),
        ]
        if self.tdx_components is not None:
            tdx = "[" + ",".join(c.encode() for c in self.tdx_components) + "]"
            members.append(("tdxtcbcomponents", tdx))
        return write_object(members, self.key_order)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level."""

    tcb: Tcb
    tcb_date: datetime.datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tcb, Tcb):
            raise MalformedStructureError("TCB level: tcb must be a Tcb")
        check_timestamp(self.tcb_date, "TCB level tcbDate")
        if not isinstance(self.tcb_status, TcbStatus):
            raise MalformedStructureError("TCB level: tcb_status must be a TcbStatus")
        _check_advisories(self.advisory_ids, "TCB level")

    @classmethod
    def decode(cls, value: object, what: str, version: int) -> TcbLevel:
        r = ObjectReader(value, what)
        level = cls(
            tcb=Tcb.decode(r.raw("tcb"), f"{what}.tcb", version),
            tcb_date=r.timestamp("tcbDate"),
            tcb_status=_status(r.string("tcbStatus"), what),
            advisory_ids=r.strings("advisoryIDs") if r.has("advisoryIDs") else (),
            key_order=r.key_order,
        )
        r.finish()
        return level

    def encode(self, version: int) -> str:
        return write_object(
            [
                ("tcb", self.tcb.encode(version)),
                ("tcbDate", write_string(format_timestamp(self.tcb_date))),
                ("tcbStatus", write_string(self.tcb_status.value)),
                *_advisories_member(self.advisory_ids, self.key_order),
            ],
            self.key_order,
        )


# ---------------------------------------------------------------------------------------------
# TDX module


@dataclass(frozen=True, slots=True)
class TdxModule:
    """``tdxModule``: the expected TDX module signer and attributes (under mask)."""

    mrsigner: HexBytes
    attributes: HexBytes
    attributes_mask: HexBytes
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        coerce_hex_field(self, "mrsigner", 48, "tdxModule")
        coerce_hex_field(self, "attributes", 8, "tdxModule")
        coerce_hex_field(self, "attributes_mask", 8, "tdxModule")

    @classmethod
    def decode(cls, value: object, what: str) -> TdxModule:
        r = ObjectReader(value, what)
        module = cls(
            r.hex("mrsigner", 48),
            r.hex("attributes", 8),
            r.hex("attributesMask", 8),
            key_order=r.key_order,
        )
        r.finish()
        return module

    def encode(self) -> str:
        return write_object(
            [
                ("mrsigner", write_string(self.mrsigner.text)),
                ("attributes", write_string(self.attributes.text)),
                ("attributesMask", write_string(self.attributes_mask.text)),
            ],
            self.key_order,
        )


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    """One entry of ``tdxModuleIdentities`` (e.g. ``TDX_01``) with its own TCB levels."""

    id: str
    mrsigner: HexBytes
    attributes: HexBytes
    attributes_mask: HexBytes
    tcb_levels: tuple[EnclaveTcbLevel, ...]
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise MalformedStructureError("tdxModuleIdentities: id must be a string")
        coerce_hex_field(self, "mrsigner", 48, "tdxModuleIdentities")
        coerce_hex_field(self, "attributes", 8, "tdxModuleIdentities")
        coerce_hex_field(self, "attributes_mask", 8, "tdxModuleIdentities")
        if not isinstance(self.tcb_levels, tuple) or not all(
            isinstance(level, EnclaveTcbLevel) for level in self.tcb_levels
        ):
            raise MalformedStructureError("tdxModuleIdentities: tcb_levels type")

    @classmethod
    def decode(cls, value: object, what: str) -> TdxModuleIdentity:
        r = ObjectReader(value, what)
        identity = cls(
            id=r.string("id"),
            mrsigner=r.hex("mrsigner", 48),
            attributes=r.hex("attributes", 8),
            attributes_mask=r.hex("attributesMask", 8),
            tcb_levels=r.objects("tcbLevels", EnclaveTcbLevel.decode),
            key_order=r.key_order,
        )
        r.finish()
        return identity

    def encode(self) -> str:
        return write_object(
            [
                ("id", write_string(self.id)),
                ("mrsigner", write_string(self.mrsigner.text)),
                ("attributes", write_string(self.attributes.text)),
                ("attributesMask", write_string(self.attributes_mask.text)),
                ("tcbLevels", "[" + ",".join(lv.encode() for lv in self.tcb_levels) + "]"),
            ],
            self.key_order,
        )


# ---------------------------------------------------------------------------------------------
# TCB Info


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """A TCB Info document (the signed ``tcbInfo`` value)."""

    id: TcbInfoId | None
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    fmspc: HexBytes
    pce_id: HexBytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModule | None = None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None = None
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        what = "TCB Info"
        if self.version not in (2, 3) or isinstance(self.version, bool):
            raise MalformedStructureError(f"{what}: unsupported version {self.version!r}")
        if self.version == 2 and self.id is not None:
            raise MalformedStructureError(f"{what}: version 2 has no id")
        if self.version == 3 and not isinstance(self.id, TcbInfoId):
            raise MalformedStructureError(f"{what}: version 3 needs id SGX or TDX")
        check_timestamp(self.issue_date, f"{what} issueDate")
        check_timestamp(self.next_update, f"{what} nextUpdate")
        coerce_hex_field(self, "fmspc", 6, what)
        coerce_hex_field(self, "pce_id", 2, what)
        check_uint(self.tcb_type, 32, f"{what} tcbType")
        check_uint(self.tcb_evaluation_data_number, 32, f"{what} tcbEvaluationDataNumber")
        if (
            not isinstance(self.tcb_levels, tuple)
            or not self.tcb_levels
            or not all(isinstance(level, TcbLevel) for level in self.tcb_levels)
        ):
            raise MalformedStructureError(f"{what}: tcb_levels must be a non-empty tuple")
        tdx = self.id is TcbInfoId.TDX
        if tdx != (self.tdx_module is not None):
            raise MalformedStructureError(f"{what}: tdxModule is required for TDX, only for TDX")
        if self.tdx_module is not None and not isinstance(self.tdx_module, TdxModule):
            raise MalformedStructureError(f"{what}: tdx_module type")
        if self.tdx_module_identities is not None and (
            not tdx
            or not isinstance(self.tdx_module_identities, tuple)
            or not all(isinstance(i, TdxModuleIdentity) for i in self.tdx_module_identities)
        ):
            raise MalformedStructureError(f"{what}: tdxModuleIdentities only for TDX")
        for level in self.tcb_levels:
            if tdx != (level.tcb.tdx_components is not None):
                raise MalformedStructureError(
                    f"{what}: tdxtcbcomponents are required for TDX, only for TDX"
                )
            if self.version == 2 and any(
                c.category is not None or c.type is not None for c in level.tcb.sgx_components
            ):
                raise MalformedStructureError(f"{what}: version 2 has no component details")

    # -- text ----------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str | bytes) -> TcbInfo:
        """Parse the exact signed text; it must be in Intel's exact form (see module doc)."""
        parsed = loads_strict(text, "TCB Info")
        info = cls.decode(parsed)
        expected = text.decode("utf-8") if isinstance(text, bytes) else text
        if info.to_json() != expected:
            raise MalformedStructureError("TCB Info: not in Intel's compact JSON form")
        return info

    @classmethod
    def decode(cls, value: Any, what: str = "TCB Info") -> TcbInfo:
        """Build from already-decoded JSON (no exact-text check; prefer :meth:`from_json`)."""
        r = ObjectReader(value, what)
        version = r.integer("version", 32)
        if version not in (2, 3):
            raise MalformedStructureError(f"{what}: unsupported version {version}")
        info_id: TcbInfoId | None = None
        if version == 3:
            raw_id = r.string("id")
            try:
                info_id = TcbInfoId(raw_id)
            except ValueError:
                raise MalformedStructureError(f"{what}: unknown id {raw_id!r}") from None
        info = cls(
            id=info_id,
            version=version,
            issue_date=r.timestamp("issueDate"),
            next_update=r.timestamp("nextUpdate"),
            fmspc=r.hex("fmspc", 6),
            pce_id=r.hex("pceId", 2),
            tcb_type=r.integer("tcbType", 32),
            tcb_evaluation_data_number=r.integer("tcbEvaluationDataNumber", 32),
            tcb_levels=tuple(
                TcbLevel.decode(v, f"{what}.tcbLevels[{i}]", version)
                for i, v in enumerate(r.array("tcbLevels"))
            ),
            tdx_module=(
                TdxModule.decode(r.raw("tdxModule"), f"{what}.tdxModule")
                if r.has("tdxModule")
                else None
            ),
            tdx_module_identities=(
                r.objects("tdxModuleIdentities", TdxModuleIdentity.decode)
                if r.has("tdxModuleIdentities")
                else None
            ),
            key_order=r.key_order,
        )
        r.finish()
        return info

    def to_json(self) -> str:
        """Intel's compact text (the signed bytes, as UTF-8)."""
        members: list[tuple[str, str]] = []
        if self.id is not None:
            members.append(("id", write_string(self.id.value)))
        members += [
            ("version", str(self.version)),
            ("issueDate", write_string(format_timestamp(self.issue_date))),
            ("nextUpdate", write_string(format_timestamp(self.next_update))),
            ("fmspc", write_string(self.fmspc.text)),
            ("pceId", write_string(self.pce_id.text)),
            ("tcbType", str(self.tcb_type)),
            ("tcbEvaluationDataNumber", str(self.tcb_evaluation_data_number)),
        ]
        if self.tdx_module is not None:
            members.append(("tdxModule", self.tdx_module.encode()))
        if self.tdx_module_identities is not None:
            ids = ",".join(i.encode() for i in self.tdx_module_identities)
            members.append(("tdxModuleIdentities", f"[{ids}]"))
        levels = ",".join(level.encode(self.version) for level in self.tcb_levels)
        members.append(("tcbLevels", f"[{levels}]"))
        return write_object(members, self.key_order)


@dataclass(frozen=True, slots=True)
class SignedTcbInfo:
    """The signed text of a TCB Info, its 64-byte ``r || s`` signature, and the parsed model.

    The signature covers ``body_text.encode()`` (:attr:`signed_bytes`); ``tcb_info`` is parsed
    from exactly that text.
    """

    body_text: str
    signature: bytes
    tcb_info: TcbInfo = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.body_text, str):
            raise MalformedStructureError("signed TCB Info: body_text must be text")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise MalformedStructureError("signed TCB Info: signature must be 64 bytes r||s")
        object.__setattr__(self, "tcb_info", TcbInfo.from_json(self.body_text))

    @property
    def signed_bytes(self) -> bytes:
        return self.body_text.encode("utf-8")

    @classmethod
    def from_response_body(cls, body: str | bytes) -> SignedTcbInfo:
        """From a PCS response body ``{"tcbInfo":{...},"signature":"..."}``."""
        text, signature = split_signed_response(body, TCB_INFO_FIELD)
        return cls(text, signature)

    def to_response_body(self) -> str:
        return join_signed_response(TCB_INFO_FIELD, self.body_text, self.signature)
