"""The load policy: the LSM hooks the seed asked for (SGX-REFERENCE §2), applied at page add.

The rules, each with a stable reason code, each on by default and switchable:

* ``exec_only_from_file`` (``LOAD_EXEC_ONLY_FROM_FILE``): an executable page comes only from an
  SGXS image the platform opened itself from an allowed directory and, when a digest list is
  configured, only from an image whose SHA-256 is listed (Lutomirski's "pass an fd for the
  enclave's file so LSMs can judge it");
* ``no_write_exec`` (``LOAD_NO_WRITE_EXEC``): no page is both writable and executable
  (SELinux's EXECMEM, RFC ``SGX_MAPWX``);
* ``no_exec_from_wire`` (``LOAD_NO_EXEC_FROM_WIRE``): no executable page from bytes a client
  sent over the wire (``AddPages``; RFC ``ENCLAVE_EXECANON``);
* ``no_unmeasured_exec`` (``LOAD_NO_UNMEASURED_EXEC``): no executable page that is not fully
  measured into MRENCLAVE (RFC ``ENCLAVE_EXECUNMR``).

Invariants:

* A page is judged before anything is added; a file load judges every page of the image
  before ECREATE, so a denial never leaves a half-built enclave behind.
* The policy is pulled from a :class:`LoadPolicyProvider` at every call (launchctl will own it;
  the default provider serves the defaults). A provider that fails makes every load fail closed
  (``LOAD_POLICY_UNAVAILABLE``).
* :func:`open_image` is the only way the platform reads an image: a path confined to an allowed
  directory, every component opened with ``O_NOFOLLOW`` relative to its parent (no symbolic
  link anywhere below the allowed directory, no ``..``), a regular file, at most
  ``max_bytes``, read once; the SHA-256 is of exactly those bytes and the image is parsed from
  exactly those bytes. The platform never opens a client-named path outside the allowed
  directories, whatever the rules say (it would be a confused deputy), and refuses an allowed
  directory that group or others may write.
* Every denial names its rule and says how to fix it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Protocol

from sgx_platform.arch.secinfo import SecInfo, SecInfoFlags
from sgx_platform.driver_errors import DriverError, LoadPolicyDeniedError

log = logging.getLogger(__name__)

#: The largest image the platform reads (bytes) unless configured otherwise.
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024 * 1024


class LoadRule(StrEnum):
    """The switchable load rules; the value is the name used in configuration and errors."""

    EXEC_ONLY_FROM_FILE = "exec_only_from_file"
    NO_WRITE_EXEC = "no_write_exec"
    NO_EXEC_FROM_WIRE = "no_exec_from_wire"
    NO_UNMEASURED_EXEC = "no_unmeasured_exec"

    @property
    def reason(self) -> str:
        """The stable reason code of a denial by this rule."""
        return "LOAD_" + self.value.upper()


ALL_RULES = frozenset(LoadRule)


def _switch_off(rule: LoadRule) -> str:
    return f"or switch the rule off: sgxemu launchctl policy set {rule.value} off"


@dataclass(frozen=True)
class LoadPolicy:
    """Allowed directories, optional allowed image digests, and the rules that are on."""

    allowed_dirs: tuple[Path, ...]
    #: SHA-256 digests of the images that may supply executable pages; None: any image file.
    allowed_digests: frozenset[bytes] | None = None
    enabled: frozenset[LoadRule] = ALL_RULES

    def __post_init__(self) -> None:
        dirs = tuple(Path(os.path.abspath(d)) for d in self.allowed_dirs)
        object.__setattr__(self, "allowed_dirs", dirs)
        object.__setattr__(self, "enabled", frozenset(LoadRule(r) for r in self.enabled))
        if self.allowed_digests is not None:
            digests = frozenset(bytes(d) for d in self.allowed_digests)
            if any(len(d) != 32 for d in digests):
                raise ValueError("allowed image digests are 32-byte SHA-256 values")
            object.__setattr__(self, "allowed_digests", digests)

    @classmethod
    def defaults(cls, enclaves_dir: Path) -> LoadPolicy:
        """Every rule on, images from ``enclaves_dir`` (``$STATE/enclaves/``), any digest."""
        return cls(allowed_dirs=(enclaves_dir,))

    def is_on(self, rule: LoadRule) -> bool:
        return rule in self.enabled

    def with_rule(self, rule: LoadRule, on: bool) -> LoadPolicy:
        enabled = self.enabled | {rule} if on else self.enabled - {rule}
        return LoadPolicy(self.allowed_dirs, self.allowed_digests, frozenset(enabled))

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary (for logs and platform info)."""
        return {
            "allowed_dirs": [str(d) for d in self.allowed_dirs],
            "allowed_digests": None
            if self.allowed_digests is None
            else sorted(d.hex() for d in self.allowed_digests),
            "rules": {r.value: self.is_on(r) for r in LoadRule},
        }


class LoadPolicyProvider(Protocol):
    """Where the driver pulls the load policy from (launchctl will provide it)."""

    def load_policy(self) -> LoadPolicy: ...


@dataclass(frozen=True)
class StaticLoadPolicyProvider:
    """A fixed policy: the configuration's (by default: every rule on)."""

    policy: LoadPolicy

    def load_policy(self) -> LoadPolicy:
        return self.policy


def current_policy(provider: LoadPolicyProvider) -> LoadPolicy:
    """The provider's policy, or a fail-closed EACCES when it cannot give one."""
    try:
        policy = provider.load_policy()
    except Exception as e:  # fail closed whatever went wrong, and say so
        log.warning("load policy unavailable: %s", e)
        raise DriverError(
            errno.EACCES,
            "the load policy is unavailable, so no page may be added (fail closed)",
            reason="LOAD_POLICY_UNAVAILABLE",
            rule="load_policy",
            hint="start the launch-control service that provides the policy and retry",
        ) from e
    if not isinstance(policy, LoadPolicy):
        raise DriverError(
            errno.EACCES,
            "the load policy provider returned no policy (fail closed)",
            reason="LOAD_POLICY_UNAVAILABLE",
            rule="load_policy",
        )
    return policy


# -- where a page comes from -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    """An SGXS image as the platform read it: where, exactly which bytes, and their SHA-256."""

    path: Path
    data: bytes = field(repr=False)
    sha256: bytes

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


@dataclass(frozen=True)
class PageOrigin:
    """Where a page's bytes come from: an image file the platform opened, or the wire."""

    image: ImageFile | None

    @property
    def from_wire(self) -> bool:
        return self.image is None

    def describe(self) -> str:
        if self.image is None:
            return "bytes sent over the wire"
        return f"image {self.image.path} (sha256 {self.image.sha256_hex})"


WIRE = PageOrigin(None)


@dataclass(frozen=True)
class PageLoad:
    """One page about to be added: its offset, SECINFO, whether it is fully measured."""

    offset: int
    secinfo: SecInfo
    measured: bool


def permission_text(secinfo: SecInfo) -> str:
    """``RWX``-style text of a SECINFO's permissions (``-`` for a missing one)."""
    flags = secinfo.flags
    return "".join(
        letter if flags & bit else "-"
        for letter, bit in (("R", SecInfoFlags.R), ("W", SecInfoFlags.W), ("X", SecInfoFlags.X))
    )


def _executable(secinfo: SecInfo) -> bool:
    return bool(secinfo.flags & SecInfoFlags.X)


def _writable(secinfo: SecInfo) -> bool:
    return bool(secinfo.flags & SecInfoFlags.W)


def check_page(policy: LoadPolicy, page: PageLoad, origin: PageOrigin) -> None:
    """Raise :class:`LoadPolicyDeniedError` when an enabled rule forbids adding ``page``.

    Rules are checked in a fixed order (wire, file, W+X, unmeasured), so a page that breaks
    several always names the same rule.
    """
    if not _executable(page.secinfo):
        return
    where = f"the page at offset {page.offset:#x}"
    if origin.from_wire:
        if policy.is_on(LoadRule.NO_EXEC_FROM_WIRE):
            rule = LoadRule.NO_EXEC_FROM_WIRE
            raise LoadPolicyDeniedError(
                rule.value,
                rule.reason,
                f"{where} is executable but its bytes were sent over the wire "
                f"(rule {rule.value})",
                "load executable pages from an SGXS image in an allowed directory with "
                "LoadEnclaveFromFile (sgxemu enclave load), " + _switch_off(rule),
            )
        if policy.is_on(LoadRule.EXEC_ONLY_FROM_FILE):
            rule = LoadRule.EXEC_ONLY_FROM_FILE
            raise LoadPolicyDeniedError(
                rule.value,
                rule.reason,
                f"{where} is executable but does not come from an image file the platform "
                f"opened (rule {rule.value})",
                "put the image in "
                + (str(policy.allowed_dirs[0]) if policy.allowed_dirs else "an allowed directory")
                + " and load it with LoadEnclaveFromFile (sgxemu enclave load), "
                + _switch_off(rule),
            )
    elif (
        policy.is_on(LoadRule.EXEC_ONLY_FROM_FILE)
        and policy.allowed_digests is not None
        and origin.image is not None
        and origin.image.sha256 not in policy.allowed_digests
    ):
        rule = LoadRule.EXEC_ONLY_FROM_FILE
        digest = origin.image.sha256_hex
        raise LoadPolicyDeniedError(
            rule.value,
            rule.reason,
            f"{where} is executable but the image's SHA-256 {digest} is not on the list of "
            f"allowed image digests (rule {rule.value})",
            f"allow it: sgxemu launchctl policy allow-digest {digest}, " + _switch_off(rule),
        )
    if policy.is_on(LoadRule.NO_WRITE_EXEC) and _writable(page.secinfo):
        rule = LoadRule.NO_WRITE_EXEC
        raise LoadPolicyDeniedError(
            rule.value,
            rule.reason,
            f"{where} is both writable and executable (SECINFO permissions "
            f"{permission_text(page.secinfo)}; rule {rule.value})",
            "declare code pages R+X and data pages R+W, " + _switch_off(rule),
        )
    if policy.is_on(LoadRule.NO_UNMEASURED_EXEC) and not page.measured:
        rule = LoadRule.NO_UNMEASURED_EXEC
        raise LoadPolicyDeniedError(
            rule.value,
            rule.reason,
            f"{where} is executable but not fully measured, so MRENCLAVE does not cover its "
            f"code (rule {rule.value})",
            "add it with the measure flag (EEXTEND every chunk), " + _switch_off(rule),
        )


def check_pages(policy: LoadPolicy, pages: Iterable[PageLoad], origin: PageOrigin) -> None:
    """:func:`check_page` for each page, before any is added."""
    for page in pages:
        check_page(policy, page, origin)


# -- opening an image the way an LSM would want it -----------------------------------------------


def _image_denied(reason: str, message: str, hint: str, code: int = errno.EACCES) -> DriverError:
    return DriverError(code, message, reason=reason, rule="image_path", hint=hint)


def _confine(policy: LoadPolicy, requested: str) -> tuple[Path, PurePosixPath]:
    """The allowed directory and the relative path below it that ``requested`` names."""
    if not requested or "\x00" in requested:
        raise DriverError(
            errno.EINVAL, "the image path is empty or contains a NUL byte",
            reason="IMAGE_PATH_INVALID",
        )
    if not policy.allowed_dirs:
        raise _image_denied(
            "IMAGE_PATH_NOT_ALLOWED",
            "the load policy allows no image directory",
            "configure an allowed directory (sgxemu launchctl policy allow-dir DIR)",
        )
    pure = PurePosixPath(requested)
    if ".." in pure.parts:
        raise _image_denied(
            "IMAGE_PATH_NOT_ALLOWED",
            f"the image path {requested!r} contains '..'",
            "name the image by its path inside an allowed directory",
        )
    if not pure.is_absolute():
        base = policy.allowed_dirs[0]
        relative = PurePosixPath(os.path.normpath(pure))
        if str(relative) == ".":
            raise DriverError(
                errno.EINVAL, "the image path names a directory", reason="IMAGE_NOT_REGULAR"
            )
        return base, relative
    normalized = Path(os.path.normpath(pure))
    for base in policy.allowed_dirs:
        if normalized != base and normalized.is_relative_to(base):
            return base, PurePosixPath(normalized.relative_to(base))
    dirs = ", ".join(str(d) for d in policy.allowed_dirs)
    raise _image_denied(
        "IMAGE_PATH_NOT_ALLOWED",
        f"the image {requested} is outside the allowed directories ({dirs}); the platform "
        "opens images only there",
        f"copy it into {policy.allowed_dirs[0]}, or allow its directory: sgxemu launchctl "
        "policy allow-dir DIR",
    )


def _check_allowed_dir(fd: int, base: Path) -> None:
    st = os.fstat(fd)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _image_denied(
            "ALLOWED_DIR_WRITABLE",
            f"the allowed directory {base} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so anyone could plant an image there",
            f"chmod go-w {base}",
        )
    if st.st_uid not in (0, os.geteuid()):
        raise _image_denied(
            "ALLOWED_DIR_WRITABLE",
            f"the allowed directory {base} belongs to uid {st.st_uid}, neither root nor the "
            "platform's user",
            f"chown it to the platform's user or root: {base}",
        )


def open_image(policy: LoadPolicy, requested: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> (
    ImageFile
):
    """Open, read and hash an image under an allowed directory without following symlinks."""
    base, relative = _confine(policy, requested)
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _image_denied(
            "IMAGE_PATH_NOT_ALLOWED",
            f"cannot open the allowed directory {base}: {e.strerror}",
            "create it (sgxemu init does) or fix the load policy",
            errno.ENOENT if e.errno == errno.ENOENT else errno.EACCES,
        ) from None
    fds = [dir_fd]
    try:
        _check_allowed_dir(dir_fd, base)
        parts = relative.parts
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            flags |= (os.O_NONBLOCK | os.O_NOCTTY) if last else os.O_DIRECTORY
            try:
                fd = os.open(part, flags, dir_fd=fds[-1])
            except OSError as e:
                shown = base / PurePosixPath(*parts[: i + 1])
                if e.errno == errno.ELOOP or (
                    e.errno == errno.ENOTDIR and not last and _is_symlink(part, fds[-1])
                ):
                    raise _image_denied(
                        "IMAGE_SYMLINK",
                        f"{shown} is a symbolic link; the platform follows none when it opens "
                        "an image",
                        "copy the image itself into the allowed directory",
                    ) from None
                if e.errno == errno.ENOENT:
                    raise _image_denied(
                        "IMAGE_NOT_FOUND",
                        f"the image {shown} does not exist",
                        f"copy it into {base}",
                        errno.ENOENT,
                    ) from None
                raise _image_denied(
                    "IMAGE_UNREADABLE",
                    f"cannot open {shown}: {e.strerror}",
                    "check the file and its permissions",
                    e.errno or errno.EACCES,
                ) from None
            fds.append(fd)
        fd = fds[-1]
        st = os.fstat(fd)
        shown_path = base / relative
        if not stat.S_ISREG(st.st_mode):
            raise DriverError(
                errno.EINVAL,
                f"{shown_path} is not a regular file",
                reason="IMAGE_NOT_REGULAR",
                hint="name an SGXS image file",
            )
        if st.st_size > max_bytes:
            raise DriverError(
                errno.EFBIG,
                f"{shown_path} has {st.st_size} bytes, more than the {max_bytes} the platform "
                "reads",
                reason="IMAGE_TOO_LARGE",
            )
        data = _read_all(fd, max_bytes, shown_path)
    finally:
        for fd in reversed(fds):
            os.close(fd)
    return ImageFile(shown_path, data, hashlib.sha256(data).digest())


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _read_all(fd: int, max_bytes: int, shown: Path) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while True:
        piece = os.read(fd, 1 << 20)
        if not piece:
            break
        total += len(piece)
        if total > max_bytes:
            raise DriverError(
                errno.EFBIG,
                f"{shown} grew beyond the {max_bytes} bytes the platform reads",
                reason="IMAGE_TOO_LARGE",
            )
        pieces.append(piece)
    return b"".join(pieces)
