"""Entry point of the ``sgxemu`` command.

``main(argv) -> int`` never raises for bad input: every :class:`SgxError` becomes one line on
stderr and a non-zero exit code (64 for unusable input). Logging is configured here only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from sgx_platform.arch.errors import MalformedStructureError, SgxError
from sgxemu_cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError

#: Command group modules, each with ``register(subparsers)``. Imported lazily at parse time.
COMMAND_MODULES: tuple[str, ...] = (
    "sgxemu_cli.commands.init",
    "sgxemu_cli.commands.image",
    "sgxemu_cli.commands.demo",
    "sgxemu_cli.commands.pcs",
    "sgxemu_cli.commands.quoting",
    "sgxemu_cli.commands.platform",
    "sgxemu_cli.commands.launchctl",
    "sgxemu_cli.commands.services",
    "sgxemu_cli.commands.verifier",
    "sgxemu_cli.commands.verify",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that exits 64 (EX_USAGE) on bad arguments instead of 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"sgxemu: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sgxemu", description="An emulated Intel SGX ecosystem.")
    parser.add_argument(
        "--state",
        default=os.environ.get("SGXEMU_STATE"),
        help="state directory (env SGXEMU_STATE; default ~/.local/state/sgxemu)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _accept_state_everywhere(parser)
    return parser


def _accept_state_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``--state`` also follow the command (``sgxemu init --state DIR``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--state" in a.option_strings for a in child._actions):
                    child.add_argument("--state", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _accept_state_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.func
    try:
        return handler(args)
    except CliError as e:
        sys.stderr.write(f"sgxemu: {e}\n")
        return e.exit_code
    except MalformedStructureError as e:
        sys.stderr.write(f"sgxemu: {e}\n")
        return EXIT_USAGE
    except SgxError as e:
        sys.stderr.write(f"sgxemu: {e}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("sgxemu: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


def entry() -> None:
    raise SystemExit(main())
