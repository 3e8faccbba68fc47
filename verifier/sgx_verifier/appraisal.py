"""DCAP appraisal of an ECDSA quote (SGX v3/v4; TDX v4/v5) against collateral, anchors and a
time.

Invariants:

* :func:`appraise` never raises for bad input: every problem becomes a
  :class:`~sgx_verifier.verdict.Failure` with a stable code, its check and a hint, and the
  verdict is verified only when no check failed. It runs every check it can (a stale CRL does
  not hide a bad signature) and reports them in :class:`~sgx_verifier.verdict.Check` order.
* Trust comes only from the configured anchors, matched by key: the PCK chain selects the
  anchor, and TCB Info, QE Identity and both CRLs must chain to that same anchor.
* Checks, all at the given time: the PCK chain (signatures, windows, CA constraints); the root
  CRL (signed by the anchor, fresh) and the PCK CRL (signed by the PCK leaf's issuer, fresh);
  revocation of every certificate on the PCK and collateral signing paths and of the anchor;
  TCB Info and QE Identity signatures over their exact text, their signer's chain, their
  issueDate/nextUpdate window and kind; the QE report signature by the PCK key; the QE report
  data ``SHA-256(attestation key || QE auth data) || 32 zero bytes``; the QE report against the
  QE Identity (MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES; ISVSVN gives the QE's
  TCB status); the quote signature by the attestation key; FMSPC and PCE-ID of the PCK
  certificate against TCB Info; the platform's TCB level from the PCK certificate's SVNs
  (:mod:`sgx_verifier.tcb`); for TDX, the TDX module identity.
* Only pure functions of bytes are cached (signature answers, parses of certificates, CRLs and
  signed collateral text); every time, window and revocation check runs on every call.
* Certification data types 5 and 6 carry the PCK chain; types 1-4 need a caller-supplied chain
  (``pck_chain``, or ``pck_certificate_chain`` in the collateral) and fail
  ``PCK_CHAIN_REQUIRED`` without one.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from cryptography import x509

from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.dcap.ecdsa import raw_rs_to_der
from sgx_platform.arch.dcap.pck import SgxExtension, sgx_extension_from_certificate
from sgx_platform.arch.dcap.qe_identity import EnclaveIdentity, EnclaveIdentityId
from sgx_platform.arch.dcap.quote import (
    INTEL_QE_VENDOR_ID,
    PckCertChainCertificationData,
    PckLeafCertificationData,
    PpidCertificationData,
    Quote,
    TdReport10,
    TdReport15,
    TeeType,
    parse_quote,
)
from sgx_platform.arch.dcap.tcb_info import TcbInfo, TcbInfoId
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.report import ReportBody
from sgx_verifier.anchors import AnchorSet, TrustAnchor
from sgx_verifier.certificates import (
    Certificate,
    ValidatedChain,
    parse_certificate,
    parse_certificates,
    parse_pem_chain,
    validate_chain,
)
from sgx_verifier.collateral import Collateral, SignedItem
from sgx_verifier.crl import Crl, check_crl, check_not_revoked, parse_crl
from sgx_verifier.errors import CheckFailedError
from sgx_verifier.signatures import cache_clear as signatures_cache_clear
from sgx_verifier.signatures import raw_public_key_to_point, verify_p256
from sgx_verifier.tcb import (
    PreparedLevel,
    canonical_levels,
    converge,
    enclave_levels,
    match_platform_level,
    merge_advisories,
    qe_level,
)
from sgx_verifier.verdict import (
    Assessment,
    Check,
    CollateralId,
    Failure,
    FailureCode,
    StatusDetail,
    TcbStatus,
    Verdict,
)
from sgx_verifier.verdict import (
    EnclaveIdentity as VerdictEnclave,
)

T = TypeVar("T")

_SUPPORTED_VERSIONS = (3, 4, 5)
_ECDSA_P256 = 2
_TDX_DEBUG_BIT = 1 << 0  # TDATTRIBUTES.DEBUG (bit 0 of the first byte)

_CHECK_ORDER = {check: index for index, check in enumerate(Check)}

_REFETCH = "fetch current collateral from the Intel PCS or your PCCS"


# ---------------------------------------------------------------------------------------------
# Cached pure parses


@lru_cache(maxsize=64)
def _tcb_info(text: str) -> tuple[TcbInfo, tuple[PreparedLevel, ...], int, int]:
    info = TcbInfo.from_json(text)
    return (
        info,
        canonical_levels(info),
        int(info.issue_date.timestamp()),
        int(info.next_update.timestamp()),
    )


@lru_cache(maxsize=64)
def _enclave_identity(text: str) -> tuple[EnclaveIdentity, int, int]:
    identity = EnclaveIdentity.from_json(text)
    return (
        identity,
        int(identity.issue_date.timestamp()),
        int(identity.next_update.timestamp()),
    )


@lru_cache(maxsize=64)
def _qe_levels(text: str) -> tuple[tuple[int, StatusDetail], ...]:
    return enclave_levels(_enclave_identity(text)[0].tcb_levels)


@lru_cache(maxsize=256)
def _sgx_extension(leaf_der: bytes) -> SgxExtension:
    return sgx_extension_from_certificate(x509.load_der_x509_certificate(leaf_der))


@lru_cache(maxsize=256)
def _der_signature(raw: bytes) -> bytes | None:
    try:
        return raw_rs_to_der(raw)
    except MalformedStructureError:
        return None


def clear_caches() -> None:
    """Forget every cached parse and signature answer (benchmarks measure first sight)."""
    for cached in (
        _tcb_info,
        _enclave_identity,
        _qe_levels,
        _sgx_extension,
        _der_signature,
        parse_certificate,
        parse_pem_chain,
        parse_crl,
    ):
        cached.cache_clear()
    signatures_cache_clear()


# ---------------------------------------------------------------------------------------------
# The appraisal


@dataclass
class _Run:
    """Mutable state of one appraisal: what was established so far and what failed."""

    at: int
    anchors: AnchorSet
    failures: list[Failure]

    def attempt(self, fn: Callable[..., T], *args: object) -> T | None:
        try:
            return fn(*args)
        except CheckFailedError as e:
            self.failures.append(Failure(e.code, e.check, e.message, e.hint))
            return None

    def fail(self, code: FailureCode, check: Check, message: str, hint: str) -> None:
        self.failures.append(Failure(code, check, message, hint))


def appraise(
    quote: bytes,
    collateral: Collateral | QuoteCollateralV3,
    *,
    anchors: AnchorSet | None = None,
    at: int | None = None,
    pck_chain: bytes | None = None,
) -> Verdict:
    """Appraise ``quote`` at time ``at`` (Unix seconds, default now). See the module doc."""
    when = int(time.time()) if at is None else int(at)
    if isinstance(collateral, QuoteCollateralV3):
        collateral = Collateral.from_quote_collateral_v3(collateral)
    run = _Run(when, anchors if anchors is not None else AnchorSet.default(), [])
    parsed = _parse_quote(run, quote)
    if parsed is None:
        return _verdict(run, collateral, None, None, None, None, None, None)
    enclave = _enclave(parsed)

    # -- PCK certificate chain and anchor ----------------------------------------------------
    pck_certs = _pck_certificates(run, parsed, collateral, pck_chain)
    leaf: Certificate | None = None
    pck: ValidatedChain | None = None
    extension: SgxExtension | None = None
    if pck_certs is not None:
        leaf = _pck_leaf(run, pck_certs)
    if leaf is not None:
        pck = run.attempt(
            validate_chain, leaf, pck_certs or (), run.anchors, run.at, Check.PCK_CHAIN, "PCK"
        )
        extension = _extension(run, leaf)
        if extension is not None:
            _check_certification_data_matches(run, parsed, extension)
    anchor = pck.anchor if pck is not None else _anchor_from_collateral(run, collateral)

    # -- CRLs and revocation -------------------------------------------------------------------
    root_crl = _root_crl(run, collateral, anchor)
    pck_crl = _pck_crl(run, collateral, pck)
    if pck is not None:
        _check_path_revocation(run, pck, root_crl, pck_crl, Check.PCK_REVOCATION, "PCK")

    # -- TCB Info and QE Identity ----------------------------------------------------------------
    tee_tdx = parsed.header.tee_type is TeeType.TDX
    tcb = _signed_tcb_info(run, collateral.tcb_info, anchor, root_crl, tdx=tee_tdx)
    identity = _signed_qe_identity(run, collateral.qe_identity, anchor, root_crl, tdx=tee_tdx)

    # -- The quoting enclave -------------------------------------------------------------------
    qe_report = parsed.qe_report
    if leaf is not None and leaf.public_point is not None:
        signature = _der_signature(parsed.qe_report_signature)
        _verify(
            run,
            leaf.public_point,
            qe_report.to_bytes(),
            signature,
            FailureCode.QE_REPORT_SIGNATURE_INVALID,
            Check.QE_REPORT_SIGNATURE,
            "the QE report (by the PCK key)",
            "the quote was altered, or the PCK certificate is not the one whose key signed "
            "the QE report",
        )
    _check_qe_binding(run, parsed)
    qe_status: StatusDetail | None = None
    if identity is not None:
        qe_status = _check_qe_identity(run, qe_report, *identity)

    # -- The quote signature -----------------------------------------------------------------------
    key = parsed.signature_data.attestation_public_key
    _verify(
        run,
        raw_public_key_to_point(key),
        quote[: _signed_length(parsed)],
        _der_signature(parsed.signature_data.signature),
        FailureCode.QUOTE_SIGNATURE_INVALID,
        Check.QUOTE_SIGNATURE,
        "the quote (by the attestation key)",
        "the quote was altered after the quoting enclave signed it; obtain a fresh quote",
    )

    # -- The platform ---------------------------------------------------------------------------
    platform_status: StatusDetail | None = None
    if tcb is not None and extension is not None:
        platform_status = _check_platform(run, parsed, extension, tcb)

    return _verdict(run, collateral, parsed, enclave, extension, anchor, platform_status, qe_status)


# ---------------------------------------------------------------------------------------------
# Steps


def _parse_quote(run: _Run, data: bytes) -> Quote | None:
    hint = "pass the raw quote bytes as the quoting enclave produced them"
    if len(data) < 48:
        run.fail(
            FailureCode.QUOTE_MALFORMED,
            Check.QUOTE_FORMAT,
            f"{len(data)} bytes is shorter than a quote header (48)",
            hint,
        )
        return None
    version = int.from_bytes(data[0:2], "little")
    key_type = int.from_bytes(data[2:4], "little")
    tee_type = int.from_bytes(data[4:8], "little")
    if version not in _SUPPORTED_VERSIONS:
        run.fail(
            FailureCode.QUOTE_VERSION_UNSUPPORTED,
            Check.QUOTE_FORMAT,
            f"quote version {version} is not supported (3, 4 and 5 are)",
            "this is not a DCAP ECDSA quote (EPID quotes are version 2)",
        )
        return None
    if key_type != _ECDSA_P256:
        run.fail(
            FailureCode.QUOTE_KEY_TYPE_UNSUPPORTED,
            Check.QUOTE_FORMAT,
            f"attestation key type {key_type} is not supported (2, ECDSA-P256, is)",
            "only ECDSA-P256 DCAP quotes can be verified",
        )
        return None
    if tee_type not in (int(TeeType.SGX), int(TeeType.TDX)):
        run.fail(
            FailureCode.QUOTE_TEE_UNSUPPORTED,
            Check.QUOTE_FORMAT,
            f"TEE type {tee_type:#x} is neither SGX (0) nor TDX (0x81)",
            "only SGX and TDX quotes can be verified",
        )
        return None
    try:
        quote = parse_quote(data, allow_trailing_zero_padding=True)
    except MalformedStructureError as e:
        run.fail(FailureCode.QUOTE_MALFORMED, Check.QUOTE_FORMAT, str(e), hint)
        return None
    if not hmac.compare_digest(quote.header.qe_vendor_id, INTEL_QE_VENDOR_ID):
        run.fail(
            FailureCode.QE_VENDOR_UNKNOWN,
            Check.QUOTE_FORMAT,
            f"QE vendor ID {quote.header.qe_vendor_id.hex()} is not Intel's "
            f"({INTEL_QE_VENDOR_ID.hex()})",
            "only quotes from Intel's quoting enclave (QE3/TD-QE) can be verified",
        )
    return quote


def _signed_length(quote: Quote) -> int:
    return 48 + (6 if quote.header.version == 5 else 0) + type(quote.body).SIZE


def _enclave(quote: Quote) -> VerdictEnclave:
    body = quote.body
    if isinstance(body, ReportBody):
        return VerdictEnclave(
            tee="SGX",
            mrenclave=body.mrenclave.to_bytes(),
            mrsigner=body.mrsigner.to_bytes(),
            isv_prod_id=body.isvprodid,
            isv_svn=body.isvsvn,
            debug=body.attributes.debug,
            report_data=body.report_data,
            attributes=body.attributes.to_bytes(),
            miscselect=body.miscselect,
        )
    td = body.base if isinstance(body, TdReport15) else body
    return VerdictEnclave(
        tee="TDX",
        debug=bool(td.td_attributes[0] & _TDX_DEBUG_BIT),
        report_data=td.report_data,
        attributes=td.td_attributes,
        mr_td=td.mr_td,
    )


def _pck_certificates(
    run: _Run, quote: Quote, collateral: Collateral, supplied: bytes | None
) -> tuple[Certificate, ...] | None:
    data = quote.certification_data
    check = Check.CERTIFICATION_DATA
    if isinstance(data, PckCertChainCertificationData):
        try:
            return parse_certificates(data.data)
        except MalformedStructureError as e:
            run.fail(
                FailureCode.PCK_CHAIN_MALFORMED,
                check,
                f"the PCK certificate chain in the quote is unreadable: {e}",
                "the quote's certification data is corrupt; obtain a fresh quote",
            )
            return None
    external = supplied if supplied is not None else collateral.pck_certificate_chain
    if external is None:
        run.fail(
            FailureCode.PCK_CHAIN_REQUIRED,
            check,
            f"certification data type {int(data.cert_type)} does not carry the PCK "
            "certificate chain",
            "supply the platform's PCK certificate chain (--pck-chain PEM, as the PCS/PCCS "
            "returns it for this PPID, CPUSVN, PCESVN and PCE-ID)",
        )
        return None
    try:
        certs = parse_certificates(external)
    except MalformedStructureError as e:
        run.fail(
            FailureCode.PCK_CHAIN_MALFORMED,
            check,
            f"the supplied PCK certificate chain is unreadable: {e}",
            "supply the PCK chain as PEM certificates",
        )
        return None
    if isinstance(data, PckLeafCertificationData):
        try:
            embedded = parse_certificates(data.data)
        except MalformedStructureError as e:
            run.fail(
                FailureCode.PCK_CHAIN_MALFORMED,
                check,
                f"the PCK certificate in the quote is unreadable: {e}",
                "the quote's certification data is corrupt; obtain a fresh quote",
            )
            return None
        leaves = [c for c in embedded if not c.is_ca]
        if len(leaves) != 1 or not any(c.der == leaves[0].der for c in certs):
            certs = (*leaves, *(c for c in certs if c.is_ca))
    return certs


def _pck_leaf(run: _Run, certs: Sequence[Certificate]) -> Certificate | None:
    leaves = [c for c in certs if not c.is_ca]
    if len(leaves) != 1:
        run.fail(
            FailureCode.PCK_CHAIN_MALFORMED,
            Check.CERTIFICATION_DATA,
            f"the PCK chain has {len(leaves)} end-entity certificates, expected exactly one",
            "supply the PCK certificate followed by its CA certificates",
        )
        return None
    return leaves[0]


def _extension(run: _Run, leaf: Certificate) -> SgxExtension | None:
    try:
        return _sgx_extension(leaf.der)
    except (MalformedStructureError, ValueError) as e:
        run.fail(
            FailureCode.CERT_MALFORMED,
            Check.PCK_CHAIN,
            f"the PCK certificate's SGX extension is unreadable: {e}",
            "this is not an Intel PCK certificate",
        )
        return None


def _check_certification_data_matches(run: _Run, quote: Quote, ext: SgxExtension) -> None:
    data = quote.certification_data
    if not isinstance(data, PpidCertificationData):
        return
    if data.pce_id is not None and data.pce_id != ext.pce_id:
        run.fail(
            FailureCode.PCK_CERT_MISMATCH,
            Check.CERTIFICATION_DATA,
            f"the quote names PCE-ID {data.pce_id.hex()}, the PCK certificate {ext.pce_id.hex()}",
            "supply the PCK certificate chain of the platform that produced this quote",
        )
    if int(data.cert_type) == 1 and not hmac.compare_digest(data.ppid, ext.ppid):
        run.fail(
            FailureCode.PCK_CERT_MISMATCH,
            Check.CERTIFICATION_DATA,
            "the quote's PPID is not the PCK certificate's PPID",
            "supply the PCK certificate chain of the platform that produced this quote",
        )


def _anchor_from_collateral(run: _Run, collateral: Collateral) -> TrustAnchor | None:
    """Without a valid PCK chain, take the anchor the TCB Info signer chains to (if any)."""
    item = collateral.tcb_info
    if item is None or not item.issuer_chain:
        return None
    try:
        certs = parse_certificates(item.issuer_chain)
    except MalformedStructureError:
        return None
    leaves = [c for c in certs if not c.is_ca]
    if len(leaves) != 1:
        return None
    try:
        return validate_chain(
            leaves[0], certs, run.anchors, run.at, Check.TCB_INFO_CHAIN, "TCB Info"
        ).anchor
    except CheckFailedError:
        return None


def _load_crl(run: _Run, data: bytes | None, check: Check, what: str) -> Crl | None:
    if data is None:
        run.fail(
            FailureCode.CRL_MISSING,
            check,
            f"no {what} was supplied",
            f"supply the {what} ({_REFETCH})",
        )
        return None
    try:
        return parse_crl(bytes(data))
    except MalformedStructureError as e:
        run.fail(FailureCode.CRL_MALFORMED, check, f"the {what} is unreadable: {e}", _REFETCH)
        return None


def _root_crl(run: _Run, collateral: Collateral, anchor: TrustAnchor | None) -> Crl | None:
    crl = _load_crl(run, collateral.root_ca_crl, Check.ROOT_CRL, "root CA CRL")
    if crl is None or anchor is None:
        return None
    try:
        check_crl(
            crl,
            anchor.subject_der,
            anchor.public_point,
            anchor.name,
            run.at,
            Check.ROOT_CRL,
            "the root CA CRL",
        )
    except CheckFailedError as e:
        run.fail(e.code, e.check, e.message, e.hint)
        if e.code in (FailureCode.CRL_ISSUER_MISMATCH, FailureCode.CRL_SIGNATURE_INVALID):
            return None  # not authentic: do not use its contents
    anchor_cert = parse_certificate(anchor.certificate_der)
    if anchor_cert.serial in crl.revoked:
        run.fail(
            FailureCode.ANCHOR_REVOKED,
            Check.ROOT_CRL,
            f"the root CA CRL revokes the trust anchor {anchor.name!r} itself",
            "the anchor is no longer trustworthy; do not rely on anything it signed",
        )
    return crl


def _pck_crl(run: _Run, collateral: Collateral, pck: ValidatedChain | None) -> Crl | None:
    crl = _load_crl(run, collateral.pck_crl, Check.PCK_CRL, "PCK CRL")
    if crl is None or pck is None:
        return None
    subject, point = pck.issuer_of(0)
    issuer_name = pck.path[1].subject_text if len(pck.path) > 1 else pck.anchor.name
    try:
        check_crl(crl, subject, point, issuer_name, run.at, Check.PCK_CRL, "the PCK CRL")
    except CheckFailedError as e:
        run.fail(e.code, e.check, e.message, e.hint)
        if e.code in (FailureCode.CRL_ISSUER_MISMATCH, FailureCode.CRL_SIGNATURE_INVALID):
            return None
    return crl


def _check_path_revocation(
    run: _Run,
    chain: ValidatedChain,
    root_crl: Crl | None,
    pck_crl: Crl | None,
    check: Check,
    what: str,
) -> None:
    for index, cert in enumerate(chain.path):
        issuer_subject, _ = chain.issuer_of(index)
        for crl in (root_crl, pck_crl):
            if crl is not None and crl.issuer == issuer_subject:
                run.attempt(check_not_revoked, cert, crl, check, f"{what} certificate")


def _signer_chain(
    run: _Run,
    item: SignedItem,
    anchor: TrustAnchor | None,
    root_crl: Crl | None,
    check: Check,
    what: str,
) -> Certificate | None:
    """The signing certificate of a collateral item, after checking its chain; the returned
    certificate's key is used for the signature check even when its chain failed."""
    if not item.issuer_chain:
        run.fail(
            FailureCode.CHAIN_INCOMPLETE,
            check,
            f"no certificate chain for the {what} signer was supplied",
            f"supply the {what} issuer chain (the PCS sends it in the "
            "SGX-TCB-Info-Issuer-Chain / SGX-Enclave-Identity-Issuer-Chain header)",
        )
        return None
    try:
        certs = parse_certificates(item.issuer_chain)
    except MalformedStructureError as e:
        run.fail(
            FailureCode.CERT_MALFORMED,
            check,
            f"the {what} issuer chain is unreadable: {e}",
            _REFETCH,
        )
        return None
    leaves = [c for c in certs if not c.is_ca]
    if len(leaves) != 1:
        run.fail(
            FailureCode.CERT_MALFORMED,
            check,
            f"the {what} issuer chain has {len(leaves)} signing certificates, expected one",
            _REFETCH,
        )
        return None
    signer = leaves[0]
    anchors = (anchor,) if anchor is not None else tuple(run.anchors)
    chain = run.attempt(validate_chain, signer, certs, anchors, run.at, check, f"{what} signer")
    if chain is not None:
        _check_path_revocation(run, chain, root_crl, None, check, f"{what} signing")
    return signer


def _verify(
    run: _Run,
    point: bytes,
    message: bytes,
    signature_der: bytes | None,
    code: FailureCode,
    check: Check,
    what: str,
    hint: str,
) -> bool:
    if signature_der is None:
        run.fail(code, check, f"the signature over {what} is not a valid ECDSA value", hint)
        return False
    try:
        verify_p256(point, message, signature_der, code=code, check=check, what=what, hint=hint)
    except CheckFailedError as e:
        run.fail(e.code, e.check, e.message, e.hint)
        return False
    return True


def _check_window(run: _Run, issue: int, next_update: int, check: Check, what: str) -> None:
    if run.at < issue:
        run.fail(
            FailureCode.COLLATERAL_NOT_YET_VALID,
            check,
            f"the {what} was issued at {issue}, after the verification time {run.at}",
            "check the verification time (--at) and the system clock",
        )
    elif run.at > next_update:
        run.fail(
            FailureCode.COLLATERAL_EXPIRED,
            check,
            f"the {what} expired at {next_update} (nextUpdate), before the verification time "
            f"{run.at}",
            f"{_REFETCH}, or verify as of an earlier time with --at",
        )


def _signed_tcb_info(
    run: _Run,
    item: SignedItem | None,
    anchor: TrustAnchor | None,
    root_crl: Crl | None,
    *,
    tdx: bool,
) -> tuple[TcbInfo, tuple[PreparedLevel, ...]] | None:
    if item is None:
        run.fail(
            FailureCode.COLLATERAL_MISSING,
            Check.TCB_INFO_FORMAT,
            "no TCB Info was supplied",
            f"supply the TCB Info for the platform's FMSPC ({_REFETCH})",
        )
        return None
    signer = _signer_chain(run, item, anchor, root_crl, Check.TCB_INFO_CHAIN, "TCB Info")
    if signer is not None and signer.public_point is not None:
        _verify(
            run,
            signer.public_point,
            item.signed_bytes,
            _der_signature(item.signature),
            FailureCode.COLLATERAL_SIGNATURE_INVALID,
            Check.TCB_INFO_SIGNATURE,
            "the TCB Info",
            "the TCB Info text was altered (even whitespace counts) or signed by another key; "
            + _REFETCH,
        )
    try:
        info, levels, issue, next_update = _tcb_info(item.text)
    except MalformedStructureError as e:
        run.fail(
            FailureCode.COLLATERAL_MALFORMED,
            Check.TCB_INFO_FORMAT,
            f"the TCB Info is unreadable: {e}",
            _REFETCH,
        )
        return None
    wanted = TcbInfoId.TDX if tdx else TcbInfoId.SGX
    kind_ok = info.id is wanted if tdx else info.id in (None, TcbInfoId.SGX)
    if not kind_ok:
        found = info.id.value if info.id is not None else "SGX (v2)"
        run.fail(
            FailureCode.COLLATERAL_WRONG_KIND,
            Check.TCB_INFO_FORMAT,
            f"the TCB Info is for {found}, the quote is {wanted.value}",
            f"supply the {wanted.value} TCB Info "
            f"(PCS /{wanted.value.lower()}/certification/v4/tcb)",
        )
    _check_window(run, issue, next_update, Check.TCB_INFO_VALIDITY, "TCB Info")
    return (info, levels) if kind_ok else None


def _signed_qe_identity(
    run: _Run,
    item: SignedItem | None,
    anchor: TrustAnchor | None,
    root_crl: Crl | None,
    *,
    tdx: bool,
) -> tuple[EnclaveIdentity, tuple[tuple[int, StatusDetail], ...]] | None:
    if item is None:
        run.fail(
            FailureCode.COLLATERAL_MISSING,
            Check.QE_IDENTITY_FORMAT,
            "no QE Identity was supplied",
            f"supply the QE Identity ({_REFETCH})",
        )
        return None
    signer = _signer_chain(run, item, anchor, root_crl, Check.QE_IDENTITY_CHAIN, "QE Identity")
    if signer is not None and signer.public_point is not None:
        _verify(
            run,
            signer.public_point,
            item.signed_bytes,
            _der_signature(item.signature),
            FailureCode.COLLATERAL_SIGNATURE_INVALID,
            Check.QE_IDENTITY_SIGNATURE,
            "the QE Identity",
            "the QE Identity text was altered (even whitespace counts) or signed by another "
            "key; " + _REFETCH,
        )
    try:
        identity, issue, next_update = _enclave_identity(item.text)
    except MalformedStructureError as e:
        run.fail(
            FailureCode.COLLATERAL_MALFORMED,
            Check.QE_IDENTITY_FORMAT,
            f"the QE Identity is unreadable: {e}",
            _REFETCH,
        )
        return None
    wanted = EnclaveIdentityId.TD_QE if tdx else EnclaveIdentityId.QE
    if identity.id is not wanted:
        run.fail(
            FailureCode.COLLATERAL_WRONG_KIND,
            Check.QE_IDENTITY_FORMAT,
            f"the enclave identity is {identity.id.value}, the quote needs {wanted.value}",
            f"supply the {wanted.value} identity (PCS .../qe/identity)",
        )
        _check_window(run, issue, next_update, Check.QE_IDENTITY_VALIDITY, "QE Identity")
        return None
    _check_window(run, issue, next_update, Check.QE_IDENTITY_VALIDITY, "QE Identity")
    return identity, _qe_levels(item.text)


def _check_qe_binding(run: _Run, quote: Quote) -> None:
    key = quote.signature_data.attestation_public_key
    expected = hashlib.sha256(key + quote.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(quote.qe_report.report_data, expected):
        run.fail(
            FailureCode.QE_REPORT_DATA_MISMATCH,
            Check.QE_REPORT_BINDING,
            "the QE report data is not SHA-256(attestation key || QE authentication data) "
            "followed by 32 zero bytes",
            "the attestation key or authentication data was replaced; obtain a fresh quote",
        )


def _check_qe_identity(
    run: _Run,
    report: ReportBody,
    identity: EnclaveIdentity,
    levels: tuple[tuple[int, StatusDetail], ...],
) -> StatusDetail:
    check = Check.QE_IDENTITY_MATCH
    hint = (
        "the quote was not produced by the quoting enclave Intel's QE Identity describes "
        "(or the identity is for another QE)"
    )
    mismatches: list[tuple[FailureCode, str]] = []
    if not hmac.compare_digest(report.mrsigner.to_bytes(), bytes(identity.mrsigner)):
        mismatches.append(
            (
                FailureCode.QE_MRSIGNER_MISMATCH,
                f"QE MRSIGNER {report.mrsigner.hex()} is not {bytes(identity.mrsigner).hex()}",
            )
        )
    if report.isvprodid != identity.isvprodid:
        mismatches.append(
            (
                FailureCode.QE_ISVPRODID_MISMATCH,
                f"QE ISVPRODID {report.isvprodid} is not {identity.isvprodid}",
            )
        )
    mask = int.from_bytes(identity.miscselect_mask, "little")
    expected_misc = int.from_bytes(identity.miscselect, "little")
    if report.miscselect & mask != expected_misc & mask:
        mismatches.append(
            (
                FailureCode.QE_MISCSELECT_MISMATCH,
                f"QE MISCSELECT {report.miscselect:08x} under mask {mask:08x} is not "
                f"{expected_misc & mask:08x}",
            )
        )
    attributes = report.attributes.to_bytes()
    attr_mask = bytes(identity.attributes_mask)
    masked = bytes(a & m for a, m in zip(attributes, attr_mask, strict=True))
    expected_attr = bytes(a & m for a, m in zip(bytes(identity.attributes), attr_mask, strict=True))
    if masked != expected_attr:
        mismatches.append(
            (
                FailureCode.QE_ATTRIBUTES_MISMATCH,
                f"QE ATTRIBUTES {attributes.hex()} under mask {attr_mask.hex()} are not "
                f"{expected_attr.hex()}",
            )
        )
    if mismatches:
        run.fail(mismatches[0][0], check, "; ".join(m for _, m in mismatches), hint)
    return qe_level(levels, report.isvsvn)


def _check_platform(
    run: _Run,
    quote: Quote,
    ext: SgxExtension,
    tcb: tuple[TcbInfo, tuple[PreparedLevel, ...]],
) -> StatusDetail | None:
    info, levels = tcb
    ok = True
    if ext.fmspc != bytes(info.fmspc):
        ok = False
        run.fail(
            FailureCode.FMSPC_MISMATCH,
            Check.PLATFORM_FMSPC,
            f"the PCK certificate's FMSPC {ext.fmspc.hex()} is not the TCB Info's "
            f"{bytes(info.fmspc).hex()}",
            f"supply the TCB Info for FMSPC {ext.fmspc.hex()} (PCS .../tcb?fmspc=...)",
        )
    if ext.pce_id != bytes(info.pce_id):
        ok = False
        run.fail(
            FailureCode.PCE_ID_MISMATCH,
            Check.PLATFORM_PCE_ID,
            f"the PCK certificate's PCE-ID {ext.pce_id.hex()} is not the TCB Info's "
            f"{bytes(info.pce_id).hex()}",
            "supply the TCB Info issued for this platform's PCE",
        )
    if not ok:
        return None
    tee_tcb_svn: tuple[int, ...] | None = None
    td: TdReport10 | None = None
    body = quote.body
    if isinstance(body, TdReport10 | TdReport15):
        td = body.base if isinstance(body, TdReport15) else body
        tee_tcb_svn = tuple(td.tee_tcb_svn)
    level = match_platform_level(levels, ext.tcb.components, ext.tcb.pcesvn, tee_tcb_svn)
    if level is None:
        tdx_note = f", TEE_TCB_SVN {list(tee_tcb_svn)}" if tee_tcb_svn is not None else ""
        run.fail(
            FailureCode.TCB_LEVEL_NOT_FOUND,
            Check.PLATFORM_TCB_LEVEL,
            f"no TCB level of the TCB Info is met by the platform (SVNs "
            f"{list(ext.tcb.components)}, PCESVN {ext.tcb.pcesvn}{tdx_note})",
            "the platform's TCB is below every level Intel still lists: update its "
            "BIOS/microcode and PCK certificate",
        )
        return None
    detail = level.detail
    if td is None:
        return detail
    module = _check_tdx_module(run, info, td)
    if module is None:
        return None
    if module is _NO_MODULE_LEVELS:
        return detail
    return StatusDetail(
        converge(detail.status, module.status),
        merge_advisories(detail.advisory_ids, module.advisory_ids),
        detail.tcb_date,
    )


#: The TDX module was identified but its identity carries no TCB levels of its own.
_NO_MODULE_LEVELS = StatusDetail(TcbStatus.UP_TO_DATE)


def _check_tdx_module(run: _Run, info: TcbInfo, td: TdReport10) -> StatusDetail | None:
    """The TDX module's identity (MRSIGNER_SEAM, SEAMATTRIBUTES under mask) against TCB Info's
    ``tdxModule`` or, for a module version (TEE_TCB_SVN[1]) > 0, the ``TDX_<version>`` entry of
    ``tdxModuleIdentities``, whose levels give the module's status from TEE_TCB_SVN[0]."""
    check = Check.TDX_MODULE
    hint = "the TD runs on a TDX module Intel's TCB Info does not describe; update the module"
    base = info.tdx_module
    if base is None:  # the TCB Info kind check already failed
        return None
    isvsvn, version = td.tee_tcb_svn[0], td.tee_tcb_svn[1]
    mrsigner, attributes, mask = (
        bytes(base.mrsigner),
        bytes(base.attributes),
        bytes(base.attributes_mask),
    )
    levels = None
    if version > 0 and info.tdx_module_identities:
        wanted = f"TDX_{version:02X}"
        identity = next((i for i in info.tdx_module_identities if i.id.upper() == wanted), None)
        if identity is None:
            run.fail(
                FailureCode.TDX_MODULE_MISMATCH,
                check,
                f"the TCB Info has no identity {wanted} for TDX module version {version}",
                hint,
            )
            return None
        mrsigner = bytes(identity.mrsigner)
        attributes, mask = bytes(identity.attributes), bytes(identity.attributes_mask)
        levels = identity.tcb_levels
    if not hmac.compare_digest(td.mr_signer_seam, mrsigner):
        run.fail(
            FailureCode.TDX_MODULE_MISMATCH,
            check,
            f"MRSIGNER_SEAM {td.mr_signer_seam.hex()} is not {mrsigner.hex()}",
            hint,
        )
        return None
    seam = td.seam_attributes
    if any((a ^ e) & m for a, e, m in zip(seam, attributes, mask, strict=True)):
        run.fail(
            FailureCode.TDX_MODULE_MISMATCH,
            check,
            f"SEAMATTRIBUTES {seam.hex()} under mask {mask.hex()} are not "
            f"{bytes(e & m for e, m in zip(attributes, mask, strict=True)).hex()}",
            hint,
        )
        return None
    if levels is None:
        return _NO_MODULE_LEVELS
    for module_level in levels:
        if module_level.isvsvn <= isvsvn:
            return StatusDetail(
                TcbStatus(module_level.tcb_status.value), tuple(module_level.advisory_ids)
            )
    run.fail(
        FailureCode.TCB_LEVEL_NOT_FOUND,
        check,
        f"TDX module ISVSVN {isvsvn} is below every level of identity TDX_{version:02X}",
        hint,
    )
    return None


# ---------------------------------------------------------------------------------------------
# The verdict


def _verdict(
    run: _Run,
    collateral: Collateral,
    quote: Quote | None,
    enclave: VerdictEnclave | None,
    extension: SgxExtension | None,
    anchor: TrustAnchor | None,
    platform: StatusDetail | None,
    qe: StatusDetail | None,
) -> Verdict:
    failures = tuple(sorted(run.failures, key=lambda f: _CHECK_ORDER[f.check]))
    ids: tuple[CollateralId, ...] = collateral.ids
    common = {
        "quote_version": quote.header.version if quote is not None else None,
        "enclave": enclave,
        "fmspc": extension.fmspc if extension is not None else None,
        "trust_anchor": anchor.ref() if anchor is not None else None,
        "collateral": ids,
        "at": run.at,
    }
    assessment: Assessment | None = None
    if platform is not None and qe is not None:
        assessment = Assessment(
            converge(platform.status, qe.status),
            platform,
            qe,
            merge_advisories(platform.advisory_ids, qe.advisory_ids),
        )
    if failures or assessment is None:
        if not failures:  # pragma: no cover - every missing status has recorded why
            raise AssertionError("appraisal produced no status and no failure")
        return Verdict(
            failures=failures,
            unverified_assessment=assessment,
            **common,  # type: ignore[arg-type]
        )
    return Verdict(
        verified=True,
        tcb_status=assessment.tcb_status,
        platform=assessment.platform,
        qe=assessment.qe,
        advisory_ids=assessment.advisory_ids,
        **common,  # type: ignore[arg-type]
    )
