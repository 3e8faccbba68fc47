"""Issuing EINITTOKENs as a launch enclave does (SGX-REFERENCE §5.2, SDK ``launch_enclave.cpp``).

Invariants: a token is MAC'd with the EINITTOKEN key the *launch enclave itself* obtains from
EGETKEY — so only an enclave with ATTRIBUTES.EINITTOKEN_KEY, which EINIT grants only to the
signer in IA32_SGXLEPUBKEYHASH, can make tokens that EINIT accepts. The key request follows the
SDK: ATTRIBUTEMASK.FLAGS = ~MODE64BIT, XFRM mask 0, MISCMASK all ones, a fresh random KEYID,
CPUSVN and ISVSVN from the LE's own REPORT; the token's LE fields restate exactly what EINIT
feeds into its own derivation of that key (§5.1 step 15). This module decides nothing about
*whether* to issue: that is the launch policy's job (launchctl).
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from sgx_platform.arch.attributes import U32_MAX, U64_MAX, AttributeFlags, Attributes, KeyName
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import ZERO_MEASUREMENT, Measurement
from sgx_platform.arch.report import TargetInfo
from sgx_platform.cpu import EnclaveContext
from sgx_platform.keys import aes_cmac

#: SDK LE: ``attribute_mask.flags = ~SGX_FLAGS_MODE64BIT``, ``xfrm = 0``.
LE_ATTRIBUTE_MASK = Attributes(~int(AttributeFlags.MODE64BIT) & U64_MAX, 0)
LE_MISC_MASK = U32_MAX


def issue_einittoken(
    launch_enclave: EnclaveContext,
    *,
    mrenclave: Measurement,
    mrsigner: Measurement,
    attributes: Attributes,
    key_id: bytes | None = None,
) -> EinitToken:
    """A VALID token for the enclave (MRENCLAVE, MRSIGNER, SECS.ATTRIBUTES), MAC'd by the LE.

    Raises what EGETKEY raises, e.g. SGX_INVALID_ATTRIBUTE when ``launch_enclave`` lacks
    EINITTOKEN_KEY.
    """
    le = launch_enclave.identity
    own = launch_enclave.ereport(TargetInfo(ZERO_MEASUREMENT)).body
    request = KeyRequest(
        keyname=int(KeyName.EINITTOKEN),
        isvsvn=own.isvsvn,
        cpusvn=own.cpusvn,
        attribute_mask=LE_ATTRIBUTE_MASK,
        key_id=secrets.token_bytes(32) if key_id is None else key_id,
        miscmask=LE_MISC_MASK,
    )
    key = launch_enclave.egetkey(request)
    masked = Attributes(
        request.attribute_mask.flags | AttributeFlags.INIT | AttributeFlags.DEBUG,
        request.attribute_mask.xfrm,
    )
    token = EinitToken(
        valid=True,
        attributes=attributes,
        mrenclave=mrenclave,
        mrsigner=mrsigner,
        cpusvn_le=request.cpusvn,
        isvprodid_le=le.isvprodid,
        isvsvn_le=request.isvsvn,
        masked_miscselect_le=request.miscmask & le.miscselect,
        masked_attributes_le=masked & le.attributes,
        key_id=request.key_id,
    )
    return replace(token, mac=aes_cmac(key, token.mac_body()))
