"""``sgxemu quoting serve|info|deploy-enclaves`` and ``sgxemu attest``.

``attest IMAGE.sgxs IMAGE.sig --quote-out Q.bin [--collateral-out C.json]
[--report-data HEX | --challenge [--user-data HEX]]`` loads the enclave through the platform
(which opens the image itself, so it must lie under an allowed directory, by default
``$STATE/enclaves/``), asks the quoting service for the QE's TARGETINFO, makes the REPORT with
the enclave's handle, gets the quote and, with ``--collateral-out``, the collateral from the
PCS (dcap-qvl's QuoteCollateralV3 JSON, what ``sgxemu verify --collateral`` reads). With
``--challenge`` it fetches a nonce from the verifier and binds it as DESIGN.md says:
REPORTDATA[0:32] = SHA-256(challenge || user data); ``--report-data`` puts up to 64 raw bytes
in REPORTDATA instead.

The functions ``initialize_quoting`` and ``initialize_pcs`` are the quoting side of
``sgxemu init``: the vendor-signed PCE and QE, then the PCS whose QE Identity names them.

Invariants: every command but ``serve`` is a client of the running services, through their
sockets; a refusal prints one line with the reason code and exits 1, unusable input exits 64;
``attest`` destroys its enclave before it exits, whatever happened; outputs are written
atomically; ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from sgx.quoting.v1 import quoting_pb2 as qpb
from sgx.quoting.v1 import quoting_pb2_grpc as qgrpc
from sgx.verifier.v1 import verifier_pb2 as vpb
from sgx.verifier.v1 import verifier_pb2_grpc as vgrpc
from sgx_platform.arch.binding import REPORT_DATA_SIZE, report_data_for
from sgx_platform.arch.dcap.quote import Quote
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.config import ConfigError
from sgx_platform.config import load_config as load_platform_config
from sgx_platform.rpc.client import EnclaveSession, PlatformClient, PlatformRpcError
from sgx_quoting.config import QuotingConfig, QuotingConfigError
from sgx_quoting.config import load_config as load_quoting_config
from sgx_quoting.enclave_errors import PcsCallError, QuotingStateError
from sgx_quoting.enclaves import EnclaveManifest, deploy_enclaves, initialize_state
from sgx_quoting.rpc.pcs_client import GrpcPcs
from sgx_quoting.state import create_pcs
from sgx_rpc.channel import tls_channel, unix_channel, wait_ready
from sgx_rpc.errors import error_info
from sgxemu_cli.errors import EXIT_OK, CliError, UsageError
from sgxemu_cli.io import print_json, read_input, write_atomic
from sgxemu_cli.state import StateLayout, resolve_state_dir

log = logging.getLogger(__name__)

MAX_USER_DATA = 1 << 16
DEFAULT_VERIFIER = "127.0.0.1:7443"


# -- sgxemu init -----------------------------------------------------------------------------------


def initialize_quoting(layout: StateLayout) -> dict[str, str]:
    """``$STATE/quoting``: the vendor key, the signed PCE and QE in ``$STATE/enclaves``, the
    manifest. The summary's ``vendor_mrsigner`` goes on launchctl's allowlist with PROVISIONKEY
    allowed."""
    try:
        manifest = initialize_state(layout.component("quoting"), layout.enclaves)
    except QuotingStateError as e:
        raise CliError(str(e)) from e
    return manifest.summary()


def initialize_pcs(layout: StateLayout) -> dict[str, str]:
    """``$STATE/pcs``: the emulated PCS, its QE Identity naming the quoting enclave of
    :func:`initialize_quoting` (run that first)."""
    manifest = EnclaveManifest.load(layout.component("quoting"), layout.enclaves)
    store = create_pcs(
        layout.component("pcs"),
        qe_mrsigner=manifest.mrsigner.value,
        qe_isvsvn=manifest.qe.isvsvn,
        qe_isvprodid=manifest.qe.isvprodid,
    )
    return {"pcs": str(store.directory), "qe_mrsigner": manifest.mrsigner.hex()}


# -- helpers ------------------------------------------------------------------------------------


def _layout(args: argparse.Namespace) -> StateLayout:
    layout = StateLayout(resolve_state_dir(args.state))
    layout.require_initialized()
    return layout


def _config(args: argparse.Namespace) -> QuotingConfig:
    layout = _layout(args)
    explicit = getattr(args, "config", None)
    try:
        return load_quoting_config(layout.root, Path(explicit) if explicit else None)
    except QuotingConfigError as e:
        raise UsageError(str(e)) from e


def _emit(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print_json(document)
    else:
        for line in lines:
            print(line)
    return EXIT_OK


def _rpc_failure(what: str, where: Path | str, error: grpc.RpcError, start: str) -> CliError:
    code: grpc.StatusCode = error.code()
    info = error_info(error)
    if code == grpc.StatusCode.UNAVAILABLE and info is None:
        return CliError(f"the {what} does not answer on {where}; start it: {start}")
    reason = info.reason if info is not None else code.name
    return CliError(f"the {what} refused ({reason}): {error.details() or code.name}")


def _hex(text: str, what: str, max_size: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{what} must be hex, got {text!r}") from None
    if len(value) > max_size:
        raise UsageError(f"{what} is {len(value)} bytes; at most {max_size}")
    return value


@contextmanager
def _quoting_stub(config: QuotingConfig) -> Iterator[qgrpc.QuotingServiceStub]:
    channel = unix_channel(config.socket)
    try:
        yield qgrpc.QuotingServiceStub(channel)
    except grpc.RpcError as e:
        raise _rpc_failure("quoting service", config.socket, e, "sgxemu quoting serve") from e
    finally:
        channel.close()


# -- quoting serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from sgx_quoting.service import QuotingServer

    config = _config(args)
    if args.metrics:
        config = dataclasses.replace(config, metrics_address=args.metrics)
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.INFO)  # a service logs what it does
    try:
        server = QuotingServer(config)
        addresses = server.start()
    except QuotingStateError as e:
        raise CliError(str(e)) from e
    except OSError as e:
        raise CliError(f"cannot start the quoting service: {e}") from e
    print("quoting service serving: " + ", ".join(f"{k} {v}" for k, v in addresses.items()))
    server.serve_forever()
    return EXIT_OK


# -- quoting info ----------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    config = _config(args)
    with _quoting_stub(config) as stub:
        info = stub.GetQuotingInfo(qpb.GetQuotingInfoRequest(), timeout=args.timeout)
    document = {
        "qe": {
            "mrenclave": info.qe_mrenclave.hex(),
            "mrsigner": info.qe_mrsigner.hex(),
            "isvprodid": info.qe_isvprodid,
            "svn": info.qe_svn,
        },
        "pce": {
            "mrenclave": info.pce_mrenclave.hex(),
            "mrsigner": info.pce_mrsigner.hex(),
            "isvprodid": info.pce_isvprodid,
            "svn": info.pce_svn,
            "pce_id": info.pce_id.hex(),
        },
        "cpusvn": info.cpu_svn.hex(),
        "attestation_public_key": info.attestation_public_key.hex(),
        "pck_cert_chain": info.pck_cert_chain,
    }
    lines = [
        f"QE   MRENCLAVE {info.qe_mrenclave.hex()} SVN {info.qe_svn}",
        f"PCE  MRENCLAVE {info.pce_mrenclave.hex()} SVN {info.pce_svn}",
        f"vendor MRSIGNER {info.qe_mrsigner.hex()}",
        f"certified for CPUSVN {info.cpu_svn.hex()} PCESVN {info.pce_svn}",
        f"attestation key {info.attestation_public_key.hex()}",
    ]
    return _emit(args, document, lines)


# -- quoting deploy-enclaves -----------------------------------------------------------------------


def _deploy(args: argparse.Namespace) -> int:
    layout = _layout(args)
    if args.pce_svn is None and args.qe_svn is None:
        raise UsageError("give --pce-svn and/or --qe-svn")
    try:
        manifest = deploy_enclaves(
            layout.component("quoting"), layout.enclaves, pce_svn=args.pce_svn, qe_svn=args.qe_svn
        )
    except QuotingStateError as e:
        raise CliError(str(e)) from e
    return _emit(
        args,
        manifest.summary(),
        [
            f"PCE SVN {manifest.pce.isvsvn}, QE SVN {manifest.qe.isvsvn} signed by "
            f"{manifest.mrsigner.hex()}",
            "the quoting service launches them at the next TCB update (sgxemu platform "
            "update-tcb), platform reset, or its restart",
        ],
    )


# -- attest ----------------------------------------------------------------------------------------


def _challenge(args: argparse.Namespace, layout: StateLayout) -> bytes:
    if args.verifier_socket:
        channel = unix_channel(Path(args.verifier_socket))
        where: str = args.verifier_socket
    else:
        ca = read_input(args.ca or str(layout.tls / "ca.pem"), "service CA", max_bytes=1 << 16)
        channel = tls_channel(args.verifier, ca)
        where = args.verifier
    try:
        try:
            wait_ready(channel, 10)
        except grpc.FutureTimeoutError:
            raise CliError(
                f"the verifier does not answer on {where}; start it: sgxemu verifier serve"
            ) from None
        try:
            reply = vgrpc.QuoteVerificationServiceStub(channel).CreateChallenge(
                vpb.CreateChallengeRequest(), timeout=args.timeout
            )
        except grpc.RpcError as e:
            raise _rpc_failure("verifier", where, e, "sgxemu verifier serve") from e
    finally:
        channel.close()
    challenge: bytes = reply.challenge
    return challenge


def _report_data(args: argparse.Namespace, layout: StateLayout) -> tuple[bytes, bytes | None]:
    if args.challenge:
        user = _hex(args.user_data or "", "--user-data", MAX_USER_DATA)
        challenge = _challenge(args, layout)
        return report_data_for(challenge, user), challenge
    if args.user_data:
        raise UsageError("--user-data goes with --challenge")
    raw = _hex(args.report_data or "", "--report-data", REPORT_DATA_SIZE)
    return raw + bytes(REPORT_DATA_SIZE - len(raw)), None


def _attest(args: argparse.Namespace) -> int:
    layout = _layout(args)
    sigstruct = read_input(args.sigstruct, "SIGSTRUCT", max_bytes=1 << 16)
    if len(sigstruct) != Sigstruct.SIZE:
        raise UsageError(
            f"SIGSTRUCT {args.sigstruct!r} is {len(sigstruct)} bytes, not {Sigstruct.SIZE}"
        )
    image = Path(args.image).absolute()
    if not image.is_file():
        raise UsageError(f"enclave image {args.image!r} does not exist")
    config = _config(args)
    try:
        platform = load_platform_config(layout.root)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    report_data, challenge = _report_data(args, layout)

    client = PlatformClient.unix(platform.sockets.device, timeout=args.timeout)
    try:
        try:
            loaded = client.load_enclave_from_file(image, sigstruct, debug=args.debug)
        except PlatformRpcError as e:
            raise _platform_failure(e, platform.sockets.device) from e
        session = EnclaveSession(client, loaded.handle, loaded.enclave_id, loaded.lease_seconds)
        try:
            with _quoting_stub(config) as stub:
                target = stub.GetTargetInfo(qpb.GetTargetInfoRequest(), timeout=args.timeout)
                try:
                    report = client.create_report(loaded.handle, target.target_info, report_data)
                except PlatformRpcError as e:
                    raise _platform_failure(e, platform.sockets.device) from e
                quote = stub.GetQuote(
                    qpb.GetQuoteRequest(report=report), timeout=args.timeout
                ).quote
        finally:
            session.close()
    finally:
        client.close()
    write_atomic(args.quote_out, quote)
    parsed = Quote.from_bytes(quote)
    document: dict[str, Any] = {
        "quote_out": args.quote_out,
        "quote_bytes": len(quote),
        "mrenclave": parsed.isv_report.mrenclave.hex(),
        "mrsigner": parsed.isv_report.mrsigner.hex(),
        "isv_prod_id": parsed.isv_report.isvprodid,
        "isv_svn": parsed.isv_report.isvsvn,
        "debug": parsed.isv_report.attributes.debug,
        "report_data": report_data.hex(),
        "qe_svn": parsed.header.qe_svn,
        "pce_svn": parsed.header.pce_svn,
    }
    lines = [
        f"wrote a DCAP quote v3 ({len(quote)} bytes) to {args.quote_out}",
        f"MRENCLAVE {document['mrenclave']}",
        f"MRSIGNER  {document['mrsigner']}",
        f"REPORTDATA {report_data.hex()}",
    ]
    if challenge is not None:
        document["challenge"] = challenge.hex()
        document["user_data"] = args.user_data or ""
        lines.append(f"challenge {challenge.hex()} (REPORTDATA[0:32] = SHA-256(challenge || "
                     "user data)); send it with the quote")
        if args.challenge_out:
            write_atomic(args.challenge_out, challenge)
            document["challenge_out"] = args.challenge_out
    if args.collateral_out:
        pcs = GrpcPcs.unix(config.pcs_socket, timeout=args.timeout)
        try:
            collateral = pcs.collateral_json(quote)
        except PcsCallError as e:
            if e.unavailable:
                raise CliError(
                    f"the PCS does not answer on {config.pcs_socket}; start it: sgxemu "
                    "quoting serve"
                ) from e
            raise CliError(f"the PCS refused ({e.remote_reason}): {e.remote_message}") from e
        finally:
            pcs.close()
        write_atomic(args.collateral_out, collateral.encode())
        document["collateral_out"] = args.collateral_out
        lines.append(f"wrote its collateral (QuoteCollateralV3 JSON) to {args.collateral_out}")
    return _emit(args, document, lines)


def _platform_failure(error: PlatformRpcError, socket: Path) -> CliError:
    if error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "UNAVAILABLE":
        return CliError(
            f"the platform service does not answer on {socket}; start it: sgxemu platform serve"
        )
    text = f"the platform refused ({error.reason}): {error.message}"
    if error.hint and error.hint not in error.message:
        text += f"; {error.hint}"
    return CliError(text)


# -- registration ----------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``quoting`` and ``attest`` to the ``sgxemu`` command."""

    def add_config(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config",
            metavar="FILE",
            default=os.environ.get("SGXEMU_QUOTING_CONFIG"),
            help="quoting.toml (env SGXEMU_QUOTING_CONFIG; default $STATE/quoting/quoting.toml)",
        )

    def add_timeout(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds to wait for each call"
        )

    quoting = subparsers.add_parser("quoting", help="the quoting enclave service (PCE and QE)")
    sub = quoting.add_subparsers(dest="quoting_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="run the quoting service (and the PCS) on $STATE/run/")
    add_config(serve)
    serve.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics at ADDR")
    serve.set_defaults(func=_serve)

    info = sub.add_parser("info", help="the running QE and PCE, their SVNs and certification")
    add_config(info)
    add_timeout(info)
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.set_defaults(func=_info)

    deploy = sub.add_parser(
        "deploy-enclaves", help="re-sign the PCE and/or QE with a higher ISVSVN (vendor key)"
    )
    deploy.add_argument("--pce-svn", type=int, metavar="N", help="the new PCESVN")
    deploy.add_argument("--qe-svn", type=int, metavar="N", help="the new QE SVN")
    deploy.add_argument("--json", action="store_true", help="print one JSON document")
    deploy.set_defaults(func=_deploy)

    attest = subparsers.add_parser(
        "attest", help="load an enclave, quote it, and write the quote (and its collateral)"
    )
    attest.add_argument("image", metavar="IMAGE.sgxs")
    attest.add_argument("sigstruct", metavar="IMAGE.sig")
    attest.add_argument("--quote-out", required=True, metavar="Q.bin")
    attest.add_argument("--collateral-out", metavar="C.json")
    data = attest.add_mutually_exclusive_group()
    data.add_argument("--report-data", metavar="HEX", help="REPORTDATA (up to 64 bytes)")
    data.add_argument(
        "--challenge", action="store_true", help="bind a fresh challenge from the verifier"
    )
    attest.add_argument("--user-data", metavar="HEX", help="hashed with the challenge")
    attest.add_argument("--challenge-out", metavar="FILE", help="write the challenge (binary)")
    attest.add_argument(
        "--verifier",
        metavar="ADDR",
        default=os.environ.get("SGXEMU_VERIFIER", DEFAULT_VERIFIER),
        help=f"the verifier's TLS address for --challenge (env SGXEMU_VERIFIER; "
        f"default {DEFAULT_VERIFIER})",
    )
    attest.add_argument("--ca", metavar="PEM", help="the verifier's TLS CA (default $STATE/tls)")
    attest.add_argument("--verifier-socket", metavar="PATH", help="the verifier's Unix socket")
    attest.add_argument("--debug", action="store_true", help="launch the enclave in debug mode")
    add_config(attest)
    add_timeout(attest)
    attest.add_argument("--json", action="store_true", help="print one JSON document")
    attest.set_defaults(func=_attest)

