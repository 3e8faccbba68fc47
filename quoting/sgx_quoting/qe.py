"""The quoting enclave (QE): the attestation key, REPORT checks and DCAP quote v3 writing.

This is the code that runs inside the QE (holding its handle is being inside it, the emulation
boundary). What it does, as Intel's QE3:

* The attestation key is an ECDSA P-256 key the QE generates itself. It is sealed to the QE's
  signer (platform SealData, MRSIGNER policy: a later QE of the same signer and product with
  the same or a higher ISVSVN opens it), so a restart reuses it. The sealed blob's KEYREQUEST
  names the CPUSVN and ISVSVN it was sealed at; when either is below the current one (a TCB
  update, a new QE), the key is sealed again at the current TCB. The blob's additional MAC
  text binds a label and the public key, which is checked against the opened private key.
* The QE report: a REPORT targeted at the PCE with REPORTDATA = SHA-256(attestation public key
  || QE authentication data) || 32 zero bytes, which the PCE signs with the PCK key.
* A quote: the REPORT to quote must verify with the QE's report key (EGETKEY REPORT with the
  REPORT's KEYID, AES-CMAC); the QE then writes, through ``arch.dcap``, the v3 header
  (ECDSA-256-with-P-256, Intel's QE vendor ID, QE SVN, PCESVN, user data = the QE ID and four
  zero bytes), the ISV report body, the attestation key's signature over header and body, the
  attestation public key, the PCE-signed QE report, the QE authentication data and
  certification data type 5 (the PEM PCK chain, leaf first, NUL-terminated as Intel's QE).

Invariants: the attestation private key never leaves this object except sealed; a quote is
written only for a REPORT whose MAC verified; every signature is over exactly the bytes
``arch.dcap`` defines (:func:`~sgx_platform.arch.dcap.quote.signed_region`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.attributes import KeyName, KeyPolicy
from sgx_platform.arch.dcap.ecdsa import der_to_raw_rs, public_key_to_raw
from sgx_platform.arch.dcap.quote import (
    PckCertChainCertificationData,
    QuoteHeader,
    build_quote_v3,
    qe_report_data,
    signed_region,
)
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report, ReportBody, TargetInfo
from sgx_quoting.enclave_errors import AttestationKeyError, MalformedReportError
from sgx_quoting.local_attestation import aes_cmac, verify_report_mac
from sgx_quoting.pce import QeCertification
from sgx_quoting.ports import PlatformPort

#: The QE authentication data Intel's QE3 writes by default: bytes 0, 1, ..., 31.
QE_AUTH_DATA = bytes(range(32))
#: Additional MAC text of the sealed attestation key: this label, then the public key x||y.
SEALED_KEY_LABEL = b"sgxemu QE attestation key/1\x00"
_SEALED_KEYREQUEST = slice(0, KeyRequest.SIZE)
_QE_ID_LABEL = b"sgxemu QE ID/1"


def sealed_at(sealed: bytes) -> KeyRequest:
    """The KEYREQUEST a sealed blob (``sgx_sealed_data_t``) was sealed with."""
    if len(sealed) < KeyRequest.SIZE:
        raise AttestationKeyError("the sealed attestation key is shorter than its KEYREQUEST")
    try:
        return KeyRequest.from_bytes(sealed[_SEALED_KEYREQUEST])
    except MalformedStructureError as e:
        raise AttestationKeyError(f"the sealed attestation key is malformed: {e}") from e


class QuotingEnclave:
    """Code inside one launched QE (named by its handle)."""

    def __init__(self, platform: PlatformPort, handle: bytes) -> None:
        self._platform = platform
        self._handle = handle
        self._identity = self.self_report()
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._public_raw = b""
        self._qe_id = self._derive_qe_id()

    def __repr__(self) -> str:
        return f"QuotingEnclave(qe_svn={self.qe_svn})"

    # -- identity ------------------------------------------------------------------------------

    def self_report(self) -> ReportBody:
        raw = self._platform.create_report(self._handle, b"", bytes(64))
        return Report.from_bytes(raw).body

    @property
    def identity(self) -> ReportBody:
        return self._identity

    @property
    def qe_svn(self) -> int:
        return self._identity.isvsvn

    @property
    def target_info(self) -> TargetInfo:
        """The TARGETINFO applications target their REPORT at."""
        return TargetInfo.from_report_body(self._identity)

    @property
    def qe_id(self) -> bytes:
        """16 bytes identifying this platform's QE (stable across TCB updates)."""
        return self._qe_id

    def _derive_qe_id(self) -> bytes:
        # PROVISION_SEAL at CPUSVN 0 / ISVSVN 0: the same for every TCB of this platform and
        # this QE signer and product, and readable only by provisioning-class enclaves.
        request = KeyRequest(
            keyname=int(KeyName.PROVISION_SEAL), keypolicy=int(KeyPolicy.MRSIGNER)
        )
        key = self._platform.get_key(self._handle, request.to_bytes())
        return aes_cmac(key, _QE_ID_LABEL)

    # -- the attestation key ------------------------------------------------------------------

    @property
    def attestation_public_key(self) -> bytes:
        """The attestation public key, 64 bytes x||y."""
        if self._key is None:
            raise AttestationKeyError("the QE has no attestation key yet")
        return self._public_raw

    def _use(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._public_raw = public_key_to_raw(key.public_key())

    def generate_attestation_key(self) -> bytes:
        """A fresh attestation key; returns it sealed to the QE's signer."""
        self._use(ec.generate_private_key(ec.SECP256R1()))
        return self.seal_attestation_key()

    def seal_attestation_key(self) -> bytes:
        """The current attestation key sealed at the current TCB (MRSIGNER policy)."""
        if self._key is None:
            raise AttestationKeyError("the QE has no attestation key to seal")
        scalar = self._key.private_numbers().private_value.to_bytes(32, "big")
        return self._platform.seal_to_signer(
            self._handle, scalar, SEALED_KEY_LABEL + self._public_raw
        )

    def restore_attestation_key(self, sealed: bytes) -> None:
        """Open a sealed attestation key and use it; raises AttestationKeyError when the blob
        is not a QE attestation key or does not match its public key."""
        sealed_at(sealed)
        plaintext, additional = self._platform.unseal(self._handle, sealed)
        if (
            len(plaintext) != 32
            or len(additional) != len(SEALED_KEY_LABEL) + 64
            or not additional.startswith(SEALED_KEY_LABEL)
        ):
            raise AttestationKeyError("the sealed blob is not a QE attestation key")
        try:
            key = ec.derive_private_key(int.from_bytes(plaintext, "big"), ec.SECP256R1())
        except ValueError as e:
            raise AttestationKeyError(f"the sealed attestation key is invalid: {e}") from e
        if public_key_to_raw(key.public_key()) != additional[len(SEALED_KEY_LABEL) :]:
            raise AttestationKeyError("the sealed attestation key does not match its public key")
        self._use(key)

    def needs_reseal(self, sealed: bytes) -> bool:
        """Whether ``sealed`` was sealed below the current TCB (CPUSVN) or QE SVN."""
        request = sealed_at(sealed)
        current = self.self_report()
        return request.cpusvn != current.cpusvn or request.isvsvn != current.isvsvn

    # -- certification --------------------------------------------------------------------------

    def report_for_pce(self, pce_target: TargetInfo, qe_auth_data: bytes = QE_AUTH_DATA) -> bytes:
        """The QE report: targeted at the PCE, REPORTDATA binding the attestation key."""
        data = qe_report_data(self.attestation_public_key, qe_auth_data)
        return self._platform.create_report(self._handle, pce_target.to_bytes(), data)

    # -- quoting ----------------------------------------------------------------------------------

    def verify_report(self, report: bytes) -> Report:
        """Parse a REPORT and check that it is targeted at this QE and unaltered."""
        try:
            parsed = Report.from_bytes(report)
        except MalformedStructureError as e:
            raise MalformedReportError(f"not a REPORT: {e}") from e
        verify_report_mac(self._platform, self._handle, parsed)
        return parsed

    def quote(
        self,
        report: Report,
        certification: QeCertification,
        pck_chain_pem: str,
        *,
        qe_auth_data: bytes = QE_AUTH_DATA,
    ) -> bytes:
        """The DCAP quote v3 of a verified ``report`` (see :meth:`verify_report`)."""
        if self._key is None:
            raise AttestationKeyError("the QE has no attestation key yet")
        expected = qe_report_data(self._public_raw, qe_auth_data)
        if certification.qe_report.report_data != expected:
            raise AttestationKeyError("the QE certification is for another attestation key")
        header = QuoteHeader.for_v3(
            qe_svn=self.qe_svn,
            pce_svn=certification.pcesvn,
            user_data=self._qe_id + bytes(4),
        )
        signature = der_to_raw_rs(
            self._key.sign(signed_region(header, report.body), ec.ECDSA(hashes.SHA256()))
        )
        quote = build_quote_v3(
            header=header,
            isv_report=report.body,
            signature=signature,
            attestation_public_key=self._public_raw,
            qe_report=certification.qe_report,
            qe_report_signature=certification.qe_report_signature,
            qe_auth_data=qe_auth_data,
            certification_data=PckCertChainCertificationData(
                pck_chain_pem.encode("ascii") + b"\x00"
            ),
        )
        return quote.to_bytes()
