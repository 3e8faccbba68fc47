"""File and output helpers for commands: readable errors for unreadable input, atomic writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sgx_rpc import files
from sgxemu_cli.errors import UsageError


def read_input(path: str, what: str, *, max_bytes: int = 1 << 31) -> bytes:
    """Read a whole input file, turning every OS error into a one-line :class:`UsageError`."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path!r} is a directory, not a file") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise UsageError(f"{what} {path!r} is larger than {max_bytes} bytes")
    return data


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (:func:`sgx_rpc.files.write_atomic`).

    Any OS error becomes a one-line :class:`UsageError` naming the file.
    """
    target = Path(path)
    try:
        files.write_atomic(target, data, mode=mode)
    except OSError as e:
        raise UsageError(f"cannot write {str(target)!r}: {e.strerror or e}") from None


def print_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    json.dump(document, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
