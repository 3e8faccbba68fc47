"""The verdict of a DCAP appraisal: what was proven, about whom, under which anchor and collateral.

Invariants:

* The zero value means "not verified": ``Verdict()`` has ``verified=False`` and no status.
* ``verified`` is True only when every signature, chain, CRL and validity check passed; then
  ``failures`` is empty and the three statuses are set. Whenever ``failures`` is non-empty,
  ``verified`` is False. The constructor refuses any other combination.
* Every failure carries a stable :class:`FailureCode` (never a bare hex code), the
  :class:`Check` that decided it, a message naming the values involved, and a hint a user can
  act on. ``failures`` is in check order; :attr:`Verdict.error` is the first.
* Collateral ids are SHA-256 digests of the exact bytes of each collateral item the appraisal
  used; the anchor is named and identified by the SHA-256 of its SubjectPublicKeyInfo.
* A verified verdict is not an acceptance: policy (see :mod:`sgx_verifier.policy`) decides that.
* An unverified verdict never carries statuses in ``tcb_status``/``platform``/``qe``. When the
  appraisal could still compute them (for instance only a CRL was stale),
  ``unverified_assessment`` says what they would be *if* the failed checks are waived; it is
  for diagnosis and archives, never for acceptance (policy ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TcbStatus(StrEnum):
    """TCB statuses, spelled as Intel's TCB Info JSON and dcap-qvl spell them."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


class Check(StrEnum):
    """The name of each appraisal check, in the order the appraisal reports them."""

    QUOTE_FORMAT = "quote.format"
    CERTIFICATION_DATA = "quote.certification_data"
    PCK_CHAIN = "pck.chain"
    ROOT_CRL = "crl.root"
    PCK_CRL = "crl.pck"
    PCK_REVOCATION = "pck.revocation"
    TCB_INFO_CHAIN = "tcb_info.chain"
    TCB_INFO_SIGNATURE = "tcb_info.signature"
    TCB_INFO_FORMAT = "tcb_info.format"
    TCB_INFO_VALIDITY = "tcb_info.validity"
    QE_IDENTITY_CHAIN = "qe_identity.chain"
    QE_IDENTITY_SIGNATURE = "qe_identity.signature"
    QE_IDENTITY_FORMAT = "qe_identity.format"
    QE_IDENTITY_VALIDITY = "qe_identity.validity"
    QE_REPORT_SIGNATURE = "qe_report.signature"
    QE_REPORT_BINDING = "qe_report.binding"
    QE_IDENTITY_MATCH = "qe_identity.match"
    QUOTE_SIGNATURE = "quote.signature"
    PLATFORM_FMSPC = "platform.fmspc"
    PLATFORM_PCE_ID = "platform.pce_id"
    PLATFORM_TCB_LEVEL = "platform.tcb_level"
    TDX_MODULE = "tdx.module"


class FailureCode(StrEnum):
    """Stable failure codes. Values never change meaning; new failures get new codes."""

    # The quote itself.
    QUOTE_MALFORMED = "QUOTE_MALFORMED"
    QUOTE_VERSION_UNSUPPORTED = "QUOTE_VERSION_UNSUPPORTED"
    QUOTE_KEY_TYPE_UNSUPPORTED = "QUOTE_KEY_TYPE_UNSUPPORTED"
    QUOTE_TEE_UNSUPPORTED = "QUOTE_TEE_UNSUPPORTED"
    QE_VENDOR_UNKNOWN = "QE_VENDOR_UNKNOWN"
    PCK_CHAIN_REQUIRED = "PCK_CHAIN_REQUIRED"
    PCK_CHAIN_MALFORMED = "PCK_CHAIN_MALFORMED"
    PCK_CERT_MISMATCH = "PCK_CERT_MISMATCH"
    QUOTE_SIGNATURE_INVALID = "QUOTE_SIGNATURE_INVALID"
    # Certificates and anchors.
    CHAIN_UNTRUSTED = "CHAIN_UNTRUSTED"
    CHAIN_INCOMPLETE = "CHAIN_INCOMPLETE"
    CERT_MALFORMED = "CERT_MALFORMED"
    CERT_SIGNATURE_INVALID = "CERT_SIGNATURE_INVALID"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"
    CERT_NOT_CA = "CERT_NOT_CA"
    CERT_KEY_USAGE = "CERT_KEY_USAGE"
    CERT_REVOKED = "CERT_REVOKED"
    ANCHOR_EXPIRED = "ANCHOR_EXPIRED"
    ANCHOR_NOT_YET_VALID = "ANCHOR_NOT_YET_VALID"
    ANCHOR_REVOKED = "ANCHOR_REVOKED"
    # CRLs.
    CRL_MISSING = "CRL_MISSING"
    CRL_MALFORMED = "CRL_MALFORMED"
    CRL_ISSUER_MISMATCH = "CRL_ISSUER_MISMATCH"
    CRL_SIGNATURE_INVALID = "CRL_SIGNATURE_INVALID"
    CRL_EXPIRED = "CRL_EXPIRED"
    CRL_NOT_YET_VALID = "CRL_NOT_YET_VALID"
    # Signed collateral (TCB Info, QE Identity).
    COLLATERAL_MISSING = "COLLATERAL_MISSING"
    COLLATERAL_MALFORMED = "COLLATERAL_MALFORMED"
    COLLATERAL_WRONG_KIND = "COLLATERAL_WRONG_KIND"
    COLLATERAL_SIGNATURE_INVALID = "COLLATERAL_SIGNATURE_INVALID"
    COLLATERAL_EXPIRED = "COLLATERAL_EXPIRED"
    COLLATERAL_NOT_YET_VALID = "COLLATERAL_NOT_YET_VALID"
    # The quoting enclave.
    QE_REPORT_SIGNATURE_INVALID = "QE_REPORT_SIGNATURE_INVALID"
    QE_REPORT_DATA_MISMATCH = "QE_REPORT_DATA_MISMATCH"
    QE_MRSIGNER_MISMATCH = "QE_MRSIGNER_MISMATCH"
    QE_ISVPRODID_MISMATCH = "QE_ISVPRODID_MISMATCH"
    QE_MISCSELECT_MISMATCH = "QE_MISCSELECT_MISMATCH"
    QE_ATTRIBUTES_MISMATCH = "QE_ATTRIBUTES_MISMATCH"
    # The platform.
    FMSPC_MISMATCH = "FMSPC_MISMATCH"
    PCE_ID_MISMATCH = "PCE_ID_MISMATCH"
    TCB_LEVEL_NOT_FOUND = "TCB_LEVEL_NOT_FOUND"
    TDX_MODULE_MISMATCH = "TDX_MODULE_MISMATCH"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check."""

    code: FailureCode
    check: Check
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code.value,
            "check": self.check.value,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """Who produced the quote: the ISV enclave report (SGX) or the TD report (TDX).

    ``tee`` is "SGX" or "TDX". For a TD the SGX-only fields (MRENCLAVE, MRSIGNER, ISVPRODID,
    ISVSVN, MISCSELECT) stay empty and ``mr_td`` holds the 48-byte MRTD; ``debug`` is the TD's
    DEBUG attribute.
    """

    tee: str
    mrenclave: bytes = b""
    mrsigner: bytes = b""
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False
    report_data: bytes = b""
    attributes: bytes = b""
    miscselect: int = 0
    mr_td: bytes = b""


@dataclass(frozen=True, slots=True)
class CollateralId:
    """The SHA-256 of the exact bytes of one collateral item the appraisal used."""

    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class AnchorRef:
    """The trust anchor an appraisal used: its configured name and key digest."""

    name: str
    key_sha256: str
    production: bool


@dataclass(frozen=True, slots=True)
class StatusDetail:
    """A TCB status with the advisories of the level it came from."""

    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    tcb_date: str | None = None


@dataclass(frozen=True, slots=True)
class Assessment:
    """A final status with the platform and QE statuses it was merged from."""

    tcb_status: TcbStatus
    platform: StatusDetail
    qe: StatusDetail
    advisory_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tcb_status": self.tcb_status.value,
            "platform_tcb_status": self.platform.status.value,
            "qe_tcb_status": self.qe.status.value,
            "advisory_ids": list(self.advisory_ids),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of an appraisal. ``Verdict()`` is "not verified"."""

    verified: bool = False
    tcb_status: TcbStatus | None = None
    platform: StatusDetail | None = None
    qe: StatusDetail | None = None
    advisory_ids: tuple[str, ...] = ()
    quote_version: int | None = None
    enclave: EnclaveIdentity | None = None
    fmspc: bytes | None = None
    trust_anchor: AnchorRef | None = None
    collateral: tuple[CollateralId, ...] = ()
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    at: int | None = None
    unverified_assessment: Assessment | None = None

    def __post_init__(self) -> None:
        if self.verified:
            if self.failures:
                raise ValueError("a verified verdict cannot carry failures")
            if self.tcb_status is None or self.platform is None or self.qe is None:
                raise ValueError("a verified verdict needs its statuses")
            if self.unverified_assessment is not None:
                raise ValueError("a verified verdict has no unverified assessment")
        else:
            if self.tcb_status is not None or self.platform is not None or self.qe is not None:
                raise ValueError("an unverified verdict carries no status")
            if self.unverified_assessment is not None and not self.failures:
                raise ValueError("an unverified assessment must say which checks failed")

    @property
    def error(self) -> Failure | None:
        """The first failed check, or None."""
        return self.failures[0] if self.failures else None

    @property
    def platform_tcb_status(self) -> TcbStatus | None:
        return self.platform.status if self.platform else None

    @property
    def qe_tcb_status(self) -> TcbStatus | None:
        return self.qe.status if self.qe else None

    def failed(self, check: Check) -> bool:
        return any(f.check is check for f in self.failures)

    def codes(self) -> tuple[FailureCode, ...]:
        return tuple(f.code for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """The verdict fields of the ``sgxemu verify --json`` document (DESIGN.md)."""
        enclave = self.enclave
        doc: dict[str, Any] = {
            "verified": self.verified,
            "tcb_status": self.tcb_status.value if self.tcb_status else None,
            "platform_tcb_status": self.platform.status.value if self.platform else None,
            "qe_tcb_status": self.qe.status.value if self.qe else None,
            "advisory_ids": list(self.advisory_ids),
            "quote_version": self.quote_version,
            "tee": enclave.tee if enclave else None,
            "mrenclave": enclave.mrenclave.hex() if enclave and enclave.mrenclave else None,
            "mrsigner": enclave.mrsigner.hex() if enclave and enclave.mrsigner else None,
            "isv_prod_id": enclave.isv_prod_id if enclave else None,
            "isv_svn": enclave.isv_svn if enclave else None,
            "debug": enclave.debug if enclave else None,
            "report_data": enclave.report_data.hex() if enclave else None,
            "fmspc": self.fmspc.hex() if self.fmspc is not None else None,
            "trust_anchor": self.trust_anchor.name if self.trust_anchor else None,
            "trust_anchor_key_sha256": (
                self.trust_anchor.key_sha256 if self.trust_anchor else None
            ),
            "collateral": {c.name: c.sha256 for c in self.collateral},
            "at": self.at,
        }
        if enclave and enclave.mr_td:
            doc["mr_td"] = enclave.mr_td.hex()
        if self.trust_anchor is not None and not self.trust_anchor.production:
            doc["warning"] = (
                f"trust anchor {self.trust_anchor.name!r} is a test anchor: this quote proves "
                "nothing about real SGX hardware"
            )
        if self.error is not None:
            doc["error"] = self.error.to_dict()
            doc["failures"] = [f.to_dict() for f in self.failures]
        if self.unverified_assessment is not None:
            doc["unverified_assessment"] = {
                **self.unverified_assessment.to_dict(),
                "note": "what the statuses would be if the failed checks were waived; "
                "not a verification result",
            }
        return doc
