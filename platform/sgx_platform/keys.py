"""EGETKEY/EREPORT/EINIT key derivation (SGX-REFERENCE §6.1, §5.1 step 15; ADR 0002).

Invariants:

* Every derived key is ``AES-128-CMAC(KDK, KEYDEP)``: KEYDEP is the fixed 656-byte
  serialization of :class:`KeyDependencies` (ADR 0002), and the key-derivation key KDK is
  ``AES-128-CMAC(root provisioning secret, "SGXEMU-KDK/1" || SEAL_KEY_FUSES)`` where
  SEAL_KEY_FUSES is the root seal secret, or 16 zero bytes for the PROVISION key. So every key
  depends on the provisioning secret, every key but PROVISION on the seal secret too, and a
  leaked derived key reveals neither root (a PRF output under a secret key).
* Which field of the enclave, the KEYREQUEST, the TARGETINFO or the platform feeds which
  dependency is exactly the table of §6.1, coded once per key name. The REPORT and EINITTOKEN
  keys are each derived by two instructions that must agree: EGETKEY(REPORT) is
  :func:`ereport_key_dependencies` for the enclave's own TARGETINFO, and the launch enclave's
  EGETKEY(EINITTOKEN) and EINIT (from a token's LE fields) both go through
  :func:`_einittoken_key`.
  The dependency record never holds a secret except through the KDK.
* The checks of EGETKEY (KSS-only policy bits and CONFIGSVN → #GP; unknown KEYNAME,
  missing PROVISIONKEY/EINITTOKEN_KEY, CPUSVN beyond the platform, ISVSVN/CONFIGSVN above the
  enclave's) raise before any key is derived.
* PADDING is always the hard-coded PKCS#1 v1.5 padding: SECS.PADDING = TMP_SIG_PADDING, which
  equals it for every SIGSTRUCT EINIT accepts (§4.2), so both EREPORT's and EGETKEY's paddings
  agree as the SDM requires.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from sgx_platform.arch.attributes import (
    KEYPOLICY_KSS_BITS,
    NO_ATTRIBUTES,
    U32_MAX,
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
)
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import ZERO_MEASUREMENT, Measurement
from sgx_platform.arch.report import ReportBody, TargetInfo
from sgx_platform.errors import EnclaveInstructionError, GeneralProtectionFault
from sgx_platform.fuses import SECRET_SIZE, cpusvn_beyond

KEY_SIZE = 16

#: SDM HARDCODED_PKCS1_5_PADDING: ``00 01 FF*330 00`` + the SHA-256 DigestInfo (352 bytes).
HARDCODED_PKCS1_5_PADDING = (
    b"\x00\x01" + b"\xff" * 330 + b"\x00" + bytes.fromhex("3031300d060960864801650304020105000420")
)
assert len(HARDCODED_PKCS1_5_PADDING) == 352

#: ``(KR.ATTRIBUTEMASK | 0x3) & SECS.ATTRIBUTES``: INIT and DEBUG always take part.
_ALWAYS_MASKED_IN = int(AttributeFlags.INIT | AttributeFlags.DEBUG)

_KEYDEP_MAGIC = b"SGXEMU-KEYDEP/1\x00"
_KDK_LABEL = b"SGXEMU-KDK/1\x00\x00\x00\x00"
assert len(_KEYDEP_MAGIC) == 16 and len(_KDK_LABEL) == 16

# ADR 0002: the KEYDEPENDENCIES serialization. Fixed size, every field at a fixed offset.
_KEYDEP = struct.Struct(
    "<"
    "16s"  # 0    magic "SGXEMU-KEYDEP/1\0"
    "H"  # 16   KEYNAME
    "H"  # 18   KEYPOLICY
    "H"  # 20   ISVPRODID
    "H"  # 22   ISVSVN
    "H"  # 24   CONFIGSVN
    "2x"  # 26   zero
    "I"  # 28   MISCSELECT
    "I"  # 32   MISCMASK
    "12x"  # 36   zero
    "16s"  # 48   OWNEREPOCH
    "16s"  # 64   ATTRIBUTES
    "16s"  # 80   ATTRIBUTEMASK
    "16s"  # 96   CPUSVN
    "16s"  # 112  ISVFAMILYID
    "16s"  # 128  ISVEXTPRODID
    "32s"  # 144  MRENCLAVE
    "32s"  # 176  MRSIGNER
    "32s"  # 208  KEYID
    "64s"  # 240  CONFIGID
    "352s"  # 304  PADDING
)
assert _KEYDEP.size == 656


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC (RFC 4493) of ``data`` under a 16-byte ``key``."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-128-CMAC needs a 16-byte key")
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


@dataclass(frozen=True, slots=True)
class KeyDependencies:
    """The SDM's TMP_KEYDEPENDENCIES for one derivation; ``seal_key_fuses`` says whether
    SEAL_KEY_FUSES is the platform's seal secret (True) or zero (False, PROVISION only)."""

    keyname: int
    seal_key_fuses: bool
    keypolicy: int = 0
    isvprodid: int = 0
    isvsvn: int = 0
    owner_epoch: bytes = bytes(16)
    attributes: Attributes = NO_ATTRIBUTES
    attribute_mask: Attributes = NO_ATTRIBUTES
    mrenclave: Measurement = ZERO_MEASUREMENT
    mrsigner: Measurement = ZERO_MEASUREMENT
    key_id: bytes = bytes(32)
    cpusvn: bytes = bytes(16)
    padding: bytes = HARDCODED_PKCS1_5_PADDING
    miscselect: int = 0
    miscmask: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)

    def serialize(self) -> bytes:
        """The KEYDEP bytes the CMAC runs over (ADR 0002); SEAL_KEY_FUSES enters via the KDK."""
        return _KEYDEP.pack(
            _KEYDEP_MAGIC,
            self.keyname,
            self.keypolicy,
            self.isvprodid,
            self.isvsvn,
            self.configsvn,
            self.miscselect,
            self.miscmask,
            self.owner_epoch,
            self.attributes.to_bytes(),
            self.attribute_mask.to_bytes(),
            self.cpusvn,
            self.isvfamilyid,
            self.isvextprodid,
            self.mrenclave.value,
            self.mrsigner.value,
            self.key_id,
            self.configid,
            self.padding,
        )


class KeyDeriver:
    """``derivekey()`` of one platform: holds the two KDKs computed from the root secrets."""

    __slots__ = ("_kdk_with_seal", "_kdk_without_seal")

    def __init__(self, root_seal_secret: bytes, root_provisioning_secret: bytes) -> None:
        if len(root_seal_secret) != SECRET_SIZE or len(root_provisioning_secret) != SECRET_SIZE:
            raise ValueError("root secrets are 16 bytes")
        self._kdk_with_seal = aes_cmac(root_provisioning_secret, _KDK_LABEL + root_seal_secret)
        self._kdk_without_seal = aes_cmac(root_provisioning_secret, _KDK_LABEL + bytes(16))

    def derive(self, deps: KeyDependencies) -> bytes:
        kdk = self._kdk_with_seal if deps.seal_key_fuses else self._kdk_without_seal
        return aes_cmac(kdk, deps.serialize())

    def __repr__(self) -> str:
        return "KeyDeriver(<secret>)"


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """The SECS fields of an initialized enclave that EREPORT and EGETKEY read."""

    attributes: Attributes
    miscselect: int
    mrenclave: Measurement
    mrsigner: Measurement
    isvprodid: int = 0
    isvsvn: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)

    @property
    def kss(self) -> bool:
        return self.attributes.has(AttributeFlags.KSS)

    def report_body(self, cpusvn: bytes, report_data: bytes) -> ReportBody:
        """EREPORT's REPORTBODY for this enclave (CPUSVN = the platform's current one)."""
        return ReportBody(
            cpusvn=cpusvn,
            miscselect=self.miscselect,
            isvextprodid=self.isvextprodid,
            attributes=self.attributes,
            mrenclave=self.mrenclave,
            mrsigner=self.mrsigner,
            configid=self.configid,
            isvprodid=self.isvprodid,
            isvsvn=self.isvsvn,
            configsvn=self.configsvn,
            isvfamilyid=self.isvfamilyid,
            report_data=report_data,
        )

    def target_info(self) -> TargetInfo:
        """The TARGETINFO another enclave uses to target a REPORT at this one."""
        return TargetInfo(
            measurement=self.mrenclave,
            attributes=self.attributes,
            configsvn=self.configsvn,
            miscselect=self.miscselect,
            configid=self.configid,
        )


def _masked_attributes(mask: Attributes, secs: Attributes) -> Attributes:
    return Attributes(mask.flags | _ALWAYS_MASKED_IN, mask.xfrm) & secs


def egetkey_dependencies(
    request: KeyRequest, enclave: EnclaveIdentity, *, owner_epoch: bytes, cpusvn: bytes
) -> KeyDependencies:
    """EGETKEY's checks and TMP_KEYDEPENDENCIES (SDM EGETKEY; §6.1), for the calling enclave.

    ``cpusvn`` is the platform's current CR_CPUSVN.
    """
    policy = KeyPolicy(request.keypolicy)
    if not enclave.kss and (request.keypolicy & KEYPOLICY_KSS_BITS or request.configsvn):
        raise GeneralProtectionFault(
            "EGETKEY",
            "KEYPOLICY bits CONFIGID/ISVFAMILYID/ISVEXTPRODID or CONFIGSVN need ATTRIBUTES.KSS",
        )
    name = request.key_name()
    if name is None:
        raise EnclaveInstructionError(
            "EGETKEY", SgxErrorCode.INVALID_KEYNAME, f"unknown KEYNAME {request.keyname}"
        )
    tmp_attributes = _masked_attributes(request.attribute_mask, enclave.attributes)
    tmp_misc = request.miscmask & enclave.miscselect
    not_miscmask = ~request.miscmask & U32_MAX

    if name is KeyName.REPORT:
        # The key EREPORT uses for a REPORT targeted at this enclave.
        return ereport_key_dependencies(
            enclave.target_info(), request.key_id, owner_epoch=owner_epoch, cpusvn=cpusvn
        )

    if name is KeyName.EINITTOKEN and not enclave.attributes.has(AttributeFlags.EINITTOKEN_KEY):
        raise EnclaveInstructionError(
            "EGETKEY", SgxErrorCode.INVALID_ATTRIBUTE, "EINITTOKEN key needs EINITTOKEN_KEY"
        )
    if name in (KeyName.PROVISION, KeyName.PROVISION_SEAL) and not enclave.attributes.has(
        AttributeFlags.PROVISIONKEY
    ):
        raise EnclaveInstructionError(
            "EGETKEY", SgxErrorCode.INVALID_ATTRIBUTE, f"{name.name} key needs PROVISIONKEY"
        )
    if cpusvn_beyond(request.cpusvn, cpusvn):
        raise EnclaveInstructionError(
            "EGETKEY",
            SgxErrorCode.INVALID_CPUSVN,
            f"KEYREQUEST.CPUSVN {request.cpusvn.hex()} is beyond the platform's {cpusvn.hex()}",
        )
    if request.isvsvn > enclave.isvsvn:
        raise EnclaveInstructionError(
            "EGETKEY",
            SgxErrorCode.INVALID_ISVSVN,
            f"KEYREQUEST.ISVSVN {request.isvsvn} is above the enclave's {enclave.isvsvn}",
        )
    if name in (KeyName.SEAL, KeyName.PROVISION_SEAL) and request.configsvn > enclave.configsvn:
        raise EnclaveInstructionError(
            "EGETKEY",
            SgxErrorCode.INVALID_ISVSVN,
            f"KEYREQUEST.CONFIGSVN {request.configsvn} is above the enclave's {enclave.configsvn}",
        )

    if name is KeyName.EINITTOKEN:
        return _einittoken_key(
            isvprodid=enclave.isvprodid,
            isvsvn=request.isvsvn,
            owner_epoch=owner_epoch,
            attributes=tmp_attributes,
            mrsigner=enclave.mrsigner,
            key_id=request.key_id,
            cpusvn=request.cpusvn,
            miscselect=tmp_misc,
        )
    if name is KeyName.PROVISION:
        return KeyDependencies(
            keyname=name,
            seal_key_fuses=False,
            isvprodid=enclave.isvprodid,
            isvsvn=request.isvsvn,
            attributes=tmp_attributes,
            attribute_mask=request.attribute_mask,
            mrsigner=enclave.mrsigner,
            cpusvn=request.cpusvn,
            miscselect=tmp_misc,
            miscmask=not_miscmask,
        )

    # SEAL and PROVISION_SEAL share the policy-selected identity fields.
    isvfamilyid = enclave.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16)
    isvextprodid = enclave.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16)
    isvprodid = 0 if policy & KeyPolicy.NOISVPRODID else enclave.isvprodid
    configid = enclave.configid if policy & KeyPolicy.CONFIGID else bytes(64)
    configsvn = request.configsvn if policy & KeyPolicy.CONFIGID else 0
    if name is KeyName.SEAL:
        return KeyDependencies(
            keyname=name,
            seal_key_fuses=True,
            keypolicy=request.keypolicy,
            isvprodid=isvprodid,
            isvsvn=request.isvsvn,
            owner_epoch=owner_epoch,
            attributes=tmp_attributes,
            attribute_mask=request.attribute_mask,
            mrenclave=enclave.mrenclave if policy & KeyPolicy.MRENCLAVE else ZERO_MEASUREMENT,
            mrsigner=enclave.mrsigner if policy & KeyPolicy.MRSIGNER else ZERO_MEASUREMENT,
            key_id=request.key_id,
            cpusvn=request.cpusvn,
            miscselect=tmp_misc,
            miscmask=not_miscmask,
            configid=configid,
            configsvn=configsvn,
            isvfamilyid=isvfamilyid,
            isvextprodid=isvextprodid,
        )
    assert name is KeyName.PROVISION_SEAL
    return KeyDependencies(
        keyname=name,
        seal_key_fuses=True,
        keypolicy=request.keypolicy,
        isvprodid=isvprodid,
        isvsvn=request.isvsvn,
        attributes=tmp_attributes,
        attribute_mask=request.attribute_mask,
        mrsigner=enclave.mrsigner,
        cpusvn=request.cpusvn,
        miscselect=tmp_misc,
        miscmask=not_miscmask,
        configid=configid,
        configsvn=configsvn,
        isvfamilyid=isvfamilyid,
        isvextprodid=isvextprodid,
    )


def ereport_key_dependencies(
    target: TargetInfo, key_id: bytes, *, owner_epoch: bytes, cpusvn: bytes
) -> KeyDependencies:
    """The target's report key as EREPORT derives it: the REPORT column of §6.1 with
    ATTRIBUTES, MRENCLAVE, MISCSELECT, CONFIGID and CONFIGSVN taken from TARGETINFO."""
    return KeyDependencies(
        keyname=KeyName.REPORT,
        seal_key_fuses=True,
        owner_epoch=owner_epoch,
        attributes=target.attributes,
        mrenclave=target.measurement,
        key_id=key_id,
        cpusvn=cpusvn,
        miscselect=target.miscselect,
        configid=target.configid,
        configsvn=target.configsvn,
    )


def einittoken_key_dependencies(
    token: EinitToken, le_pubkeyhash: Measurement, *, owner_epoch: bytes
) -> KeyDependencies:
    """EINIT step 15: the EINITTOKEN key from the token's LE fields and the LE hash registers."""
    return _einittoken_key(
        isvprodid=token.isvprodid_le,
        isvsvn=token.isvsvn_le,
        owner_epoch=owner_epoch,
        attributes=token.masked_attributes_le,
        mrsigner=le_pubkeyhash,
        key_id=token.key_id,
        cpusvn=token.cpusvn_le,
        miscselect=token.masked_miscselect_le,
    )


def _einittoken_key(
    *,
    isvprodid: int,
    isvsvn: int,
    owner_epoch: bytes,
    attributes: Attributes,
    mrsigner: Measurement,
    key_id: bytes,
    cpusvn: bytes,
    miscselect: int,
) -> KeyDependencies:
    """The EINITTOKEN column of §6.1 (the launch enclave's token key)."""
    return KeyDependencies(
        keyname=KeyName.EINITTOKEN,
        seal_key_fuses=True,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        owner_epoch=owner_epoch,
        attributes=attributes,
        mrsigner=mrsigner,
        key_id=key_id,
        cpusvn=cpusvn,
        miscselect=miscselect,
    )
