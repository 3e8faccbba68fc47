"""The load policy launchctl owns: directories, digests, rules; the lock digest."""

from __future__ import annotations

import pytest

from sgx_launchctl.allowlist import Allowlist, SignerEntry
from sgx_launchctl.errors import InvalidRequestError, RollbackError
from sgx_launchctl.lock import LockStatus, lock_status, policy_digest
from sgx_launchctl.policy import (
    ALL_RULES,
    RULES,
    LoadPolicy,
    bootstrap_policy,
    digest_from_hex,
    rule_name,
)
from sgx_platform.arch.measurement import Measurement
from sgx_platform.load_policy import LoadRule

A = Measurement(b"\x01" * 32)
B = Measurement(b"\x02" * 32)


def test_rule_names_are_the_platforms() -> None:
    assert RULES == tuple(r.value for r in LoadRule)


def test_defaults_and_changes() -> None:
    p = LoadPolicy.defaults("/srv/s/enclaves")
    assert p.allowed_dirs == ("/srv/s/enclaves",) and p.allowed_digests is None
    assert p.enabled == ALL_RULES
    p2 = p.allow_dir("/opt/images/").allow_dir("/srv/s/enclaves/.")
    assert p2.allowed_dirs == ("/srv/s/enclaves", "/opt/images")
    p3 = p2.allow_digest(b"\xaa" * 32)
    assert p3.allowed_digests == frozenset({b"\xaa" * 32}) and p2.allowed_digests is None
    p4 = p3.with_rule("no-write-exec", False)
    assert not p4.is_on("no_write_exec") and p3.is_on("no_write_exec")
    assert LoadPolicy.from_canonical(p4.canonical()) == p4


@pytest.mark.parametrize("directory", ["", "relative/dir", "/a/../b", "/a\x00b"])
def test_bad_directories_are_refused(directory: str) -> None:
    with pytest.raises(InvalidRequestError):
        LoadPolicy.defaults("/s").allow_dir(directory)


def test_bad_rules_and_digests_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="unknown load rule"):
        rule_name("no_everything")
    with pytest.raises(InvalidRequestError):
        LoadPolicy.defaults("/s").with_rule("nope", True)
    for text in ("", "ab" * 31, "zz" * 32):
        with pytest.raises(InvalidRequestError):
            digest_from_hex(text)
    with pytest.raises(InvalidRequestError):
        LoadPolicy(("/s",), frozenset({b"short"}))
    with pytest.raises(InvalidRequestError):
        LoadPolicy.from_canonical({"allowed_dirs": ["/s"], "rules": {"bogus": True}})


def test_bootstrap_policy_allows_only_the_launch_enclave_image() -> None:
    p = bootstrap_policy("/s/enclaves", b"\x11" * 32)
    assert p.enabled == ALL_RULES and p.allowed_digests == frozenset({b"\x11" * 32})
    assert p.allowed_dirs == ("/s/enclaves",)


def test_policy_digest_depends_on_policy_only() -> None:
    policy = LoadPolicy.defaults("/s/enclaves")
    one = Allowlist.of([SignerEntry(A), SignerEntry(B, allow_debug=True)])
    two = Allowlist.of([SignerEntry(B, allow_debug=True), SignerEntry(A)])
    assert policy_digest(one, policy) == policy_digest(two, policy)
    assert policy_digest(one, policy) != policy_digest(one.without(A), policy)
    assert policy_digest(one, policy) != policy_digest(one, policy.with_rule("no_write_exec",
                                                                             False))
    assert policy_digest(one, policy) != policy_digest(
        one.with_entry(SignerEntry(A, comment="x")), policy
    )
    assert len(policy_digest(one, policy)) == 32


def test_lock_status_judges_the_latch() -> None:
    digest = b"\x05" * 32
    assert lock_status(None, digest) is LockStatus.UNLOCKED
    assert lock_status(b"", digest) is LockStatus.UNLOCKED
    assert lock_status(digest, digest) is LockStatus.LOCKED
    with pytest.raises(RollbackError, match="rollback"):
        lock_status(b"\x06" * 32, digest)
