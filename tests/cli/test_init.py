"""``sgxemu init``: a complete, private state directory, never overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sgxemu_cli.commands.init import initialize
from sgxemu_cli.errors import UsageError
from sgxemu_cli.service_pki import ADMIN_COMMON_NAME
from sgxemu_cli.state import SERVICES, StateLayout


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_lays_out_a_private_state_directory(tmp_path: Path) -> None:
    target = tmp_path / "state"
    initialize(target)
    layout = StateLayout(target)
    # Traversable, not listable: the device socket's own mode is the gate.
    assert _mode(target) == 0o711
    assert _mode(layout.run) == 0o711
    assert layout.marker.is_file() and _mode(layout.marker) == 0o600
    for d in (layout.tls, *(layout.component(s) for s in SERVICES)):
        assert d.is_dir() and _mode(d) == 0o700, d
    assert layout.enclaves.is_dir()
    secrets = [p for p in target.rglob("*") if p.suffix == ".key"]
    assert secrets, "no private keys were written"
    assert all(_mode(p) == 0o600 for p in secrets)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


def test_service_certificates_chain_to_the_service_ca(tmp_path: Path) -> None:
    target = tmp_path / "state"
    initialize(target)
    tls = StateLayout(target).tls
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    for name in (*SERVICES, "admin"):
        cert = x509.load_pem_x509_certificate((tls / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
    admin = x509.load_pem_x509_certificate((tls / "admin.pem").read_bytes())
    cn = admin.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == ADMIN_COMMON_NAME


def test_init_refuses_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "state"
    initialize(target)
    before = sorted(p.name for p in target.rglob("*"))
    with pytest.raises(UsageError, match="never overwrites"):
        initialize(target)
    assert sorted(p.name for p in target.rglob("*")) == before


def test_a_failed_init_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgxemu_cli.commands.init as init_module

    def boom(_tls: Path, _services: tuple[str, ...]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(init_module, "create_service_pki", boom)
    with pytest.raises(OSError, match="disk full"):
        initialize(tmp_path / "state")
    assert list(tmp_path.iterdir()) == []
