"""``sgxemu launchctl serve | add-signer | remove-signer | list | lock | status | audit |
policy show|allow-dir|allow-digest|set``.

Invariants: every command but ``serve`` is a client of the running daemon: changes go to the
admin socket (``$STATE/run/launchctl-admin/admin.sock``), reads to the public socket, both
found through ``$STATE/launchctl/launchctl.toml``; ``--socket`` (env
``SGXEMU_LAUNCHCTL_SOCKET``) names another socket and ``--remote HOST:PORT`` (env
``SGXEMU_LAUNCHCTL_REMOTE``) uses mTLS with the admin certificate of ``$STATE/tls``. A refusal
prints one line with the reason code, the sentence and the hint and exits 1; unusable input
exits 64; a daemon that does not answer exits 1 saying how to start it. ``--json`` prints one
JSON document.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from sgx_launchctl.allowlist import (
    SignerEntry,
    mrsigner_from_hex,
    mrsigner_from_key_pem,
    mrsigner_from_sigstruct,
)
from sgx_launchctl.config import LaunchctlConfig, load_config
from sgx_launchctl.errors import ConfigError, InvalidRequestError, LaunchctlError
from sgx_launchctl.policy import RULES, LoadPolicy, digest_from_hex
from sgx_launchctl.rpc.client import LaunchctlClient, LaunchctlRpcError
from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK, CliError, UsageError
from sgxemu_cli.io import print_json, read_input
from sgxemu_cli.state import StateLayout, resolve_state_dir

MAX_KEY_FILE = 1 << 20


def _config(args: argparse.Namespace) -> LaunchctlConfig:
    layout = StateLayout(resolve_state_dir(args.state))
    layout.require_initialized()
    try:
        return load_config(layout.root)
    except ConfigError as e:
        raise UsageError(str(e)) from e


def _refusal(e: LaunchctlRpcError) -> str:
    text = f"refused ({e.reason}): {e.message}"
    hint = e.metadata.get("hint", "")
    if hint and hint not in e.message:
        text += f"; {hint}"
    return text


@contextmanager
def _client(args: argparse.Namespace, *, admin: bool) -> Iterator[LaunchctlClient]:
    remote = args.remote
    if remote:
        tls = StateLayout(resolve_state_dir(args.state)).tls
        try:
            ca = (tls / "ca.pem").read_bytes()
            cert = (tls / "admin.pem").read_bytes()
            key = (tls / "admin.key").read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read the admin certificate in {tls}: {e}") from e
        client = LaunchctlClient.tls(remote, ca, cert, key, timeout=args.timeout)
        where = remote
    else:
        if args.socket:
            path = Path(args.socket)
        else:
            sockets = _config(args).sockets
            path = sockets.admin if admin else sockets.public
        client = LaunchctlClient.unix(path, timeout=args.timeout)
        where = str(path)
    try:
        yield client
    except LaunchctlRpcError as e:
        if e.code == grpc.StatusCode.UNAVAILABLE and e.reason == "UNAVAILABLE":
            raise CliError(
                f"the launch-control daemon does not answer at {where}; start it: sgxemu "
                "launchctl serve (or you may not have access to this socket)"
            ) from e
        raise CliError(_refusal(e)) from e
    finally:
        client.close()


def _emit(args: argparse.Namespace, document: Any, lines: list[str]) -> int:
    if args.json:
        print_json(document)
    else:
        for line in lines:
            print(line)
    return EXIT_OK


def _describe(entry: SignerEntry) -> str:
    parts = [entry.mrsigner.hex()]
    parts.append("debug" if entry.allow_debug else "no-debug")
    parts.append("provision-key" if entry.allow_provision_key else "no-provision-key")
    if entry.isvprodids is not None:
        parts.append("isvprodid " + ",".join(str(i) for i in sorted(entry.isvprodids)))
    if entry.min_isvsvn:
        parts.append(f"isvsvn>={entry.min_isvsvn}")
    if entry.comment:
        parts.append(f"# {entry.comment}")
    return "  ".join(parts)


def _policy_lines(policy: LoadPolicy) -> list[str]:
    lines = ["allowed directories: " + (", ".join(policy.allowed_dirs) or "(none)")]
    if policy.allowed_digests is None:
        lines.append("allowed image digests: any image in an allowed directory")
    else:
        lines.append("allowed image digests:")
        lines += [f"  {d.hex()}" for d in sorted(policy.allowed_digests)]
    lines += [f"rule {r}: {'on' if r in policy.enabled else 'off'}" for r in RULES]
    return lines


# -- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from sgx_launchctl.service import LaunchctlService

    config = _config(args)
    service = LaunchctlService(config)
    try:
        addresses = service.start()
    except LaunchctlError as e:
        raise CliError(f"the launch-control daemon cannot start: {e.sentence()}") from e
    except (OSError, ValueError) as e:
        raise CliError(f"the launch-control daemon cannot start: {e}") from e
    for name, address in addresses.items():
        print(f"launchctl {name}: {address}", flush=True)
    print("launchctl serving; stop with SIGTERM or Ctrl-C", flush=True)
    service.serve_forever()
    return EXIT_OK


# -- the allowlist ----------------------------------------------------------------------------


def _entry(args: argparse.Namespace) -> SignerEntry:
    try:
        if args.key:
            mrsigner = mrsigner_from_key_pem(read_input(args.key, "key", max_bytes=MAX_KEY_FILE))
        elif args.sigstruct:
            mrsigner = mrsigner_from_sigstruct(
                read_input(args.sigstruct, "SIGSTRUCT", max_bytes=1 << 16)
            )
        elif args.mrsigner:
            mrsigner = mrsigner_from_hex(args.mrsigner)
        else:
            raise UsageError("name the signer: MRSIGNER_HEX, --key KEY.pem or --sigstruct FILE")
        return SignerEntry(
            mrsigner=mrsigner,
            allow_debug=args.allow_debug,
            allow_provision_key=args.allow_provision_key,
            isvprodids=frozenset(args.isvprodid) if args.isvprodid else None,
            min_isvsvn=args.min_isvsvn,
            comment=args.comment,
        )
    except InvalidRequestError as e:
        raise UsageError(str(e)) from e


def _add_signer(args: argparse.Namespace) -> int:
    entry = _entry(args)
    with _client(args, admin=True) as client:
        added, replaced = client.add_signer(entry)
    verb = "replaced the entry of" if replaced else "added"
    return _emit(
        args, {"signer": added.canonical(), "replaced": replaced},
        [f"{verb} {_describe(added)}"],
    )


def _remove_signer(args: argparse.Namespace) -> int:
    try:
        mrsigner = mrsigner_from_hex(args.mrsigner)
    except InvalidRequestError as e:
        raise UsageError(str(e)) from e
    with _client(args, admin=True) as client:
        client.remove_signer(mrsigner)
    return _emit(args, {"removed": mrsigner.hex()}, [f"removed {mrsigner.hex()}"])


def _list(args: argparse.Namespace) -> int:
    with _client(args, admin=False) as client:
        entries = client.signers()
    lines = [_describe(e) for e in entries] or ["the allowlist is empty"]
    return _emit(args, [e.canonical() for e in entries], lines)


def _lock(args: argparse.Namespace) -> int:
    with _client(args, admin=True) as client:
        digest = client.lock()
    return _emit(
        args, {"locked": True, "digest": digest.hex()},
        [f"launch policy locked until the platform is reset (digest {digest.hex()})"],
    )


def _status(args: argparse.Namespace) -> int:
    with _client(args, admin=False) as client:
        status = client.status()
    document = status.to_json()
    lines = [
        # Until the daemon serves this boot it has not compared its state with the latch yet.
        f"locked: {'yes' if status.locked else 'no' if status.ready else 'unknown (starting)'}",
        f"mode: {status.mode}",
        f"ready: {'yes' if status.ready else 'no'}",
        f"entries: {status.signer_count}",
        f"policy digest: {status.policy_digest.hex()}",
        f"latched digest: {status.latched_digest.hex() or '-'}",
        f"boot epoch: {int.from_bytes(status.boot_epoch, 'little')}",
        f"launch enclave MRSIGNER: {status.le_mrsigner.hex()}",
        f"audit entries: {status.audit_length}",
        *_policy_lines(status.policy),
    ]
    return _emit(args, document, lines)


def _audit(args: argparse.Namespace) -> int:
    with _client(args, admin=False) as client:
        log = client.audit(start=args.start, limit=args.limit, verify=args.verify)
    document: dict[str, Any] = {
        "length": log.length,
        "entries": [line.to_json() for line in log.entries],
    }
    lines = [
        f"{line.sequence:>6} {line.time} {line.event} {line.caller} "
        + " ".join(f"{k}={v}" for k, v in sorted(line.details.items()))
        for line in log.entries
    ]
    if args.verify:
        document["verification"] = {
            "verified": bool(log.verified),
            "first_broken_sequence": log.first_broken_sequence or None,
            "reason": log.reason or None,
        }
        lines.append(
            f"audit chain verified: {log.length} entries"
            if log.verified
            else f"audit chain BROKEN at entry {log.first_broken_sequence}: {log.reason}"
        )
    _emit(args, document, lines)
    return EXIT_OK if not args.verify or log.verified else EXIT_FAILURE


# -- the load policy ----------------------------------------------------------------------------


def _policy_show(args: argparse.Namespace) -> int:
    with _client(args, admin=False) as client:
        policy = client.status().policy
    return _emit(args, policy.canonical(), _policy_lines(policy))


def _policy_changed(args: argparse.Namespace, change: Callable[[LaunchctlClient], LoadPolicy]) -> (
    int
):
    with _client(args, admin=True) as client:
        policy = change(client)
    return _emit(args, policy.canonical(), _policy_lines(policy))


def _allow_dir(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.directory)
    return _policy_changed(args, lambda c: c.allow_dir(directory))


def _allow_digest(args: argparse.Namespace) -> int:
    try:
        digest = digest_from_hex(args.sha256)
    except InvalidRequestError as e:
        raise UsageError(str(e)) from e
    return _policy_changed(args, lambda c: c.allow_digest(digest))


def _set_rule(args: argparse.Namespace) -> int:
    enabled = args.value == "on"
    return _policy_changed(args, lambda c: c.set_rule(args.rule, enabled))


# -- registration -------------------------------------------------------------------------------


def _u16(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not 0 <= value <= 0xFFFF:
            raise argparse.ArgumentTypeError(f"{name} must be in 0..65535, got {value}")
        return value

    parse.__name__ = name
    return parse


def _client_options(p: argparse.ArgumentParser, *, json: bool = True) -> None:
    if json:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--socket", default=os.environ.get("SGXEMU_LAUNCHCTL_SOCKET"),
                   help="the daemon's socket (env SGXEMU_LAUNCHCTL_SOCKET; default: the admin "
                   "socket for changes, the public socket for reads)")
    p.add_argument("--remote", default=os.environ.get("SGXEMU_LAUNCHCTL_REMOTE"),
                   metavar="HOST:PORT",
                   help="use TCP with mTLS and $STATE/tls/admin.pem (env SGXEMU_LAUNCHCTL_REMOTE)")
    p.add_argument("--timeout", type=float,
                   default=float(os.environ.get("SGXEMU_LAUNCHCTL_TIMEOUT", "30")),
                   help="seconds to wait for each call (env SGXEMU_LAUNCHCTL_TIMEOUT)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``launchctl`` to the CLI."""
    top = sub.add_parser("launchctl", help="the launch-control daemon (allowlist, lock, audit)")
    lsub = top.add_subparsers(dest="launchctl_command", metavar="ACTION")
    lsub.required = True

    serve = lsub.add_parser("serve", help="run the launch-control daemon on $STATE/run/")
    serve.set_defaults(func=_serve)

    add = lsub.add_parser("add-signer", help="allow a signer (or replace its entry)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("mrsigner", nargs="?", metavar="MRSIGNER_HEX")
    source.add_argument("--key", metavar="KEY.pem", help="the signer's RSA key (public or private)")
    source.add_argument("--sigstruct", metavar="FILE.sig", help="a SIGSTRUCT of the signer")
    add.add_argument("--allow-debug", action="store_true", help="allow debug enclaves")
    add.add_argument("--allow-provision-key", action="store_true",
                     help="allow the PROVISIONKEY attribute")
    add.add_argument("--isvprodid", type=_u16("ISVPRODID"), action="append", metavar="N",
                     help="allow only this ISVPRODID (repeatable)")
    add.add_argument("--min-isvsvn", type=_u16("ISVSVN"), default=0, metavar="N",
                     help="lowest ISVSVN allowed")
    add.add_argument("--comment", default="", metavar="TEXT")
    _client_options(add)
    add.set_defaults(func=_add_signer)

    remove = lsub.add_parser("remove-signer", help="remove a signer's entry")
    remove.add_argument("mrsigner", metavar="MRSIGNER_HEX")
    _client_options(remove)
    remove.set_defaults(func=_remove_signer)

    listing = lsub.add_parser("list", help="list the allowlist")
    _client_options(listing)
    listing.set_defaults(func=_list)

    lock = lsub.add_parser("lock", help="lock the launch policy until the platform is reset")
    _client_options(lock)
    lock.set_defaults(func=_lock)

    status = lsub.add_parser("status", help="locked, mode, entries, policy")
    _client_options(status)
    status.set_defaults(func=_status)

    audit = lsub.add_parser("audit", help="the audit log")
    audit.add_argument("--verify", action="store_true",
                       help="verify the whole chain; exit 1 naming the first broken entry")
    audit.add_argument("--start", type=int, default=1, metavar="SEQ")
    audit.add_argument("--limit", type=int, default=0, metavar="N")
    _client_options(audit)
    audit.set_defaults(func=_audit)

    policy = lsub.add_parser("policy", help="the load policy the platform applies")
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True
    show = psub.add_parser("show", help="directories, digests and rules")
    _client_options(show)
    show.set_defaults(func=_policy_show)
    allow_dir = psub.add_parser("allow-dir", help="allow images from a directory")
    allow_dir.add_argument("directory", metavar="DIR")
    _client_options(allow_dir)
    allow_dir.set_defaults(func=_allow_dir)
    allow_digest = psub.add_parser("allow-digest", help="allow an image by its SHA-256")
    allow_digest.add_argument("sha256", metavar="SHA256")
    _client_options(allow_digest)
    allow_digest.set_defaults(func=_allow_digest)
    rule = psub.add_parser("set", help="switch a load rule on or off")
    rule.add_argument("rule", choices=RULES, metavar="RULE",
                      help=f"one of {', '.join(RULES)}")
    rule.add_argument("value", choices=("on", "off"))
    _client_options(rule)
    rule.set_defaults(func=_set_rule)
