"""Per-check vectors re-signed on the emulated PCS's fixture PKI (``sgx_quoting.fixtures``).

Every failing vector fails exactly the check it is named for (its failure list is asserted
whole); valid vectors cover each TCB status, the QE's status and their convergence. The vectors
are committed in ``vectors/per_check.json`` (content-addressed blobs, so shared quotes and
collateral are stored once); this test regenerates them from the fixture and compares byte for
byte. Regenerate after a deliberate change with ``SGXEMU_REGEN_VECTORS=1``.

Each vector also runs through dcap-qvl with the fixture root. It must agree on accept/reject
(and on the status when both accept) unless the vector names why it cannot: dcap-qvl does not
look at a CRL's thisUpdate nor compare the PCE-ID, and cannot take a missing item or a PCK
chain from outside a type-5 quote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.qe_identity import EnclaveIdentity, EnclaveIdentityId
from sgx_platform.arch.dcap.quote import (
    CertificationDataType,
    PckCertChainCertificationData,
    PckLeafCertificationData,
    PpidCertificationData,
    QuoteHeader,
    build_quote_v3,
    signed_region,
)
from sgx_platform.arch.dcap.signed_json import HexBytes
from sgx_platform.arch.dcap.tcb_info import (
    EnclaveTcbLevel,
    Tcb,
    TcbComponent,
    TcbInfo,
    TcbInfoId,
    TcbLevel,
    TcbStatus,
    TdxModule,
)
from sgx_quoting.fixtures import TCB_DATE, fixture
from sgx_quoting.pki import PckCa, derive_private_key, sign_raw
from sgx_verifier.anchors import AnchorSet, load_anchor
from sgx_verifier.appraisal import appraise
from sgx_verifier.collateral import Collateral, SignedItem
from sgx_verifier.verdict import Check, FailureCode

VECTORS = Path(__file__).with_name("vectors") / "per_check.json"
F = fixture()
AT = int(F.now.timestamp())
NOW = F.now
DAY = dt.timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# Building blocks


def _base() -> tuple[bytes, Collateral, TcbInfo, EnclaveIdentity]:
    quote = F.quote()
    qc = F.pcs().collateral_for_quote(quote)
    return (
        quote,
        Collateral.from_quote_collateral_v3(qc),
        TcbInfo.from_json(qc.tcb_info),
        EnclaveIdentity.from_json(qc.qe_identity),
    )


QUOTE, BASE, TCB_INFO, QE_IDENTITY = _base()
TCB_CHAIN = F.pki.tcb_issuer_chain_pem().encode()
PLATFORM = tuple(F.tcb.cpusvn)
PCESVN = F.tcb.pcesvn


def tcb_item(info: TcbInfo, *, signature_over: str | None = None) -> SignedItem:
    text = info.to_json()
    return SignedItem("tcbInfo", text, F.sign_text(signature_over or text), TCB_CHAIN)


def qe_item(identity: EnclaveIdentity, *, signature_over: str | None = None) -> SignedItem:
    text = identity.to_json()
    return SignedItem("enclaveIdentity", text, F.sign_text(signature_over or text), TCB_CHAIN)


def level(
    svns: tuple[int, ...] = PLATFORM,
    pcesvn: int = PCESVN,
    status: str = "UpToDate",
    advisories: tuple[str, ...] = (),
    tdx: tuple[int, ...] | None = None,
) -> TcbLevel:
    return TcbLevel(
        tcb=Tcb(
            tuple(TcbComponent(s) for s in svns),
            pcesvn,
            None if tdx is None else tuple(TcbComponent(s) for s in tdx),
        ),
        tcb_date=TCB_DATE,
        tcb_status=TcbStatus(status),
        advisory_ids=advisories,
    )


def with_levels(*levels: TcbLevel, **changes: Any) -> Collateral:
    info = dataclasses.replace(TCB_INFO, tcb_levels=levels, key_order=(), **changes)
    return dataclasses.replace(BASE, tcb_info=tcb_item(info))


def with_tcb_info(**changes: Any) -> Collateral:
    info = dataclasses.replace(TCB_INFO, key_order=(), **changes)
    return dataclasses.replace(BASE, tcb_info=tcb_item(info))


def with_qe(**changes: Any) -> Collateral:
    identity = dataclasses.replace(QE_IDENTITY, key_order=(), **changes)
    return dataclasses.replace(BASE, qe_identity=qe_item(identity))


def qe_levels(*levels: tuple[int, str, tuple[str, ...]]) -> Collateral:
    return with_qe(
        tcb_levels=tuple(
            EnclaveTcbLevel(isvsvn, TCB_DATE, TcbStatus(status), advisories)
            for isvsvn, status, advisories in levels
        )
    )


def chain_quote(leaf_pem: bytes, ca: PckCa = PckCa.PROCESSOR) -> bytes:
    pem = leaf_pem + F.pki.pck_issuer_chain_pem(ca).encode() + b"\x00"
    return F.quote(certification_data=PckCertChainCertificationData(pem))


def pem(cert: Any) -> bytes:
    return bytes(cert.public_bytes(Encoding.PEM))


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]


def quote_with_vendor(vendor: bytes) -> bytes:
    header = QuoteHeader.for_v3(qe_svn=F.qe_svn, pce_svn=PCESVN, qe_vendor_id=vendor)
    isv, qe = F.isv_report(), F.qe_report()
    pck_chain = F.pcs().select_pck(F.tcb, pce_id=F.platform.pce_id).pem() + b"\x00"
    return build_quote_v3(
        header=header,
        isv_report=isv,
        signature=sign_raw(F.attestation_key, signed_region(header, isv)),
        attestation_public_key=public_key_to_raw(F.attestation_key.public_key()),
        qe_report=qe,
        qe_report_signature=sign_raw(F.pck_key, qe.to_bytes()),
        qe_auth_data=bytes(range(32)),
        certification_data=PckCertChainCertificationData(pck_chain),
    ).to_bytes()


def type3_quote(pce_id: bytes) -> bytes:
    data = PpidCertificationData(
        CertificationDataType.PPID_RSA3072_ENCRYPTED,
        hashlib.shake_256(b"encrypted ppid").digest(384),
        F.tcb.cpusvn,
        PCESVN,
        pce_id,
    )
    return F.quote(certification_data=data)


def type1_quote(ppid: bytes) -> bytes:
    data = PpidCertificationData(
        CertificationDataType.PPID_CLEARTEXT, ppid, F.tcb.cpusvn, PCESVN, F.platform.pce_id
    )
    return F.quote(certification_data=data)


def type4_quote() -> bytes:
    leaf = F.pcs().select_pck(F.tcb, pce_id=F.platform.pce_id).leaf
    return F.quote(certification_data=PckLeafCertificationData(pem(leaf)))


def pck_chain_pem() -> bytes:
    return F.pcs().select_pck(F.tcb, pce_id=F.platform.pce_id).pem()


def crl(issuer: Any, **kw: Any) -> bytes:
    return F.crl(issuer, **kw)


def tdx_tcb_info() -> TcbInfo:
    module = TdxModule(HexBytes(bytes(48)), HexBytes(bytes(8)), HexBytes(b"\xff" * 8))
    return dataclasses.replace(
        TCB_INFO,
        id=TcbInfoId.TDX,
        tdx_module=module,
        tcb_levels=(level(tdx=(0,) * 16),),
        key_order=(),
    )


# ---------------------------------------------------------------------------------------------
# The vectors


@dataclasses.dataclass(frozen=True)
class Vector:
    name: str
    quote: bytes = QUOTE
    collateral: Collateral = BASE
    at: int = AT
    pck_chain: bytes | None = None
    # Expected: a status (verified) or the exact failure list.
    status: str | None = None
    platform: str | None = None
    qe: str | None = None
    advisories: tuple[str, ...] = ()
    failures: tuple[tuple[Check, FailureCode], ...] = ()
    debug: bool = False
    # Why dcap-qvl cannot agree or judge (empty: it must agree).
    dcap_qvl: str = ""


def _failing(name: str, check: Check, code: FailureCode, **kw: Any) -> Vector:
    return Vector(name, failures=((check, code),), **kw)


def _valid(name: str, status: str, **kw: Any) -> Vector:
    kw.setdefault("platform", status)
    kw.setdefault("qe", "UpToDate")
    return Vector(name, status=status, **kw)


def build_vectors() -> list[Vector]:
    leaf = F.pcs().select_pck(F.tcb, pce_id=F.platform.pce_id).leaf
    adv = ("SGXEMU-SA-00001",)
    no_crl_thisupdate = "dcap-qvl does not check a CRL's thisUpdate"
    vectors: list[Vector] = [
        _valid("valid-up-to-date", "UpToDate"),
        _valid(
            "valid-debug-enclave",
            "UpToDate",
            quote=F.quote(isv_report=F.isv_report(debug=True)),
            debug=True,
        ),
    ]
    for status in (
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    ):
        vectors.append(
            _valid(
                f"valid-platform-{status}",
                status,
                advisories=adv,
                collateral=with_levels(level(status=status, advisories=adv)),
            )
        )
    higher = tuple(s + 1 if i == 0 else s for i, s in enumerate(PLATFORM))
    lower = tuple(max(s - 1, 0) if i == 2 else s for i, s in enumerate(PLATFORM))
    vectors += [
        _valid(
            "valid-first-matching-level-in-canonical-order",
            "SWHardeningNeeded",
            advisories=("SGXEMU-SA-00002",),
            collateral=with_levels(
                level(lower, status="OutOfDate", advisories=("SGXEMU-SA-00003",)),
                level(higher, status="UpToDate"),
                level(PLATFORM, PCESVN + 1, status="UpToDate"),
                level(PLATFORM, PCESVN, "SWHardeningNeeded", ("SGXEMU-SA-00002",)),
            ),
        ),
        _valid(
            "valid-qe-out-of-date",
            "OutOfDate",
            platform="UpToDate",
            qe="OutOfDate",
            advisories=("SGXEMU-QE-00001",),
            collateral=qe_levels(
                (F.qe_svn + 1, "UpToDate", ()), (F.qe_svn, "OutOfDate", ("SGXEMU-QE-00001",))
            ),
        ),
        _valid(
            "valid-qe-out-of-date-with-configuration-needed",
            "OutOfDateConfigurationNeeded",
            platform="ConfigurationNeeded",
            qe="OutOfDate",
            advisories=("SGXEMU-SA-00001", "SGXEMU-QE-00001"),
            collateral=dataclasses.replace(
                qe_levels(
                    (F.qe_svn + 1, "UpToDate", ()),
                    (F.qe_svn, "OutOfDate", ("SGXEMU-QE-00001", "SGXEMU-SA-00001")),
                ),
                tcb_info=with_levels(level(status="ConfigurationNeeded", advisories=adv)).tcb_info,
            ),
        ),
        _valid(
            "valid-qe-below-every-level-is-revoked",
            "Revoked",
            platform="UpToDate",
            qe="Revoked",
            collateral=qe_levels((F.qe_svn + 1, "UpToDate", ())),
        ),
        _valid(
            "valid-platform-ca",
            "UpToDate",
            quote=chain_quote(pem(F.issue_pck(ca=PckCa.PLATFORM)), PckCa.PLATFORM),
            collateral=dataclasses.replace(BASE, pck_crl=crl(PckCa.PLATFORM)),
        ),
        _valid(
            "valid-type3-with-supplied-pck-chain",
            "UpToDate",
            quote=type3_quote(F.platform.pce_id),
            pck_chain=pck_chain_pem(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _valid(
            "valid-type1-with-supplied-pck-chain",
            "UpToDate",
            quote=type1_quote(F.platform.ppid),
            pck_chain=pck_chain_pem(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _valid(
            "valid-type4-with-supplied-ca-chain",
            "UpToDate",
            quote=type4_quote(),
            pck_chain=F.pki.pck_issuer_chain_pem(PckCa.PROCESSOR).encode(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _valid(
            "valid-type1-with-supplied-pck-chain",
            "UpToDate",
            quote=type1_quote(F.platform.ppid),
            pck_chain=pck_chain_pem(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _valid(
            "valid-type4-with-supplied-ca-chain",
            "UpToDate",
            quote=type4_quote(),
            pck_chain=F.pki.pck_issuer_chain_pem(PckCa.PROCESSOR).encode(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        # -- the platform's TCB level ----------------------------------------------------------
        _failing(
            "tcb-level-not-found-component",
            Check.PLATFORM_TCB_LEVEL,
            FailureCode.TCB_LEVEL_NOT_FOUND,
            collateral=with_levels(level(higher)),
        ),
        _failing(
            "tcb-level-not-found-pcesvn",
            Check.PLATFORM_TCB_LEVEL,
            FailureCode.TCB_LEVEL_NOT_FOUND,
            collateral=with_levels(level(PLATFORM, PCESVN + 1)),
        ),
        _failing(
            "fmspc-mismatch",
            Check.PLATFORM_FMSPC,
            FailureCode.FMSPC_MISMATCH,
            collateral=with_tcb_info(fmspc=HexBytes(bytes.fromhex("00A0EE000001"))),
        ),
        _failing(
            "pce-id-mismatch",
            Check.PLATFORM_PCE_ID,
            FailureCode.PCE_ID_MISMATCH,
            collateral=with_tcb_info(pce_id=HexBytes(bytes.fromhex("0001"))),
            dcap_qvl="dcap-qvl does not compare the PCE-ID",
        ),
        # -- TCB Info and QE Identity --
        _failing(
            "tcb-info-not-yet-valid",
            Check.TCB_INFO_VALIDITY,
            FailureCode.COLLATERAL_NOT_YET_VALID,
            collateral=with_tcb_info(issue_date=NOW + dt.timedelta(seconds=1)),
        ),
        _failing(
            "tcb-info-expired",
            Check.TCB_INFO_VALIDITY,
            FailureCode.COLLATERAL_EXPIRED,
            collateral=with_tcb_info(
                issue_date=NOW - 30 * DAY, next_update=NOW - dt.timedelta(seconds=1)
            ),
        ),
        _failing(
            "tcb-info-signature",
            Check.TCB_INFO_SIGNATURE,
            FailureCode.COLLATERAL_SIGNATURE_INVALID,
            collateral=dataclasses.replace(
                BASE, tcb_info=tcb_item(TCB_INFO, signature_over=TCB_INFO.to_json() + " ")
            ),
        ),
        _failing(
            "tcb-info-wrong-kind",
            Check.TCB_INFO_FORMAT,
            FailureCode.COLLATERAL_WRONG_KIND,
            collateral=dataclasses.replace(BASE, tcb_info=tcb_item(tdx_tcb_info())),
        ),
        _failing(
            "tcb-info-signer-chain-missing",
            Check.TCB_INFO_CHAIN,
            FailureCode.CHAIN_INCOMPLETE,
            collateral=dataclasses.replace(
                BASE, tcb_info=dataclasses.replace(BASE.tcb_info, issuer_chain=b"")
            ),
        ),
        _failing(
            "tcb-info-missing",
            Check.TCB_INFO_FORMAT,
            FailureCode.COLLATERAL_MISSING,
            collateral=dataclasses.replace(BASE, tcb_info=None),
            dcap_qvl="dcap-qvl's collateral cannot lack a TCB Info",
        ),
        _failing(
            "qe-identity-not-yet-valid",
            Check.QE_IDENTITY_VALIDITY,
            FailureCode.COLLATERAL_NOT_YET_VALID,
            collateral=with_qe(issue_date=NOW + dt.timedelta(seconds=1)),
        ),
        _failing(
            "qe-identity-expired",
            Check.QE_IDENTITY_VALIDITY,
            FailureCode.COLLATERAL_EXPIRED,
            collateral=with_qe(
                issue_date=NOW - 30 * DAY, next_update=NOW - dt.timedelta(seconds=1)
            ),
        ),
        _failing(
            "qe-identity-signature",
            Check.QE_IDENTITY_SIGNATURE,
            FailureCode.COLLATERAL_SIGNATURE_INVALID,
            collateral=dataclasses.replace(
                BASE,
                qe_identity=qe_item(QE_IDENTITY, signature_over=QE_IDENTITY.to_json() + " "),
            ),
        ),
        _failing(
            "qe-identity-wrong-kind",
            Check.QE_IDENTITY_FORMAT,
            FailureCode.COLLATERAL_WRONG_KIND,
            collateral=with_qe(id=EnclaveIdentityId.QVE),
        ),
        _failing(
            "qe-identity-missing",
            Check.QE_IDENTITY_FORMAT,
            FailureCode.COLLATERAL_MISSING,
            collateral=dataclasses.replace(BASE, qe_identity=None),
            dcap_qvl="dcap-qvl's collateral cannot lack a QE Identity",
        ),
        # -- the QE report against the QE Identity --
        _failing(
            "qe-mrsigner",
            Check.QE_IDENTITY_MATCH,
            FailureCode.QE_MRSIGNER_MISMATCH,
            collateral=with_qe(mrsigner=HexBytes(hashlib.sha256(b"another QE").digest())),
        ),
        _failing(
            "qe-isvprodid",
            Check.QE_IDENTITY_MATCH,
            FailureCode.QE_ISVPRODID_MISMATCH,
            collateral=with_qe(isvprodid=QE_IDENTITY.isvprodid + 1),
        ),
        _failing(
            "qe-miscselect",
            Check.QE_IDENTITY_MATCH,
            FailureCode.QE_MISCSELECT_MISMATCH,
            collateral=with_qe(miscselect=HexBytes(bytes.fromhex("01000000"))),
        ),
        _failing(
            "qe-attributes",
            Check.QE_IDENTITY_MATCH,
            FailureCode.QE_ATTRIBUTES_MISMATCH,
            collateral=with_qe(attributes=HexBytes(bytes.fromhex("13" + "00" * 15))),
        ),
        # -- the quote --
        _failing(
            "qe-report-binding",
            Check.QE_REPORT_BINDING,
            FailureCode.QE_REPORT_DATA_MISMATCH,
            quote=F.quote(qe_report=F.qe_report(qe_auth_data=bytes(32))),
        ),
        _failing(
            "qe-report-signature",
            Check.QE_REPORT_SIGNATURE,
            FailureCode.QE_REPORT_SIGNATURE_INVALID,
            quote=F.quote(pck_key=derive_private_key(b"another platform", "pck")),
        ),
        _failing(
            "quote-signature",
            Check.QUOTE_SIGNATURE,
            FailureCode.QUOTE_SIGNATURE_INVALID,
            quote=flip(QUOTE, 432 + 4 + 10),
        ),
        _failing(
            "qe-vendor-unknown",
            Check.QUOTE_FORMAT,
            FailureCode.QE_VENDOR_UNKNOWN,
            quote=quote_with_vendor(bytes(16)),
        ),
        _failing(
            "pck-chain-required",
            Check.CERTIFICATION_DATA,
            FailureCode.PCK_CHAIN_REQUIRED,
            quote=type3_quote(F.platform.pce_id),
        ),
        _failing(
            "pck-cert-mismatch",
            Check.CERTIFICATION_DATA,
            FailureCode.PCK_CERT_MISMATCH,
            quote=type3_quote(bytes.fromhex("0001")),
            pck_chain=pck_chain_pem(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _failing(
            "pck-cert-mismatch-ppid",
            Check.CERTIFICATION_DATA,
            FailureCode.PCK_CERT_MISMATCH,
            quote=type1_quote(bytes(16)),
            pck_chain=pck_chain_pem(),
            dcap_qvl="dcap-qvl takes no PCK chain from outside a type-5 quote",
        ),
        _failing(
            "pck-chain-required-type4",
            Check.CERTIFICATION_DATA,
            FailureCode.PCK_CHAIN_REQUIRED,
            quote=type4_quote(),
        ),
        # -- the PCK certificate --
        _failing(
            "pck-expired",
            Check.PCK_CHAIN,
            FailureCode.CERT_EXPIRED,
            quote=chain_quote(
                pem(F.issue_pck(not_before=NOW - 400 * DAY, not_after=NOW - dt.timedelta(1)))
            ),
        ),
        _failing(
            "pck-not-yet-valid",
            Check.PCK_CHAIN,
            FailureCode.CERT_NOT_YET_VALID,
            quote=chain_quote(pem(F.issue_pck(not_before=NOW + dt.timedelta(seconds=1)))),
        ),
        _failing(
            "pck-revoked",
            Check.PCK_REVOCATION,
            FailureCode.CERT_REVOKED,
            collateral=dataclasses.replace(
                BASE, pck_crl=crl(PckCa.PROCESSOR, revoked=(leaf.serial_number,))
            ),
        ),
        _failing(
            "pck-ca-revoked",
            Check.PCK_REVOCATION,
            FailureCode.CERT_REVOKED,
            collateral=dataclasses.replace(
                BASE,
                root_ca_crl=crl("root", revoked=(F.pki.processor_ca.certificate.serial_number,)),
            ),
        ),
        Vector(
            "tcb-signer-revoked",
            failures=(
                (Check.TCB_INFO_CHAIN, FailureCode.CERT_REVOKED),
                (Check.QE_IDENTITY_CHAIN, FailureCode.CERT_REVOKED),
            ),
            collateral=dataclasses.replace(
                BASE,
                root_ca_crl=crl("root", revoked=(F.pki.tcb_signing.certificate.serial_number,)),
            ),
        ),
        # -- CRLs --
        _failing(
            "root-crl-expired",
            Check.ROOT_CRL,
            FailureCode.CRL_EXPIRED,
            collateral=dataclasses.replace(
                BASE, root_ca_crl=crl("root", this_update=NOW - 30 * DAY, next_update=NOW)
            ),
        ),
        _failing(
            "root-crl-not-yet-valid",
            Check.ROOT_CRL,
            FailureCode.CRL_NOT_YET_VALID,
            collateral=dataclasses.replace(
                BASE, root_ca_crl=crl("root", this_update=NOW + dt.timedelta(seconds=1))
            ),
            dcap_qvl=no_crl_thisupdate,
        ),
        _failing(
            "root-crl-signature",
            Check.ROOT_CRL,
            FailureCode.CRL_SIGNATURE_INVALID,
            collateral=dataclasses.replace(BASE, root_ca_crl=flip(crl("root"), -3)),
        ),
        _failing(
            "root-crl-missing",
            Check.ROOT_CRL,
            FailureCode.CRL_MISSING,
            collateral=dataclasses.replace(BASE, root_ca_crl=None),
            dcap_qvl="dcap-qvl's collateral cannot lack a CRL",
        ),
        _failing(
            "pck-crl-expired",
            Check.PCK_CRL,
            FailureCode.CRL_EXPIRED,
            collateral=dataclasses.replace(
                BASE,
                pck_crl=crl(
                    PckCa.PROCESSOR,
                    this_update=NOW - 30 * DAY,
                    next_update=NOW - dt.timedelta(seconds=1),
                ),
            ),
        ),
        _failing(
            "pck-crl-not-yet-valid",
            Check.PCK_CRL,
            FailureCode.CRL_NOT_YET_VALID,
            collateral=dataclasses.replace(
                BASE, pck_crl=crl(PckCa.PROCESSOR, this_update=NOW + dt.timedelta(seconds=1))
            ),
            dcap_qvl=no_crl_thisupdate,
        ),
        _failing(
            "pck-crl-signature",
            Check.PCK_CRL,
            FailureCode.CRL_SIGNATURE_INVALID,
            collateral=dataclasses.replace(BASE, pck_crl=flip(crl(PckCa.PROCESSOR), -3)),
        ),
        _failing(
            "pck-crl-of-another-ca",
            Check.PCK_CRL,
            FailureCode.CRL_ISSUER_MISMATCH,
            collateral=dataclasses.replace(BASE, pck_crl=crl(PckCa.PLATFORM)),
        ),
        _failing(
            "pck-crl-missing",
            Check.PCK_CRL,
            FailureCode.CRL_MISSING,
            collateral=dataclasses.replace(BASE, pck_crl=None),
            dcap_qvl="dcap-qvl's collateral cannot lack a CRL",
        ),
    ]
    return vectors


# ---------------------------------------------------------------------------------------------
# Serialization (content-addressed blobs)


def _blob(blobs: dict[str, Any], data: bytes | str | None) -> str | None:
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    key = hashlib.sha256(raw).hexdigest()[:16]
    blobs[key] = {"text": data} if isinstance(data, str) else {"hex": data.hex()}
    return key


def _item(blobs: dict[str, Any], item: SignedItem | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {
        "text": _blob(blobs, item.text),
        "signature": item.signature.hex(),
        "issuer_chain": _blob(blobs, item.issuer_chain.decode()),
    }


def serialize(vectors: list[Vector]) -> bytes:
    blobs: dict[str, Any] = {}
    out = []
    for v in vectors:
        c = v.collateral
        out.append(
            {
                "name": v.name,
                "at": v.at,
                "quote": _blob(blobs, v.quote),
                "pck_chain": _blob(blobs, v.pck_chain.decode() if v.pck_chain else None),
                "collateral": {
                    "tcb_info": _item(blobs, c.tcb_info),
                    "qe_identity": _item(blobs, c.qe_identity),
                    "pck_crl": _blob(blobs, c.pck_crl),
                    "root_ca_crl": _blob(blobs, c.root_ca_crl),
                },
                "expected": {
                    "verified": not v.failures,
                    "tcb_status": v.status,
                    "platform_tcb_status": v.platform,
                    "qe_tcb_status": v.qe,
                    "advisory_ids": list(v.advisories),
                    "debug": v.debug,
                    "failures": [[check.value, code.value] for check, code in v.failures],
                },
                "dcap_qvl": v.dcap_qvl or "agrees",
            }
        )
    document = {
        "description": "Per-check DCAP appraisal vectors on the sgxemu fixture PKI "
        "(tests/verifier/test_vectors.py regenerates them)",
        "anchor": _blob(blobs, F.pki.root.der),
        "vectors": out,
        "blobs": dict(sorted(blobs.items())),
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def _load(blobs: dict[str, Any], key: str | None) -> Any:
    if key is None:
        return None
    entry = blobs[key]
    return entry["text"] if "text" in entry else bytes.fromhex(entry["hex"])


def deserialize(data: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    doc = json.loads(data)
    blobs = doc["blobs"]
    vectors = []
    for v in doc["vectors"]:
        c = v["collateral"]

        def item(kind: str, entry: dict[str, Any] | None) -> SignedItem | None:
            if entry is None:
                return None
            return SignedItem(
                kind,
                _load(blobs, entry["text"]),
                bytes.fromhex(entry["signature"]),
                _load(blobs, entry["issuer_chain"]).encode(),
            )

        chain = _load(blobs, v["pck_chain"])
        vectors.append(
            {
                **v,
                "quote": _load(blobs, v["quote"]),
                "pck_chain": chain.encode() if chain else None,
                "collateral": Collateral(
                    tcb_info=item("tcbInfo", c["tcb_info"]),
                    qe_identity=item("enclaveIdentity", c["qe_identity"]),
                    pck_crl=_load(blobs, c["pck_crl"]),
                    root_ca_crl=_load(blobs, c["root_ca_crl"]),
                ),
            }
        )
    return _load(blobs, doc["anchor"]), vectors


# ---------------------------------------------------------------------------------------------
# Tests


def test_regenerating_the_vectors_reproduces_the_committed_file() -> None:
    data = serialize(build_vectors())
    assert data == serialize(build_vectors())  # deterministic within a run
    if os.environ.get("SGXEMU_REGEN_VECTORS") == "1":
        VECTORS.parent.mkdir(exist_ok=True)
        VECTORS.write_bytes(data)
    assert VECTORS.read_bytes() == data, "regenerate with SGXEMU_REGEN_VECTORS=1 and review"


@pytest.fixture(scope="module")
def committed() -> tuple[bytes, list[dict[str, Any]]]:
    return deserialize(VECTORS.read_bytes())


def _names() -> list[str]:
    return [v.name for v in build_vectors()]


@pytest.mark.parametrize("name", _names())
def test_vector(committed, outcomes, name: str) -> None:  # type: ignore[no-untyped-def]
    anchor_der, vectors = committed
    vector = next(v for v in vectors if v["name"] == name)
    anchors = AnchorSet.of([load_anchor(anchor_der, "sgxemu-fixture-root")])
    verdict = appraise(
        vector["quote"],
        vector["collateral"],
        anchors=anchors,
        at=vector["at"],
        pck_chain=vector["pck_chain"],
    )
    expected = vector["expected"]
    assert [[f.check.value, f.code.value] for f in verdict.failures] == expected["failures"]
    assert verdict.verified is expected["verified"]
    if verdict.verified:
        assert verdict.tcb_status == expected["tcb_status"]
        assert verdict.platform_tcb_status == expected["platform_tcb_status"]
        assert verdict.qe_tcb_status == expected["qe_tcb_status"]
        assert list(verdict.advisory_ids) == expected["advisory_ids"]
        assert verdict.enclave is not None and verdict.enclave.debug is expected["debug"]
        assert verdict.trust_anchor is not None
        assert verdict.trust_anchor.name == "sgxemu-fixture-root"
    for failure in verdict.failures:
        assert failure.message and failure.hint

    if vector["dcap_qvl"] != "agrees":
        return
    qvl_outcome, our_outcome = outcomes
    ours = our_outcome(verdict)
    c = vector["collateral"]
    import dcap_qvl

    oracle = dcap_qvl.QuoteCollateralV3(
        F.pki.pck_issuer_chain_pem(PckCa.PROCESSOR),
        c.root_ca_crl,
        c.pck_crl,
        c.tcb_info.issuer_chain.decode(),
        c.tcb_info.text,
        c.tcb_info.signature,
        c.qe_identity.issuer_chain.decode(),
        c.qe_identity.text,
        c.qe_identity.signature,
    )
    theirs = qvl_outcome(vector["quote"], oracle, anchor_der, vector["at"])
    assert ours.accepted == theirs.accepted, (ours, theirs)
    assert ours.status == theirs.status, (ours, theirs)
    assert ours.advisory_ids == theirs.advisory_ids, (ours, theirs)
    assert ours.revoked == theirs.revoked, (ours, theirs)


def test_every_check_has_a_failing_vector() -> None:
    covered = {check for v in build_vectors() for check, _ in v.failures}
    # Only a TDX quote can fail the module check: test_tcb.py covers it.
    elsewhere = {Check.TDX_MODULE}
    assert set(Check) - elsewhere <= covered, set(Check) - elsewhere - covered
