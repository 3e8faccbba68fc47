"""``sgxemu up [--detach]``, ``sgxemu down``, ``sgxemu status [--json]``."""

from __future__ import annotations

import argparse

from sgxemu_cli import supervisor
from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK
from sgxemu_cli.io import print_json
from sgxemu_cli.state import StateLayout, resolve_state_dir


def _layout(args: argparse.Namespace) -> StateLayout:
    layout = StateLayout(resolve_state_dir(args.state))
    layout.require_initialized()
    return layout


def _print_status(rows: list[supervisor.ServiceStatus]) -> None:
    for row in rows:
        pid = str(row.pid) if row.pid is not None else "-"
        print(f"  {row.name:<10} {row.health:<12} pid {pid:<8} {row.address}")


def _up(args: argparse.Namespace) -> int:
    layout = _layout(args)
    rows = supervisor.up(layout)
    print(f"sgxemu services of {layout.root} are up:")
    _print_status(rows)
    if args.detach:
        print(f"stop them with: sgxemu --state {layout.root} down")
        return EXIT_OK
    print("supervising them in the foreground; Ctrl-C stops them all")
    return supervisor.watch(layout)


def _down(args: argparse.Namespace) -> int:
    layout = _layout(args)
    stopped = supervisor.down(layout)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no service was running")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    layout = _layout(args)
    rows = supervisor.status(layout)
    healthy = all(r.health == "SERVING" for r in rows)
    if args.json:
        print_json(
            {"state": str(layout.root), "healthy": healthy, "services": [r.as_json() for r in rows]}
        )
    else:
        _print_status(rows)
    return EXIT_OK if healthy else EXIT_FAILURE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start every service of the state directory")
    p.add_argument("--detach", action="store_true", help="return once all are healthy")
    p.set_defaults(func=_up)
    p = sub.add_parser("down", help="stop every service gracefully")
    p.set_defaults(func=_down)
    p = sub.add_parser("status", help="report each service's health")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_status)
