"""The boot configuration (``[boot]`` of ``launchctl.toml``): Wettstein's "set at system
initialization, then immutable".

At every platform boot (a start, restart or reset of the platform: a new boot epoch), before
the daemon issues any token or serves the real load policy for that boot, it applies the boot
configuration to its state and, when it says ``lock = true``, locks.

Invariants:

* Applying is a merge, never a removal: listed signers are added or replace the entry of the
  same MRSIGNER; listed directories and digests are allowed; listed rules are set. What an
  admin added at run time survives a reboot unless the boot configuration overrides that
  entry.
* It is applied at most once per boot epoch (the state records the epoch), in one durable
  transaction with its audit entry, even if the daemon restarts within the boot.
* While the platform's latch holds the state's digest nothing is applied (the policy is locked);
  the lock itself is applied after the merge, so it latches the merged policy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sgx_launchctl.config import BootConfig
from sgx_launchctl.store import LaunchState


def apply_boot_config(state: LaunchState, boot: BootConfig, epoch: bytes) -> LaunchState:
    """``state`` with the boot configuration merged in and ``epoch`` marked as applied."""
    allowlist = state.allowlist
    for entry in boot.signers:
        allowlist = allowlist.with_entry(entry)
    policy = state.load_policy
    for directory in boot.load_policy.allowed_dirs:
        policy = policy.allow_dir(directory)
    for digest in boot.load_policy.allowed_digests:
        policy = policy.allow_digest(digest)
    for rule, on in boot.load_policy.rules:
        policy = policy.with_rule(rule, on)
    return replace(state, allowlist=allowlist, load_policy=policy, boot_applied=epoch)


def describe_boot_config(boot: BootConfig) -> dict[str, Any]:
    """The audit details of an application of ``boot``."""
    return {
        "signers": [e.canonical() for e in boot.signers],
        "allowed_dirs": list(boot.load_policy.allowed_dirs),
        "allowed_digests": [d.hex() for d in boot.load_policy.allowed_digests],
        "rules": dict(boot.load_policy.rules),
        "lock": boot.lock,
    }
