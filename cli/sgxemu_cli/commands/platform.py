"""``sgxemu platform serve|info|update-tcb|set-owner-epoch|reset`` and ``sgxemu enclave load``.

Invariants: every command but ``serve`` is a client of the running platform service and goes
through its sockets (device for ``info`` and ``enclave load``, provision for ``--provision``,
owner for ``update-tcb``, ``set-owner-epoch`` and ``reset``), found through the platform's
configuration in ``$STATE/platform/platform.toml``. A refusal prints one line with the
reason code, the sentence and the hint, and exits 1; unusable input exits 64; a service that is
not running exits 1 saying how to start it. ``enclave load`` destroys the enclave before it
exits, whatever happened after the load. ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.config import ConfigError, PlatformConfig, load_config
from sgx_platform.errors import FuseStoreError
from sgx_platform.rpc.client import EnclaveSession, PlatformClient, PlatformRpcError
from sgxemu_cli.errors import EXIT_OK, CliError, UsageError
from sgxemu_cli.io import print_json, read_input
from sgxemu_cli.state import StateLayout, resolve_state_dir

MAX_IMAGE_FILE = 1 << 31
_LAUNCH_MODES = {0: "unspecified", 1: "open", 2: "token"}


def _config(args: argparse.Namespace) -> PlatformConfig:
    layout = StateLayout(resolve_state_dir(args.state))
    layout.require_initialized()
    try:
        return load_config(layout.root)
    except ConfigError as e:
        raise UsageError(str(e)) from e


@contextmanager
def _client(args: argparse.Namespace, socket: str) -> Iterator[PlatformClient]:
    config = _config(args)
    path = {
        "device": config.sockets.device,
        "provision": config.sockets.provision,
        "owner": config.sockets.owner,
    }[socket]
    client = PlatformClient.unix(path, timeout=args.timeout)
    try:
        yield client
    except PlatformRpcError as e:
        if e.code == grpc.StatusCode.UNAVAILABLE and e.reason == "UNAVAILABLE":
            raise CliError(
                f"the platform service does not answer on {path}; start it: sgxemu platform "
                "serve (or you may not have access to this socket)"
            ) from e
        raise CliError(_refusal(e)) from e
    finally:
        client.close()


def _refusal(e: PlatformRpcError) -> str:
    parts = [f"refused ({e.reason}"]
    if e.sgx_code is not None:
        parts.append(f", SGX code {e.sgx_code}")
    if e.rule:
        parts.append(f", rule {e.rule}")
    parts.append(f"): {e.message}")
    text = "".join(parts)
    if e.hint and e.hint not in e.message:
        text += f"; {e.hint}"
    return text


def _emit(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print_json(document)
    else:
        for line in lines:
            print(line)
    return EXIT_OK


def _hex_bytes(size: int, name: str) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be hex, got {text!r}") from None
        if len(value) != size:
            raise argparse.ArgumentTypeError(
                f"{name} must be {size} bytes ({2 * size} hex digits), got {len(value)}"
            )
        return value

    parse.__name__ = name
    return parse


# -- platform serve --------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from sgx_platform.service import JsonLogFormatter, PlatformService

    config = _config(args)
    if args.log_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        service = PlatformService(config)
    except FuseStoreError as e:
        raise CliError(f"{e}; create the state with: sgxemu init") from e
    try:
        addresses = service.start()
    except (OSError, ValueError) as e:
        service.stop(grace=0)
        raise CliError(f"the platform service cannot start: {e}") from e
    for name, address in addresses.items():
        print(f"platform {name}: {address}", flush=True)
    print("platform serving; stop with SIGTERM or Ctrl-C", flush=True)
    service.serve_forever()
    return EXIT_OK


# -- platform info / owner calls ----------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    with _client(args, "device") as client:
        i = client.info()
    document = {
        "cpu_svn": i.cpu_svn.hex(),
        "launch_mode": _LAUNCH_MODES.get(i.launch_mode, str(i.launch_mode)),
        "le_pubkey_hash": i.le_pubkey_hash.hex(),
        "le_pubkey_hash_locked": i.le_pubkey_hash_locked,
        "launch_policy_latch": i.launch_policy_latch.hex() or None,
        "boot_epoch": int.from_bytes(i.boot_epoch, "little"),
        "epc_pages_total": i.epc_pages_total,
        "epc_pages_free": i.epc_pages_free,
        "epc_pages_evicted": i.epc_pages_evicted,
        "eviction_enabled": i.eviction_enabled,
        "enclave_count": i.enclave_count,
        "lease_seconds": i.lease_seconds,
    }
    lines = [f"{k}: {'-' if v is None else v}" for k, v in document.items()]
    return _emit(args, document, lines)


def _update_tcb(args: argparse.Namespace) -> int:
    with _client(args, "owner") as client:
        cpusvn = client.update_tcb(args.cpusvn or b"")
    return _emit(args, {"cpu_svn": cpusvn.hex()}, [f"CPUSVN is now {cpusvn.hex()}"])


def _set_owner_epoch(args: argparse.Namespace) -> int:
    with _client(args, "owner") as client:
        client.set_owner_epoch(args.owner_epoch)
    return _emit(
        args,
        {"owner_epoch_set": True},
        ["OWNEREPOCH set; data sealed under the previous value no longer unseals"],
    )


def _reset(args: argparse.Namespace) -> int:
    with _client(args, "owner") as client:
        r = client.reset()
    boot = int.from_bytes(r.boot_epoch, "little")
    return _emit(
        args,
        {"boot_epoch": boot, "enclaves_destroyed": r.enclaves_destroyed},
        [f"platform reset: boot {boot}, {r.enclaves_destroyed} enclave(s) destroyed"],
    )


# -- enclave load --------------------------------------------------------------------------------


def _install(config: PlatformConfig, image: Path) -> str:
    """Copy ``image`` into the first allowed directory (an explicit owner act); its new path."""
    target_dir = config.load_policy.allowed_dirs[0]
    target = target_dir / image.name
    data = read_input(str(image), "enclave image", max_bytes=MAX_IMAGE_FILE)
    tmp = target_dir / f".{image.name}.install"
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as e:
        raise CliError(f"cannot install the image into {target_dir}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(target)


def _load(args: argparse.Namespace) -> int:
    sig_bytes = read_input(args.sigstruct, "SIGSTRUCT", max_bytes=1 << 16)
    if len(sig_bytes) != Sigstruct.SIZE:
        raise UsageError(
            f"SIGSTRUCT {args.sigstruct!r} is {len(sig_bytes)} bytes, not {Sigstruct.SIZE}"
        )
    config = _config(args)
    image = Path(args.image)
    path = _install(config, image) if args.install else str(image.absolute())
    with _client(args, "device") as client:
        loaded = client.load_enclave_from_file(
            path, sig_bytes, debug=args.debug, provision_key=args.provision,
            defer_init=args.provision,
        )
        session = EnclaveSession(client, loaded.handle, loaded.enclave_id, loaded.lease_seconds)
        try:
            mrenclave, mrsigner = loaded.mrenclave, loaded.mrsigner
            if not loaded.initialized:
                with _client(args, "provision") as provision:
                    provision.grant_provision_key(loaded.handle)
                mrenclave, mrsigner = client.init_enclave(loaded.handle, sig_bytes)
        finally:
            freed = session.close()
    assert mrenclave is not None and mrsigner is not None
    document = {
        "enclave_id": loaded.enclave_id,
        "mrenclave": mrenclave.hex(),
        "mrsigner": mrsigner.hex(),
        "image": path,
        "image_sha256": loaded.image_sha256.hex(),
        "pages": loaded.page_count,
        "debug": args.debug,
        "provision_key": args.provision,
        "epc_pages_freed": freed,
    }
    lines = [
        f"enclave {loaded.enclave_id} loaded from {path}",
        f"MRENCLAVE {mrenclave.hex()}",
        f"MRSIGNER  {mrsigner.hex()}",
        f"image sha256 {loaded.image_sha256.hex()}, {loaded.page_count} pages",
        f"enclave destroyed ({freed} EPC pages returned)",
    ]
    return _emit(args, document, lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``platform`` and ``enclave`` to the CLI."""
    timeout = {"type": float, "default": 60.0, "help": "seconds to wait for each call"}

    platform = sub.add_parser("platform", help="the emulated SGX platform service")
    psub = platform.add_subparsers(dest="platform_command", metavar="ACTION")
    psub.required = True
    serve = psub.add_parser("serve", help="run the platform service on $STATE/run/")
    serve.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    serve.set_defaults(func=_serve)
    info = psub.add_parser("info", help="CPUSVN, launch mode, LE registers, latch, EPC use")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.add_argument("--timeout", **timeout)  # type: ignore[arg-type]
    info.set_defaults(func=_info)
    tcb = psub.add_parser("update-tcb", help="raise CPUSVN (owner socket)")
    tcb.add_argument("--cpusvn", type=_hex_bytes(16, "CPUSVN"),
                     help="the new CPUSVN (default: component 0 plus one)")
    tcb.add_argument("--json", action="store_true", help="print one JSON document")
    tcb.add_argument("--timeout", **timeout)  # type: ignore[arg-type]
    tcb.set_defaults(func=_update_tcb)
    epoch = psub.add_parser("set-owner-epoch", help="set OWNEREPOCH (owner socket)")
    epoch.add_argument("owner_epoch", metavar="HEX", type=_hex_bytes(16, "OWNEREPOCH"))
    epoch.add_argument("--json", action="store_true", help="print one JSON document")
    epoch.add_argument("--timeout", **timeout)  # type: ignore[arg-type]
    epoch.set_defaults(func=_set_owner_epoch)
    reset = psub.add_parser("reset", help="emulated reboot (owner socket)")
    reset.add_argument("--json", action="store_true", help="print one JSON document")
    reset.add_argument("--timeout", **timeout)  # type: ignore[arg-type]
    reset.set_defaults(func=_reset)

    enclave = sub.add_parser("enclave", help="enclaves on the running platform")
    esub = enclave.add_subparsers(dest="enclave_command", metavar="ACTION")
    esub.required = True
    load = esub.add_parser(
        "load",
        help="load an SGXS image through the platform (which opens the file itself), print "
        "MRENCLAVE, MRSIGNER and the enclave id, then destroy it",
    )
    load.add_argument("image", metavar="IMAGE.sgxs")
    load.add_argument("sigstruct", metavar="IMAGE.sig")
    load.add_argument("--debug", action="store_true", help="launch in debug mode")
    load.add_argument("--provision", action="store_true",
                      help="ask for PROVISIONKEY (granted through the provision socket)")
    load.add_argument("--install", action="store_true",
                      help="first copy the image into the load policy's allowed directory")
    load.add_argument("--json", action="store_true", help="print one JSON document")
    load.add_argument("--timeout", **timeout)  # type: ignore[arg-type]
    load.set_defaults(func=_load)

