"""Enclave Identity version 2 (Intel PCS ``enclaveIdentity``): QE, QVE and TD_QE.

::

    {"id","version":2,"issueDate","nextUpdate","tcbEvaluationDataNumber","miscselect",
     "miscselectMask","attributes","attributesMask","mrsigner","isvprodid",
     "tcbLevels":[{"tcb":{"isvsvn"},"tcbDate","tcbStatus",["advisoryIDs"]}]}

``miscselect``/``miscselectMask`` are 4 bytes, ``attributes``/``attributesMask`` 16 bytes and
``mrsigner`` 32 bytes, all as hex exactly as Intel writes them (kept in :class:`HexBytes`).

Invariants: as for TCB Info — :meth:`EnclaveIdentity.from_json` parses the exact signed text
and accepts it only if :meth:`EnclaveIdentity.to_json` rebuilds it character for character;
hex case and key order are remembered (``key_order``, excluded from equality). Nothing here
checks a signature, a date, or a QE report against the identity.
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
)
from sgx_platform.arch.dcap.tcb_info import EnclaveTcbLevel
from sgx_platform.arch.errors import MalformedStructureError

ENCLAVE_IDENTITY_FIELD = "enclaveIdentity"
ENCLAVE_IDENTITY_VERSION = 2


class EnclaveIdentityId(StrEnum):
    QE = "QE"
    QVE = "QVE"
    TD_QE = "TD_QE"


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """An Enclave Identity v2 document (the signed ``enclaveIdentity`` value)."""

    id: EnclaveIdentityId
    version: int
    issue_date: datetime.datetime
    next_update: datetime.datetime
    tcb_evaluation_data_number: int
    miscselect: HexBytes
    miscselect_mask: HexBytes
    attributes: HexBytes
    attributes_mask: HexBytes
    mrsigner: HexBytes
    isvprodid: int
    tcb_levels: tuple[EnclaveTcbLevel, ...]
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        what = "Enclave Identity"
        if not isinstance(self.id, EnclaveIdentityId):
            raise MalformedStructureError(f"{what}: id must be an EnclaveIdentityId")
        if self.version != ENCLAVE_IDENTITY_VERSION or isinstance(self.version, bool):
            raise MalformedStructureError(f"{what}: unsupported version {self.version!r}")
        check_timestamp(self.issue_date, f"{what} issueDate")
        check_timestamp(self.next_update, f"{what} nextUpdate")
        check_uint(self.tcb_evaluation_data_number, 32, f"{what} tcbEvaluationDataNumber")
        coerce_hex_field(self, "miscselect", 4, what)
        coerce_hex_field(self, "miscselect_mask", 4, what)
        coerce_hex_field(self, "attributes", 16, what)
        coerce_hex_field(self, "attributes_mask", 16, what)
        coerce_hex_field(self, "mrsigner", 32, what)
        check_uint(self.isvprodid, 16, f"{what} isvprodid")
        if (
            not isinstance(self.tcb_levels, tuple)
            or not self.tcb_levels
            or not all(isinstance(level, EnclaveTcbLevel) for level in self.tcb_levels)
        ):
            raise MalformedStructureError(f"{what}: tcb_levels must be a non-empty tuple")

    @classmethod
    def from_json(cls, text: str | bytes) -> EnclaveIdentity:
        """Parse the exact signed text; it must be in Intel's exact form."""
        identity = cls.decode(loads_strict(text, "Enclave Identity"))
        expected = text.decode("utf-8") if isinstance(text, bytes) else text
        if identity.to_json() != expected:
            raise MalformedStructureError("Enclave Identity: not in Intel's compact JSON form")
        return identity

    @classmethod
    def decode(cls, value: Any, what: str = "Enclave Identity") -> EnclaveIdentity:
        """Build from already-decoded JSON (no exact-text check; prefer :meth:`from_json`)."""
        r = ObjectReader(value, what)
        raw_id = r.string("id")
        try:
            identity_id = EnclaveIdentityId(raw_id)
        except ValueError:
            raise MalformedStructureError(f"{what}: unknown id {raw_id!r}") from None
        version = r.integer("version", 32)
        if version != ENCLAVE_IDENTITY_VERSION:
            raise MalformedStructureError(f"{what}: unsupported version {version}")
        identity = cls(
            id=identity_id,
            version=version,
            issue_date=r.timestamp("issueDate"),
            next_update=r.timestamp("nextUpdate"),
            tcb_evaluation_data_number=r.integer("tcbEvaluationDataNumber", 32),
            miscselect=r.hex("miscselect", 4),
            miscselect_mask=r.hex("miscselectMask", 4),
            attributes=r.hex("attributes", 16),
            attributes_mask=r.hex("attributesMask", 16),
            mrsigner=r.hex("mrsigner", 32),
            isvprodid=r.integer("isvprodid", 16),
            tcb_levels=r.objects("tcbLevels", EnclaveTcbLevel.decode),
            key_order=r.key_order,
        )
        r.finish()
        return identity

    def to_json(self) -> str:
        """Intel's compact text (the signed bytes, as UTF-8)."""
        levels = ",".join(level.encode() for level in self.tcb_levels)
        return write_object(
            [
                ("id", write_string(self.id.value)),
                ("version", str(self.version)),
                ("issueDate", write_string(format_timestamp(self.issue_date))),
                ("nextUpdate", write_string(format_timestamp(self.next_update))),
                ("tcbEvaluationDataNumber", str(self.tcb_evaluation_data_number)),
                ("miscselect", write_string(self.miscselect.text)),
                ("miscselectMask", write_string(self.miscselect_mask.text)),
                ("attributes", write_string(self.attributes.text)),
                ("attributesMask", write_string(self.attributes_mask.text)),
                ("mrsigner", write_string(self.mrsigner.text)),
                ("isvprodid", str(self.isvprodid)),
                ("tcbLevels", f"[{levels}]"),
            ],
            self.key_order,
        )


@dataclass(frozen=True, slots=True)
class SignedEnclaveIdentity:
    """The signed text of an Enclave Identity, its ``r || s`` signature and the parsed model."""

    body_text: str
    signature: bytes
    identity: EnclaveIdentity = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.body_text, str):
            raise MalformedStructureError("signed Enclave Identity: body_text must be text")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise MalformedStructureError("signed Enclave Identity: signature must be 64 bytes")
        object.__setattr__(self, "identity", EnclaveIdentity.from_json(self.body_text))

    @property
    def signed_bytes(self) -> bytes:
        return self.body_text.encode("utf-8")

    @classmethod
    def from_response_body(cls, body: str | bytes) -> SignedEnclaveIdentity:
        """From a PCS response body ``{"enclaveIdentity":{...},"signature":"..."}``."""
        text, signature = split_signed_response(body, ENCLAVE_IDENTITY_FIELD)
        return cls(text, signature)

    def to_response_body(self) -> str:
        return join_signed_response(ENCLAVE_IDENTITY_FIELD, self.body_text, self.signature)
