"""``sgxemu init``: create a state directory (DESIGN.md "State directory").

Invariants: init never overwrites an existing state directory (``--force`` is not offered: a
state directory holds platform secrets and keys whose loss cannot be undone); it builds the
whole directory under a temporary name beside the target and renames it into place, so a crash
leaves either nothing or a complete directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgxemu_cli.errors import EXIT_OK, UsageError
from sgxemu_cli.io import print_json, write_atomic
from sgxemu_cli.service_pki import create_service_pki
from sgxemu_cli.state import SERVICES, StateLayout, make_private_dir, resolve_state_dir


@dataclass(frozen=True)
class Initializer:
    """One component's part of ``init``: gets the layout being built, returns a summary."""

    name: str
    run: Callable[[StateLayout], dict[str, str]]


def _service_tls(layout: StateLayout) -> dict[str, str]:
    make_private_dir(layout.tls)
    files = create_service_pki(layout.tls, SERVICES)
    return {"ca": str(layout.tls / "ca.pem"), "admin_certificate": str(files["admin"].certificate)}


def _directories(layout: StateLayout) -> dict[str, str]:
    for path in (layout.logs, *(layout.component(s) for s in SERVICES)):
        make_private_dir(path)
    # The root and run/ can be traversed (not listed) by other users, so that the device
    # socket's own file mode is the gate, as /dev/sgx_enclave's is; everything else is private.
    os.chmod(layout.root, 0o711)  # noqa: S103 - traversable only; files inside are 0600
    make_private_dir(layout.run, 0o711)
    # Enclave images are read by the platform; the directory is the default allowed directory
    # of the load policy.
    make_private_dir(layout.enclaves, 0o755)
    return {"enclaves": str(layout.enclaves), "run": str(layout.run)}


def _platform(layout: StateLayout) -> dict[str, str]:
    from sgx_platform.service import initialize_state

    return initialize_state(layout.component("platform"))


def initializers() -> list[Initializer]:
    """Every component's initializer, in order. Components add theirs here as they land."""
    return [
        Initializer("directories", _directories),
        Initializer("service TLS", _service_tls),
        Initializer("platform", _platform),
    ]


def initialize(target: Path) -> dict[str, dict[str, str]]:
    """Build a complete state directory at ``target``; refuse an existing one."""
    if target.exists() or target.is_symlink():
        raise UsageError(
            f"{target} already exists; sgxemu init never overwrites a state directory "
            "(it holds platform secrets); choose another --state or remove it yourself"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    try:
        layout = StateLayout(staging)
        make_private_dir(staging)
        summary = {init.name: init.run(layout) for init in initializers()}
        marker = {
            "format": 1,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        write_atomic(layout.marker, json.dumps(marker).encode() + b"\n", mode=0o600)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        name: {k: v.replace(str(staging), str(target)) for k, v in part.items()}
        for name, part in summary.items()
    }


def _handle(args: argparse.Namespace) -> int:
    target = resolve_state_dir(args.state)
    summary = initialize(target)
    if args.json:
        print_json({"state": str(target), "components": summary})
    else:
        print(f"created the sgxemu state directory {target}")
        for name, part in summary.items():
            for key, value in part.items():
                print(f"  {name}: {key} = {value}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a state directory")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_handle)
