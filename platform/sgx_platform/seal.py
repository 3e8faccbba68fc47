"""Sealing in the Intel SDK's ``sgx_sealed_data_t`` layout (SGX-REFERENCE §7).

Layout (560-byte header, then the payload):
KEYREQUEST[512] @0 | plain_text_offset u32 @512 (= encrypted length) | reserved[12] @516 |
payload_size u32 @528 (= encrypted + AAD length) | reserved[12] @532 | payload_tag[16] @544 |
payload @560 = ciphertext || AAD in clear.

Invariants:

* Sealing derives a SEAL key with EGETKEY from a KEYREQUEST carrying a fresh random 32-byte
  KEYID and the enclave's own ISVSVN, CPUSVN and CONFIGSVN (from its REPORT), then encrypts with
  AES-128-GCM under a 12-byte zero IV (safe: every seal has a fresh key) and the AAD as
  associated data. The KEYREQUEST travels in the blob.
* Parameter rules follow ``sgx_seal_data_ex``: policy ⊆ {MRENCLAVE, MRSIGNER} plus, for a
  KSS enclave only, NOISVPRODID/CONFIGID/ISVFAMILYID/ISVEXTPRODID (EGETKEY would #GP on
  ``KEYPOLICY & 0x3C`` without KSS), with MRENCLAVE or MRSIGNER set; ATTRIBUTEMASK includes
  INIT and DEBUG; at least one byte to encrypt; sizes fit in 32 bits.
* Unsealing re-derives the key from the stored KEYREQUEST (KEYNAME must be SEAL).
  SGX_INVALID_CPUSVN and SGX_INVALID_ISVSVN surface as :class:`EnclaveInstructionError` (the
  blob is from a newer TCB or enclave version); every other failure, including a wrong key or
  altered bytes, is :class:`UnsealError` (the SDK's SGX_ERROR_MAC_MISMATCH).
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgx_platform.arch.attributes import (
    KEYPOLICY_KSS_BITS,
    U32_MAX,
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
)
from sgx_platform.arch.binary import require_length, require_zero
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import ZERO_MEASUREMENT
from sgx_platform.arch.report import TargetInfo
from sgx_platform.cpu import EnclaveContext
from sgx_platform.errors import (
    EnclaveInstructionError,
    GeneralProtectionFault,
    SealingParameterError,
    UnsealError,
)

#: SDK ``TSEAL_DEFAULT_FLAGSMASK``: everything but MODE64BIT, PROVISIONKEY, EINITTOKEN_KEY and
#: bits 6-55 (so INIT, DEBUG and the non-check bits 56-63 are bound).
DEFAULT_ATTRIBUTE_MASK = Attributes(0xFF0000000000000B, 0)
#: SDK ``TSEAL_DEFAULT_MISCMASK``.
DEFAULT_MISC_MASK = 0xF0000000
HEADER_SIZE = 560
_IV = bytes(12)
_TAG_SIZE = 16

_HEADER = struct.Struct(
    "<"
    "512s"  # 0   key_request
    "I"  # 512 plain_text_offset
    "12s"  # 516 reserved
    "I"  # 528 aes_data.payload_size
    "12s"  # 532 aes_data.reserved
    "16s"  # 544 aes_data.payload_tag
)
assert _HEADER.size == HEADER_SIZE

#: ``sgx_seal_data``'s extra policy for a KSS enclave (NOISVPRODID is not part of it).
_SDK_KSS_DEFAULT = int(KeyPolicy.CONFIGID | KeyPolicy.ISVFAMILYID | KeyPolicy.ISVEXTPRODID)
_IDENTITY_POLICY = int(KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER)
_MUST_MASK = int(AttributeFlags.INIT | AttributeFlags.DEBUG)


def sealed_data_size(aad_length: int, text_length: int) -> int:
    """``sgx_calc_sealed_data_size``: 560 + AAD + text, or UINT32_MAX when it overflows."""
    total = HEADER_SIZE + aad_length + text_length
    return U32_MAX if aad_length < 0 or text_length < 0 or total > U32_MAX else total


@dataclass(frozen=True, slots=True)
class SealedData:
    """A parsed ``sgx_sealed_data_t``."""

    key_request: KeyRequest
    encrypted_size: int
    payload_tag: bytes
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.encrypted_size <= len(self.payload):
            raise MalformedStructureError("sealed data: encrypted size exceeds the payload")
        require_length(self.payload_tag, _TAG_SIZE, "sealed data payload_tag")
        if HEADER_SIZE + len(self.payload) > U32_MAX:
            raise MalformedStructureError("sealed data: payload too large")

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedData:
        if len(data) < HEADER_SIZE:
            raise MalformedStructureError(
                f"sealed data: {len(data)} bytes is shorter than the 560-byte header"
            )
        request, text_offset, res1, payload_size, res2, tag = _HEADER.unpack_from(data)
        require_zero(res1, "sealed data reserved @516")
        require_zero(res2, "sealed data reserved @532")
        if len(data) != HEADER_SIZE + payload_size:
            raise MalformedStructureError(
                f"sealed data: header says {HEADER_SIZE + payload_size} bytes, got {len(data)}"
            )
        if text_offset > payload_size:
            raise MalformedStructureError("sealed data: plain_text_offset beyond the payload")
        return cls(KeyRequest.from_bytes(request), text_offset, tag, bytes(data[HEADER_SIZE:]))

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(
            self.key_request.to_bytes(),
            self.encrypted_size,
            bytes(12),
            len(self.payload),
            bytes(12),
            self.payload_tag,
        )
        return header + self.payload

    @property
    def ciphertext(self) -> bytes:
        return self.payload[: self.encrypted_size]

    @property
    def additional_data(self) -> bytes:
        """The additional MAC text (authenticated, not encrypted)."""
        return self.payload[self.encrypted_size :]


@dataclass(frozen=True, slots=True)
class UnsealedData:
    plaintext: bytes
    additional_data: bytes


def seal_data(
    enclave: EnclaveContext,
    plaintext: bytes,
    additional_data: bytes = b"",
    *,
    policy: int | None = None,
    attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK,
    misc_mask: int = DEFAULT_MISC_MASK,
) -> bytes:
    """Seal ``plaintext`` (and authenticate ``additional_data``) for ``enclave``.

    ``policy`` None is the SDK default: MRSIGNER, plus CONFIGID|ISVFAMILYID|ISVEXTPRODID for a
    KSS enclave (``sgx_seal_data``).
    """
    identity = enclave.identity
    if policy is None:
        policy = int(KeyPolicy.MRSIGNER) | (_SDK_KSS_DEFAULT if identity.kss else 0)
    allowed = _IDENTITY_POLICY | (KEYPOLICY_KSS_BITS if identity.kss else 0)
    if policy & ~allowed or not policy & _IDENTITY_POLICY:
        raise SealingParameterError(
            f"key policy {policy:#x}: needs MRENCLAVE or MRSIGNER and only bits of {allowed:#x}"
        )
    if attribute_mask.flags & _MUST_MASK != _MUST_MASK:
        raise SealingParameterError("the attribute mask must include INIT and DEBUG")
    if not 0 <= misc_mask <= U32_MAX:
        raise SealingParameterError("the MISCSELECT mask is 32 bits")
    if not plaintext:
        raise SealingParameterError("nothing to seal: the text to encrypt is empty")
    if sealed_data_size(len(additional_data), len(plaintext)) == U32_MAX:
        raise SealingParameterError("sealed data would exceed 4 GiB")
    own = enclave.ereport(TargetInfo(ZERO_MEASUREMENT)).body  # sgx_create_report(NULL)
    request = KeyRequest(
        keyname=int(KeyName.SEAL),
        keypolicy=policy,
        isvsvn=own.isvsvn,
        cpusvn=own.cpusvn,
        attribute_mask=attribute_mask,
        key_id=secrets.token_bytes(32),
        miscmask=misc_mask,
        configsvn=own.configsvn,
    )
    key = enclave.egetkey(request)
    sealed = AESGCM(key).encrypt(_IV, bytes(plaintext), bytes(additional_data) or None)
    ciphertext, tag = sealed[:-_TAG_SIZE], sealed[-_TAG_SIZE:]
    return SealedData(request, len(ciphertext), tag, ciphertext + bytes(additional_data)).to_bytes()


def unseal_data(enclave: EnclaveContext, blob: bytes) -> UnsealedData:
    """Open sealed data inside ``enclave``; raises :class:`UnsealError` when it does not open."""
    sealed = SealedData.from_bytes(blob)
    if sealed.key_request.keyname != KeyName.SEAL:
        raise UnsealError(f"sealed data names KEYNAME {sealed.key_request.keyname}, not SEAL")
    if not sealed.encrypted_size:
        raise UnsealError("sealed data has no encrypted text")
    try:
        key = enclave.egetkey(sealed.key_request)
    except EnclaveInstructionError as e:
        if e.code in (SgxErrorCode.INVALID_CPUSVN, SgxErrorCode.INVALID_ISVSVN):
            raise
        raise UnsealError(f"no key for this sealed data here: {e.detail}") from e
    except GeneralProtectionFault as e:
        raise UnsealError(f"no key for this sealed data here: {e.reason}") from e
    aad = sealed.additional_data
    try:
        plaintext = AESGCM(key).decrypt(_IV, sealed.ciphertext + sealed.payload_tag, aad or None)
    except InvalidTag:
        raise UnsealError(
            "sealed data does not open: another enclave identity, platform or owner epoch, "
            "or altered bytes"
        ) from None
    return UnsealedData(plaintext, aad)
