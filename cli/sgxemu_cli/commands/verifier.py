"""``sgxemu verifier``: run the quote verification service and manage its collateral.

::

    sgxemu verifier serve [--config FILE] [--listen ADDR] [--metrics ADDR]
    sgxemu verifier challenge [--ttl SECONDS] [--remote ADDR [--ca PEM] | --socket PATH] [--json]
    sgxemu verifier collateral import FILE... [--json]
    sgxemu verifier collateral refresh (--quote Q.bin | --fmspc HEX --ca processor|platform)
    sgxemu verifier collateral status [--within SECONDS] [--json]

The configuration is ``--config`` (env ``SGXEMU_VERIFIER_CONFIG``), else
``$STATE/verifier/verifier.toml``, else the defaults of an initialized state directory (TLS from
``$STATE/tls/``, the admin socket ``$STATE/run/verifier.sock``, state in ``$STATE/verifier/``,
``$STATE/verifier/emulated-root.der`` as the ``sgxemu-emulated`` anchor when present).

``collateral import``/``refresh``/``status`` work on the collateral store directly (SQLite is
shared safely with a running service) and verify every item against the configured anchors
before storing it, as ImportCollateral does. ``challenge`` asks the running service.

For ``sgxemu verify``: :func:`add_verify_options` adds ``--policy FILE`` and ``--remote ADDR``
(with ``--ca``, ``--audience``); :func:`load_policy` reads a policy file; :func:`verify_remote`
sends the quote to a verifier and prints the DESIGN.md document, returning the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import grpc

from sgx.verifier.v1 import verifier_pb2 as pb
from sgx_platform.arch.errors import MalformedStructureError
from sgx_rpc.channel import tls_channel, unix_channel, wait_ready
from sgx_rpc.errors import error_info
from sgx_verifier.errors import VerificationError
from sgx_verifier.fetch import FetchError, PckCa, Tee, items_from_bytes
from sgx_verifier.policy import Policy, PolicyError
from sgx_verifier.rpc.convert import policy_to_proto
from sgx_verifier.rpc.server import build_server, build_service, stub
from sgx_verifier.service import (
    AnchorConfig,
    ImportRejectedError,
    InvalidRequestError,
    NoSourceError,
    RefreshTarget,
    VerifierConfig,
)
from sgx_verifier.store import CollateralItem, Placement
from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, UsageError
from sgxemu_cli.io import print_json, read_input, write_atomic
from sgxemu_cli.state import StateLayout, make_private_dir, resolve_state_dir

log = logging.getLogger(__name__)

EXIT_NOT_VERIFIED = 2
EMULATED_ANCHOR = "sgxemu-emulated"
EMULATED_ROOT_FILE = "emulated-root.der"
CONFIG_FILE = "verifier.toml"
DEFAULT_LISTEN = "127.0.0.1:7443"
MAX_FILE = 1 << 24


# -- configuration -----------------------------------------------------------------------------


def default_config(layout: StateLayout) -> VerifierConfig:
    """The configuration of an initialized state directory without a ``verifier.toml``."""
    home = layout.component("verifier")
    root = home / EMULATED_ROOT_FILE
    return VerifierConfig(
        listen=DEFAULT_LISTEN,
        tls_certificate=layout.tls / "verifier.pem",
        tls_key=layout.tls / "verifier.key",
        client_ca=layout.tls / "ca.pem",
        admin_socket=layout.socket("verifier"),
        anchors=(AnchorConfig(EMULATED_ANCHOR, root),) if root.is_file() else (),
        base_dir=home,
    )


def config_text(layout: StateLayout, listen: str = DEFAULT_LISTEN) -> str:
    """The ``verifier.toml`` that :func:`initialize_verifier` writes."""
    home = layout.component("verifier")
    root = home / EMULATED_ROOT_FILE
    anchors = (
        f'\n[[anchors]]\nname = "{EMULATED_ANCHOR}"\ncertificate = "{EMULATED_ROOT_FILE}"\n'
        # The local world's emulated PCS (served beside the quoting service) is where
        # `sgxemu verifier collateral refresh` fetches that world's collateral.
        '\n[pcs]\ngrpc = "unix:../run/pcs.sock"\n'
        if root.is_file()
        else ""
    )
    return (
        "# sgxemu quote verification service (sgxemu verifier serve)\n"
        "[server]\n"
        f'listen = "{listen}"\n'
        # Relative to this file's directory, so the state directory can be moved (and
        # ``init`` can build it under a staging name).
        'tls_certificate = "../tls/verifier.pem"\n'
        'tls_key = "../tls/verifier.key"\n'
        'client_ca = "../tls/ca.pem"\n'
        f'admin_socket = "../run/{layout.socket("verifier").name}"\n'
        "\n[storage]\n"
        'collateral_db = "collateral.sqlite"\n'
        'replay_db = "replay.sqlite"\n'
        'challenge_key = "challenge.key"\n'
        'token_keys = "token-keys"\n'
        "\n[tokens]\n"
        'issuer = "sgxemu-verifier"\n'
        'audience = "sgxemu"\n'
        "lifetime = 600\n"
        "max_lifetime = 3600\n"
        "\n[challenges]\nttl = 300\n" + anchors
    )


def initialize_verifier(
    layout: StateLayout, emulated_root_der: bytes | None = None, listen: str = DEFAULT_LISTEN
) -> dict[str, str]:
    """The verifier's part of ``sgxemu init``: its directory, configuration and keys.

    ``emulated_root_der`` is the emulated PCS's root CA (the composition root passes it, so
    the verifier never reads the PCS's files); with it, the local verifier also trusts the
    emulated world, and says so in every verdict and token.
    """
    home = layout.component("verifier")
    make_private_dir(home)
    if emulated_root_der is not None:
        write_atomic(home / EMULATED_ROOT_FILE, emulated_root_der, mode=0o644)
    write_atomic(home / CONFIG_FILE, config_text(layout, listen).encode(), mode=0o600)
    config = VerifierConfig.load(home / CONFIG_FILE)
    build_service(config)  # creates the store, the challenge key and the token keyring
    return {
        "config": str(home / CONFIG_FILE),
        "collateral_store": str(home / "collateral.sqlite"),
        "listen": listen,
    }


def load_config(args: argparse.Namespace) -> VerifierConfig:
    try:
        explicit = getattr(args, "config", None)
        if explicit:
            return VerifierConfig.load(Path(explicit))
        layout = StateLayout(resolve_state_dir(args.state))
        layout.require_initialized()
        path = layout.component("verifier") / CONFIG_FILE
        return VerifierConfig.load(path) if path.is_file() else default_config(layout)
    except VerificationError as e:
        raise UsageError(str(e)) from None


# -- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args)
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = args.listen
    if args.metrics:
        overrides["metrics_listen"] = args.metrics
    if overrides:
        config = VerifierConfig(
            **{**{f: getattr(config, f) for f in config.__dataclass_fields__}, **overrides}
        )
    try:
        server = build_server(config, build_service(config))
        addresses = server.start()
    except (VerificationError, OSError) as e:
        raise CliError(f"cannot start the verifier: {e}") from None
    for address in addresses.values():
        sys.stderr.write(f"sgxemu verifier: listening on {address}\n")
    if server.metrics_address:
        sys.stderr.write(f"sgxemu verifier: metrics on http://{server.metrics_address}/metrics\n")
    server.serve_forever()
    return EXIT_OK


# -- challenge -----------------------------------------------------------------------------------


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.remote:
        ca_path = args.ca or str(StateLayout(resolve_state_dir(args.state)).tls / "ca.pem")
        channel = tls_channel(args.remote, read_input(ca_path, "service CA", max_bytes=1 << 16))
    else:
        socket = args.socket or load_config(args).admin_socket
        if socket is None:
            raise UsageError("no admin socket is configured; use --remote ADDR")
        channel = unix_channel(Path(socket))
    try:
        wait_ready(channel, 10)
    except grpc.FutureTimeoutError:
        channel.close()
        raise CliError(
            "the verifier is not reachable; start it with: sgxemu verifier serve"
        ) from None
    return channel


def _challenge(args: argparse.Namespace) -> int:
    with _channel(args) as channel:
        try:
            reply = stub(channel).CreateChallenge(
                pb.CreateChallengeRequest(ttl_seconds=args.ttl or 0), timeout=10
            )
        except grpc.RpcError as e:
            raise _rpc_error(e) from None
    if args.json:
        print_json(
            {
                "challenge": reply.challenge.hex(),
                "issued_at": reply.issued_at,
                "expires_at": reply.expires_at,
                "binding": "REPORTDATA[0:32] = SHA-256(challenge || user data)",
            }
        )
    else:
        sys.stdout.write(f"{reply.challenge.hex()}\n")
        sys.stderr.write(
            f"expires at {reply.expires_at}; put SHA-256(challenge || user data) in "
            "REPORTDATA[0:32]\n"
        )
    return EXIT_OK


def fetch_jwks(args: argparse.Namespace) -> dict[str, Any]:
    """The verifier's JWK Set (its signing key first, then retired keys still in use)."""
    with _channel(args) as channel:
        try:
            reply = stub(channel).GetJwks(pb.GetJwksRequest(), timeout=10)
        except grpc.RpcError as e:
            raise _rpc_error(e) from None
    jwks: dict[str, Any] = json.loads(reply.jwks_json)
    return jwks


def _jwks(args: argparse.Namespace) -> int:
    print_json(fetch_jwks(args))
    return EXIT_OK


def _rpc_error(error: grpc.RpcError) -> CliError:
    info = error_info(error)
    reason = f" [{info.reason}]" if info is not None else ""
    message = f"{error.code().name}: {error.details()}{reason}"
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        return UsageError(message)
    return CliError(message)


# -- collateral --------------------------------------------------------------------------------


def _placement_word(placement: Placement) -> str:
    return {
        Placement.BECAME_LATEST: "latest",
        Placement.ALREADY_LATEST: "already latest",
        Placement.OLDER_THAN_LATEST: "kept (older than latest)",
    }[placement]


def _report(args: argparse.Namespace, source: str, rows: list[dict[str, Any]]) -> int:
    config = load_config(args)
    service = build_service(config)
    expiring: list[dict[str, Any]] = [
        {"id": n.id, "kind": n.kind.value, "key": n.key, "seconds_left": n.seconds_left}
        for n in service.expiring()
    ]
    if args.json:
        print_json({"source": source, "items": rows, "expiring": expiring})
    else:
        for row in rows:
            sys.stdout.write(
                f"{row['id'][:16]}  {row['description']}: {row['placement_text']}\n"
            )
        for notice in expiring:
            when = (
                f"expired {-notice['seconds_left']} s ago"
                if notice["seconds_left"] < 0
                else f"expires in {notice['seconds_left']} s"
            )
            sys.stderr.write(f"warning: {notice['kind']} {notice['key']} {when}\n")
    return EXIT_OK


def _rows(results: list[Any], items: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": result.id,
            "kind": result.kind.value,
            "key": result.key,
            "description": item.description,
            "new": result.new,
            "placement": result.placement.value,
            "placement_text": _placement_word(result.placement),
            "reason": result.reason,
            "issue_date": item.issue_date,
            "next_update": item.next_update,
        }
        for result, (_, item) in zip(results, items, strict=True)
    ]


def _import(args: argparse.Namespace) -> int:
    items: list[tuple[str, CollateralItem]] = []
    for path in args.files:
        data = read_input(path, "collateral file", max_bytes=MAX_FILE)
        try:
            items.extend((path, item) for item in items_from_bytes(data, path))
        except MalformedStructureError as e:
            raise UsageError(str(e)) from None
    service = build_service(load_config(args))
    try:
        results = service.import_items(items, source=f"file:{','.join(args.files)}")
    except ImportRejectedError as e:
        raise CliError(f"collateral refused, nothing was imported: {e} (hint: {e.hint})") from None
    return _report(args, "files", _rows(results, items))


def _fmspc(text: str) -> bytes:
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", text):
        raise argparse.ArgumentTypeError(f"an FMSPC is 12 hex digits, not {text!r}")
    return bytes.fromhex(text)


def _refresh(args: argparse.Namespace) -> int:
    service = build_service(load_config(args))
    try:
        if args.quote:
            target = service.refresh_target(read_input(args.quote, "quote", max_bytes=1 << 20))
        elif args.fmspc and args.pck_ca:
            target = RefreshTarget(args.fmspc, PckCa(args.pck_ca), Tee(args.tee))
        else:
            raise UsageError("name the platform: --quote Q.bin, or --fmspc HEX and --ca")
        source, items, results = service.refresh(target)
    except InvalidRequestError as e:
        raise UsageError(e.message) from None
    except ImportRejectedError as e:
        raise CliError(f"collateral refused, nothing was imported: {e} (hint: {e.hint})") from None
    except (NoSourceError, FetchError) as e:
        raise CliError(str(e)) from None
    return _report(args, source, _rows(results, items))


def _status(args: argparse.Namespace) -> int:
    service = build_service(load_config(args))
    now = service.now()
    latest: list[dict[str, Any]] = [
        {
            "id": s.id,
            "kind": s.item.kind.value,
            "key": s.item.key,
            "description": s.item.description,
            "issue_date": s.item.issue_date,
            "next_update": s.item.next_update,
            "age_seconds": now - s.item.issue_date,
            "seconds_left": s.item.next_update - now,
            "evaluation_number": s.item.evaluation_number,
            "source": s.source,
        }
        for s in service.store.latest_all()
    ]
    expiring = {n.id for n in service.expiring(args.within)}
    if args.json:
        print_json({"latest": latest, "expiring": sorted(expiring)})
    else:
        for row in latest:
            flag = "  EXPIRING" if row["id"] in expiring else ""
            sys.stdout.write(
                f"{row['kind']:16} {row['key'][:24]:24} {row['seconds_left']:>10} s left{flag}\n"
            )
    return EXIT_OK if not any(r["seconds_left"] < 0 for r in latest) else EXIT_FAILURE


# -- sgxemu verify --policy / --remote -----------------------------------------------------------


def add_verify_options(parser: argparse.ArgumentParser) -> None:
    """``--policy``, ``--remote``, ``--ca`` and ``--audience`` for ``sgxemu verify``."""
    parser.add_argument(
        "--policy",
        metavar="FILE",
        default=os.environ.get("SGXEMU_POLICY"),
        help="relying-party policy (TOML; env SGXEMU_POLICY); default: UpToDate only, no "
        "debug, the Intel anchor only",
    )
    parser.add_argument(
        "--remote",
        metavar="ADDR",
        default=os.environ.get("SGXEMU_VERIFIER"),
        help="ask the verification service at ADDR (host:port, TLS; env SGXEMU_VERIFIER)",
    )
    parser.add_argument(
        "--ca",
        metavar="PEM",
        default=os.environ.get("SGXEMU_VERIFIER_CA"),
        help="the verifier's TLS CA (default: $STATE/tls/ca.pem; env SGXEMU_VERIFIER_CA)",
    )
    parser.add_argument("--audience", metavar="AUD", help="the token's audience (remote)")
    parser.add_argument(
        "--challenge",
        metavar="HEX|FILE",
        help="the challenge the quote's REPORTDATA binds (remote; hex, or a file of raw bytes as "
        "`attest --challenge-out` writes); the service redeems it once",
    )
    parser.add_argument(
        "--user-data", metavar="HEX", help="the user data hashed with the challenge (remote)"
    )


def _challenge_bytes(value: str) -> bytes:
    path = Path(value)
    if path.is_file():
        return read_input(value, "challenge", max_bytes=1 << 12)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"--challenge: {value!r} is neither a file nor hex") from None


def load_policy(path: str) -> Policy:
    """A policy file, or :class:`UsageError` naming what is wrong with it."""
    try:
        return Policy.load(Path(path))
    except PolicyError as e:
        raise UsageError(str(e)) from None


def _document(response: pb.VerifyQuoteResponse) -> dict[str, Any]:
    enclave = response.enclave
    doc: dict[str, Any] = {
        "verified": response.verified,
        "accepted": response.accepted,
        "tcb_status": response.tcb_status or None,
        "platform_tcb_status": response.platform_tcb_status or None,
        "qe_tcb_status": response.qe_tcb_status or None,
        "advisory_ids": list(response.advisory_ids),
        "quote_version": response.quote_version or None,
        "tee": enclave.tee or None,
        "mrenclave": enclave.mrenclave.hex() or None,
        "mrsigner": enclave.mrsigner.hex() or None,
        "isv_prod_id": enclave.isv_prod_id if enclave.tee else None,
        "isv_svn": enclave.isv_svn if enclave.tee else None,
        "debug": enclave.debug if enclave.tee else None,
        "report_data": enclave.report_data.hex() if enclave.tee else None,
        "fmspc": response.fmspc.hex() or None,
        "trust_anchor": response.trust_anchor.name or None,
        "trust_anchor_key_sha256": response.trust_anchor.key_sha256 or None,
        "collateral": {c.name: c.id for c in response.collateral},
        "at": response.at,
        "quote_sha256": response.quote_sha256.hex(),
        "policy": {
            "passed": response.policy.passed,
            "hash": response.policy.policy_hash,
            "violations": [
                {"code": v.code, "message": v.message, "hint": v.hint}
                | ({"detail": v.detail} if v.detail else {})
                for v in response.policy.violations
            ],
        },
    }
    if response.warning:
        doc["warning"] = response.warning
    if response.failures:
        failures = [
            {"code": f.code, "check": f.check, "message": f.message, "hint": f.hint}
            for f in response.failures
        ]
        doc["error"] = failures[0]
        doc["failures"] = failures
    if response.token:
        doc["token"] = response.token
    return doc


def verify_remote(
    args: argparse.Namespace,
    quote: bytes,
    *,
    collateral_json: str | None = None,
    pck_chain: bytes | None = None,
    at: int | None = None,
) -> int:
    """Verify ``quote`` at the service ``args.remote``; print the document; the exit code."""
    request = pb.VerifyQuoteRequest(
        quote=quote,
        collateral_json=collateral_json or "",
        pck_chain_pem=pck_chain.decode() if pck_chain else "",
        audience=getattr(args, "audience", None) or "",
    )
    if getattr(args, "challenge", None):
        request.challenge = _challenge_bytes(args.challenge)
    if getattr(args, "user_data", None):
        if not getattr(args, "challenge", None):
            raise UsageError("--user-data goes with --challenge")
        try:
            request.user_data = bytes.fromhex(args.user_data)
        except ValueError:
            raise UsageError("--user-data must be hex") from None
    if at is not None:
        request.at = at
    if getattr(args, "policy", None):
        request.policy.CopyFrom(policy_to_proto(load_policy(args.policy)))
    with _channel(args) as channel:
        try:
            response = stub(channel).VerifyQuote(request, timeout=30)
        except grpc.RpcError as e:
            error = _rpc_error(e)
            sys.stderr.write(f"sgxemu: {error}\n")
            return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILURE
    doc = _document(response)
    if getattr(args, "json", False):
        print_json(doc)
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    if not response.verified:
        first = response.failures[0] if response.failures else None
        detail = f"{first.check} {first.code}: {first.message}" if first else "unknown"
        sys.stderr.write(f"sgxemu: quote not verified: {detail}\n")
        return EXIT_NOT_VERIFIED
    if not response.accepted:
        v = response.policy.violations[0]
        sys.stderr.write(
            f"sgxemu: quote verified but rejected by the policy: {v.code}: {v.message}\n"
        )
        return EXIT_FAILURE
    return EXIT_OK


# -- registration ----------------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", metavar="ADDR", help="the verifier's TLS address")
    parser.add_argument("--ca", metavar="PEM", help="the verifier's TLS CA (with --remote)")
    parser.add_argument("--socket", metavar="PATH", help="the verifier's admin socket")


def register(subparsers: Any) -> None:
    """Add ``verifier`` to the ``sgxemu`` command."""
    p = subparsers.add_parser(
        "verifier",
        help="the quote verification service and its collateral store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("SGXEMU_VERIFIER_CONFIG"),
        help="verifier.toml (env SGXEMU_VERIFIER_CONFIG; default $STATE/verifier/verifier.toml)",
    )
    sub = p.add_subparsers(dest="verifier_command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the verification service")
    serve.add_argument("--listen", metavar="ADDR", help="TLS address (default from the config)")
    serve.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics at ADDR")
    serve.set_defaults(func=_serve)

    challenge = sub.add_parser("challenge", help="get a freshness challenge from the service")
    challenge.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime")
    _client_options(challenge)
    challenge.add_argument("--json", action="store_true", help="print one JSON document")
    challenge.set_defaults(func=_challenge)
    jwks = sub.add_parser("jwks", help="print the verifier's JWK Set (to check its tokens)")
    _client_options(jwks)
    jwks.set_defaults(func=_jwks)

    collateral = sub.add_parser("collateral", help="import, refresh and inspect collateral")
    csub = collateral.add_subparsers(dest="collateral_command", metavar="COMMAND", required=True)
    imp = csub.add_parser("import", help="verify collateral files and store them")
    imp.add_argument("files", metavar="FILE", nargs="+")
    imp.add_argument("--json", action="store_true", help="print one JSON document")
    imp.set_defaults(func=_import)
    refresh = csub.add_parser("refresh", help="fetch current collateral from the configured PCS")
    refresh.add_argument("--quote", metavar="Q.bin", help="the platform of this quote")
    refresh.add_argument("--fmspc", type=_fmspc, metavar="HEX", help="the platform family")
    refresh.add_argument("--ca", dest="pck_ca", choices=[c.value for c in PckCa])
    refresh.add_argument("--tee", choices=[t.value for t in Tee], default="sgx")
    refresh.add_argument("--json", action="store_true", help="print one JSON document")
    refresh.set_defaults(func=_refresh)
    status = csub.add_parser("status", help="the latest collateral and what expires soon")
    status.add_argument("--within", type=int, default=7 * 86400, metavar="SECONDS")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=_status)


__all__ = [
    "EXIT_NOT_VERIFIED",
    "add_verify_options",
    "initialize_verifier",
    "load_policy",
    "register",
    "verify_remote",
]
