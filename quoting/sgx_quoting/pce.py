"""The provisioning certification enclave (PCE): the platform's PCK key, and QE certification.

This is the code that runs inside the PCE. Per the emulation boundary, holding the enclave's
handle is being inside it: the PCE learns its own identity and the platform's CPUSVN by EREPORT
to itself, derives keys by EGETKEY, and never sees a platform secret.

The PCK key: ``EGETKEY(PROVISION)`` with KEYREQUEST.CPUSVN = the TCB to certify and
KEYREQUEST.ISVSVN = PCESVN gives a 16-byte key that depends on the platform's provisioning
secret, that CPUSVN, the PCESVN and the PCE's signer and product; the PCK private key is
:func:`derive_pck_key` of it, deterministic, so the same platform at the same TCB always has
the same PCK key (as Intel's PCE) and a TCB update (CPUSVN or PCESVN) gives a new one.

Certification: the QE sends a REPORT targeted at the PCE. The PCE checks its MAC with its own
report key, requires PROVISIONKEY in the QE's attributes (only privileged enclaves are
certified, as Intel's PCE does) and, the PCE being a production enclave, a non-debug QE; then
it signs the 384-byte QE report body with the PCK key for the report's CPUSVN (ECDSA P-256,
SHA-256, ``r || s``).

Invariants: the PCK private key never leaves this object; a certification uses the PCK of
exactly the report's CPUSVN and this PCE's PCESVN, so the QE report signature and the PCK
certificate always name the same TCB.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName
from sgx_platform.arch.dcap.ecdsa import P256_ORDER, der_to_raw_rs, public_key_to_raw
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report, ReportBody, TargetInfo
from sgx_quoting.enclave_errors import CertificationError, ReportMacMismatchError
from sgx_quoting.local_attestation import verify_report_mac
from sgx_quoting.ports import PlatformPort

#: PCE-ID of the emulated platform (Intel's PCE-ID is 0 as well).
PCE_ID = bytes(2)

#: KEYREQUEST.ATTRIBUTEMASK of the PROVISION key: the SDK's default flags mask (INIT, DEBUG
#: and the non-check bits), so a debug PCE would have another PCK key.
PROVISION_ATTRIBUTE_MASK = Attributes(0xFF00_0000_0000_000B, 0)
#: KEYREQUEST.MISCMASK of the PROVISION key (the SDK's default).
PROVISION_MISC_MASK = 0xF000_0000

_PCK_SALT = b"sgxemu PCK key derivation"
_PCK_INFO = b"sgxemu-pck/1\x00"


def derive_pck_key(
    provision_key: bytes, *, cpusvn: bytes, pcesvn: int, pce_id: bytes = PCE_ID
) -> ec.EllipticCurvePrivateKey:
    """The PCK private key from the PCE's 16-byte PROVISION key (deterministic).

    HKDF-SHA256 expands the key (bound to CPUSVN, PCESVN and PCE-ID) to 48 bytes, reduced to a
    scalar in ``1 .. n-1`` (FIPS 186-5 A.2.1: 64 extra bits make the bias negligible).
    """
    if len(provision_key) != 16 or len(cpusvn) != 16 or len(pce_id) != 2:
        raise MalformedStructureError("PCK derivation needs a 16-byte key and CPUSVN, 2-byte ID")
    if not 0 <= pcesvn < 1 << 16:
        raise MalformedStructureError("PCESVN must fit 16 bits")
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=48,
        salt=_PCK_SALT,
        info=_PCK_INFO + cpusvn + pcesvn.to_bytes(2, "little") + pce_id,
    ).derive(provision_key)
    scalar = int.from_bytes(okm, "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


@dataclass(frozen=True)
class QeCertification:
    """A QE report signed by the PCK key, and the TCB that PCK key belongs to."""

    qe_report: ReportBody
    qe_report_signature: bytes
    cpusvn: bytes
    pcesvn: int
    pck_public_key: bytes


class ProvisioningCertificationEnclave:
    """Code inside one launched PCE (named by its handle)."""

    def __init__(self, platform: PlatformPort, handle: bytes) -> None:
        self._platform = platform
        self._handle = handle
        self._identity = self.self_report()
        self._pck: dict[bytes, ec.EllipticCurvePrivateKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProvisioningCertificationEnclave(pcesvn={self.pcesvn})"

    def self_report(self) -> ReportBody:
        """EREPORT to itself: this enclave's identity and the platform's current CPUSVN."""
        raw = self._platform.create_report(self._handle, b"", bytes(64))
        return Report.from_bytes(raw).body

    @property
    def identity(self) -> ReportBody:
        """The PCE's REPORT body at launch (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN...)."""
        return self._identity

    @property
    def pcesvn(self) -> int:
        return self._identity.isvsvn

    @property
    def pce_id(self) -> bytes:
        return PCE_ID

    @property
    def target_info(self) -> TargetInfo:
        """The TARGETINFO the QE targets its REPORT at."""
        return TargetInfo.from_report_body(self._identity)

    def current_cpusvn(self) -> bytes:
        return self.self_report().cpusvn

    def _pck_key(self, cpusvn: bytes) -> ec.EllipticCurvePrivateKey:
        with self._lock:
            key = self._pck.get(cpusvn)
        if key is not None:
            return key
        request = KeyRequest(
            keyname=int(KeyName.PROVISION),
            isvsvn=self.pcesvn,
            cpusvn=cpusvn,
            attribute_mask=PROVISION_ATTRIBUTE_MASK,
            miscmask=PROVISION_MISC_MASK,
        )
        provision_key = self._platform.get_key(self._handle, request.to_bytes())
        key = derive_pck_key(provision_key, cpusvn=cpusvn, pcesvn=self.pcesvn)
        with self._lock:
            self._pck[cpusvn] = key
        return key

    def pck_public_key(self, cpusvn: bytes) -> bytes:
        """The PCK public key (64 bytes x||y) for the platform at ``cpusvn`` and this PCESVN."""
        public = self._pck_key(cpusvn).public_key()
        return public_key_to_raw(public)

    def certify(self, qe_report: bytes) -> QeCertification:
        """Check the QE's REPORT (targeted at this PCE) and sign its body with the PCK key."""
        try:
            report = Report.from_bytes(qe_report)
        except MalformedStructureError as e:
            raise CertificationError(f"the PCE got a malformed QE REPORT: {e}") from e
        try:
            verify_report_mac(self._platform, self._handle, report)
        except ReportMacMismatchError as e:
            raise CertificationError(f"the PCE refuses the QE REPORT: {e}") from e
        body = report.body
        if not body.attributes.has(AttributeFlags.PROVISIONKEY):
            raise CertificationError(
                "the PCE certifies only enclaves launched with PROVISIONKEY; MRENCLAVE "
                f"{body.mrenclave.hex()} has attributes {body.attributes.flags:#x}"
            )
        if body.attributes.debug and not self._identity.attributes.debug:
            raise CertificationError(
                f"a production PCE does not certify the debug enclave {body.mrenclave.hex()}"
            )
        key = self._pck_key(body.cpusvn)
        signature = der_to_raw_rs(key.sign(body.to_bytes(), ec.ECDSA(hashes.SHA256())))
        return QeCertification(
            qe_report=body,
            qe_report_signature=signature,
            cpusvn=body.cpusvn,
            pcesvn=self.pcesvn,
            pck_public_key=public_key_to_raw(key.public_key()),
        )
