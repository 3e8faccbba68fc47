"""The load rules (the LSM hooks) and the way the platform opens an image, in isolation.

The same rules are exercised end to end through the gRPC service in test_service_load.py.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.driver_errors import DriverError, LoadPolicyDeniedError
from sgx_platform.load_policy import (
    ALL_RULES,
    WIRE,
    ImageFile,
    LoadPolicy,
    LoadRule,
    PageLoad,
    PageOrigin,
    StaticLoadPolicyProvider,
    check_page,
    check_pages,
    current_policy,
    open_image,
)

R, W, X = SecInfoFlags.R, SecInfoFlags.W, SecInfoFlags.X
CODE = SecInfo(PageType.REG, R | X)
DATA = SecInfo(PageType.REG, R | W)
RWX = SecInfo(PageType.REG, R | W | X)
TCS = SecInfo(PageType.TCS)


def _file(data: bytes = b"image") -> PageOrigin:
    digest = hashlib.sha256(data).digest()
    return PageOrigin(ImageFile(Path("/state/enclaves/a.sgxs"), data, digest))


@pytest.fixture()
def policy(tmp_path: Path) -> LoadPolicy:
    return LoadPolicy.defaults(tmp_path)


def _denied(policy: LoadPolicy, page: PageLoad, origin: PageOrigin) -> LoadPolicyDeniedError:
    with pytest.raises(LoadPolicyDeniedError) as e:
        check_page(policy, page, origin)
    assert e.value.errno == errno.EACCES
    assert e.value.rule in e.value.message, "a denial names its rule"
    assert e.value.hint, "a denial says how to fix it"
    return e.value


def test_defaults_turn_every_rule_on(policy: LoadPolicy) -> None:
    assert policy.enabled == ALL_RULES
    assert policy.allowed_digests is None


def test_no_exec_from_wire_denies_executable_wire_pages(policy: LoadPolicy) -> None:
    e = _denied(policy, PageLoad(0x1000, CODE, True), WIRE)
    assert (e.rule, e.reason) == ("no_exec_from_wire", "LOAD_NO_EXEC_FROM_WIRE")
    assert "0x1000" in e.message
    assert "sgxemu launchctl policy set no_exec_from_wire off" in e.hint


def test_exec_only_from_file_denies_wire_pages_when_the_wire_rule_is_off(
    policy: LoadPolicy,
) -> None:
    relaxed = policy.with_rule(LoadRule.NO_EXEC_FROM_WIRE, False)
    e = _denied(relaxed, PageLoad(0, CODE, True), WIRE)
    assert (e.rule, e.reason) == ("exec_only_from_file", "LOAD_EXEC_ONLY_FROM_FILE")
    both_off = relaxed.with_rule(LoadRule.EXEC_ONLY_FROM_FILE, False)
    check_page(both_off, PageLoad(0, CODE, True), WIRE)


def test_exec_only_from_file_enforces_the_digest_list(tmp_path: Path) -> None:
    listed = _file(b"listed image")
    unlisted = _file(b"other image")
    assert listed.image is not None and unlisted.image is not None
    policy = LoadPolicy((tmp_path,), frozenset({listed.image.sha256}))
    check_page(policy, PageLoad(0, CODE, True), listed)
    e = _denied(policy, PageLoad(0, CODE, True), unlisted)
    assert e.reason == "LOAD_EXEC_ONLY_FROM_FILE"
    assert unlisted.image.sha256.hex() in e.message
    assert f"allow-digest {unlisted.image.sha256.hex()}" in e.hint
    # Non-executable pages of an unlisted image are not the list's business.
    check_page(policy, PageLoad(0, DATA, True), unlisted)
    check_page(policy.with_rule(LoadRule.EXEC_ONLY_FROM_FILE, False), PageLoad(0, CODE, True),
               unlisted)


def test_no_write_exec_denies_rwx_pages_from_files_too(policy: LoadPolicy) -> None:
    e = _denied(policy, PageLoad(0x2000, RWX, True), _file())
    assert (e.rule, e.reason) == ("no_write_exec", "LOAD_NO_WRITE_EXEC")
    assert "RWX" in e.message
    check_page(policy.with_rule(LoadRule.NO_WRITE_EXEC, False), PageLoad(0, RWX, True), _file())


def test_no_unmeasured_exec(policy: LoadPolicy) -> None:
    e = _denied(policy, PageLoad(0x3000, CODE, False), _file())
    assert (e.rule, e.reason) == ("no_unmeasured_exec", "LOAD_NO_UNMEASURED_EXEC")
    check_page(policy.with_rule(LoadRule.NO_UNMEASURED_EXEC, False), PageLoad(0, CODE, False),
               _file())
    # Unmeasured data (a heap) is fine.
    check_page(policy, PageLoad(0x3000, DATA, False), WIRE)


def test_non_executable_pages_pass_every_rule(policy: LoadPolicy) -> None:
    check_pages(
        policy,
        [PageLoad(0, DATA, False), PageLoad(0x1000, TCS, True), PageLoad(0x2000, DATA, True)],
        WIRE,
    )


def test_a_page_breaking_several_rules_always_names_the_same_one(policy: LoadPolicy) -> None:
    assert _denied(policy, PageLoad(0, RWX, False), WIRE).rule == "no_exec_from_wire"
    assert _denied(policy, PageLoad(0, RWX, False), _file()).rule == "no_write_exec"


def test_a_failing_provider_fails_closed(policy: LoadPolicy) -> None:
    class Broken:
        def load_policy(self) -> LoadPolicy:
            raise ConnectionError("launchctl is down")

    assert current_policy(StaticLoadPolicyProvider(policy)) is policy
    with pytest.raises(DriverError) as e:
        current_policy(Broken())
    assert (e.value.errno, e.value.reason) == (errno.EACCES, "LOAD_POLICY_UNAVAILABLE")


# -- open_image ---------------------------------------------------------------------------------


@pytest.fixture()
def allowed(tmp_path: Path) -> Path:
    d = tmp_path / "enclaves"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


def _open_denied(policy: LoadPolicy, path: str) -> DriverError:
    with pytest.raises(DriverError) as e:
        open_image(policy, path)
    return e.value


def test_open_image_hashes_exactly_the_bytes_it_read(allowed: Path) -> None:
    data = os.urandom(10000)
    (allowed / "sub").mkdir()
    (allowed / "sub" / "a.sgxs").write_bytes(data)
    policy = LoadPolicy((allowed,))
    for name in ("sub/a.sgxs", str(allowed / "sub" / "a.sgxs"), "./sub//a.sgxs"):
        image = open_image(policy, name)
        assert image.data == data
        assert image.sha256 == hashlib.sha256(data).digest()
        assert image.path == allowed / "sub" / "a.sgxs"


def test_open_image_refuses_paths_outside_the_allowed_directories(
    allowed: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.sgxs").write_bytes(b"x")
    policy = LoadPolicy((allowed,))
    for path in (str(tmp_path / "outside.sgxs"), "../outside.sgxs", f"{allowed}/../outside.sgxs",
                 "/etc/shadow", str(allowed)):
        e = _open_denied(policy, path)
        assert e.errno in (errno.EACCES, errno.EINVAL), path
        assert e.reason in ("IMAGE_PATH_NOT_ALLOWED", "IMAGE_NOT_REGULAR"), path
    assert _open_denied(policy, "/etc/shadow").hint.startswith("copy it into")


def test_open_image_follows_no_symlink(allowed: Path, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.sgxs").write_bytes(b"x")
    (allowed / "a.sgxs").write_bytes(b"x")
    (allowed / "link.sgxs").symlink_to(allowed / "a.sgxs")
    (allowed / "linkdir").symlink_to(tmp_path / "real")
    policy = LoadPolicy((allowed,))
    for name in ("link.sgxs", "linkdir/a.sgxs"):
        e = _open_denied(policy, name)
        assert (e.errno, e.reason) == (errno.EACCES, "IMAGE_SYMLINK"), name


def test_open_image_missing_directory_fifo_and_size(allowed: Path) -> None:
    policy = LoadPolicy((allowed,))
    e = _open_denied(policy, "missing.sgxs")
    assert (e.errno, e.reason) == (errno.ENOENT, "IMAGE_NOT_FOUND")
    (allowed / "dir.sgxs").mkdir()
    assert _open_denied(policy, "dir.sgxs").reason == "IMAGE_NOT_REGULAR"
    os.mkfifo(allowed / "fifo.sgxs")
    assert _open_denied(policy, "fifo.sgxs").reason == "IMAGE_NOT_REGULAR"
    (allowed / "big.sgxs").write_bytes(bytes(4097))
    with pytest.raises(DriverError) as big:
        open_image(policy, "big.sgxs", max_bytes=4096)
    assert (big.value.errno, big.value.reason) == (errno.EFBIG, "IMAGE_TOO_LARGE")
    assert _open_denied(policy, "").errno == errno.EINVAL


def test_open_image_refuses_a_directory_others_may_write(allowed: Path) -> None:
    (allowed / "a.sgxs").write_bytes(b"x")
    os.chmod(allowed, 0o777)
    e = _open_denied(LoadPolicy((allowed,)), "a.sgxs")
    assert (e.errno, e.reason) == (errno.EACCES, "ALLOWED_DIR_WRITABLE")
    assert "chmod go-w" in e.hint
