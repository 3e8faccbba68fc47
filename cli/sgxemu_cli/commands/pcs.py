"""``sgxemu pcs``: the emulated provisioning certification service's scenario controls.

``root-ca --out ROOT.der``, ``tcb-recovery``, ``revoke-pck``, ``collateral (--quote Q.bin |
--fmspc HEX) --out C.json``, ``clock`` and ``status`` operate on the PCS in ``$STATE/pcs/``
(the directory ``sgxemu init`` creates) through :class:`~sgx_quoting.state.PcsStore`, under its
lock, so a running ProvisioningService sees each change at its next call.

Invariants: unusable input (a missing or junk quote, a bad FMSPC, serial or date) ends in one
line on stderr and exit 64; a missing or broken PCS state exits 1 with the reason. Outputs are
written atomically. ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sgx_platform.arch.dcap.signed_json import format_timestamp
from sgx_quoting.errors import PcsInputError
from sgx_quoting.pcs import ClockSetting, PlatformTcb, ProvisioningCertificationService
from sgx_quoting.pki import PckCa
from sgx_quoting.state import PcsStore
from sgxemu_cli.errors import EXIT_OK, UsageError
from sgxemu_cli.io import print_json, read_input, write_atomic
from sgxemu_cli.state import StateLayout, resolve_state_dir

MAX_QUOTE_FILE = 1 << 20

_T = TypeVar("_T")


def pcs_directory(state: str | None) -> Path:
    """``$STATE/pcs`` of an initialized state directory."""
    layout = StateLayout(resolve_state_dir(state))
    layout.require_initialized()
    return layout.component("pcs")


def _store(args: argparse.Namespace) -> PcsStore:
    return PcsStore(pcs_directory(args.state))


def _run(
    args: argparse.Namespace, operation: Callable[[ProvisioningCertificationService], Any]
) -> Any:
    try:
        with _store(args).session() as pcs:
            return operation(pcs)
    except PcsInputError as e:
        raise UsageError(str(e)) from e


def _emit(args: argparse.Namespace, document: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print_json(document)
    else:
        for line in lines:
            print(line)
    return EXIT_OK


# -- commands ---------------------------------------------------------------------------------


def _root_ca(args: argparse.Namespace) -> int:
    der = _store(args).load_pki().root_ca_der
    write_atomic(args.out, der)
    digest = hashlib.sha256(der).hexdigest()
    return _emit(
        args,
        {"out": args.out, "sha256": digest},
        [f"wrote the sgxemu root CA to {args.out} (SHA-256 {digest})"],
    )


def _tcb_recovery(args: argparse.Namespace) -> int:
    recovery = _run(
        args,
        lambda pcs: pcs.tcb_recovery(
            advisory_id=args.advisory_id,
            component=None if args.pcesvn_only else args.component,
            raise_pcesvn=args.pcesvn or args.pcesvn_only,
        ),
    )
    tcb = PlatformTcb.of_level(recovery.new_level)
    document = {
        "advisory_id": recovery.advisory_id,
        "tcb_evaluation_data_number": recovery.tcb_evaluation_data_number,
        "new_level": {
            "cpusvn": tcb.cpusvn.hex(),
            "pcesvn": tcb.pcesvn,
            "tcb_date": format_timestamp(recovery.new_level.tcb_date),
        },
    }
    return _emit(
        args,
        document,
        [
            f"TCB recovery {recovery.advisory_id}: evaluation data number "
            f"{recovery.tcb_evaluation_data_number}",
            f"  new UpToDate level: CPUSVN {tcb.cpusvn.hex()} PCESVN {tcb.pcesvn}",
            "  every platform below it is now OutOfDate; update its TCB and re-register the PCK",
        ],
    )


def _serial(text: str) -> int:
    try:
        value = int(text.removeprefix("0x").removeprefix("0X"), 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a serial is hex, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a serial must be positive")
    return value


def _revoke_pck(args: argparse.Namespace) -> int:
    revoked = _run(args, lambda pcs: pcs.revoke_pck(args.serial))
    serials = [format(s, "X") for s in revoked]
    lines = [f"revoked PCK certificate {s}" for s in serials] or ["nothing left to revoke"]
    return _emit(args, {"revoked": serials}, lines)


def _fmspc(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"FMSPC must be 12 hex digits, got {text!r}") from None
    if len(value) != 6:
        raise argparse.ArgumentTypeError(f"FMSPC must be 12 hex digits, got {text!r}")
    return value


def _collateral(args: argparse.Namespace) -> int:
    if args.quote is not None:
        quote = read_input(args.quote, "quote", max_bytes=MAX_QUOTE_FILE)
        collateral = _run(args, lambda pcs: pcs.collateral_for_quote(quote))
    else:
        ca = None if args.ca is None else PckCa.parse(args.ca)
        collateral = _run(args, lambda pcs: pcs.collateral(args.fmspc, ca))
    write_atomic(args.out, collateral.to_json(indent=2, trailing_newline=True).encode("utf-8"))
    info = collateral.signed_tcb_info.tcb_info
    document = {
        "out": args.out,
        "fmspc": info.fmspc.text,
        "issue_date": format_timestamp(info.issue_date),
        "next_update": format_timestamp(info.next_update),
        "tcb_evaluation_data_number": info.tcb_evaluation_data_number,
    }
    return _emit(
        args,
        document,
        [
            f"wrote QuoteCollateralV3 for FMSPC {info.fmspc.text} to {args.out}",
            f"  valid {document['issue_date']} .. {document['next_update']}",
        ],
    )


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a time is ISO 8601 (2025-06-01T12:00:00Z), got {text!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def _clock(args: argparse.Namespace) -> int:
    def operation(pcs: ProvisioningCertificationService) -> tuple[dt.datetime, ClockSetting]:
        if args.reset:
            pcs.set_clock()
        elif args.at is not None:
            pcs.set_clock(frozen_at=args.at)
        elif args.offset is not None:
            pcs.set_clock(offset_seconds=args.offset)
        return pcs.now(), pcs.state.clock

    now, clock = _run(args, operation)
    document = {
        "now": format_timestamp(now),
        "offset_seconds": clock.offset_seconds,
        "frozen_at": None if clock.frozen_at is None else format_timestamp(clock.frozen_at),
    }
    return _emit(args, document, [f"PCS clock: {document['now']}"])


def _status(args: argparse.Namespace) -> int:
    state, now = _run(args, lambda pcs: (pcs.state, pcs.now()))
    platform = state.platform
    levels = [
        {
            "cpusvn": PlatformTcb.of_level(level).cpusvn.hex(),
            "pcesvn": level.tcb.pcesvn,
            "status": level.tcb_status.value,
            "advisory_ids": list(level.advisory_ids),
        }
        for level in state.tcb_levels
    ]
    certificates = [
        {
            "serial": format(record.serial, "X"),
            "cpusvn": record.tcb.cpusvn.hex(),
            "pcesvn": record.tcb.pcesvn,
            "revoked": record.revoked_at is not None,
        }
        for record in state.pck_certificates
    ]
    document = {
        "now": format_timestamp(now),
        "fmspc": platform.fmspc.hex().upper(),
        "pce_id": platform.pce_id.hex().upper(),
        "ppid": platform.ppid.hex(),
        "pck_ca": platform.ca.value,
        "tcb_evaluation_data_number": state.tcb_evaluation_data_number,
        "tcb_levels": levels,
        "pck_certificates": certificates,
    }
    lines = [
        f"PCS at {document['now']}: FMSPC {document['fmspc']}, PCK {platform.ca.value} CA, "
        f"evaluation data number {state.tcb_evaluation_data_number}"
    ]
    for level in state.tcb_levels:
        advisories = ",".join(level.advisory_ids)
        lines.append(
            f"  level CPUSVN {PlatformTcb.of_level(level).cpusvn.hex()} PCESVN "
            f"{level.tcb.pcesvn}: {level.tcb_status.value} {advisories}".rstrip()
        )
    for record in state.pck_certificates:
        lines.append(
            f"  PCK {record.serial:X} CPUSVN {record.tcb.cpusvn.hex()} PCESVN {record.tcb.pcesvn}"
            + (" REVOKED" if record.revoked_at is not None else "")
        )
    return _emit(args, document, lines)


# -- registration -----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``pcs`` and its actions to the CLI."""
    pcs = subparsers.add_parser("pcs", help="the emulated provisioning certification service")
    sub = pcs.add_subparsers(dest="pcs_command", metavar="ACTION")
    sub.required = True

    root_ca = sub.add_parser("root-ca", help="export the emulated root CA certificate (DER)")
    root_ca.add_argument("--out", required=True, help="where to write the DER certificate")
    root_ca.set_defaults(func=_root_ca)

    recovery = sub.add_parser(
        "tcb-recovery", help="publish a higher TCB level: current platforms become OutOfDate"
    )
    recovery.add_argument("--advisory-id", help="the advisory to announce (default SGXEMU-SA-n)")
    recovery.add_argument(
        "--component",
        type=int,
        choices=range(16),
        default=0,
        metavar="0..15",
        help="the CPUSVN byte the new level raises (default 0)",
    )
    recovery.add_argument("--pcesvn", action="store_true", help="also raise PCESVN")
    recovery.add_argument(
        "--pcesvn-only", action="store_true", help="raise PCESVN and no CPUSVN byte"
    )
    recovery.set_defaults(func=_tcb_recovery)

    revoke = sub.add_parser("revoke-pck", help="put the platform's PCK certificates on the CRL")
    revoke.add_argument("--serial", type=_serial, help="revoke only this certificate (hex)")
    revoke.set_defaults(func=_revoke_pck)

    collateral = sub.add_parser(
        "collateral", help="write QuoteCollateralV3 JSON for a quote or an FMSPC"
    )
    target = collateral.add_mutually_exclusive_group(required=True)
    target.add_argument("--quote", help="a DCAP quote file")
    target.add_argument("--fmspc", type=_fmspc, help="an FMSPC (12 hex digits)")
    collateral.add_argument(
        "--ca", choices=("processor", "platform"), help="with --fmspc: the PCK CA"
    )
    collateral.add_argument("--out", required=True, help="where to write the JSON")
    collateral.set_defaults(func=_collateral)

    clock = sub.add_parser("clock", help="show or move the PCS clock (collateral dates)")
    how = clock.add_mutually_exclusive_group()
    how.add_argument("--offset", type=int, help="run SECONDS ahead (negative: behind) of now")
    how.add_argument("--at", type=_instant, help="freeze the clock at an ISO 8601 time")
    how.add_argument("--reset", action="store_true", help="follow the system clock again")
    clock.set_defaults(func=_clock)

    status = sub.add_parser("status", help="platform, TCB levels and PCK certificates")
    status.set_defaults(func=_status)

    for parser in (root_ca, recovery, revoke, collateral, clock, status):
        parser.add_argument("--json", action="store_true", help="print one JSON document")
