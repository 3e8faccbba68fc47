"""Collateral containers: dcap-qvl's QuoteCollateralV3 JSON and Fortanix's signed wrappers.

QuoteCollateralV3 (Phala dcap-qvl ``src/lib.rs``; the format ``sgxemu pcs collateral`` writes)::

    {"pck_crl_issuer_chain": PEM, "root_ca_crl": hex DER, "pck_crl": hex DER,
     "tcb_info_issuer_chain": PEM, "tcb_info": exact signed text, "tcb_info_signature": hex r||s,
     "qe_identity_issuer_chain": PEM, "qe_identity": exact signed text,
     "qe_identity_signature": hex r||s, ["pck_certificate_chain": PEM]}

``pck_certificate_chain`` is optional (newer dcap-qvl; omitted when absent).

Fortanix ``rust-sgx`` ``pcs`` crate files (``.tcb``/``.id``)::

    {"raw_tcb_info"|"raw_enclave_identity": exact signed text,
     "signature": [DER ECDSA-Sig-Value as a list of byte values], "ca_chain": [PEM, ...]}

Invariants: readers are strict (exactly the keys above, right types, hex of the right length,
signatures of 64 bytes r||s or canonical DER) and parse the embedded TCB Info / Enclave Identity
from their exact text (:class:`SignedTcbInfo`, :class:`SignedEnclaveIdentity`); anything else
raises :class:`~sgx_platform.arch.errors.MalformedStructureError`. Writers reproduce the input
exactly: QuoteCollateralV3 indented by 2 (what dcap-qvl's Python ``to_json`` writes) or compact
(serde_json's ``to_string``), with an optional final newline — the layouts found in dcap-qvl's
samples; Fortanix compact. CRLs and
certificate chains are carried, not checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sgx_platform.arch.dcap.ecdsa import der_to_raw_rs, raw_rs_to_der
from sgx_platform.arch.dcap.qe_identity import SignedEnclaveIdentity
from sgx_platform.arch.dcap.signed_json import (
    SIGNATURE_SIZE,
    ObjectReader,
    decode_signature_hex,
    loads_strict,
)
from sgx_platform.arch.dcap.tcb_info import SignedTcbInfo
from sgx_platform.arch.errors import MalformedStructureError

_WHAT = "QuoteCollateralV3"
_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


def _hex_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) % 2:
        raise MalformedStructureError(f"{what}: expected hex")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise MalformedStructureError(f"{what}: expected hex: {e}") from e


def _dumps(document: dict[str, Any], indent: int | None) -> str:
    if indent is None:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(document, ensure_ascii=False, indent=indent)


@dataclass(frozen=True, slots=True)
class QuoteCollateralV3:
    """Everything needed to appraise a quote besides the quote and the trust anchor."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    pck_certificate_chain: str | None = None
    signed_tcb_info: SignedTcbInfo = field(init=False, repr=False, compare=False)
    signed_qe_identity: SignedEnclaveIdentity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
            if not isinstance(getattr(self, name), str):
                raise MalformedStructureError(f"{_WHAT}: {name} must be text")
        if self.pck_certificate_chain is not None and not isinstance(
            self.pck_certificate_chain, str
        ):
            raise MalformedStructureError(f"{_WHAT}: pck_certificate_chain must be text")
        for name in ("root_ca_crl", "pck_crl"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or not value:
                raise MalformedStructureError(f"{_WHAT}: {name} must be non-empty DER bytes")
        for name in ("tcb_info_signature", "qe_identity_signature"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != SIGNATURE_SIZE:
                raise MalformedStructureError(f"{_WHAT}: {name} must be 64 bytes r||s")
        object.__setattr__(
            self, "signed_tcb_info", SignedTcbInfo(self.tcb_info, self.tcb_info_signature)
        )
        object.__setattr__(
            self,
            "signed_qe_identity",
            SignedEnclaveIdentity(self.qe_identity, self.qe_identity_signature),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> QuoteCollateralV3:
        r = ObjectReader(loads_strict(text, _WHAT), _WHAT)
        collateral = cls(
            pck_crl_issuer_chain=r.string("pck_crl_issuer_chain"),
            root_ca_crl=_hex_bytes(r.raw("root_ca_crl"), f"{_WHAT}: root_ca_crl"),
            pck_crl=_hex_bytes(r.raw("pck_crl"), f"{_WHAT}: pck_crl"),
            tcb_info_issuer_chain=r.string("tcb_info_issuer_chain"),
            tcb_info=r.string("tcb_info"),
            tcb_info_signature=decode_signature_hex(
                r.raw("tcb_info_signature"), f"{_WHAT}: tcb_info_signature"
            ),
            qe_identity_issuer_chain=r.string("qe_identity_issuer_chain"),
            qe_identity=r.string("qe_identity"),
            qe_identity_signature=decode_signature_hex(
                r.raw("qe_identity_signature"), f"{_WHAT}: qe_identity_signature"
            ),
            pck_certificate_chain=(
                r.string("pck_certificate_chain") if r.has("pck_certificate_chain") else None
            ),
        )
        r.finish()
        return collateral

    def to_json(self, *, indent: int | None = 2, trailing_newline: bool = False) -> str:
        """dcap-qvl's JSON: indented by 2 as its Python ``to_json``; ``indent=None``: compact."""
        document: dict[str, Any] = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }
        if self.pck_certificate_chain is not None:
            document["pck_certificate_chain"] = self.pck_certificate_chain
        assert tuple(document)[: len(_FIELDS)] == _FIELDS
        return _dumps(document, indent) + ("\n" if trailing_newline else "")


# ---------------------------------------------------------------------------------------------
# Fortanix rust-sgx wrappers


def _der_signature(value: object, what: str) -> bytes:
    if not isinstance(value, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
    ):
        raise MalformedStructureError(f"{what}: signature must be a list of byte values")
    return der_to_raw_rs(bytes(value))


def _ca_chain(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise MalformedStructureError(f"{what}: ca_chain must be a list of PEM strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class FortanixTcbInfo:
    """A Fortanix ``.tcb`` file: signed TCB Info plus the PEM chain of its signer."""

    signed: SignedTcbInfo
    ca_chain: tuple[str, ...]

    @classmethod
    def from_json(cls, text: str | bytes) -> FortanixTcbInfo:
        what = "Fortanix TCB Info"
        r = ObjectReader(loads_strict(text, what), what)
        body = r.string("raw_tcb_info")
        signature = _der_signature(r.raw("signature"), what)
        chain = _ca_chain(r.raw("ca_chain"), what)
        r.finish()
        return cls(SignedTcbInfo(body, signature), chain)

    def to_json(self) -> str:
        return _dumps(
            {
                "raw_tcb_info": self.signed.body_text,
                "signature": list(raw_rs_to_der(self.signed.signature)),
                "ca_chain": list(self.ca_chain),
            },
            None,
        )


@dataclass(frozen=True, slots=True)
class FortanixEnclaveIdentity:
    """A Fortanix ``.id`` file: signed Enclave Identity plus the PEM chain of its signer."""

    signed: SignedEnclaveIdentity
    ca_chain: tuple[str, ...]

    @classmethod
    def from_json(cls, text: str | bytes) -> FortanixEnclaveIdentity:
        what = "Fortanix Enclave Identity"
        r = ObjectReader(loads_strict(text, what), what)
        body = r.string("raw_enclave_identity")
        signature = _der_signature(r.raw("signature"), what)
        chain = _ca_chain(r.raw("ca_chain"), what)
        r.finish()
        return cls(SignedEnclaveIdentity(body, signature), chain)

    def to_json(self) -> str:
        return _dumps(
            {
                "raw_enclave_identity": self.signed.body_text,
                "signature": list(raw_rs_to_der(self.signed.signature)),
                "ca_chain": list(self.ca_chain),
            },
            None,
        )
