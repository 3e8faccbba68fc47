"""The state directory that ``sgxemu init`` lays out (DESIGN.md "State directory").

Invariants: the root is private to its owner (0700); every secret file is 0600 and written
atomically; each component has its own subdirectory and reads no other component's files;
socket paths stay under 108 bytes (the ``run/`` directory has a short name for that reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sgxemu_cli.errors import UsageError

DEFAULT_STATE = Path("~/.local/state/sgxemu")
MAX_SOCKET_PATH = 107
SERVICES = ("platform", "launchctl", "quoting", "verifier", "pcs")


def resolve_state_dir(value: str | None) -> Path:
    """The state directory from ``--state``/``SGXEMU_STATE``, else the default."""
    return Path(value).expanduser().absolute() if value else DEFAULT_STATE.expanduser()


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def enclaves(self) -> Path:
        return self.root / "enclaves"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def component(self, name: str) -> Path:
        return self.root / name

    def socket(self, name: str) -> Path:
        path = self.run / f"{name}.sock"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise UsageError(
                f"the socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter --state directory"
            )
        return path

    @property
    def marker(self) -> Path:
        return self.root / "sgxemu-state.json"

    def require_initialized(self) -> None:
        if not self.marker.is_file():
            raise UsageError(
                f"{self.root} is not an sgxemu state directory; run: sgxemu --state "
                f"{self.root} init"
            )


def make_private_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) and set its mode; refuse a symlink in its place."""
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link; refusing to use it")
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)
