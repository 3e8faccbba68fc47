"""The verifier's private files (the challenge key, the token keyring's keys and index).

Invariants:

* :func:`write_private_atomic` leaves either the old file or the complete new one, mode 0600
  (:func:`sgx_rpc.files.write_atomic`: a temporary file in the same directory made 0600
  before anything is written to it, fsync, rename over the target, fsync of the directory).
* :func:`read_private` opens without following a symbolic link and refuses a file that group
  or others may read or write, before reading it; it reads at most ``limit`` bytes, so a
  caller that expects an exact size sees an oversized file as too long. Every refusal raises
  the caller's error class with a sentence naming the file. Contents are never logged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sgx_rpc.files import write_atomic
from sgx_verifier.errors import VerificationError


def write_private_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600 (:func:`sgx_rpc.files.write_atomic`)."""
    write_atomic(path, data, mode=0o600)


def read_private(
    path: Path, what: str, *, limit: int, error: type[VerificationError]
) -> bytes:
    """Up to ``limit`` bytes of the private file ``path`` (``what`` names it in errors)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise error(f"cannot open {what} {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise error(
                f"{what} {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})"
            )
        return f.read(limit)
