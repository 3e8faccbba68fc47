"""The load policy launchctl owns and the platform pulls (the LSM question of the seed).

The platform judges every page against it before EADD (``sgx_platform.load_policy``): which
directories it may open SGXS images from, optionally which image SHA-256 digests may supply
executable pages, and which rules are on. The rule names here are the platform's
configuration names; a test checks that both lists agree.

Invariants:

* A :class:`LoadPolicy` is immutable; every change returns a new one. Allowed directories are
  absolute, normalized, free of ``..`` and NUL, kept in the order they were allowed (the first
  is where the platform looks for a relative image path), without duplicates.
* ``allowed_digests`` is ``None`` (any image in an allowed directory) until the first digest is
  allowed; from then on only listed images may supply executable pages.
* Unknown rule names are refused, never ignored.
* :func:`bootstrap_policy` is the most restrictive policy that still lets the launch enclave
  load: every rule on, the LE's directory only, the LE image's digest only. It is what the
  platform gets while the daemon starts for a boot and its own state is not yet open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sgx_launchctl.errors import InvalidRequestError

#: The platform's load rules (``sgx_platform.load_policy.LoadRule`` values), in its order.
RULES: tuple[str, ...] = (
    "exec_only_from_file",
    "no_write_exec",
    "no_exec_from_wire",
    "no_unmeasured_exec",
)
ALL_RULES = frozenset(RULES)
MAX_DIRS = 64
MAX_DIGESTS = 4096


def _directory(path: str | Path) -> str:
    text = str(path)
    if not text or "\x00" in text:
        raise InvalidRequestError("a directory must be a non-empty path without NUL bytes")
    pure = PurePosixPath(text)
    if not pure.is_absolute():
        raise InvalidRequestError(f"{text!r} is not an absolute path")
    if ".." in pure.parts:
        raise InvalidRequestError(f"{text!r} contains '..'")
    return os.path.normpath(text)


def rule_name(name: str) -> str:
    """``name`` if it is a known rule (accepting dashes for underscores), else refuse."""
    normalized = name.strip().replace("-", "_")
    if normalized not in ALL_RULES:
        raise InvalidRequestError(
            f"unknown load rule {name!r}; the rules are {', '.join(RULES)}"
        )
    return normalized


def digest_from_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidRequestError(f"{text!r} is not hex; a SHA-256 is 64 hex digits") from None
    if len(raw) != 32:
        raise InvalidRequestError(f"a SHA-256 digest is 32 bytes (64 hex digits), got {len(raw)}")
    return raw


@dataclass(frozen=True)
class LoadPolicy:
    """Allowed image directories, optional allowed image digests, and the rules that are on."""

    allowed_dirs: tuple[str, ...]
    allowed_digests: frozenset[bytes] | None = None
    enabled: frozenset[str] = ALL_RULES

    def __post_init__(self) -> None:
        dirs: list[str] = []
        for d in self.allowed_dirs:
            normalized = _directory(d)
            if normalized not in dirs:
                dirs.append(normalized)
        if len(dirs) > MAX_DIRS:
            raise InvalidRequestError(f"at most {MAX_DIRS} allowed directories")
        object.__setattr__(self, "allowed_dirs", tuple(dirs))
        object.__setattr__(self, "enabled", frozenset(rule_name(r) for r in self.enabled))
        if self.allowed_digests is not None:
            digests = frozenset(bytes(d) for d in self.allowed_digests)
            if any(len(d) != 32 for d in digests):
                raise InvalidRequestError("allowed image digests are 32-byte SHA-256 values")
            if len(digests) > MAX_DIGESTS:
                raise InvalidRequestError(f"at most {MAX_DIGESTS} allowed image digests")
            object.__setattr__(self, "allowed_digests", digests)

    @classmethod
    def defaults(cls, enclaves_dir: str | Path) -> LoadPolicy:
        """Every rule on, images from ``enclaves_dir`` (``$STATE/enclaves/``), any digest."""
        return cls(allowed_dirs=(str(enclaves_dir),))

    def is_on(self, rule: str) -> bool:
        return rule_name(rule) in self.enabled

    def allow_dir(self, directory: str | Path) -> LoadPolicy:
        return LoadPolicy((*self.allowed_dirs, str(directory)), self.allowed_digests, self.enabled)

    def allow_digest(self, digest: bytes) -> LoadPolicy:
        current = self.allowed_digests or frozenset()
        return LoadPolicy(self.allowed_dirs, current | {bytes(digest)}, self.enabled)

    def with_rule(self, rule: str, on: bool) -> LoadPolicy:
        name = rule_name(rule)
        enabled = self.enabled | {name} if on else self.enabled - {name}
        return LoadPolicy(self.allowed_dirs, self.allowed_digests, enabled)

    def canonical(self) -> dict[str, Any]:
        """A JSON-friendly form with a fixed order (hashed into the policy digest)."""
        return {
            "allowed_dirs": list(self.allowed_dirs),
            "allowed_digests": None
            if self.allowed_digests is None
            else sorted(d.hex() for d in self.allowed_digests),
            "rules": {r: r in self.enabled for r in RULES},
        }

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> LoadPolicy:
        digests = data.get("allowed_digests")
        rules = data.get("rules", {})
        if not isinstance(rules, dict) or set(rules) - ALL_RULES:
            raise InvalidRequestError("stored load policy names unknown rules")
        return cls(
            allowed_dirs=tuple(str(d) for d in data.get("allowed_dirs", ())),
            allowed_digests=None
            if digests is None
            else frozenset(digest_from_hex(str(d)) for d in digests),
            enabled=frozenset(r for r in RULES if rules.get(r, True)),
        )


def bootstrap_policy(le_directory: str | Path, le_image_sha256: bytes) -> LoadPolicy:
    """Every rule on; only the launch enclave's image may supply executable pages."""
    return LoadPolicy((str(le_directory),), frozenset({bytes(le_image_sha256)}), ALL_RULES)
