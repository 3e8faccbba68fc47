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
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgxemu_cli.errors import EXIT_OK, UsageError
from sgxemu_cli.io import print_json, write_atomic
from sgxemu_cli.service_pki import create_service_pki
from sgxemu_cli.state import SERVICES, StateLayout, make_private_dir, resolve_state_dir


@dataclass(frozen=True)
class InitOptions:
    """What the caller chose: the final location and where the launch-authority key goes."""

    target: Path
    export_launch_key: Path | None = None
    launch_mode: str = "token"
    #: host:port of the verifier's TLS listener; port 0 picks a free port now.
    verifier_listen: str = "127.0.0.1:7443"


@dataclass
class InitContext:
    """Passed from step to step: the options and every earlier step's summary."""

    options: InitOptions
    summaries: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Initializer:
    """One component's part of ``init``: gets the layout being built, returns a summary."""

    name: str
    run: Callable[[StateLayout, InitContext], dict[str, str]]


def _directories(layout: StateLayout, _ctx: InitContext) -> dict[str, str]:
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


def _service_tls(layout: StateLayout, _ctx: InitContext) -> dict[str, str]:
    make_private_dir(layout.tls)
    files = create_service_pki(layout.tls, SERVICES)
    return {"ca": str(layout.tls / "ca.pem"), "admin_certificate": str(files["admin"].certificate)}


def _platform(layout: StateLayout, _ctx: InitContext) -> dict[str, str]:
    from sgx_platform.service import initialize_state

    return initialize_state(layout.component("platform"))


def _quoting(layout: StateLayout, _ctx: InitContext) -> dict[str, str]:
    from sgxemu_cli.commands.quoting import initialize_quoting

    return initialize_quoting(layout)


def _launchctl(layout: StateLayout, ctx: InitContext) -> dict[str, str]:
    from sgx_launchctl.service import initialize_state
    from sgx_platform.arch.measurement import Measurement

    vendor = Measurement.from_hex(ctx.summaries["quoting"]["vendor_mrsigner"])
    summary = initialize_state(
        layout.root,
        vendor_mrsigner=vendor,
        export_key_to=ctx.options.export_launch_key,
        final_state_dir=ctx.options.target,
    )
    write_atomic(
        layout.component("platform") / "platform.toml",
        platform_config(ctx.options.launch_mode, summary["le_mrsigner"]).encode(),
        mode=0o600,
    )
    return summary


def _pcs(layout: StateLayout, _ctx: InitContext) -> dict[str, str]:
    from sgxemu_cli.commands.quoting import initialize_pcs

    return initialize_pcs(layout)


def _verifier(layout: StateLayout, ctx: InitContext) -> dict[str, str]:
    from sgx_quoting.state import PcsStore
    from sgxemu_cli.commands.verifier import initialize_verifier

    # The composition root hands the emulated root to the verifier, which never reads the
    # PCS's files itself.
    root_der = PcsStore(layout.component("pcs")).load_pki().root_ca_der
    return initialize_verifier(
        layout, root_der, listen=_concrete_address(ctx.options.verifier_listen)
    )


def _concrete_address(address: str) -> str:
    """``host:0`` becomes ``host:<a port free now>``; other addresses are kept."""
    host, _, port = address.rpartition(":")
    if port != "0":
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


def platform_config(launch_mode: str, le_mrsigner_hex: str) -> str:
    """The platform configuration of a world whose launch enclave has ``le_mrsigner_hex``.

    In both modes the platform pulls its load policy from launchctl (which owns it) and fails
    closed without it; in token mode it also asks launchctl for a token at every EINIT.
    """
    if launch_mode == "token":
        mode = (
            "# Token mode: the LE registers hold the launch enclave's signer and are locked at\n"
            "# boot; every other EINIT needs a token from launchctl (which fails closed).\n"
            'launch_mode = "token"\n'
            f'le_pubkey_hash = "{le_mrsigner_hex}"\n'
        )
    else:
        mode = (
            "# Open mode, as mainline Linux: the driver writes each enclave's own signer into\n"
            "# the LE registers before EINIT, so any validly signed enclave launches.\n"
            'launch_mode = "open"\n'
        )
    return (
        "# The platform service's configuration (sgx_platform.config documents every key).\n"
        + mode
        + "\n[epc]\npages = 8192\neviction = true\n"
        "\n[launchctl]\n"
        'socket = "run/launchctl-authority/authority.sock"\n'
        "timeout_seconds = 5.0\n"
        "load_policy = true\n"
    )


def initializers() -> list[Initializer]:
    """Every component's initializer, in dependency order."""
    return [
        Initializer("directories", _directories),
        Initializer("service TLS", _service_tls),
        Initializer("platform", _platform),
        Initializer("quoting", _quoting),
        Initializer("launchctl", _launchctl),
        Initializer("pcs", _pcs),
        Initializer("verifier", _verifier),
    ]


def initialize(target: Path, options: InitOptions | None = None) -> dict[str, dict[str, str]]:
    """Build a complete state directory at ``target``; refuse an existing one."""
    target = target.absolute()
    options = options or InitOptions(target)
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
        context = InitContext(options, {})
        for step in initializers():
            context.summaries[step.name] = step.run(layout, context)
        marker = {
            "format": 1,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        write_atomic(layout.marker, json.dumps(marker).encode() + b"\n", mode=0o600)
        os.chmod(staging, 0o711)  # noqa: S103 - traversable only; files inside are private
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        name: {k: str(v).replace(str(staging), str(target)) for k, v in part.items()}
        for name, part in context.summaries.items()
    }


def _handle(args: argparse.Namespace) -> int:
    target = resolve_state_dir(args.state)
    export = None
    if args.export_launch_key:
        export = Path(args.export_launch_key).expanduser().absolute()
    options = InitOptions(
        target,
        export_launch_key=export,
        launch_mode=args.launch_mode,
        verifier_listen=args.verifier_listen,
    )
    summary = initialize(target, options)
    if args.json:
        print_json({"state": str(target), "components": summary})
    else:
        print(f"created the sgxemu state directory {target}")
        if export is None:
            print("  the launch-authority key was destroyed after signing the launch enclave")
        for name, part in summary.items():
            for key, value in part.items():
                print(f"  {name}: {key} = {value}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a state directory")
    p.add_argument(
        "--export-launch-key",
        metavar="FILE",
        help="write the launch-authority private key here (outside the state directory) for "
        "the owner to keep offline; without it the key is destroyed after signing the LE",
    )
    p.add_argument(
        "--launch-mode",
        choices=("token", "open"),
        default="token",
        help="token (default): launches need launchctl's token; open: any signed enclave "
        "launches, as on mainline Linux",
    )
    p.add_argument(
        "--verifier-listen",
        metavar="HOST:PORT",
        default="127.0.0.1:7443",
        help="the verifier's TLS address (default 127.0.0.1:7443; port 0 picks a free one)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_handle)
