"""The platform's fused secrets and owner/TCB settings, kept in the platform's own directory.

Invariants:

* Two independent 128-bit root secrets, generated once from ``secrets.token_bytes`` and never
  rewritten: the root *seal* secret (SDM "SEAL_KEY_FUSES") and the root *provisioning* secret.
  Key derivation (``keys.py``, ADR 0002) uses them; nothing else reads them.
* OWNEREPOCH (16 bytes) is owner-set state; CPUSVN (16 bytes) is a platform setting that only a
  TCB update changes, and only upwards: every component of the new CPUSVN is >= the old one and
  at least one is greater (ADR 0003 defines "beyond" component-wise).
* Every file is mode 0600 inside a 0700 directory and is written atomically (write to a fresh
  temporary file, fsync, rename over the target, fsync the directory). A secret file that is
  group- or world-accessible, of the wrong length, or missing is refused (:class:`FuseStoreError`).
* A boot counter in the same directory is incremented at every boot of a CPU on these fuses
  (``next_boot``), so boot epochs differ across restarts as well as resets.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from sgx_platform.errors import FuseStoreError, TcbUpdateError
from sgx_rpc.files import write_atomic

SECRET_SIZE = 16
CPUSVN_SIZE = 16
OWNER_EPOCH_SIZE = 16

#: CPUSVN of a freshly created platform: eight components at SVN 2, the rest 0.
DEFAULT_CPUSVN = bytes([2] * 8 + [0] * 8)

_SEAL = "root_seal_secret"
_PROVISION = "root_provisioning_secret"
_OWNER_EPOCH = "owner_epoch"
_CPUSVN = "cpusvn"
_BOOT = "boot_counter"
_ALL = (_SEAL, _PROVISION, _OWNER_EPOCH, _CPUSVN, _BOOT)
_BOOT_SIZE = 8


def cpusvn_beyond(candidate: bytes, current: bytes) -> bool:
    """True when ``candidate`` is beyond ``current``: some component (byte) is greater.

    EGETKEY and EINIT refuse such a CPUSVN with SGX_INVALID_CPUSVN (ADR 0003).
    """
    if len(candidate) != CPUSVN_SIZE or len(current) != CPUSVN_SIZE:
        raise ValueError("CPUSVN values are 16 bytes")
    return any(c > k for c, k in zip(candidate, current, strict=True))


class PlatformFuses:
    """The secrets and settings of one emulated platform, backed by files in ``directory``.

    Create once with :meth:`create`; every later boot uses :meth:`open`. Two platforms are two
    directories: their root secrets are independent random values.
    """

    __slots__ = ("_cpusvn", "_directory", "_owner_epoch", "_provision", "_seal")

    def __init__(
        self, directory: Path, seal: bytes, provision: bytes, owner_epoch: bytes, cpusvn: bytes
    ) -> None:
        self._directory = directory
        self._seal = seal
        self._provision = provision
        self._owner_epoch = owner_epoch
        self._cpusvn = cpusvn

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        cpusvn: bytes = DEFAULT_CPUSVN,
        owner_epoch: bytes | None = None,
    ) -> PlatformFuses:
        """Generate fresh fuses in ``directory`` (created 0700); refuse to overwrite any."""
        directory = Path(directory)
        _check_len(cpusvn, CPUSVN_SIZE, "CPUSVN")
        epoch = secrets.token_bytes(OWNER_EPOCH_SIZE) if owner_epoch is None else owner_epoch
        _check_len(epoch, OWNER_EPOCH_SIZE, "OWNEREPOCH")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = [name for name in _ALL if (directory / name).exists()]
        if existing:
            raise FuseStoreError(
                f"{directory}: platform fuses already exist ({', '.join(existing)}); "
                "refusing to overwrite them"
            )
        seal = secrets.token_bytes(SECRET_SIZE)
        provision = secrets.token_bytes(SECRET_SIZE)
        _write(directory / _SEAL, seal)
        _write(directory / _PROVISION, provision)
        _write(directory / _OWNER_EPOCH, epoch)
        _write(directory / _CPUSVN, cpusvn)
        _write(directory / _BOOT, bytes(_BOOT_SIZE))
        return cls(directory, seal, provision, epoch, cpusvn)

    @classmethod
    def open(cls, directory: Path) -> PlatformFuses:
        """Load existing fuses; refuse missing, mis-sized or group/world-accessible files."""
        directory = Path(directory)
        return cls(
            directory,
            _read(directory / _SEAL, SECRET_SIZE),
            _read(directory / _PROVISION, SECRET_SIZE),
            _read(directory / _OWNER_EPOCH, OWNER_EPOCH_SIZE),
            _read(directory / _CPUSVN, CPUSVN_SIZE),
        )

    @classmethod
    def open_or_create(cls, directory: Path) -> PlatformFuses:
        """:meth:`open` when the fuses exist, else :meth:`create` with defaults."""
        if (Path(directory) / _SEAL).exists():
            return cls.open(directory)
        return cls.create(directory)

    # -- values --------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def root_seal_secret(self) -> bytes:
        return self._seal

    @property
    def root_provisioning_secret(self) -> bytes:
        return self._provision

    @property
    def owner_epoch(self) -> bytes:
        return self._owner_epoch

    @property
    def cpusvn(self) -> bytes:
        return self._cpusvn

    # -- owner and TCB operations ----------------------------------------------------------

    def set_owner_epoch(self, value: bytes) -> None:
        """Set OWNEREPOCH (an owner operation); keys sealed under the old value stop opening."""
        _check_len(value, OWNER_EPOCH_SIZE, "OWNEREPOCH")
        _write(self._directory / _OWNER_EPOCH, bytes(value))
        self._owner_epoch = bytes(value)

    def update_tcb(self, new_cpusvn: bytes | None = None) -> bytes:
        """Raise CPUSVN (a TCB update). Default: component 0 + 1. Returns the new CPUSVN."""
        if new_cpusvn is None:
            if self._cpusvn[0] == 0xFF:
                raise TcbUpdateError("CPUSVN component 0 is already 255")
            new_cpusvn = bytes([self._cpusvn[0] + 1]) + self._cpusvn[1:]
        _check_len(new_cpusvn, CPUSVN_SIZE, "CPUSVN")
        if cpusvn_beyond(self._cpusvn, new_cpusvn):
            raise TcbUpdateError(
                f"CPUSVN {new_cpusvn.hex()} would lower a component of {self._cpusvn.hex()}"
            )
        if new_cpusvn == self._cpusvn:
            raise TcbUpdateError(f"CPUSVN is already {new_cpusvn.hex()}")
        _write(self._directory / _CPUSVN, bytes(new_cpusvn))
        self._cpusvn = bytes(new_cpusvn)
        return self._cpusvn

    def next_boot(self) -> int:
        """Increment and persist the boot counter; return the new boot number (>= 1)."""
        path = self._directory / _BOOT
        current = int.from_bytes(_read(path, _BOOT_SIZE), "little")
        boot = current + 1
        _write(path, boot.to_bytes(_BOOT_SIZE, "little"))
        return boot

    def __repr__(self) -> str:
        return f"PlatformFuses({str(self._directory)!r}, cpusvn={self._cpusvn.hex()})"


def _check_len(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")


def _write(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o600)


def _read(path: Path, size: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FuseStoreError(f"{path}: platform fuse file missing") from None
    except OSError as e:
        raise FuseStoreError(f"{path}: cannot open platform fuse file: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FuseStoreError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise FuseStoreError(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o} gives access to group or others; "
                "must be 0600"
            )
        data = os.read(fd, size + 1)
    finally:
        os.close(fd)
    if len(data) != size:
        raise FuseStoreError(f"{path}: expected {size} bytes, found {len(data)}")
    return data
