"""The root of the project's exception tree.

Every package's errors derive from :class:`SgxError`; malformed binary or text input raises
:class:`MalformedStructureError`, which is also a :class:`ValueError`.
"""

from __future__ import annotations


class SgxError(Exception):
    """Root of every error raised by sgxemu."""


class MalformedStructureError(SgxError, ValueError):
    """Bytes or text that do not form a valid structure (length, reserved bytes, constants)."""


class SignatureError(SgxError):
    """A signature (SIGSTRUCT RSA, ECDSA) did not verify."""
