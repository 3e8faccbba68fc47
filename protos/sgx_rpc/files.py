"""Files a service keeps in its state directory: atomic replacement and durable directories.

Invariants:

* :func:`write_atomic` leaves either the old file or the complete new one, never a part: it
  writes a fresh temporary file in the target's directory (created exclusively, not following
  a symbolic link), gives it ``mode`` before writing a byte, fsyncs it, renames it over the
  target and fsyncs the directory. On any failure before the rename the temporary file is
  removed and the target is untouched; the error propagates unchanged (``OSError``).
* :func:`fsync_directory` makes a rename or a new entry in a directory durable.
* Nothing here decides a policy, reads a secret or imports a component. Create-only writes
  that must refuse an existing target (``O_EXCL`` on the target itself) are not replacements
  and stay with their component, as do readers whose refusals are worded for one component.
"""

from __future__ import annotations

import contextlib
import os
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
