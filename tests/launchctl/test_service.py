"""launchctl through the real services: the platform (token mode) asks the daemon at every EINIT,
the daemon decides by its allowlist, locks, survives restarts, refuses rollbacks and edits,
follows platform resets and TCB updates, and owns the load policy."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.errors import RollbackError, StateIntegrityError
from sgx_launchctl.rpc.client import LaunchctlRpcError
from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.image import build_image
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import mrsigner_of_public_key
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformRpcError
from sgx_platform.service import PlatformService

LOCKED = "the launch policy is locked until the platform is reset"
MODE64 = int(AttributeFlags.MODE64BIT)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def denied(load: Callable[[], object]) -> PlatformRpcError:
    with pytest.raises(PlatformRpcError) as e:
        load()
    return e.value


def entry(key: Any, **kw: Any) -> SignerEntry:
    return SignerEntry(mrsigner_of_public_key(key), **kw)


# -- the allowlist decides ----------------------------------------------------------------------


def test_a_listed_signer_launches_and_an_unlisted_one_is_denied_by_name(
    running: Any, keys: Any
) -> None:
    name, sig = running.enclave(keys.app)
    mrsigner = mrsigner_of_public_key(keys.app).hex()
    e = denied(lambda: running.load(name, sig))
    assert e.code == grpc.StatusCode.PERMISSION_DENIED
    assert e.reason == "LAUNCH_SIGNER_NOT_LISTED" and e.rule == "signer"
    assert mrsigner in e.message and "rule signer" in e.message
    assert e.hint == f"an admin can allow it: sgxemu launchctl add-signer {mrsigner}"
    admin = running.admin()
    assert admin.add_signer(entry(keys.app)) == (entry(keys.app), False)
    result = running.load(name, sig)
    assert result.mrsigner is not None and result.mrsigner.hex() == mrsigner
    other_name, other_sig = running.enclave(keys.other, seed=2)
    assert denied(lambda: running.load(other_name, other_sig)).reason == (
        "LAUNCH_SIGNER_NOT_LISTED"
    )
    admin.remove_signer(mrsigner_of_public_key(keys.app))
    assert denied(lambda: running.load(name, sig)).reason == "LAUNCH_SIGNER_NOT_LISTED"
    with pytest.raises(LaunchctlRpcError) as missing:
        admin.remove_signer(mrsigner_of_public_key(keys.app))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    events = [(line.event, line.details.get("mrsigner")) for line in admin.audit().entries]
    assert ("launch_denied", mrsigner) in events and ("launch_admitted", mrsigner) in events
    admitted = next(line for line in admin.audit().entries if line.event == "launch_admitted")
    assert admitted.details["mrenclave"] == result.mrenclave.hex()  # type: ignore[union-attr]
    assert admitted.details["attributes"] == f"{MODE64:#x}/0x3"
    assert admitted.caller.startswith("platform:")


def test_the_vendor_signer_is_listed_with_provisionkey(running: Any, keys: Any) -> None:
    vendor = running.public().signers()
    assert vendor == [entry(keys.vendor, allow_provision_key=True,
                            comment="emulated vendor signer (quoting and provisioning enclaves)")]


def test_each_constraint_denies_what_it_should(running: Any, keys: Any) -> None:
    admin = running.admin()
    admin.add_signer(entry(keys.app))
    name, sig = running.enclave(keys.app)
    e = denied(lambda: running.load(name, sig, debug=True))
    assert (e.reason, e.rule) == ("LAUNCH_DEBUG_NOT_ALLOWED", "allow_debug")
    assert e.hint.endswith("--allow-debug")
    admin.add_signer(entry(keys.app, allow_debug=True))
    assert running.load(name, sig, debug=True).initialized

    device, provision = running.device(), running.provision()
    prov_name, prov_sig = running.enclave(
        keys.app, seed=6, flags=MODE64 | int(AttributeFlags.PROVISIONKEY)
    )

    def with_provision_key() -> None:
        loaded = device.load_enclave_from_file(prov_name, prov_sig, provision_key=True)
        try:
            provision.grant_provision_key(loaded.handle)
            device.init_enclave(loaded.handle, prov_sig)
        finally:
            device.destroy_enclave(loaded.handle)

    e = denied(with_provision_key)
    assert (e.reason, e.rule) == ("LAUNCH_PROVISION_KEY_NOT_ALLOWED", "allow_provision_key")
    admin.add_signer(entry(keys.app, allow_provision_key=True))
    with_provision_key()

    product, product_sig = running.enclave(keys.app, seed=5, isvprodid=5, isvsvn=1)
    admin.add_signer(entry(keys.app, isvprodids=frozenset({1, 2})))
    e = denied(lambda: running.load(product, product_sig))
    assert e.reason == "LAUNCH_ISVPRODID_NOT_ALLOWED" and "--isvprodid 5" in e.hint
    admin.add_signer(entry(keys.app, isvprodids=frozenset({5}), min_isvsvn=2))
    e = denied(lambda: running.load(product, product_sig))
    assert e.reason == "LAUNCH_ISVSVN_TOO_LOW" and "--min-isvsvn 1" in e.hint
    admin.add_signer(entry(keys.app, isvprodids=frozenset({5}), min_isvsvn=1))
    assert running.load(product, product_sig).initialized


def test_einittoken_key_and_malformed_requests_get_no_token(running: Any, keys: Any) -> None:
    running.admin().add_signer(entry(keys.app, allow_debug=True, allow_provision_key=True))
    _, sig = running.enclave(keys.app)
    authority = running.authority()
    secs = Secs(size=1 << 16, attributes=Attributes(MODE64 | int(AttributeFlags.EINITTOKEN_KEY),
                                                    3))
    answer = authority.get_launch_token(sig, secs.to_bytes())
    assert answer.einittoken is None and answer.denial is not None
    assert answer.denial.reason == "LAUNCH_EINITTOKEN_KEY_NOT_ALLOWED"
    for bad_sig, bad_secs in ((sig[:-1], secs.to_bytes()), (sig, b"\x00" * 10)):
        answer = authority.get_launch_token(bad_sig, bad_secs)
        assert answer.denial is not None and answer.denial.rule == "malformed"
    good = authority.get_launch_token(sig, Secs(size=1 << 16,
                                                attributes=Attributes(MODE64, 3)).to_bytes())
    assert good.einittoken is not None and len(good.einittoken) == 304


# -- the lock -----------------------------------------------------------------------------------


def _assert_changes_refused(admin: Any, keys: Any) -> None:
    for change in (
        lambda: admin.add_signer(entry(keys.other)),
        lambda: admin.remove_signer(mrsigner_of_public_key(keys.app)),
        lambda: admin.allow_dir("/opt"),
        lambda: admin.allow_digest(b"\x01" * 32),
        lambda: admin.set_rule("no_write_exec", False),
    ):
        with pytest.raises(LaunchctlRpcError) as e:
            change()
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.reason == "POLICY_LOCKED" and e.value.message.startswith(LOCKED)


def test_after_lock_every_change_is_refused_across_daemon_restarts(
    running: Any, keys: Any
) -> None:
    admin = running.admin()
    admin.add_signer(entry(keys.app))
    digest = admin.lock()
    assert running.owner().info().launch_policy_latch == digest
    assert admin.lock() == digest  # idempotent
    status = running.public().status()
    assert status.locked and status.policy_digest == digest == status.latched_digest
    _assert_changes_refused(admin, keys)
    name, sig = running.enclave(keys.app)
    assert running.load(name, sig).initialized  # the locked policy still admits
    other, other_sig = running.enclave(keys.other, seed=2)
    e = denied(lambda: running.load(other, other_sig))
    assert e.reason == "LAUNCH_SIGNER_NOT_LISTED"
    assert e.hint.startswith(LOCKED + "; after a reset an admin can allow it: sgxemu launchctl")
    running.stop_launchctl()
    running.start_launchctl()
    admin = running.admin()
    assert admin.status().locked
    _assert_changes_refused(admin, keys)
    assert running.load(name, sig).initialized
    assert "policy_locked" in [line.event for line in admin.audit().entries]


def test_a_restored_older_database_is_refused_at_start(running: Any, keys: Any) -> None:
    db = running.state / "launchctl" / "launchctl.db"
    running.stop_launchctl()
    shutil.copy(db, running.root / "older.db")
    running.start_launchctl()
    admin = running.admin()
    admin.add_signer(entry(keys.app))
    admin.lock()
    running.stop_launchctl()
    shutil.copy(running.root / "older.db", db)
    with pytest.raises(RollbackError) as e:
        running.start_launchctl()
    assert "rollback" in str(e.value) and "latched" in str(e.value)
    # Nothing is served: the platform's launches fail closed.
    name, sig = running.enclave(keys.app)
    failed = denied(lambda: running.load(name, sig))
    assert failed.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)
    assert failed.reason in ("LAUNCH_AUTHORITY_UNAVAILABLE", "LOAD_POLICY_UNAVAILABLE")


def test_a_reset_clears_the_lock(running: Any, keys: Any) -> None:
    admin = running.admin()
    admin.lock()
    before = admin.status().boot_epoch
    running.owner().reset()
    wait_for(lambda: admin.status().boot_epoch != before and admin.status().ready)
    assert not admin.status().locked
    admin.add_signer(entry(keys.app))
    name, sig = running.enclave(keys.app)
    assert running.load(name, sig).initialized


def test_the_boot_configuration_is_applied_and_locks_at_every_boot(
    world: Any, keys: Any
) -> None:
    app = mrsigner_of_public_key(keys.app).hex()
    world.write_launchctl_config(
        f'[boot]\nlock = true\n[[boot.signers]]\nmrsigner = "{app}"\ncomment = "boot"\n'
    )
    world.start_platform("token")
    world.start_launchctl()
    admin = world.admin()
    assert admin.status().locked
    name, sig = world.enclave(keys.app)
    assert world.load(name, sig).initialized
    _assert_changes_refused(admin, keys)
    owner = world.owner()
    for _ in range(2):
        epoch = owner.reset().boot_epoch
        # The first launch of the new boot already gets the boot configuration's answer.
        assert world.load(name, sig).initialized
        assert admin.status().boot_epoch == epoch and admin.status().locked
        _assert_changes_refused(admin, keys)
    applied = [line for line in admin.audit().entries
               if line.event == "boot_configuration_applied"]
    assert len(applied) == 3 and all(line.details["lock"] for line in applied)
    assert len({line.details["boot_epoch"] for line in applied}) == 3


def test_the_boot_configuration_applies_once_per_boot(world: Any, keys: Any) -> None:
    app = mrsigner_of_public_key(keys.app).hex()
    world.write_launchctl_config(f'[[boot.signers]]\nmrsigner = "{app}"\n')
    world.start_platform("token")
    world.start_launchctl()
    world.admin().remove_signer(mrsigner_of_public_key(keys.app))
    world.stop_launchctl()
    world.start_launchctl()  # same platform boot: not applied again
    assert mrsigner_of_public_key(keys.app) not in {e.mrsigner for e in
                                                     world.admin().signers()}
    world.stop_platform()
    world.start_platform("token")  # a platform restart is a new boot
    admin = world.admin()
    wait_for(lambda: admin.status().ready and mrsigner_of_public_key(keys.app) in
             {e.mrsigner for e in admin.signers()})


# -- TCB updates, daemon down, open mode ----------------------------------------------------


def test_after_a_tcb_update_the_daemon_restarts_on_its_state(running: Any, keys: Any) -> None:
    admin = running.admin()
    admin.add_signer(entry(keys.app))
    cpusvn = running.owner().update_tcb()
    running.stop_launchctl()
    running.start_launchctl()
    admin = running.admin()
    assert entry(keys.app) in admin.signers()
    resealed = [line for line in admin.audit().entries if line.event == "state_resealed"]
    assert resealed and resealed[-1].details["cpusvn"] == cpusvn.hex()
    assert admin.audit(verify=True).verified
    name, sig = running.enclave(keys.app)
    assert running.load(name, sig).initialized
    # And a platform restart on the new TCB (new boot, new CPUSVN) is followed too.
    running.stop_platform()
    running.start_platform("token")
    wait_for(lambda: admin.status().ready and admin.status().boot_epoch ==
             running.device().info().boot_epoch)
    assert running.load(name, sig).initialized


def test_with_the_daemon_down_launches_fail_closed(running: Any, keys: Any) -> None:
    running.admin().add_signer(entry(keys.app))
    running.stop_launchctl()
    name, sig = running.enclave(keys.app)
    e = denied(lambda: running.load(name, sig))
    assert e.reason in ("LAUNCH_AUTHORITY_UNAVAILABLE", "LOAD_POLICY_UNAVAILABLE")
    assert "fail" in e.message and "closed" in e.message


#: Launch attempts (0.1 s apart) allowed after a daemon restart before the test fails. A
#: liveness bound, not a measurement (bench/launch_soak.py measures): the platform's channel to
#: the daemon reconnects within about a second (QUICK_RECONNECT: a handful of attempts), where
#: gRPC's default backoff, grown during a few seconds of downtime, often needs more than these.
RESTART_ATTEMPTS = 20


def test_after_a_daemon_restart_launches_succeed_again_promptly(world: Any, keys: Any) -> None:
    """The platform takes only tokens from the daemon here (``load_policy = false``), so the
    daemon's own start does not wait for the platform to reconnect: the launches do."""
    config = parse_config(
        world.platform_config_text("token") + "load_policy = false\n", world.state
    )
    world.platform = PlatformService(config)
    world.platform.start()
    world.start_launchctl()
    world.admin().add_signer(entry(keys.app))
    name, sig = world.enclave(keys.app)
    device = world.device()

    def launch() -> None:
        loaded = device.load_enclave_from_file(name, sig)
        device.destroy_enclave(loaded.handle)

    launch()
    world.stop_launchctl()
    for _ in range(30):  # down for a while, and the platform keeps trying: fail closed
        assert denied(launch).reason == "LAUNCH_AUTHORITY_UNAVAILABLE"
        time.sleep(0.1)
    world.start_launchctl()
    failures: list[str] = []
    for _ in range(RESTART_ATTEMPTS):
        try:
            launch()
            break
        except PlatformRpcError as e:
            failures.append(e.reason)
            time.sleep(0.1)
    else:
        raise AssertionError(f"no launch in {RESTART_ATTEMPTS} attempts: {failures}")
    assert set(failures) <= {"LAUNCH_AUTHORITY_UNAVAILABLE"}, failures


def test_open_mode_launches_anything_validly_signed(world: Any, keys: Any) -> None:
    world.start_platform("open")
    world.start_launchctl()
    status = world.admin().status()
    assert status.mode == "open" and status.ready
    name, sig = world.enclave(keys.other, seed=9)
    assert world.load(name, sig).initialized  # unlisted, yet it runs: the article's problem


# -- the load policy ----------------------------------------------------------------------------


def test_the_platform_applies_the_load_policy_it_pulls(running: Any, keys: Any) -> None:
    admin = running.admin()
    admin.add_signer(entry(keys.app))
    device = running.device()
    image = build_image(seed=11)
    code = next(p for p in image.pages if p.secinfo.flags & SecInfoFlags.X)
    rx = SecInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.X).to_bytes()

    def add_code_over_the_wire() -> None:
        created = device.create_enclave(Secs(size=image.size, base_address=image.size,
                                             attributes=Attributes(MODE64, 3)).to_bytes())
        try:
            device.add_pages(created.enclave_handle, code.offset, code.data, rx, measure=True)
        finally:
            device.destroy_enclave(created.enclave_handle)

    assert denied(add_code_over_the_wire).reason == "LOAD_NO_EXEC_FROM_WIRE"
    admin.set_rule("no_exec_from_wire", False)
    assert denied(add_code_over_the_wire).reason == "LOAD_EXEC_ONLY_FROM_FILE"
    admin.set_rule("exec_only_from_file", False)
    add_code_over_the_wire()

    name, sig = running.enclave(keys.app, seed=12)
    other, other_sig = running.enclave(keys.app, seed=13)
    digest = hashlib.sha256((running.state / "enclaves" / name).read_bytes()).digest()
    policy = admin.allow_digest(digest)
    assert policy.allowed_digests == frozenset({digest})
    admin.set_rule("exec_only_from_file", True)
    assert running.load(name, sig).initialized
    e = denied(lambda: running.load(other, other_sig))
    assert e.reason == "LOAD_EXEC_ONLY_FROM_FILE" and "allow-digest" in e.hint

    elsewhere = running.root / "images"
    elsewhere.mkdir(mode=0o755)
    shutil.copy(running.state / "enclaves" / name, elsewhere / name)
    assert denied(lambda: running.load(str(elsewhere / name), sig)).reason == (
        "IMAGE_PATH_NOT_ALLOWED"
    )
    assert str(elsewhere) in admin.allow_dir(str(elsewhere)).allowed_dirs
    assert running.load(str(elsewhere / name), sig).initialized
    assert running.public().status().policy.allowed_dirs[-1] == str(elsewhere)


# -- offline edits and the audit ----------------------------------------------------------------


def _edit(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE signers SET entry = replace(entry, '\"allow_debug\":false', "
        "'\"allow_debug\":true')",
        "DELETE FROM audit WHERE sequence = (SELECT MAX(sequence) FROM audit)",
        "UPDATE audit SET caller = 'nobody' WHERE sequence = 1",
    ],
)
def test_offline_edits_are_refused_at_start(running: Any, keys: Any, sql: str) -> None:
    running.admin().add_signer(entry(keys.app))
    running.stop_launchctl()
    _edit(running.state / "launchctl" / "launchctl.db", sql)
    with pytest.raises(StateIntegrityError):
        running.start_launchctl()


def test_audit_verify_names_the_first_broken_entry(running: Any, keys: Any) -> None:
    admin = running.admin()
    for key in (keys.app, keys.other):
        admin.add_signer(entry(key))
    log = admin.audit(verify=True)
    assert log.verified and log.length == len(log.entries) == 4
    assert [line.sequence for line in log.entries] == [1, 2, 3, 4]
    _edit(running.state / "launchctl" / "launchctl.db",
          "UPDATE audit SET details = '{}' WHERE sequence = 3")
    broken = admin.audit(verify=True)
    assert broken.verified is False and broken.first_broken_sequence == 3
    assert "edited" in broken.reason
