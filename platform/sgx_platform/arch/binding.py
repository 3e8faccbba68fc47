"""The binding rule that ties a quote to a relying party's challenge (DESIGN.md, "Freshness"),
used by every component: ``REPORTDATA[0:32] = SHA-256(challenge || user data)``;
``REPORTDATA[32:64]`` is free for the application.

Invariants: pure (no I/O); :func:`binding_digest` is exactly 32 bytes and
:func:`report_data_for` exactly 64 (the REPORTBODY's REPORTDATA), its second half zero unless
the application gives all 32 bytes of it. Whoever *checks* a binding compares
``REPORTDATA[0:32]`` with :func:`binding_digest` using ``hmac.compare_digest`` and raises its
own error when they differ.
"""

from __future__ import annotations

import hashlib

from sgx_platform.arch.binary import require_bytes

#: The size of a REPORTBODY's REPORTDATA.
REPORT_DATA_SIZE = 64
#: The bound part, ``REPORTDATA[0:32]``; the rest is the application's.
BINDING_SIZE = 32


def binding_digest(challenge: bytes, user_data: bytes = b"") -> bytes:
    """The 32 bytes that go in ``REPORTDATA[0:32]``: SHA-256(challenge || user data)."""
    return hashlib.sha256(bytes(challenge) + bytes(user_data)).digest()


def report_data_for(
    challenge: bytes, user_data: bytes = b"", application_data: bytes = bytes(32)
) -> bytes:
    """The 64-byte REPORTDATA binding ``challenge`` and ``user_data``; ``application_data``
    (exactly 32 bytes, zero by default) is ``REPORTDATA[32:64]``.

    Raises :class:`~sgx_platform.arch.errors.MalformedStructureError` when
    ``application_data`` is not 32 bytes.
    """
    require_bytes(application_data, REPORT_DATA_SIZE - BINDING_SIZE, "REPORTDATA[32:64]")
    return binding_digest(challenge, user_data) + application_data
