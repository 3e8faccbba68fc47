"""Errors of the command line and their exit codes.

Exit codes (DESIGN.md): 0 success, 64 unusable input (EX_USAGE), 1 a refusal or failure that
the command reports in one line on stderr.
"""

from __future__ import annotations

from sgx_platform.arch.errors import SgxError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64


class CliError(SgxError):
    """A failure the CLI reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CliError):
    """Unusable input: a bad argument, a missing or unreadable file, junk bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
