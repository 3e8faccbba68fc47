"""Platform fuses: 0600 files written atomically, refusal of bad files, owner epoch, TCB update."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sgx_platform.errors import FuseStoreError, TcbUpdateError
from sgx_platform.fuses import DEFAULT_CPUSVN, PlatformFuses, cpusvn_beyond
from sgx_rpc.files import write_atomic

FILES = ("root_seal_secret", "root_provisioning_secret", "owner_epoch", "cpusvn", "boot_counter")


def test_create_writes_private_files_and_open_reads_them(tmp_path: Path) -> None:
    d = tmp_path / "fuses"
    created = PlatformFuses.create(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in FILES:
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)  # no temp files left
    opened = PlatformFuses.open(d)
    assert opened.root_seal_secret == created.root_seal_secret
    assert opened.root_provisioning_secret == created.root_provisioning_secret
    assert opened.owner_epoch == created.owner_epoch
    assert opened.cpusvn == DEFAULT_CPUSVN
    assert created.root_seal_secret != created.root_provisioning_secret
    assert len(created.root_seal_secret) == 16


def test_two_platforms_have_independent_secrets(tmp_path: Path) -> None:
    a = PlatformFuses.create(tmp_path / "a")
    b = PlatformFuses.create(tmp_path / "b")
    assert a.root_seal_secret != b.root_seal_secret
    assert a.root_provisioning_secret != b.root_provisioning_secret


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    PlatformFuses.create(tmp_path)
    with pytest.raises(FuseStoreError, match="already exist"):
        PlatformFuses.create(tmp_path)


def test_open_or_create(tmp_path: Path) -> None:
    first = PlatformFuses.open_or_create(tmp_path)
    again = PlatformFuses.open_or_create(tmp_path)
    assert first.root_seal_secret == again.root_seal_secret


@pytest.mark.parametrize("name", FILES[:4])
def test_open_refuses_missing_file(tmp_path: Path, name: str) -> None:
    PlatformFuses.create(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(FuseStoreError, match="missing"):
        PlatformFuses.open(tmp_path)


@pytest.mark.parametrize("name", FILES[:4])
@pytest.mark.parametrize("size", [0, 15, 17])
def test_open_refuses_wrong_length(tmp_path: Path, name: str, size: int) -> None:
    PlatformFuses.create(tmp_path)
    write_atomic(tmp_path / name, bytes(size), mode=0o600)
    with pytest.raises(FuseStoreError, match="expected 16 bytes"):
        PlatformFuses.open(tmp_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_open_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    PlatformFuses.create(tmp_path)
    os.chmod(tmp_path / "root_seal_secret", mode)
    with pytest.raises(FuseStoreError, match="must be 0600"):
        PlatformFuses.open(tmp_path)


def test_open_refuses_symlink(tmp_path: Path) -> None:
    PlatformFuses.create(tmp_path / "real")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(bytes(16))
    os.chmod(elsewhere, 0o600)
    target = tmp_path / "real" / "root_seal_secret"
    target.unlink()
    target.symlink_to(elsewhere)
    with pytest.raises(FuseStoreError):
        PlatformFuses.open(tmp_path / "real")


def test_owner_epoch_is_owner_set_and_persists(tmp_path: Path) -> None:
    f = PlatformFuses.create(tmp_path, owner_epoch=bytes(16))
    assert f.owner_epoch == bytes(16)
    f.set_owner_epoch(b"\x42" * 16)
    assert PlatformFuses.open(tmp_path).owner_epoch == b"\x42" * 16
    with pytest.raises(ValueError):
        f.set_owner_epoch(b"\x42" * 15)


def test_tcb_update_raises_cpusvn_and_persists(tmp_path: Path) -> None:
    f = PlatformFuses.create(tmp_path, cpusvn=bytes([1] * 16))
    assert f.update_tcb() == bytes([2] + [1] * 15)
    assert PlatformFuses.open(tmp_path).cpusvn == bytes([2] + [1] * 15)
    assert f.update_tcb(bytes([2] * 16)) == bytes([2] * 16)


@pytest.mark.parametrize(
    "new",
    [bytes([1] * 16), bytes([2] * 16), bytes([3] * 15 + [1])],
    ids=["downgrade", "same", "one-component-lower"],
)
def test_tcb_update_refuses_downgrade_or_no_change(tmp_path: Path, new: bytes) -> None:
    f = PlatformFuses.create(tmp_path, cpusvn=bytes([2] * 16))
    with pytest.raises(TcbUpdateError):
        f.update_tcb(new)
    assert PlatformFuses.open(tmp_path).cpusvn == bytes([2] * 16)


def test_tcb_update_at_255(tmp_path: Path) -> None:
    f = PlatformFuses.create(tmp_path, cpusvn=bytes([255] + [0] * 15))
    with pytest.raises(TcbUpdateError):
        f.update_tcb()


def test_boot_counter_increments_across_opens(tmp_path: Path) -> None:
    f = PlatformFuses.create(tmp_path)
    assert f.next_boot() == 1
    assert f.next_boot() == 2
    assert PlatformFuses.open(tmp_path).next_boot() == 3


def test_cpusvn_beyond_is_component_wise() -> None:
    cur = bytes([3, 3] + [0] * 14)
    assert not cpusvn_beyond(cur, cur)
    assert not cpusvn_beyond(bytes([2, 3] + [0] * 14), cur)
    assert cpusvn_beyond(bytes([4, 0] + [0] * 14), cur)
    assert cpusvn_beyond(bytes([0, 0] + [0] * 13 + [1]), cur)
    with pytest.raises(ValueError):
        cpusvn_beyond(bytes(15), cur)


def test_rewrites_replace_whole_files_and_stay_private(tmp_path: Path) -> None:
    fuses = PlatformFuses.create(tmp_path, owner_epoch=b"\x01" * 16)
    fuses.set_owner_epoch(b"\x02" * 16)
    fuses.update_tcb()
    assert fuses.next_boot() == 1
    for name in FILES:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)  # no temp files left
    assert (tmp_path / "owner_epoch").read_bytes() == b"\x02" * 16
    assert PlatformFuses.open(tmp_path).cpusvn == fuses.cpusvn != DEFAULT_CPUSVN
