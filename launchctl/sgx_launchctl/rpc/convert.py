"""Proto <-> domain conversion for ``sgx.launchctl.v1`` (used by the servicer and the client).

Invariants: conversions are total and strict in the proto-to-domain direction (a malformed
MRSIGNER, digest or rule raises :class:`InvalidRequestError`); nothing here decides anything.
"""

from __future__ import annotations

from sgx.launchctl.v1 import launchctl_pb2 as pb
from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.errors import InvalidRequestError
from sgx_launchctl.policy import RULES, LoadPolicy, rule_name
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement

MODES = {"open": pb.LAUNCH_MODE_OPEN, "token": pb.LAUNCH_MODE_TOKEN}
MODE_NAMES = {v: k for k, v in MODES.items()}


def measurement(raw: bytes, what: str) -> Measurement:
    try:
        return Measurement(bytes(raw))
    except MalformedStructureError:
        raise InvalidRequestError(f"{what} must be 32 bytes, got {len(raw)}") from None


def signer_to_pb(entry: SignerEntry) -> pb.SignerEntry:
    return pb.SignerEntry(
        mrsigner=entry.mrsigner.to_bytes(),
        allow_debug=entry.allow_debug,
        allow_provision_key=entry.allow_provision_key,
        isvprodids=sorted(entry.isvprodids or ()),
        min_isvsvn=entry.min_isvsvn,
        comment=entry.comment,
    )


def signer_from_pb(message: pb.SignerEntry) -> SignerEntry:
    return SignerEntry(
        mrsigner=measurement(message.mrsigner, "MRSIGNER"),
        allow_debug=message.allow_debug,
        allow_provision_key=message.allow_provision_key,
        isvprodids=frozenset(message.isvprodids) if message.isvprodids else None,
        min_isvsvn=message.min_isvsvn,
        comment=message.comment,
    )


def policy_to_pb(policy: LoadPolicy) -> pb.LoadPolicy:
    return pb.LoadPolicy(
        allowed_dirs=list(policy.allowed_dirs),
        digests_restricted=policy.allowed_digests is not None,
        allowed_digests=sorted(policy.allowed_digests or ()),
        rules=[pb.LoadRule(name=r, enabled=r in policy.enabled) for r in RULES],
    )


def policy_from_pb(message: pb.LoadPolicy) -> LoadPolicy:
    enabled = set()
    for rule in message.rules:
        name = rule_name(rule.name)
        if rule.enabled:
            enabled.add(name)
    return LoadPolicy(
        allowed_dirs=tuple(message.allowed_dirs),
        allowed_digests=frozenset(message.allowed_digests)
        if message.digests_restricted
        else None,
        enabled=frozenset(enabled),
    )
