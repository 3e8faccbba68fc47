"""Files a service keeps in its state directory: atomic replacement and durable directories.

Invariants:

* :func:`write_atomic` leaves either the old file or the complete new one, never a part: it
  writes a fresh temporary file in the target's directory (created exclusively, not following
  a symbolic link), gives it ``mode`` before writing a byte, fsyncs it, renames it over the
  target and fsyncs the directory. On any failure before the rename the temporary file is
  removed and the target is untouched; the error propagates unchanged (``OSError``).
* :func:`fsync_directory` makes a rename or a new entry in a directory durable.
* :func:`read_private` reads a secret file only if it is a regular file reached without a
  symbolic link, that neither group nor others may read or write, and no larger than a limit;
  every refusal is an ``OSError`` (``FileNotFoundError`` when it is missing) whose
  ``strerror`` says what is wrong and how to fix it. Contents are never logged.
* Nothing here decides a policy, reads a secret or imports a component. Create-only writes
  that must refuse an existing target (``O_EXCL`` on the target itself) are not replacements
  and stay with their component, as do readers whose refusals are worded for one component.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data``, file mode ``mode``: temp file, fsync, rename, fsync dir."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path, *, limit: int = 1 << 20) -> bytes:
    """The whole private file ``path`` (see the module's invariants)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise OSError(
                errno.EPERM,
                f"mode {mode:04o} lets others at a secret; it must be 0600 (chmod 600 {path})",
                str(path),
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data
