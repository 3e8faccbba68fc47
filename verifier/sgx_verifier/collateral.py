"""The collateral an appraisal consumes, as raw signed items, and readers for the forms it
arrives in (dcap-qvl's QuoteCollateralV3 JSON, Intel PCS response bodies, Fortanix wrappers,
DER/PEM/hex CRLs and certificate files).

Invariants:

* :class:`Collateral` holds exactly the bytes the appraisal verifies: the signed text of TCB
  Info and QE Identity with their 64-byte ``r || s`` signatures and the signer's certificates,
  the CRLs in DER. It does not parse the signed text: the appraisal checks the signature over
  those exact bytes first and parses them afterwards, so a tampered document is reported as a
  bad signature, not as unreadable input.
* Each item's id is the SHA-256 of its canonical bytes, the same ids the collateral store uses
  (:mod:`sgx_verifier.store`): the PCS response body ``{"tcbInfo"|"enclaveIdentity":<signed
  text>,"signature":"<hex>"}`` for signed JSON, the DER for a CRL; certificate chains by the
  SHA-256 of their concatenated DER.
* Readers delegate the formats to :mod:`sgx_platform.arch.dcap` and raise
  :class:`~sgx_verifier.errors.CollateralInputError` (with the item named) for input they
  cannot read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_platform.arch.dcap.collateral import (
    FortanixEnclaveIdentity,
    FortanixTcbInfo,
    QuoteCollateralV3,
)
from sgx_platform.arch.dcap.qe_identity import ENCLAVE_IDENTITY_FIELD
from sgx_platform.arch.dcap.signed_json import (
    ObjectReader,
    join_signed_response,
    loads_strict,
    split_signed_response,
)
from sgx_platform.arch.dcap.tcb_info import TCB_INFO_FIELD
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.certificates import parse_certificates
from sgx_verifier.errors import CollateralInputError
from sgx_verifier.verdict import CollateralId


@dataclass(frozen=True, slots=True)
class SignedItem:
    """A signed JSON document: its exact text, ``r || s`` signature and signer's chain."""

    kind: str
    text: str
    signature: bytes
    issuer_chain: bytes = b""
    signed_bytes: bytes = field(init=False, default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in (TCB_INFO_FIELD, ENCLAVE_IDENTITY_FIELD):
            raise CollateralInputError(f"unknown signed collateral kind {self.kind!r}")
        if not isinstance(self.text, str):
            raise CollateralInputError(f"{self.kind}: the signed text must be text")
        if not isinstance(self.signature, bytes):
            raise CollateralInputError(f"{self.kind}: the signature must be bytes")
        object.__setattr__(self, "signed_bytes", self.text.encode("utf-8"))

    def content_id(self) -> str:
        try:
            body = join_signed_response(self.kind, self.text, self.signature)
        except MalformedStructureError:
            body = self.text + self.signature.hex()
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _chain_id(data: bytes) -> str:
    try:
        certs = parse_certificates(data)
    except MalformedStructureError:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha256(b"".join(c.der for c in certs)).hexdigest()


@dataclass(frozen=True, slots=True)
class Collateral:
    """Everything an appraisal needs besides the quote, the time and the anchors."""

    tcb_info: SignedItem | None = None
    qe_identity: SignedItem | None = None
    pck_crl: bytes | None = None
    root_ca_crl: bytes | None = None
    pck_crl_issuer_chain: bytes | None = None
    pck_certificate_chain: bytes | None = None
    ids: tuple[CollateralId, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        ids: list[CollateralId] = []
        if self.tcb_info is not None:
            ids.append(CollateralId("tcb_info", self.tcb_info.content_id()))
            if self.tcb_info.issuer_chain:
                ids.append(
                    CollateralId("tcb_info_issuer_chain", _chain_id(self.tcb_info.issuer_chain))
                )
        if self.qe_identity is not None:
            ids.append(CollateralId("qe_identity", self.qe_identity.content_id()))
            if self.qe_identity.issuer_chain:
                ids.append(
                    CollateralId(
                        "qe_identity_issuer_chain", _chain_id(self.qe_identity.issuer_chain)
                    )
                )
        if self.pck_crl is not None:
            ids.append(CollateralId("pck_crl", hashlib.sha256(self.pck_crl).hexdigest()))
        if self.root_ca_crl is not None:
            ids.append(CollateralId("root_ca_crl", hashlib.sha256(self.root_ca_crl).hexdigest()))
        object.__setattr__(self, "ids", tuple(ids))

    @classmethod
    def from_quote_collateral_v3(cls, qc: QuoteCollateralV3) -> Collateral:
        return cls(
            tcb_info=SignedItem(
                TCB_INFO_FIELD,
                qc.tcb_info,
                qc.tcb_info_signature,
                qc.tcb_info_issuer_chain.encode(),
            ),
            qe_identity=SignedItem(
                ENCLAVE_IDENTITY_FIELD,
                qc.qe_identity,
                qc.qe_identity_signature,
                qc.qe_identity_issuer_chain.encode(),
            ),
            pck_crl=qc.pck_crl,
            root_ca_crl=qc.root_ca_crl,
            pck_crl_issuer_chain=qc.pck_crl_issuer_chain.encode(),
            pck_certificate_chain=(
                qc.pck_certificate_chain.encode() if qc.pck_certificate_chain else None
            ),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Collateral:
        """dcap-qvl's QuoteCollateralV3 JSON (what ``sgxemu pcs collateral`` writes)."""
        try:
            return cls.from_quote_collateral_v3(QuoteCollateralV3.from_json(data))
        except MalformedStructureError as e:
            raise CollateralInputError(f"collateral (QuoteCollateralV3 JSON): {e}") from None

    def with_overrides(
        self,
        *,
        tcb_info: SignedItem | None = None,
        qe_identity: SignedItem | None = None,
        pck_crl: bytes | None = None,
        root_ca_crl: bytes | None = None,
        pck_crl_issuer_chain: bytes | None = None,
    ) -> Collateral:
        """A copy with the given items replaced (items left as None are kept)."""
        return Collateral(
            tcb_info=tcb_info or self.tcb_info,
            qe_identity=qe_identity or self.qe_identity,
            pck_crl=pck_crl if pck_crl is not None else self.pck_crl,
            root_ca_crl=root_ca_crl if root_ca_crl is not None else self.root_ca_crl,
            pck_crl_issuer_chain=(
                pck_crl_issuer_chain
                if pck_crl_issuer_chain is not None
                else self.pck_crl_issuer_chain
            ),
            pck_certificate_chain=self.pck_certificate_chain,
        )


# ---------------------------------------------------------------------------------------------
# Readers for single items


def read_signed_item(data: bytes, field: str, issuer_chain: bytes = b"") -> SignedItem:
    """A signed TCB Info (``field="tcbInfo"``) or QE Identity (``"enclaveIdentity"``) from an
    Intel PCS response body or a Fortanix ``.tcb``/``.id`` file. A chain inside the file (the
    Fortanix ``ca_chain``) is used unless ``issuer_chain`` is given."""
    what = "TCB Info" if field == TCB_INFO_FIELD else "QE Identity"
    try:
        document = loads_strict(data, what)
    except MalformedStructureError as e:
        raise CollateralInputError(f"{what}: {e}") from None
    if isinstance(document, dict) and field in document:
        try:
            text, signature = split_signed_response(data, field)
        except MalformedStructureError as e:
            raise CollateralInputError(f"{what} (PCS response body): {e}") from None
        return SignedItem(field, text, signature, issuer_chain)
    raw_key = "raw_tcb_info" if field == TCB_INFO_FIELD else "raw_enclave_identity"
    if isinstance(document, dict) and raw_key in document:
        try:
            if field == TCB_INFO_FIELD:
                fortanix_tcb = FortanixTcbInfo.from_json(data)
                signed_text, sig = fortanix_tcb.signed.body_text, fortanix_tcb.signed.signature
                chain = fortanix_tcb.ca_chain
            else:
                fortanix_id = FortanixEnclaveIdentity.from_json(data)
                signed_text, sig = fortanix_id.signed.body_text, fortanix_id.signed.signature
                chain = fortanix_id.ca_chain
        except MalformedStructureError as e:
            raise CollateralInputError(f"{what} (Fortanix wrapper): {e}") from None
        own_chain = "\n".join(chain).encode()
        return SignedItem(field, signed_text, sig, issuer_chain or own_chain)
    raise CollateralInputError(
        f"{what}: expected an Intel PCS response body {{{field!r}: ..., 'signature': ...}} "
        f"or a Fortanix wrapper with {raw_key!r}"
    )


def read_crl(data: bytes, what: str) -> tuple[bytes, bytes | None]:
    """A CRL as DER from DER, PEM, hex DER, or a Fortanix ``{"crl": PEM, "ca_chain": [...]}``
    file; also returns the issuer chain such a wrapper carries."""
    stripped = data.strip()
    chain: bytes | None = None
    if stripped.startswith(b"{"):
        try:
            r = ObjectReader(loads_strict(stripped, what), what)
            pem = r.string("crl").encode()
            if r.has("ca_chain"):
                chain = "\n".join(str(p) for p in r.array("ca_chain")).encode()
            r.finish()
        except MalformedStructureError as e:
            raise CollateralInputError(f"{what}: {e}") from None
        stripped = pem.strip()
    try:
        if stripped.startswith(b"-----BEGIN X509 CRL-----"):
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER), chain
        if stripped[:2] == b"30" and all(c in b"0123456789abcdefABCDEF" for c in stripped):
            return bytes.fromhex(stripped.decode()), chain
        x509.load_der_x509_crl(data)
    except ValueError as e:
        raise CollateralInputError(f"{what}: not a CRL (DER, PEM or hex): {e}") from None
    return bytes(data), chain


def read_certificates(data: bytes, what: str) -> bytes:
    """Certificates (PEM bundle, one DER certificate, or concatenated DER) as a PEM bundle."""
    try:
        certs = parse_certificates(data)
    except MalformedStructureError as e:
        raise CollateralInputError(f"{what}: {e}") from None
    return b"".join(x509.load_der_x509_certificate(c.der).public_bytes(Encoding.PEM) for c in certs)
