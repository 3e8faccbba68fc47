"""Atomic writes of the services' state files and durable directories (``sgx_rpc.files``)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_rpc import files
from sgx_rpc.files import fsync_directory, read_private, write_atomic


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# -- write_atomic: failures first ---------------------------------------------------------


def test_a_failed_fsync_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"old", mode=0o600)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(files.os, "fsync", broken)
    with pytest.raises(OSError, match="I/O error"):
        write_atomic(target, b"new", mode=0o600)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_interrupted_write_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int, data: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "key", b"secret", mode=0o600)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        write_atomic(target, b"data", mode=0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]
    assert (target / "inside").read_bytes() == b"x"


def test_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "file", b"data", mode=0o600)
    assert list(tmp_path.iterdir()) == []


# -- write_atomic: what it does ------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o400])
def test_the_mode_is_applied_whatever_the_umask(
    tmp_path: Path, umask_077: None, mode: int
) -> None:
    target = tmp_path / "file"
    write_atomic(target, b"content", mode=mode)
    assert _mode(target) == mode
    assert target.read_bytes() == b"content"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_rewrite_replaces_the_file_instead_of_writing_into_it(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomic(target, b"first version", mode=0o644)
    old_link = tmp_path / "old-link"
    os.link(target, old_link)
    write_atomic(target, b"2", mode=0o600)
    assert target.read_bytes() == b"2"
    assert _mode(target) == 0o600
    assert old_link.read_bytes() == b"first version", "the old inode was not written into"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old-link"]


def test_a_symbolic_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep")
    target = tmp_path / "file"
    target.symlink_to(elsewhere)
    write_atomic(target, b"new", mode=0o600)
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"keep"


def test_empty_and_large_contents(tmp_path: Path) -> None:
    write_atomic(tmp_path / "empty", b"", mode=0o600)
    assert (tmp_path / "empty").read_bytes() == b""
    big = bytes(range(256)) * 4096
    write_atomic(tmp_path / "big", big, mode=0o600)
    assert (tmp_path / "big").read_bytes() == big


def test_the_file_and_then_its_directory_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        st = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        synced.append((kind, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", recording)
    target = tmp_path / "file"
    write_atomic(target, b"durable", mode=0o600)
    assert synced == [("file", target.stat().st_ino), ("dir", tmp_path.stat().st_ino)]
    synced.clear()
    fsync_directory(tmp_path)
    assert synced == [("dir", tmp_path.stat().st_ino)]


def test_fsync_directory_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "f")


def test_read_private_reads_a_0600_regular_file(tmp_path: Path) -> None:
    secret = tmp_path / "k"
    write_atomic(secret, b"sealed", mode=0o600)
    assert read_private(secret) == b"sealed"


def test_read_private_refuses_what_others_may_read_a_symlink_a_directory_and_oversize(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "k"
    write_atomic(secret, b"x" * 10, mode=0o644)
    with pytest.raises(OSError, match="chmod 600"):
        read_private(secret)
    os.chmod(secret, 0o600)
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(OSError) as followed:
        read_private(link)
    assert followed.value.errno == errno.ELOOP
    with pytest.raises(OSError, match="larger than 4 bytes"):
        read_private(secret, limit=4)
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing")
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(OSError):
        read_private(tmp_path / "d")
