"""The command line's file helpers: an atomic write's OS errors are one-line usage errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sgxemu_cli.errors import EXIT_USAGE, UsageError
from sgxemu_cli.io import write_atomic


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.bin"
    with pytest.raises(UsageError, match=r"cannot write .*out\.bin.*No such file") as raised:
        write_atomic(target, b"data")
    assert raised.value.exit_code == EXIT_USAGE
    assert list(tmp_path.iterdir()) == []


def test_a_directory_in_the_way_is_a_usage_error_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_bytes(b"x")
    with pytest.raises(UsageError, match="cannot write"):
        write_atomic(tmp_path / "out", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_default_and_explicit_modes(tmp_path: Path) -> None:
    write_atomic(str(tmp_path / "public"), b"pub")
    write_atomic(tmp_path / "private", b"key", mode=0o600)
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert (tmp_path / "public").read_bytes() == b"pub"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private", "public"]
