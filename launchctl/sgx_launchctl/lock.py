"""The lock: the launch policy's digest latched in the platform until the next reset.

The platform has a write-once 32-byte register per boot (the launch-policy latch, cleared only
by a reset or restart of the platform). Locking writes the digest of the allowlist and the
load policy into it. The latch, not the database, is the truth about whether the policy is
locked: a daemon that restarts, crashes or is handed an older database reads it back.

Invariants:

* :func:`policy_digest` is SHA-256 over a domain tag and the canonical JSON of the allowlist
  and the load policy: equal policies give equal digests whatever order they were built in,
  and boot bookkeeping or the audit log never changes it.
* :func:`lock_status` is the one place the latch is judged against the state: empty latch,
  unlocked; equal digest, locked; any other digest, :class:`RollbackError` (this database is
  not the one that was locked — a restored older copy is a rollback), and the daemon refuses
  to serve it.
* While locked every change is refused with :class:`PolicyLockedError` ("the launch policy is
  locked until the platform is reset").
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum

from sgx_launchctl.allowlist import Allowlist
from sgx_launchctl.audit import canonical_json
from sgx_launchctl.errors import RollbackError
from sgx_launchctl.policy import LoadPolicy

_DOMAIN = b"sgxemu-launchctl-policy-v1\x00"


class LockStatus(Enum):
    UNLOCKED = "unlocked"
    LOCKED = "locked"


def policy_digest(allowlist: Allowlist, load_policy: LoadPolicy) -> bytes:
    """The digest the platform latches: allowlist and load policy, nothing else."""
    document = {"allowlist": allowlist.canonical(), "load_policy": load_policy.canonical()}
    return hashlib.sha256(_DOMAIN + canonical_json(document).encode()).digest()


def lock_status(latched: bytes | None, digest: bytes) -> LockStatus:
    """Judge the platform's latch against this state's digest (see the module docstring)."""
    if not latched:
        return LockStatus.UNLOCKED
    if hmac.compare_digest(latched, digest):
        return LockStatus.LOCKED
    raise RollbackError(
        f"the platform has latched launch-policy digest {latched.hex()}, but this database's "
        f"policy digest is {digest.hex()}: it is not the state that was locked (a restored "
        "older copy is a rollback); refusing to serve it",
        hint="restore the database that was locked, or reset the platform "
        "(sgxemu platform reset) to clear the latch",
    )
