"""The PCE and QE images, their vendor-signed SIGSTRUCTs and the manifest (no platform needed)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags
from sgx_platform.arch.sgxs import measure_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_quoting.enclave_errors import QuotingStateError
from sgx_quoting.enclaves import (
    MANIFEST_FILE,
    VENDOR_KEY_FILE,
    EnclaveManifest,
    build_enclave_image,
    deploy_enclaves,
    initialize_state,
    load_vendor_key,
)


@pytest.fixture(scope="module")
def vendor() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "quoting", tmp_path / "enclaves"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_initialize_state_writes_signed_production_enclaves(
    dirs: tuple[Path, Path], vendor: rsa.RSAPrivateKey
) -> None:
    quoting, enclaves = dirs
    manifest = initialize_state(quoting, enclaves, vendor_key=vendor, pce_svn=4, qe_svn=6)
    assert manifest.mrsigner == mrsigner_of_public_key(vendor)
    assert EnclaveManifest.load(quoting, enclaves) == manifest
    assert _mode(quoting) == 0o700
    assert _mode(quoting / VENDOR_KEY_FILE) == 0o600
    assert _mode(quoting / MANIFEST_FILE) == 0o600
    assert load_vendor_key(quoting).private_numbers() == vendor.private_numbers()
    for entry, svn in ((manifest.pce, 4), (manifest.qe, 6)):
        assert entry.image.parent == enclaves.absolute()
        assert measure_sgxs(entry.image.read_bytes()) == entry.mrenclave
        sig = Sigstruct.from_bytes(entry.read_sigstruct())
        sig.verify()
        assert sig.mrsigner == manifest.mrsigner
        assert (sig.isvprodid, sig.isvsvn) == (entry.isvprodid, svn)
        # Production: DEBUG is in the mask and 0; PROVISIONKEY is asked for.
        assert sig.attribute_mask.flags & AttributeFlags.DEBUG
        assert not sig.attributes.flags & AttributeFlags.DEBUG
        assert sig.attributes.flags & AttributeFlags.PROVISIONKEY
    assert manifest.qe.isvprodid == 1
    assert manifest.pce.isvprodid != manifest.qe.isvprodid
    assert manifest.pce.mrenclave != manifest.qe.mrenclave
    summary = manifest.summary()
    assert summary["vendor_mrsigner"] == manifest.mrsigner.hex()
    assert (summary["qe_svn"], summary["pce_svn"], summary["qe_isvprodid"]) == ("6", "4", "1")
    with pytest.raises(QuotingStateError, match="already"):
        initialize_state(quoting, enclaves, vendor_key=vendor)


def test_the_images_are_the_same_everywhere(tmp_path: Path, vendor: rsa.RSAPrivateKey) -> None:
    a = initialize_state(tmp_path / "a" / "q", tmp_path / "a" / "e", vendor_key=vendor)
    b = initialize_state(tmp_path / "b" / "q", tmp_path / "b" / "e")
    assert (a.pce.mrenclave, a.qe.mrenclave) == (b.pce.mrenclave, b.qe.mrenclave)
    assert a.mrsigner != b.mrsigner
    with pytest.raises(QuotingStateError):
        build_enclave_image("le")


def test_deploy_raises_svns_and_never_lowers_them(
    dirs: tuple[Path, Path], vendor: rsa.RSAPrivateKey
) -> None:
    quoting, enclaves = dirs
    first = initialize_state(quoting, enclaves, vendor_key=vendor)
    second = deploy_enclaves(quoting, enclaves, pce_svn=3)
    assert (second.pce.isvsvn, second.qe.isvsvn) == (3, first.qe.isvsvn)
    assert second.pce.sigstruct_path != first.pce.sigstruct_path
    assert first.pce.sigstruct_path.exists()  # the old SIGSTRUCT stays, intact
    assert EnclaveManifest.load(quoting, enclaves) == second
    third = deploy_enclaves(quoting, enclaves, qe_svn=9)
    assert (third.pce.isvsvn, third.qe.isvsvn) == (3, 9)
    for kwargs in ({"pce_svn": 2}, {"qe_svn": 8}, {"qe_svn": 1 << 16}, {"pce_svn": -1}):
        with pytest.raises(QuotingStateError):
            deploy_enclaves(quoting, enclaves, **kwargs)
    assert EnclaveManifest.load(quoting, enclaves) == third


def test_deploy_refuses_another_vendor_key(
    dirs: tuple[Path, Path], vendor: rsa.RSAPrivateKey
) -> None:
    quoting, enclaves = dirs
    initialize_state(quoting, enclaves, vendor_key=vendor)
    other = initialize_state(quoting.parent / "o", quoting.parent / "oe")
    os.replace(quoting.parent / "o" / VENDOR_KEY_FILE, quoting / VENDOR_KEY_FILE)
    assert other.mrsigner != mrsigner_of_public_key(vendor)
    with pytest.raises(QuotingStateError, match="does not match"):
        deploy_enclaves(quoting, enclaves, qe_svn=5)
    (quoting / VENDOR_KEY_FILE).write_text("junk")
    with pytest.raises(QuotingStateError, match="not a PEM"):
        load_vendor_key(quoting)
    (quoting / VENDOR_KEY_FILE).unlink()
    with pytest.raises(QuotingStateError, match="cannot read"):
        load_vendor_key(quoting)


def test_a_sigstruct_that_is_not_the_manifests_is_refused(
    dirs: tuple[Path, Path], vendor: rsa.RSAPrivateKey
) -> None:
    quoting, enclaves = dirs
    manifest = initialize_state(quoting, enclaves, vendor_key=vendor)
    pce_sig = manifest.pce.sigstruct_path.read_bytes()
    manifest.qe.sigstruct_path.write_bytes(pce_sig)
    with pytest.raises(QuotingStateError, match="does not match"):
        manifest.qe.read_sigstruct()
    manifest.qe.sigstruct_path.write_bytes(pce_sig[:-1])
    with pytest.raises(QuotingStateError, match="not a SIGSTRUCT"):
        manifest.qe.read_sigstruct()
    manifest.qe.sigstruct_path.unlink()
    with pytest.raises(QuotingStateError, match="cannot read"):
        manifest.qe.read_sigstruct()


def _document(manifest: EnclaveManifest) -> dict[str, object]:
    document: dict[str, object] = json.loads(manifest.to_json())
    return document


def _mutations(document: dict[str, object]) -> list[tuple[str, object]]:
    qe = document["qe"]
    assert isinstance(qe, dict)

    def with_qe(**changes: object) -> dict[str, object]:
        return {**document, "qe": {**qe, **changes}}

    without_qe_key = {**document, "qe": {k: v for k, v in qe.items() if k != "isvsvn"}}
    return [
        ("unknown key", {**document, "extra": 1}),
        ("missing key", {k: v for k, v in document.items() if k != "pce"}),
        ("format", {**document, "format": "other"}),
        ("version", {**document, "version": 2}),
        ("mrsigner hex", {**document, "mrsigner": "zz" * 32}),
        ("mrsigner size", {**document, "mrsigner": "00" * 31}),
        ("mrsigner type", {**document, "mrsigner": 5}),
        ("entry unknown key", with_qe(extra=1)),
        ("entry missing key", without_qe_key),
        ("absolute image", with_qe(image="/tmp/qe.sgxs")),
        ("image in a subdirectory", with_qe(image="sub/qe.sgxs")),
        ("image is the parent", with_qe(image="..")),
        ("empty sigstruct name", with_qe(sigstruct="")),
        ("digest size", with_qe(image_sha256="00" * 33)),
        ("isvprodid", with_qe(isvprodid=2)),
        ("svn bool", with_qe(isvsvn=True)),
        ("svn range", with_qe(isvsvn=1 << 16)),
        ("svn negative", with_qe(isvsvn=-1)),
        ("entry type", {**document, "qe": []}),
        ("top type", []),
    ]


def test_the_manifest_parser_is_strict(
    dirs: tuple[Path, Path], vendor: rsa.RSAPrivateKey
) -> None:
    quoting, enclaves = dirs
    manifest = initialize_state(quoting, enclaves, vendor_key=vendor)
    assert EnclaveManifest.from_json(manifest.to_json(), enclaves) == manifest
    for what, bad in _mutations(_document(manifest)):
        with pytest.raises(QuotingStateError):
            EnclaveManifest.from_json(json.dumps(bad).encode(), enclaves)
            pytest.fail(f"accepted: {what}")
    for junk in (b"", b"{", b"\xff"):
        with pytest.raises(QuotingStateError, match="not JSON"):
            EnclaveManifest.from_json(junk, enclaves)
    (quoting / MANIFEST_FILE).unlink()
    with pytest.raises(QuotingStateError, match="sgxemu init"):
        EnclaveManifest.load(quoting, enclaves)


def test_a_moved_state_directory_keeps_working(tmp_path: Path, vendor: rsa.RSAPrivateKey) -> None:
    """``sgxemu init`` builds under a temporary name and renames: the manifest names files
    relative to the enclave directory."""
    staging = tmp_path / ".staging"
    initialize_state(staging / "quoting", staging / "enclaves", vendor_key=vendor)
    final = tmp_path / "state"
    staging.rename(final)
    manifest = EnclaveManifest.load(final / "quoting", final / "enclaves")
    for entry in (manifest.pce, manifest.qe):
        assert entry.image.parent == final / "enclaves"
        Sigstruct.from_bytes(entry.read_sigstruct()).verify()
