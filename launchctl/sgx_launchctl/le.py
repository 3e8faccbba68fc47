"""The launch enclave (LE): its image, its signing at ``sgxemu init``, and the tokens it MACs.

Invariants:

* The LE image is deterministic (``build_image`` with a fixed seed), so its MRENCLAVE is the
  same on every machine; what makes an LE *this* platform's LE is its signer, a fresh
  RSA-3072, e=3 launch-authority key made at init.
* That key signs two SIGSTRUCTs of the same image, then leaves: it is exported to a file the
  caller names *outside* the state directory (for the owner to keep offline) or destroyed.
  It is never written into the state directory. The token-mode SIGSTRUCT asks for
  EINITTOKEN_KEY; the open-mode one does not (the driver never grants EINITTOKEN_KEY in open
  mode). Both mask every flag, so neither can launch in debug mode or with other attributes.
* In this emulation whoever holds an enclave's handle acts as its code, so the SIGSTRUCTs are
  a capability: they are written 0600 in the daemon's private directory.
* Tokens follow the SDK's ``launch_enclave.cpp`` and SGX-REFERENCE §5.2: the EINITTOKEN key is
  EGETKEY(EINITTOKEN) from the LE itself with ATTRIBUTEMASK.FLAGS = ~MODE64BIT, XFRM mask 0,
  MISCMASK all ones, a random KEYID (one per boot: the key is derived once per boot), and the
  LE's own CPUSVN and ISVSVN from its REPORT; the token's LE fields restate exactly what EINIT
  feeds into its own derivation (§5.1 step 15); the MAC is AES-128-CMAC over bytes [0:192).
  The token's ATTRIBUTES are the SECS's, MRENCLAVE and MRSIGNER the SIGSTRUCT's (steps 16-17).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from sgx_launchctl.allowlist import LaunchRequest
from sgx_launchctl.config import LaunchEnclaveFiles
from sgx_launchctl.errors import InitError
from sgx_platform.arch.attributes import U32_MAX, U64_MAX, AttributeFlags, Attributes, KeyName
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import ReportBody
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import (
    NO_DEBUG_ATTRIBUTE_MASK,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_rpc.files import fsync_directory

#: Seed of the LE image (deterministic: same MRENCLAVE everywhere).
LE_IMAGE_SEED = 0x4C45_0001
LE_ISVPRODID = 1
LE_ISVSVN = 1
#: SDK LE: ``attribute_mask.flags = ~SGX_FLAGS_MODE64BIT``, ``xfrm = 0``; MISCMASK all ones.
EINITTOKEN_ATTRIBUTE_MASK = Attributes(~int(AttributeFlags.MODE64BIT) & U64_MAX, 0)
EINITTOKEN_MISC_MASK = U32_MAX
_XFRM = 0x3


def build_launch_enclave_image() -> EnclaveImage:
    """The LE image: one TCS, one code page, one data page, fixed seed."""
    return build_image(code_pages=1, data_pages=1, tcs=1, seed=LE_IMAGE_SEED)


def le_attributes(*, token_mode: bool) -> Attributes:
    flags = int(AttributeFlags.MODE64BIT)
    if token_mode:
        flags |= int(AttributeFlags.EINITTOKEN_KEY)
    return Attributes(flags, _XFRM)


@dataclass(frozen=True)
class LaunchEnclaveInfo:
    """What init made: the LE's identity and where the launch-authority key went."""

    mrsigner: Measurement
    mrenclave: Measurement
    image_sha256: bytes
    key_exported_to: Path | None


def _inside(path: Path, directory: Path) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        resolved = path.absolute()
    return resolved == directory.resolve() or resolved.is_relative_to(directory.resolve())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode``, write, fsync it and its directory.

    Create-only (``O_EXCL`` on ``path`` itself, not :func:`sgx_rpc.files.write_atomic`): an
    existing file, or a symbolic link planted at ``path``, is refused, never replaced.
    """
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    fsync_directory(path.parent)


def create_launch_enclave(
    files: LaunchEnclaveFiles,
    *,
    state_dir: Path,
    export_key_to: Path | None,
    date: datetime.date | None = None,
) -> LaunchEnclaveInfo:
    """Build and sign the LE with a fresh launch-authority key; export or destroy the key.

    ``export_key_to`` must lie outside ``state_dir`` and not exist yet; ``None`` destroys the
    key (it is never written anywhere). Refuses to overwrite existing LE files.
    """
    state_dir = Path(state_dir)
    if export_key_to is not None:
        export_key_to = Path(export_key_to).absolute()
        if _inside(export_key_to, state_dir):
            raise InitError(
                f"{export_key_to} is inside the state directory {state_dir}; the launch-"
                "authority key must be kept elsewhere (offline)",
                hint="name a path outside the state directory, or let it be destroyed",
            )
        if export_key_to.exists() or export_key_to.is_symlink():
            raise InitError(f"{export_key_to} already exists; refusing to overwrite it")
        if not export_key_to.parent.is_dir():
            raise InitError(f"the directory of {export_key_to} does not exist")
    for path in (files.image, files.sigstruct, files.open_sigstruct):
        if path.exists() or path.is_symlink():
            raise InitError(f"{path} already exists; refusing to overwrite the launch enclave")
    image = build_launch_enclave_image()
    mrenclave = measure(image)
    key = generate_signing_key()
    signed: dict[bool, Sigstruct] = {
        token_mode: sign_sigstruct(
            key,
            mrenclave,
            attributes=le_attributes(token_mode=token_mode),
            attribute_mask=NO_DEBUG_ATTRIBUTE_MASK,
            isvprodid=LE_ISVPRODID,
            isvsvn=LE_ISVSVN,
            date=date,
        )
        for token_mode in (True, False)
    }
    mrsigner = mrsigner_of_public_key(key)
    exported = None
    if export_key_to is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(export_key_to, pem, 0o600)
        exported = export_key_to
    del key  # the only reference: nothing below can sign again
    sgxs = write_sgxs(image)
    files.image.parent.mkdir(parents=True, exist_ok=True)
    files.sigstruct.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_new(files.image, sgxs, 0o644)
    _write_new(files.sigstruct, signed[True].to_bytes(), 0o600)
    _write_new(files.open_sigstruct, signed[False].to_bytes(), 0o600)
    return LaunchEnclaveInfo(mrsigner, mrenclave, hashlib.sha256(sgxs).digest(), exported)


def einittoken_key_request(le: ReportBody, key_id: bytes | None = None) -> KeyRequest:
    """EGETKEY(EINITTOKEN) as the SDK LE asks for it, from the LE's own REPORT body."""
    return KeyRequest(
        keyname=int(KeyName.EINITTOKEN),
        isvsvn=le.isvsvn,
        cpusvn=le.cpusvn,
        attribute_mask=EINITTOKEN_ATTRIBUTE_MASK,
        key_id=secrets.token_bytes(32) if key_id is None else key_id,
        miscmask=EINITTOKEN_MISC_MASK,
    )


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


@dataclass(frozen=True)
class TokenMinter:
    """MACs EINITTOKENs with the EINITTOKEN key derived once for this boot."""

    le: ReportBody
    key_request: KeyRequest
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 16:
            raise ValueError("the EINITTOKEN key is 16 bytes")

    def mint(self, request: LaunchRequest) -> EinitToken:
        """A VALID token for exactly this SIGSTRUCT identity and SECS ATTRIBUTES."""
        kr = self.key_request
        masked = Attributes(
            kr.attribute_mask.flags | int(AttributeFlags.INIT | AttributeFlags.DEBUG),
            kr.attribute_mask.xfrm,
        )
        token = EinitToken(
            valid=True,
            attributes=request.attributes,
            mrenclave=request.mrenclave,
            mrsigner=request.mrsigner,
            cpusvn_le=kr.cpusvn,
            isvprodid_le=self.le.isvprodid,
            isvsvn_le=kr.isvsvn,
            masked_miscselect_le=kr.miscmask & self.le.miscselect,
            masked_attributes_le=masked & self.le.attributes,
            key_id=kr.key_id,
        )
        return replace(token, mac=aes_cmac(self.key, token.mac_body()))


def image_sha256(path: Path) -> bytes:
    """SHA-256 of the LE image file as it is on disk (what the platform will hash)."""
    return hashlib.sha256(Path(path).read_bytes()).digest()
