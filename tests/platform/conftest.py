"""Fixtures for the emulated CPU tests: fuses, a CPU, signing keys, and an enclave kit.

The kit builds test enclaves with ``arch.image.build_image`` and ``arch.signing.sign_sigstruct``
and loads them the way the driver will: ECREATE, EADD (+ EEXTEND of measured pages), EINIT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import (
    DEFAULT_ATTRIBUTE_MASK,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.cpu import EnclaveContext, EnclaveRef, SgxCpu
from sgx_platform.fuses import PlatformFuses
from sgx_platform.launch_token import issue_einittoken

#: ELRANGE base for test enclaves: aligned for any size up to 4 GiB.
BASE = 0x1_0000_0000
MODE64 = int(AttributeFlags.MODE64BIT)


@dataclass(frozen=True)
class SigningKeys:
    app: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    le: rsa.RSAPrivateKey


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys(generate_signing_key(), generate_signing_key(), generate_signing_key())


@pytest.fixture
def fuses(tmp_path: Path) -> PlatformFuses:
    return PlatformFuses.create(tmp_path / "fuses")


@pytest.fixture
def cpu(fuses: PlatformFuses) -> SgxCpu:
    return SgxCpu(fuses, epc_pages=512)


class EnclaveKit:
    """Builds, signs and loads test enclaves."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys

    @staticmethod
    def image(**kw: Any) -> EnclaveImage:
        return build_image(**kw)

    @staticmethod
    def sign(
        image: EnclaveImage,
        key: rsa.RSAPrivateKey,
        *,
        attributes: Attributes | None = None,
        attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK,
        **kw: Any,
    ) -> Sigstruct:
        return sign_sigstruct(
            key,
            measure(image),
            attributes=attributes or Attributes(MODE64, 3),
            attribute_mask=attribute_mask,
            date=0x20250101,
            **kw,
        )

    @staticmethod
    def create_and_add(
        cpu: SgxCpu,
        image: EnclaveImage,
        *,
        flags: int = MODE64,
        xfrm: int = 3,
        miscselect: int = 0,
        configid: bytes = bytes(64),
        configsvn: int = 0,
    ) -> EnclaveRef:
        secs = Secs(
            size=image.size,
            base_address=BASE,
            ssa_frame_size=image.ssa_frame_size,
            miscselect=miscselect,
            attributes=Attributes(flags, xfrm),
            configid=configid,
            configsvn=configsvn,
        )
        ref = cpu.ecreate(secs)
        for page in image.pages:
            cpu.eadd(ref, BASE + page.offset, page.data, page.secinfo)
            if page.measured:
                cpu.eextend_page(ref, BASE + page.offset)
        return ref

    def load(
        self,
        cpu: SgxCpu,
        image: EnclaveImage,
        sig: Sigstruct,
        *,
        token: EinitToken | bytes | None = None,
        **secs: Any,
    ) -> EnclaveContext:
        ref = self.create_and_add(cpu, image, **secs)
        return cpu.einit(ref, sig, token)

    def launch_enclave(self, cpu: SgxCpu, *, debug: bool = False) -> EnclaveContext:
        """Intel-style LE: signed by ``keys.le``, EINITTOKEN_KEY, registers set to its signer."""
        flags = MODE64 | int(AttributeFlags.EINITTOKEN_KEY)
        if debug:
            flags |= int(AttributeFlags.DEBUG)
        image = self.image(seed=900)
        sig = self.sign(image, self.keys.le, attributes=Attributes(flags, 3))
        if not cpu.le_pubkeyhash.locked:
            cpu.le_pubkeyhash.write(mrsigner_of_public_key(self.keys.le))
        return self.load(cpu, image, sig, flags=flags)

    def token_for(
        self,
        le: EnclaveContext,
        image: EnclaveImage,
        sig: Sigstruct,
        *,
        flags: int = MODE64,
        xfrm: int = 3,
    ) -> EinitToken:
        return issue_einittoken(
            le, mrenclave=sig.mrenclave, mrsigner=sig.mrsigner, attributes=Attributes(flags, xfrm)
        )

    @staticmethod
    def app_secs_attributes(debug: bool = False) -> int:
        return MODE64 | (int(AttributeFlags.DEBUG) if debug else 0)

    @staticmethod
    def replace_token(token: EinitToken, **changes: Any) -> EinitToken:
        return replace(token, **changes)


@pytest.fixture(scope="session")
def kit(keys: SigningKeys) -> EnclaveKit:
    return EnclaveKit(keys)
