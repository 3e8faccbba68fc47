"""The PCE and QE images: built by the image builder, signed by the emulated vendor key.

``sgxemu init`` calls :func:`initialize_state`: it generates the vendor's RSA-3072 (e=3)
signing key, builds the two images with :func:`sgx_platform.arch.image.build_image`, writes
them as SGXS files into the platform's enclave directory (``$STATE/enclaves/``, where the load
policy lets executable pages come from), signs a SIGSTRUCT for each, and records everything in
a manifest (``$STATE/quoting/enclaves.json``). :func:`deploy_enclaves` re-signs them with a
higher ISVSVN (a PCE/QE update that comes with a TCB update).

Invariants:

* Both enclaves are production enclaves: their SIGSTRUCT masks DEBUG with DEBUG = 0, so they
  can never launch in debug mode; both ask for PROVISIONKEY (the QE too, as Intel's QE3 does,
  and as the QE Identity expects), which the platform grants only through its provision socket.
* PCESVN and QE SVN are the enclaves' ISVSVNs; a deploy never lowers them.
* The QE's ISVPRODID is Intel's QE3 value (1); the PCE's is :data:`PCE_ISVPRODID`.
* The vendor key stays in ``$STATE/quoting/`` (mode 0600) and is used only here; the quoting
  service reads the manifest, the SIGSTRUCTs and nothing of the platform's or the PCS's.
* Every file is written atomically; the manifest is written last, so a manifest always names
  files that exist. It names them relative to the enclave directory (plain file names), so a
  state directory can be built under a temporary name and renamed, or moved.
  :meth:`EnclaveManifest.load` is strict (unknown keys, wrong sizes, a file name with a
  directory part, a SIGSTRUCT that does not match its manifest entry all raise
  :class:`~sgx_quoting.enclave_errors.QuotingStateError`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import XFRM_LEGACY, AttributeFlags, Attributes
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import (
    NO_DEBUG_ATTRIBUTE_MASK,
    check_signing_key,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_quoting.enclave_errors import QuotingStateError
from sgx_rpc.files import read_private, write_atomic

#: Intel's QE3 ISVPRODID (its QE Identity says 1).
QE_ISVPRODID = 1
#: The PCE's ISVPRODID in this emulation (a product of its own, distinct from the QE's).
PCE_ISVPRODID = 2
#: The SVNs ``sgxemu init`` signs with.
INITIAL_PCE_SVN = 1
INITIAL_QE_SVN = 1

#: Both enclaves: 64-bit, PROVISIONKEY, legacy XFRM; DEBUG masked with DEBUG = 0.
ENCLAVE_ATTRIBUTES = Attributes(
    int(AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY), XFRM_LEGACY
)
ENCLAVE_ATTRIBUTE_MASK = NO_DEBUG_ATTRIBUTE_MASK

MANIFEST_FILE = "enclaves.json"
VENDOR_KEY_FILE = "vendor-signing-key.pem"
MANIFEST_FORMAT = "sgxemu-quoting-enclaves"
MANIFEST_VERSION = 1

#: Builder seeds: fixed, so every installation has the same PCE and QE MRENCLAVE.
_SEEDS = {"pce": 0x5C_E0_00_01, "qe": 0x0E_03_00_01}
_ISVPRODIDS = {"pce": PCE_ISVPRODID, "qe": QE_ISVPRODID}
_NAMES = ("pce", "qe")


def build_enclave_image(name: str) -> EnclaveImage:
    """The image of ``"pce"`` or ``"qe"`` (deterministic)."""
    if name not in _SEEDS:
        raise QuotingStateError(f"unknown quoting enclave {name!r}; expected pce or qe")
    return build_image(code_pages=2, data_pages=2, heap_pages=4, tcs=1, seed=_SEEDS[name])


def sign_enclave(
    key: rsa.RSAPrivateKey,
    mrenclave: Measurement,
    *,
    isvprodid: int,
    isvsvn: int,
    date: dt.date | None = None,
) -> Sigstruct:
    """A production SIGSTRUCT for a quoting enclave (PROVISIONKEY, DEBUG forbidden)."""
    return sign_sigstruct(
        key,
        mrenclave,
        attributes=ENCLAVE_ATTRIBUTES,
        attribute_mask=ENCLAVE_ATTRIBUTE_MASK,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        date=date,
    )


@dataclass(frozen=True)
class EnclaveEntry:
    """One quoting enclave of the manifest: its files and identity."""

    name: str
    image: Path
    image_sha256: bytes
    sigstruct_path: Path
    mrenclave: Measurement
    isvprodid: int
    isvsvn: int

    def read_sigstruct(self) -> bytes:
        """The SIGSTRUCT bytes, checked against this entry (MRENCLAVE, ISVPRODID, ISVSVN)."""
        try:
            data = self.sigstruct_path.read_bytes()
        except OSError as e:
            raise QuotingStateError(
                f"cannot read the {self.name.upper()} SIGSTRUCT {self.sigstruct_path}: "
                f"{e.strerror}"
            ) from e
        try:
            sig = Sigstruct.from_bytes(data)
        except MalformedStructureError as e:
            raise QuotingStateError(f"{self.sigstruct_path}: not a SIGSTRUCT: {e}") from e
        if (sig.mrenclave, sig.isvprodid, sig.isvsvn) != (
            self.mrenclave,
            self.isvprodid,
            self.isvsvn,
        ):
            raise QuotingStateError(
                f"{self.sigstruct_path} does not match the manifest's {self.name.upper()} "
                "(MRENCLAVE, ISVPRODID or ISVSVN differ); run the deploy again"
            )
        return data


@dataclass(frozen=True)
class EnclaveManifest:
    """The vendor signer and the two quoting enclaves (``$STATE/quoting/enclaves.json``)."""

    mrsigner: Measurement
    pce: EnclaveEntry
    qe: EnclaveEntry

    def summary(self) -> dict[str, str]:
        """What ``sgxemu init`` prints and passes on (launchctl allowlist, PCS QE identity)."""
        return {
            "vendor_mrsigner": self.mrsigner.hex(),
            "pce_image": str(self.pce.image),
            "pce_mrenclave": self.pce.mrenclave.hex(),
            "pce_isvprodid": str(self.pce.isvprodid),
            "pce_svn": str(self.pce.isvsvn),
            "qe_image": str(self.qe.image),
            "qe_mrenclave": self.qe.mrenclave.hex(),
            "qe_isvprodid": str(self.qe.isvprodid),
            "qe_svn": str(self.qe.isvsvn),
        }

    def to_json(self) -> bytes:
        def entry(e: EnclaveEntry) -> dict[str, Any]:
            return {
                "image": e.image.name,
                "image_sha256": e.image_sha256.hex(),
                "sigstruct": e.sigstruct_path.name,
                "mrenclave": e.mrenclave.hex(),
                "isvprodid": e.isvprodid,
                "isvsvn": e.isvsvn,
            }

        document = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "mrsigner": self.mrsigner.hex(),
            "pce": entry(self.pce),
            "qe": entry(self.qe),
        }
        return json.dumps(document, indent=2).encode() + b"\n"

    @classmethod
    def from_json(
        cls, data: bytes, enclaves_dir: Path, where: str = MANIFEST_FILE
    ) -> EnclaveManifest:
        """The manifest in ``data``; its file names are resolved in ``enclaves_dir``."""
        enclaves_dir = Path(enclaves_dir).absolute()
        try:
            top = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise QuotingStateError(f"{where}: not JSON: {e}") from e
        _keys(top, {"format", "version", "mrsigner", "pce", "qe"}, where)
        if top["format"] != MANIFEST_FORMAT or top["version"] != MANIFEST_VERSION:
            raise QuotingStateError(
                f"{where}: not a version {MANIFEST_VERSION} {MANIFEST_FORMAT} manifest"
            )
        mrsigner = _measurement(top["mrsigner"], f"{where}: mrsigner")

        def entry(name: str) -> EnclaveEntry:
            e = top[name]
            what = f"{where}: {name}"
            _keys(e, {"image", "image_sha256", "sigstruct", "mrenclave", "isvprodid", "isvsvn"},
                  what)
            digest = _hex(e["image_sha256"], 32, f"{what}.image_sha256")
            for key in ("image", "sigstruct"):
                value = e[key]
                if (
                    not isinstance(value, str)
                    or value in ("", ".", "..")
                    or os.sep in value
                    or "\x00" in value
                ):
                    raise QuotingStateError(
                        f"{what}.{key} must be a file name in the enclave directory"
                    )
            for key in ("isvprodid", "isvsvn"):
                value = e[key]
                if type(value) is not int or not 0 <= value <= 0xFFFF:
                    raise QuotingStateError(f"{what}.{key} must be an integer in 0..65535")
            if e["isvprodid"] != _ISVPRODIDS[name]:
                raise QuotingStateError(
                    f"{what}.isvprodid is {e['isvprodid']}, expected {_ISVPRODIDS[name]}"
                )
            return EnclaveEntry(
                name=name,
                image=enclaves_dir / e["image"],
                image_sha256=digest,
                sigstruct_path=enclaves_dir / e["sigstruct"],
                mrenclave=_measurement(e["mrenclave"], f"{what}.mrenclave"),
                isvprodid=e["isvprodid"],
                isvsvn=e["isvsvn"],
            )

        return cls(mrsigner=mrsigner, pce=entry("pce"), qe=entry("qe"))

    @classmethod
    def load(cls, quoting_dir: Path, enclaves_dir: Path) -> EnclaveManifest:
        """``quoting_dir/enclaves.json``, its files in ``enclaves_dir``."""
        path = Path(quoting_dir) / MANIFEST_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise QuotingStateError(
                f"no quoting enclave manifest at {path}; run `sgxemu init` to create one"
            ) from None
        except OSError as e:
            raise QuotingStateError(f"cannot read {path}: {e.strerror}") from e
        return cls.from_json(data, enclaves_dir, str(path))


def _keys(obj: object, expected: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise QuotingStateError(f"{what} must be an object")
    if set(obj) != expected:
        unknown = sorted(set(obj) - expected)
        missing = sorted(expected - set(obj))
        raise QuotingStateError(f"{what}: unknown keys {unknown}, missing keys {missing}")


def _hex(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise QuotingStateError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise QuotingStateError(f"{what}: not hex") from e
    if len(raw) != size:
        raise QuotingStateError(f"{what} must be {size} bytes")
    return raw


def _measurement(value: object, what: str) -> Measurement:
    return Measurement(_hex(value, 32, what))


# -- the vendor key ---------------------------------------------------------------------------


def _write_vendor_key(quoting_dir: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(quoting_dir / VENDOR_KEY_FILE, pem, mode=0o600)


def load_vendor_key(quoting_dir: Path) -> rsa.RSAPrivateKey:
    path = Path(quoting_dir) / VENDOR_KEY_FILE
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except OSError as e:
        raise QuotingStateError(f"cannot read the vendor signing key {path}: {e.strerror}") from e
    except ValueError as e:
        raise QuotingStateError(f"{path}: not a PEM private key: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise QuotingStateError(f"{path}: the vendor key must be RSA-3072 with e=3")
    try:
        check_signing_key(key)
    except MalformedStructureError as e:
        raise QuotingStateError(f"{path}: {e}") from e
    return key


# -- init and deploy ---------------------------------------------------------------------------


def _private_dir(path: Path, mode: int) -> None:
    if path.is_symlink():
        raise QuotingStateError(f"{path} is a symbolic link; refusing to use it")
    path.mkdir(parents=True, exist_ok=True, mode=mode)


def _sign_and_write(
    key: rsa.RSAPrivateKey,
    enclaves_dir: Path,
    *,
    pce_svn: int,
    qe_svn: int,
    write_images: bool,
) -> dict[str, EnclaveEntry]:
    entries: dict[str, EnclaveEntry] = {}
    for name, svn in (("pce", pce_svn), ("qe", qe_svn)):
        image = build_enclave_image(name)
        sgxs = write_sgxs(image)
        image_path = enclaves_dir / f"sgxemu-{name}.sgxs"
        # One SIGSTRUCT file per SVN: the manifest (written last) switches between them, so a
        # crash mid-deploy leaves the old manifest naming the old, intact files.
        sig_path = enclaves_dir / f"sgxemu-{name}-svn{svn}.sig"
        if write_images or not image_path.is_file():
            write_atomic(image_path, sgxs, mode=0o644)
        mrenclave = measure(image)
        sig = sign_enclave(key, mrenclave, isvprodid=_ISVPRODIDS[name], isvsvn=svn)
        write_atomic(sig_path, sig.to_bytes(), mode=0o644)
        entries[name] = EnclaveEntry(
            name=name,
            image=image_path.absolute(),
            image_sha256=hashlib.sha256(sgxs).digest(),
            sigstruct_path=sig_path.absolute(),
            mrenclave=mrenclave,
            isvprodid=_ISVPRODIDS[name],
            isvsvn=svn,
        )
    return entries


def initialize_state(
    quoting_dir: Path,
    enclaves_dir: Path,
    *,
    pce_svn: int = INITIAL_PCE_SVN,
    qe_svn: int = INITIAL_QE_SVN,
    vendor_key: rsa.RSAPrivateKey | None = None,
) -> EnclaveManifest:
    """Create the quoting side of a state directory (``sgxemu init``).

    ``quoting_dir`` is ``$STATE/quoting`` (0700), ``enclaves_dir`` the platform's allowed
    image directory (``$STATE/enclaves``). Generates the vendor key (unless given), builds and
    signs the PCE and QE, writes the manifest. Refuses to overwrite an existing manifest.
    Returns the manifest: its ``mrsigner`` goes on launchctl's allowlist (with PROVISIONKEY
    allowed) and into the PCS's QE Identity (with ``qe.isvprodid`` and ``qe.isvsvn``).
    """
    quoting_dir = Path(quoting_dir)
    enclaves_dir = Path(enclaves_dir)
    _private_dir(quoting_dir, 0o700)
    os.chmod(quoting_dir, 0o700)
    _private_dir(enclaves_dir, 0o755)
    if (quoting_dir / MANIFEST_FILE).exists():
        raise QuotingStateError(f"{quoting_dir} already holds quoting enclaves")
    key = vendor_key if vendor_key is not None else generate_signing_key()
    check_signing_key(key)
    _write_vendor_key(quoting_dir, key)
    entries = _sign_and_write(key, enclaves_dir, pce_svn=pce_svn, qe_svn=qe_svn, write_images=True)
    manifest = EnclaveManifest(mrsigner_of_public_key(key), entries["pce"], entries["qe"])
    write_atomic(quoting_dir / MANIFEST_FILE, manifest.to_json(), mode=0o600)
    return manifest


def deploy_enclaves(
    quoting_dir: Path,
    enclaves_dir: Path,
    *,
    pce_svn: int | None = None,
    qe_svn: int | None = None,
) -> EnclaveManifest:
    """Re-sign the PCE and/or QE with a higher ISVSVN (an enclave update) with the vendor key.

    ``None`` keeps an enclave's SVN. Lowering an SVN is refused (a downgrade would re-open what
    the update fixed). The running quoting service picks the new SIGSTRUCTs up the next time it
    launches its enclaves (restart, or platform reset).
    """
    quoting_dir = Path(quoting_dir)
    current = EnclaveManifest.load(quoting_dir, enclaves_dir)
    new_pce = current.pce.isvsvn if pce_svn is None else pce_svn
    new_qe = current.qe.isvsvn if qe_svn is None else qe_svn
    for what, old, new in (("PCE", current.pce.isvsvn, new_pce), ("QE", current.qe.isvsvn, new_qe)):
        if not isinstance(new, int) or isinstance(new, bool) or not 0 <= new < 1 << 16:
            raise QuotingStateError(f"the {what} SVN must be an integer in 0..65535")
        if new < old:
            raise QuotingStateError(f"the {what} SVN is {old}; a deploy never lowers it to {new}")
    key = load_vendor_key(quoting_dir)
    if mrsigner_of_public_key(key) != current.mrsigner:
        raise QuotingStateError("the vendor key does not match the manifest's MRSIGNER")
    entries = _sign_and_write(
        key, Path(enclaves_dir), pce_svn=new_pce, qe_svn=new_qe, write_images=False
    )
    manifest = EnclaveManifest(current.mrsigner, entries["pce"], entries["qe"])
    write_atomic(quoting_dir / MANIFEST_FILE, manifest.to_json(), mode=0o600)
    return manifest
