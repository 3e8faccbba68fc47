"""DCAP ECDSA quotes, versions 3, 4 and 5, and their certification data.

Layouts (Intel DCAP ``sgx_quote_3.h``, ``sgx_quote_4.h``, ``sgx_quote_5.h``; cross-checked with
Phala dcap-qvl ``src/quote.rs``), all little-endian:

* header, 48 bytes: version u16, attestation key type u16 (2 = ECDSA-256-with-P-256), TEE type
  u32 (0 SGX, 0x81 TDX; v3 calls it ``att_key_data_0`` and it must be 0), QE SVN u16, PCE SVN u16
  (v4/v5 name these two "reserved"; they are kept as they are, not required to be zero), QE
  vendor ID 16, user data 20;
* v5 only: body descriptor, body type u16 (1 SGX report, 2 TD report 1.0, 3 TD report 1.5) and
  body size u32;
* body: SGX ISV enclave report body (384), TD report 1.0 (584) or TD report 1.5 (648);
* signature data length u32, then the ECDSA signature data: quote signature r||s (64, big-endian
  halves), attestation public key x||y (64), then
  - v3: QE report body (384), QE report signature (64), QE authentication data (u16 size + data),
    certification data (type u16, size u32, data);
  - v4/v5: one certification data element of type 6 whose data is the same QE report
    certification data (QE report, signature, authentication data, inner certification data).

Invariants:

* :meth:`Quote.from_bytes` accepts exactly one quote and nothing else: truncation, trailing bytes,
  a signature data length that disagrees with its contents, an unknown version, attestation key
  type, TEE type, body type or certification data type all raise
  :class:`~sgx_platform.arch.errors.MalformedStructureError`. :func:`parse_quote` can also accept
  trailing zero padding (some producers hand out fixed-size buffers), never anything else.
* :meth:`Quote.to_bytes` is the exact inverse of :meth:`Quote.from_bytes`.
* The bytes the attestation key signs are :attr:`Quote.signed_region`: the header, the v5 body
  descriptor and the body, exactly as they appear in the quote.
* Certification data type 5 (PCK certificate chain) keeps its bytes verbatim (a trailing NUL is
  common); its PEM certificates are decoded on demand by
  :meth:`PckCertChainCertificationData.certificates`, which is strict.
* Nothing here checks a signature or a certificate; that is the verifier's job.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeAlias

from cryptography import x509

from sgx_platform.arch.binary import Reader, require_bytes, require_length, require_uint
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.report import ReportBody

#: Intel's QE3/TD-QE vendor ID (``939a7233-f79c-4ca9-940a-0db3957f0607``).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

#: ``sgx_attestation_algorithm_id_t`` SGX_QL_ALG_ECDSA_P256: the only key type a quote may use.
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2

HEADER_SIZE = 48
ECDSA_SIGNATURE_SIZE = 64
ECDSA_PUBLIC_KEY_SIZE = 64
QE_REPORT_DATA_SIZE = 64
SUPPORTED_VERSIONS = (3, 4, 5)


class TeeType(IntEnum):
    """Quote header TEE type."""

    SGX = 0x00000000
    TDX = 0x00000081


class BodyType(IntEnum):
    """Quote v5 body descriptor type."""

    SGX_ENCLAVE_REPORT = 1
    TD_REPORT_10 = 2
    TD_REPORT_15 = 3


class CertificationDataType(IntEnum):
    """Certification data types (Intel DCAP ``sgx_quote_3.h``, ``PCK_ID_*`` and ``QE_REPORT``)."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_ENCRYPTED = 2
    PPID_RSA3072_ENCRYPTED = 3
    PCK_LEAF_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6


# ---------------------------------------------------------------------------------------------
# Header


_HEADER = struct.Struct("<HHIHH16s20s")
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header. ``qe_svn``/``pce_svn`` are "reserved" in v4/v5 (kept as is)."""

    version: int
    attestation_key_type: int
    tee_type: TeeType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    SIZE: ClassVar[int] = HEADER_SIZE

    def __post_init__(self) -> None:
        require_uint(self.version, 16, "quote header version")
        if self.version not in SUPPORTED_VERSIONS:
            raise MalformedStructureError(f"quote header: unsupported version {self.version}")
        require_uint(self.attestation_key_type, 16, "quote header attestation key type")
        if self.attestation_key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
            raise MalformedStructureError(
                f"quote header: unsupported attestation key type {self.attestation_key_type}"
            )
        if not isinstance(self.tee_type, TeeType):
            raise MalformedStructureError("quote header: tee_type must be a TeeType")
        if self.version == 3 and self.tee_type is not TeeType.SGX:
            raise MalformedStructureError("quote header: a v3 quote must have TEE type 0 (SGX)")
        require_uint(self.qe_svn, 16, "quote header QE SVN")
        require_uint(self.pce_svn, 16, "quote header PCE SVN")
        require_bytes(self.qe_vendor_id, 16, "quote header QE vendor ID")
        require_bytes(self.user_data, 20, "quote header user data")

    @classmethod
    def for_v3(
        cls,
        *,
        qe_svn: int,
        pce_svn: int,
        user_data: bytes = bytes(20),
        qe_vendor_id: bytes = INTEL_QE_VENDOR_ID,
    ) -> QuoteHeader:
        """The header of an SGX ECDSA-P256 quote v3, as Intel's QE3 writes it."""
        return cls(
            version=3,
            attestation_key_type=ATTESTATION_KEY_TYPE_ECDSA_P256,
            tee_type=TeeType.SGX,
            qe_svn=qe_svn,
            pce_svn=pce_svn,
            qe_vendor_id=qe_vendor_id,
            user_data=user_data,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        require_length(data, HEADER_SIZE, "quote header")
        version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack(data)
        try:
            tee = TeeType(tee_type)
        except ValueError:
            raise MalformedStructureError(f"quote header: unknown TEE type {tee_type:#x}") from None
        return cls(version, key_type, tee, qe_svn, pce_svn, vendor, user_data)

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            self.version,
            self.attestation_key_type,
            int(self.tee_type),
            self.qe_svn,
            self.pce_svn,
            self.qe_vendor_id,
            self.user_data,
        )


# ---------------------------------------------------------------------------------------------
# TD report bodies

_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
assert _TD10.size == 584
_TD15_TAIL = struct.Struct("<16s48s")
assert _TD10.size + _TD15_TAIL.size == 648


@dataclass(frozen=True, slots=True)
class TdReport10:
    """TDX 1.0 TD report body in a quote (Intel ``sgx_report2_body_t``, 584 bytes)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    SIZE: ClassVar[int] = 584
    BODY_TYPE: ClassVar[BodyType] = BodyType.TD_REPORT_10

    def __post_init__(self) -> None:
        require_bytes(self.tee_tcb_svn, 16, "TD report TEE_TCB_SVN")
        for name in ("mr_seam", "mr_signer_seam", "mr_td", "mr_config_id", "mr_owner"):
            require_bytes(getattr(self, name), 48, f"TD report {name}")
        require_bytes(self.mr_owner_config, 48, "TD report mr_owner_config")
        for name in ("seam_attributes", "td_attributes", "xfam"):
            require_bytes(getattr(self, name), 8, f"TD report {name}")
        if not isinstance(self.rtmr, tuple) or len(self.rtmr) != 4:
            raise MalformedStructureError("TD report: rtmr must be a tuple of 4 registers")
        for i, reg in enumerate(self.rtmr):
            require_bytes(reg, 48, f"TD report RTMR{i}")
        require_bytes(self.report_data, 64, "TD report REPORTDATA")

    @classmethod
    def from_bytes(cls, data: bytes) -> TdReport10:
        require_length(data, cls.SIZE, "TD report 1.0")
        f = _TD10.unpack(data)
        return cls(
            tee_tcb_svn=f[0],
            mr_seam=f[1],
            mr_signer_seam=f[2],
            seam_attributes=f[3],
            td_attributes=f[4],
            xfam=f[5],
            mr_td=f[6],
            mr_config_id=f[7],
            mr_owner=f[8],
            mr_owner_config=f[9],
            rtmr=(f[10], f[11], f[12], f[13]),
            report_data=f[14],
        )

    def to_bytes(self) -> bytes:
        return _TD10.pack(
            self.tee_tcb_svn,
            self.mr_seam,
            self.mr_signer_seam,
            self.seam_attributes,
            self.td_attributes,
            self.xfam,
            self.mr_td,
            self.mr_config_id,
            self.mr_owner,
            self.mr_owner_config,
            *self.rtmr,
            self.report_data,
        )


@dataclass(frozen=True, slots=True)
class TdReport15:
    """TDX 1.5 TD report body (quote v5 body type 3, 648 bytes): 1.0 plus two fields."""

    base: TdReport10
    tee_tcb_svn2: bytes
    mr_servicetd: bytes

    SIZE: ClassVar[int] = 648
    BODY_TYPE: ClassVar[BodyType] = BodyType.TD_REPORT_15

    def __post_init__(self) -> None:
        if not isinstance(self.base, TdReport10):
            raise MalformedStructureError("TD report 1.5: base must be a TdReport10")
        require_bytes(self.tee_tcb_svn2, 16, "TD report TEE_TCB_SVN2")
        require_bytes(self.mr_servicetd, 48, "TD report MRSERVICETD")

    @property
    def report_data(self) -> bytes:
        return self.base.report_data

    @classmethod
    def from_bytes(cls, data: bytes) -> TdReport15:
        require_length(data, cls.SIZE, "TD report 1.5")
        svn2, servicetd = _TD15_TAIL.unpack(data[TdReport10.SIZE :])
        return cls(TdReport10.from_bytes(data[: TdReport10.SIZE]), svn2, servicetd)

    def to_bytes(self) -> bytes:
        return self.base.to_bytes() + _TD15_TAIL.pack(self.tee_tcb_svn2, self.mr_servicetd)


#: What a quote attests: an SGX enclave's report body or a TD's report.
QuoteBody: TypeAlias = ReportBody | TdReport10 | TdReport15

_BODY_CLASSES: dict[BodyType, type[ReportBody] | type[TdReport10] | type[TdReport15]] = {
    BodyType.SGX_ENCLAVE_REPORT: ReportBody,
    BodyType.TD_REPORT_10: TdReport10,
    BodyType.TD_REPORT_15: TdReport15,
}
_BODY_DESCRIPTOR = struct.Struct("<HI")


def body_type_of(body: QuoteBody) -> BodyType:
    """The v5 body descriptor type of ``body``."""
    if isinstance(body, ReportBody):
        return BodyType.SGX_ENCLAVE_REPORT
    return body.BODY_TYPE


# ---------------------------------------------------------------------------------------------
# Certification data

_CERT_DATA_HEADER = struct.Struct("<HI")
_PPID_SIZES = {
    CertificationDataType.PPID_CLEARTEXT: 16,
    CertificationDataType.PPID_RSA2048_ENCRYPTED: 256,
    CertificationDataType.PPID_RSA3072_ENCRYPTED: 384,
}
_PPID_TAIL = struct.Struct("<16sH")
_PCE_ID_SIZE = 2


def _element(cert_type: CertificationDataType, payload: bytes) -> bytes:
    if len(payload) > 0xFFFFFFFF:
        raise MalformedStructureError("certification data: payload too large")
    return _CERT_DATA_HEADER.pack(int(cert_type), len(payload)) + payload


@dataclass(frozen=True, slots=True)
class PpidCertificationData:
    """Types 1-3: PPID (clear, RSA-2048 or RSA-3072 encrypted), CPUSVN, PCESVN and PCE ID.

    Intel's QE3 appends the PCE ID; the layout in Intel's older documentation (and its
    synthetic sample quote) stops after PCESVN. ``pce_id`` is ``None`` for that short form.
    """

    cert_type: CertificationDataType
    ppid: bytes
    cpusvn: bytes
    pcesvn: int
    pce_id: bytes | None

    def __post_init__(self) -> None:
        size = _PPID_SIZES.get(self.cert_type)
        if size is None:
            raise MalformedStructureError(f"PPID certification data: bad type {self.cert_type}")
        require_bytes(self.ppid, size, "certification data PPID")
        require_bytes(self.cpusvn, 16, "certification data CPUSVN")
        require_uint(self.pcesvn, 16, "certification data PCESVN")
        if self.pce_id is not None:
            require_bytes(self.pce_id, _PCE_ID_SIZE, "certification data PCE ID")

    @classmethod
    def decode_payload(
        cls, cert_type: CertificationDataType, payload: bytes
    ) -> PpidCertificationData:
        ppid_size = _PPID_SIZES[cert_type]
        short = ppid_size + _PPID_TAIL.size
        if len(payload) not in (short, short + _PCE_ID_SIZE):
            raise MalformedStructureError(
                f"certification data type {int(cert_type)}: expected {short} or "
                f"{short + _PCE_ID_SIZE} bytes, got {len(payload)}"
            )
        cpusvn, pcesvn = _PPID_TAIL.unpack_from(payload, ppid_size)
        pce_id = payload[short:] if len(payload) > short else None
        return cls(cert_type, payload[:ppid_size], cpusvn, pcesvn, pce_id)

    def payload(self) -> bytes:
        tail = _PPID_TAIL.pack(self.cpusvn, self.pcesvn)
        return self.ppid + tail + (self.pce_id if self.pce_id is not None else b"")

    def to_bytes(self) -> bytes:
        return _element(self.cert_type, self.payload())


@dataclass(frozen=True, slots=True)
class PckLeafCertificationData:
    """Type 4: the PCK leaf certificate alone (kept verbatim; Intel does not fix its encoding)."""

    data: bytes

    cert_type: ClassVar[CertificationDataType] = CertificationDataType.PCK_LEAF_CERT

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise MalformedStructureError("certification data type 4: empty")

    def payload(self) -> bytes:
        return self.data

    def to_bytes(self) -> bytes:
        return _element(self.cert_type, self.data)


_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)
_PEM_FILLER = re.compile(rb"[\s\x00]*")


def split_pem_certificates(data: bytes, what: str = "PEM certificate chain") -> list[bytes]:
    """The PEM certificate blocks of ``data`` in order.

    Between and around the blocks only whitespace and NUL bytes are allowed (quotes end the
    chain with a C string terminator); anything else raises.
    """
    blocks: list[bytes] = []
    pos = 0
    for m in _PEM_BLOCK.finditer(data):
        if not _PEM_FILLER.fullmatch(data, pos, m.start()):
            raise MalformedStructureError(f"{what}: unexpected bytes at offset {pos}")
        blocks.append(m.group(0))
        pos = m.end()
    if not _PEM_FILLER.fullmatch(data, pos, len(data)):
        raise MalformedStructureError(f"{what}: unexpected bytes at offset {pos}")
    if not blocks:
        raise MalformedStructureError(f"{what}: no PEM certificate")
    return blocks


def load_pem_certificates(
    data: bytes, what: str = "PEM certificate chain"
) -> list[x509.Certificate]:
    """Decode every PEM certificate of ``data`` (see :func:`split_pem_certificates`)."""
    certs: list[x509.Certificate] = []
    for i, block in enumerate(split_pem_certificates(data, what)):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise MalformedStructureError(f"{what}: certificate {i}: {e}") from e
    return certs


def order_certificate_chain(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Order ``certs`` leaf first, each followed by its issuer, by issuer/subject names.

    The certificates must form exactly one linear chain (one leaf, each issuer present at most
    once, no stray certificate); otherwise this raises. Signatures are not checked here.
    """
    pool = list(certs)
    if not pool:
        raise MalformedStructureError("certificate chain: empty")
    for i, c in enumerate(pool):
        if any(c == d for d in pool[i + 1 :]):
            raise MalformedStructureError("certificate chain: duplicate certificate")

    def issues(parent: x509.Certificate, child: x509.Certificate) -> bool:
        return parent is not child and child.issuer == parent.subject

    leaves = [c for c in pool if not any(issues(c, other) for other in pool)]
    if len(leaves) != 1:
        raise MalformedStructureError(
            f"certificate chain: expected exactly one leaf, found {len(leaves)}"
        )
    chain = [leaves[0]]
    while len(chain) < len(pool):
        current = chain[-1]
        if current.issuer == current.subject:
            break
        parents = [c for c in pool if issues(c, current) and all(c is not x for x in chain)]
        if len(parents) != 1:
            break
        chain.append(parents[0])
    if len(chain) != len(pool):
        raise MalformedStructureError("certificate chain: certificates do not form one chain")
    return chain


@dataclass(frozen=True, slots=True)
class PckCertChainCertificationData:
    """Type 5: the PCK certificate chain in PEM, bytes kept verbatim (often NUL-terminated)."""

    data: bytes

    cert_type: ClassVar[CertificationDataType] = CertificationDataType.PCK_CERT_CHAIN

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise MalformedStructureError("certification data type 5: empty")

    def certificates(self) -> list[x509.Certificate]:
        """The certificates in the order they appear (strict PEM, see split_pem_certificates)."""
        return load_pem_certificates(self.data, "certification data type 5")

    def ordered_chain(self) -> list[x509.Certificate]:
        """The certificates ordered leaf -> ... -> root by issuer/subject."""
        return order_certificate_chain(self.certificates())

    def payload(self) -> bytes:
        return self.data

    def to_bytes(self) -> bytes:
        return _element(self.cert_type, self.data)


#: Certification data that identifies the PCK (everything but type 6).
PckCertificationData: TypeAlias = (
    PpidCertificationData | PckLeafCertificationData | PckCertChainCertificationData
)

_QE_REPORT_FIXED = struct.Struct("<384s64sH")


@dataclass(frozen=True, slots=True)
class QeReportCertificationData:
    """Type 6: QE report, its PCK signature, QE authentication data and the PCK cert data.

    In a v3 quote these fields follow the attestation key directly; in v4/v5 they are wrapped
    in a type-6 certification data element. The QE report's REPORTDATA must hold
    :func:`qe_report_data` of the attestation key and ``qe_auth_data`` (checked by verifiers).
    """

    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: PckCertificationData

    cert_type: ClassVar[CertificationDataType] = CertificationDataType.QE_REPORT_CERT_DATA

    def __post_init__(self) -> None:
        if not isinstance(self.qe_report, ReportBody):
            raise MalformedStructureError("QE report certification data: qe_report type")
        require_bytes(self.qe_report_signature, ECDSA_SIGNATURE_SIZE, "QE report signature")
        if not isinstance(self.qe_auth_data, bytes) or len(self.qe_auth_data) > 0xFFFF:
            raise MalformedStructureError("QE authentication data: bytes of at most 65535")
        if not isinstance(
            self.certification_data,
            PpidCertificationData | PckLeafCertificationData | PckCertChainCertificationData,
        ):
            raise MalformedStructureError(
                "QE report certification data: inner certification data must be type 1-5"
            )

    @classmethod
    def read(cls, reader: Reader) -> QeReportCertificationData:
        """Read the fields from ``reader`` (the v3 signature data tail / the type-6 payload)."""
        qe_report, signature, auth_size = _QE_REPORT_FIXED.unpack(
            reader.take(_QE_REPORT_FIXED.size, "QE report")
        )
        auth = reader.take(auth_size, "QE authentication data")
        inner = _read_certification_data(reader, allow_qe_report=False)
        assert not isinstance(inner, QeReportCertificationData)
        return cls(ReportBody.from_bytes(qe_report), signature, auth, inner)

    @classmethod
    def decode_payload(cls, payload: bytes) -> QeReportCertificationData:
        reader = Reader(payload, "QE report certification data")
        out = cls.read(reader)
        reader.finish()
        return out

    def payload(self) -> bytes:
        return (
            _QE_REPORT_FIXED.pack(
                self.qe_report.to_bytes(), self.qe_report_signature, len(self.qe_auth_data)
            )
            + self.qe_auth_data
            + self.certification_data.to_bytes()
        )

    def to_bytes(self) -> bytes:
        return _element(self.cert_type, self.payload())


#: Any certification data element.
CertificationData: TypeAlias = PckCertificationData | QeReportCertificationData


def _read_certification_data(reader: Reader, *, allow_qe_report: bool) -> CertificationData:
    raw_type, size = reader.unpack(_CERT_DATA_HEADER, "certification data header")
    payload = reader.take(size, "certification data")
    try:
        cert_type = CertificationDataType(raw_type)
    except ValueError:
        raise MalformedStructureError(f"certification data: unknown type {raw_type}") from None
    if cert_type in _PPID_SIZES:
        return PpidCertificationData.decode_payload(cert_type, payload)
    if cert_type is CertificationDataType.PCK_LEAF_CERT:
        return PckLeafCertificationData(payload)
    if cert_type is CertificationDataType.PCK_CERT_CHAIN:
        return PckCertChainCertificationData(payload)
    if not allow_qe_report:
        raise MalformedStructureError("certification data: type 6 is not allowed here")
    return QeReportCertificationData.decode_payload(payload)


def decode_certification_data(data: bytes) -> CertificationData:
    """Decode exactly one certification data element (type u16, size u32, data)."""
    reader = Reader(data, "certification data")
    out = _read_certification_data(reader, allow_qe_report=True)
    reader.finish()
    return out


# ---------------------------------------------------------------------------------------------
# Signature data and quote

_SIG_PREFIX = struct.Struct("<64s64s")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class EcdsaSignatureData:
    """ECDSA-P256 quote signature data: signature, attestation key and QE certification."""

    signature: bytes
    attestation_public_key: bytes
    qe_certification: QeReportCertificationData

    def __post_init__(self) -> None:
        require_bytes(self.signature, ECDSA_SIGNATURE_SIZE, "quote signature")
        require_bytes(self.attestation_public_key, ECDSA_PUBLIC_KEY_SIZE, "attestation key")
        if not isinstance(self.qe_certification, QeReportCertificationData):
            raise MalformedStructureError("signature data: qe_certification type")

    @classmethod
    def from_bytes(cls, data: bytes, version: int) -> EcdsaSignatureData:
        """Decode exactly ``data`` as the signature data of a quote of ``version``."""
        reader = Reader(data, f"quote v{version} signature data")
        signature, key = _SIG_PREFIX.unpack(
            reader.take(_SIG_PREFIX.size, "quote signature and attestation key")
        )
        if version == 3:
            qe_cert = QeReportCertificationData.read(reader)
        else:
            outer = _read_certification_data(reader, allow_qe_report=True)
            if not isinstance(outer, QeReportCertificationData):
                raise MalformedStructureError(
                    f"quote v{version}: certification data must be type 6 (QE report), "
                    f"got type {int(outer.cert_type)}"
                )
            qe_cert = outer
        reader.finish()
        return cls(signature, key, qe_cert)

    def to_bytes(self, version: int) -> bytes:
        prefix = _SIG_PREFIX.pack(self.signature, self.attestation_public_key)
        if version == 3:
            return prefix + self.qe_certification.payload()
        return prefix + self.qe_certification.to_bytes()


def signed_region(header: QuoteHeader, body: QuoteBody) -> bytes:
    """The bytes the attestation key signs: header, (v5) body descriptor, body."""
    _check_body(header, body)
    body_bytes = body.to_bytes()
    if header.version == 5:
        descriptor = _BODY_DESCRIPTOR.pack(int(body_type_of(body)), len(body_bytes))
        return header.to_bytes() + descriptor + body_bytes
    return header.to_bytes() + body_bytes


def _check_body(header: QuoteHeader, body: QuoteBody) -> None:
    sgx = header.tee_type is TeeType.SGX
    if sgx and not isinstance(body, ReportBody):
        raise MalformedStructureError("quote: an SGX quote must carry an SGX report body")
    if not sgx:
        allowed: tuple[type, ...] = (
            (TdReport10,)
            if header.version == 4
            else (
                TdReport10,
                TdReport15,
            )
        )
        if not isinstance(body, allowed):
            raise MalformedStructureError(
                f"quote v{header.version}: a TDX quote cannot carry {type(body).__name__}"
            )


def qe_report_data(attestation_public_key: bytes, qe_auth_data: bytes) -> bytes:
    """The QE report's REPORTDATA: SHA-256(attestation key || QE auth data) || 32 zero bytes."""
    require_bytes(attestation_public_key, ECDSA_PUBLIC_KEY_SIZE, "attestation key")
    digest = hashlib.sha256(attestation_public_key + qe_auth_data).digest()
    return digest + bytes(QE_REPORT_DATA_SIZE - len(digest))


@dataclass(frozen=True, slots=True)
class Quote:
    """A DCAP ECDSA-P256 quote (v3, v4 or v5)."""

    header: QuoteHeader
    body: QuoteBody
    signature_data: EcdsaSignatureData

    def __post_init__(self) -> None:
        if not isinstance(self.header, QuoteHeader):
            raise MalformedStructureError("quote: header type")
        if not isinstance(self.signature_data, EcdsaSignatureData):
            raise MalformedStructureError("quote: signature data type")
        _check_body(self.header, self.body)

    # -- decoding ------------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Decode exactly one quote; trailing bytes of any value are rejected."""
        quote, end = cls._decode_prefix(data)
        if end != len(data):
            raise MalformedStructureError(f"quote: {len(data) - end} trailing bytes at {end}")
        return quote

    @classmethod
    def _decode_prefix(cls, data: bytes) -> tuple[Quote, int]:
        reader = Reader(data, "quote")
        header = QuoteHeader.from_bytes(reader.take(HEADER_SIZE, "header"))
        body: QuoteBody
        if header.version == 5:
            raw_type, size = reader.unpack(_BODY_DESCRIPTOR, "body descriptor")
            try:
                body_type = BodyType(raw_type)
            except ValueError:
                raise MalformedStructureError(f"quote v5: unknown body type {raw_type}") from None
            body_cls = _BODY_CLASSES[body_type]
            if size != body_cls.SIZE:
                raise MalformedStructureError(
                    f"quote v5: body type {raw_type} must be {body_cls.SIZE} bytes, got {size}"
                )
            body = body_cls.from_bytes(reader.take(size, "body"))
        elif header.tee_type is TeeType.TDX:
            body = TdReport10.from_bytes(reader.take(TdReport10.SIZE, "TD report body"))
        else:
            body = ReportBody.from_bytes(reader.take(ReportBody.SIZE, "ISV report body"))
        (sig_len,) = reader.unpack(_U32, "signature data length")
        sig = EcdsaSignatureData.from_bytes(reader.take(sig_len, "signature data"), header.version)
        return cls(header, body, sig), reader.position

    # -- encoding ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        sig = self.signature_data.to_bytes(self.header.version)
        return self.signed_region + _U32.pack(len(sig)) + sig

    # -- views -----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def signed_region(self) -> bytes:
        """Header, (v5) body descriptor and body: what the attestation key signs."""
        return signed_region(self.header, self.body)

    @property
    def qe_report(self) -> ReportBody:
        return self.signature_data.qe_certification.qe_report

    @property
    def qe_report_signature(self) -> bytes:
        return self.signature_data.qe_certification.qe_report_signature

    @property
    def qe_auth_data(self) -> bytes:
        return self.signature_data.qe_certification.qe_auth_data

    @property
    def certification_data(self) -> PckCertificationData:
        """The PCK certification data (inside the type-6 element for v4/v5)."""
        return self.signature_data.qe_certification.certification_data

    @property
    def isv_report(self) -> ReportBody:
        """The SGX enclave report body; raises for a TD quote."""
        if not isinstance(self.body, ReportBody):
            raise MalformedStructureError("quote: not an SGX enclave quote")
        return self.body


def parse_quote(data: bytes, *, allow_trailing_zero_padding: bool = False) -> Quote:
    """Decode a quote. With ``allow_trailing_zero_padding`` bytes after the quote are accepted
    if every one of them is zero (a fixed-size buffer); ``quote.to_bytes()`` is then the
    quote without the padding. Any non-zero trailing byte is always rejected."""
    if not allow_trailing_zero_padding:
        return Quote.from_bytes(data)
    quote, end = Quote._decode_prefix(data)
    if any(memoryview(data)[end:]):
        raise MalformedStructureError(f"quote: non-zero trailing bytes after offset {end}")
    return quote


def build_quote_v3(
    *,
    header: QuoteHeader,
    isv_report: ReportBody,
    signature: bytes,
    attestation_public_key: bytes,
    qe_report: ReportBody,
    qe_report_signature: bytes,
    qe_auth_data: bytes,
    certification_data: PckCertificationData,
) -> Quote:
    """Assemble an SGX quote v3. Sign :func:`signed_region` (header, isv_report) first."""
    if header.version != 3:
        raise MalformedStructureError("build_quote_v3: header must be version 3")
    return Quote(
        header=header,
        body=isv_report,
        signature_data=EcdsaSignatureData(
            signature=signature,
            attestation_public_key=attestation_public_key,
            qe_certification=QeReportCertificationData(
                qe_report=qe_report,
                qe_report_signature=qe_report_signature,
                qe_auth_data=qe_auth_data,
                certification_data=certification_data,
            ),
        ),
    )
