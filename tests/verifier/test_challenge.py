"""Challenges: the layout, the MAC, the window, the binding rule and the replay store."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.binding import binding_digest, report_data_for
from sgx_platform.arch.errors import MalformedStructureError
from sgx_verifier.challenge import (
    CHALLENGE_SIZE,
    Challenge,
    ChallengeConfigError,
    ChallengeError,
    ChallengeFailure,
    ChallengeKey,
    ChallengeKeyError,
    ChallengeService,
    SqliteReplayStore,
)

NOW = 1_750_000_000


def _service(tmp_path: Path, key: ChallengeKey | None = None, ttl: int = 60) -> ChallengeService:
    return ChallengeService(
        key or ChallengeKey(bytes(range(32))),
        SqliteReplayStore(tmp_path / "replay.sqlite"),
        ttl=ttl,
    )


def _report_data(nonce: bytes, user_data: bytes = b"", tail: bytes = bytes(32)) -> bytes:
    return report_data_for(nonce, user_data, tail)


# --- layout -------------------------------------------------------------------------------


def test_layout_round_trips_and_is_96_bytes(tmp_path: Path) -> None:
    c = _service(tmp_path).issue(now=NOW)
    raw = c.to_bytes()
    assert len(raw) == CHALLENGE_SIZE == 96
    assert Challenge.from_bytes(raw) == c
    assert raw[0] == 1 and raw[1:8] == bytes(7)
    assert int.from_bytes(raw[16:24], "little") == NOW
    assert int.from_bytes(raw[24:32], "little") == NOW + 60


@pytest.mark.parametrize("cut", [0, 1, 8, 16, 24, 32, 63, 64, 95])
def test_truncation_is_malformed(tmp_path: Path, cut: int) -> None:
    raw = _service(tmp_path).issue(now=NOW).to_bytes()
    with pytest.raises(MalformedStructureError):
        Challenge.from_bytes(raw[:cut])


def test_trailing_bytes_reserved_bytes_and_version_are_refused(tmp_path: Path) -> None:
    raw = _service(tmp_path).issue(now=NOW).to_bytes()
    with pytest.raises(MalformedStructureError):
        Challenge.from_bytes(raw + b"\x00")
    for i in range(1, 8):
        bad = bytearray(raw)
        bad[i] = 1
        with pytest.raises(MalformedStructureError, match="reserved"):
            Challenge.from_bytes(bytes(bad))
    with pytest.raises(MalformedStructureError, match="version"):
        Challenge.from_bytes(b"\x02" + raw[1:])


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=CHALLENGE_SIZE, max_size=CHALLENGE_SIZE))
def test_whatever_parses_re_encodes_identically(raw: bytes) -> None:
    try:
        parsed = Challenge.from_bytes(raw)
    except MalformedStructureError:
        return
    assert parsed.to_bytes() == raw


# --- authentication and window ----------------------------------------------------------


def test_every_byte_is_authenticated(tmp_path: Path) -> None:
    service = _service(tmp_path)
    raw = service.issue(now=NOW).to_bytes()
    service.check(raw, now=NOW)
    for i in range(CHALLENGE_SIZE):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(ChallengeError) as e:
            service.check(bytes(bad), now=NOW + 1)
        assert e.value.code in {
            ChallengeFailure.MALFORMED,
            ChallengeFailure.BAD_MAC,
            ChallengeFailure.UNKNOWN_KEY,
        }, i
        assert e.value.hint


def test_a_challenge_from_another_key_names_the_key(tmp_path: Path) -> None:
    other = ChallengeService(ChallengeKey.generate(), SqliteReplayStore(tmp_path / "o.sqlite"))
    raw = other.issue(now=NOW).to_bytes()
    with pytest.raises(ChallengeError) as e:
        _service(tmp_path).check(raw, now=NOW)
    assert e.value.code is ChallengeFailure.UNKNOWN_KEY


def test_a_forged_mac_under_the_right_key_id_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path)
    good = service.issue(now=NOW)
    forged = Challenge(good.key_id, good.issued_at, good.expires_at + 3600, good.random, good.mac)
    with pytest.raises(ChallengeError) as e:
        service.check(forged.to_bytes(), now=NOW)
    assert e.value.code is ChallengeFailure.BAD_MAC


def test_window_expired_and_not_yet_valid(tmp_path: Path) -> None:
    service = _service(tmp_path, ttl=60)
    raw = service.issue(now=NOW).to_bytes()
    service.check(raw, now=NOW + 59)
    with pytest.raises(ChallengeError) as e:
        service.check(raw, now=NOW + 60)
    assert e.value.code is ChallengeFailure.EXPIRED
    service.check(raw, now=NOW - 5)  # within the leeway for clock differences
    with pytest.raises(ChallengeError) as e:
        service.check(raw, now=NOW - 6)
    assert e.value.code is ChallengeFailure.NOT_YET_VALID


@pytest.mark.parametrize("ttl", [0, -1, 24 * 3600 + 1])
def test_lifetimes_out_of_bounds_are_refused(tmp_path: Path, ttl: int) -> None:
    with pytest.raises(ChallengeConfigError):
        _service(tmp_path, ttl=ttl)
    with pytest.raises(ChallengeConfigError):
        _service(tmp_path).issue(now=NOW, ttl=ttl)


# --- binding and replay -----------------------------------------------------------------


def test_binding_rule_is_sha256_of_nonce_then_user_data() -> None:
    assert binding_digest(b"abc", b"def") == hashlib.sha256(b"abcdef").digest()
    assert binding_digest(b"abc") == hashlib.sha256(b"abc").digest()


def test_redeem_once_then_replay_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path)
    raw = service.issue(now=NOW).to_bytes()
    rd = _report_data(raw, b"user", tail=b"\xaa" * 32)  # [32:64] is the application's
    service.redeem(raw, rd, b"user", now=NOW + 1)
    with pytest.raises(ChallengeError) as e:
        service.redeem(raw, rd, b"user", now=NOW + 2)
    assert e.value.code is ChallengeFailure.REPLAYED


@pytest.mark.parametrize(
    "report_data, user_data",
    [
        (None, b"other user data"),
        (bytes(64), b""),
        (b"\x00" * 63, b""),
        ("swapped", b""),
    ],
)
def test_unbound_report_data_is_refused_and_does_not_burn_the_challenge(
    tmp_path: Path, report_data: bytes | str | None, user_data: bytes
) -> None:
    service = _service(tmp_path)
    raw = service.issue(now=NOW).to_bytes()
    if report_data is None:
        rd = _report_data(raw, b"user")
    elif report_data == "swapped":
        rd = bytes(32) + binding_digest(raw)
    else:
        assert isinstance(report_data, bytes)
        rd = report_data
    with pytest.raises(ChallengeError) as e:
        service.redeem(raw, rd, user_data, now=NOW + 1)
    assert e.value.code is ChallengeFailure.NOT_BOUND
    service.redeem(raw, _report_data(raw), now=NOW + 1)


def test_expired_challenge_is_refused_even_when_bound(tmp_path: Path) -> None:
    service = _service(tmp_path, ttl=10)
    raw = service.issue(now=NOW).to_bytes()
    with pytest.raises(ChallengeError) as e:
        service.redeem(raw, _report_data(raw), now=NOW + 10)
    assert e.value.code is ChallengeFailure.EXPIRED


def test_replicas_sharing_key_and_store_accept_each_other_once(tmp_path: Path) -> None:
    key_file = tmp_path / "challenge.key"
    ChallengeKey.create(key_file)
    a = ChallengeService(ChallengeKey.load(key_file), SqliteReplayStore(tmp_path / "r.sqlite"))
    b = ChallengeService(ChallengeKey.load(key_file), SqliteReplayStore(tmp_path / "r.sqlite"))
    raw = a.issue(now=NOW).to_bytes()
    b.redeem(raw, _report_data(raw), now=NOW + 1)
    with pytest.raises(ChallengeError) as e:
        a.redeem(raw, _report_data(raw), now=NOW + 2)
    assert e.value.code is ChallengeFailure.REPLAYED


def test_concurrent_redeems_let_exactly_one_through(tmp_path: Path) -> None:
    service = _service(tmp_path)
    raw = service.issue(now=NOW).to_bytes()
    results: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            service.redeem(raw, _report_data(raw), now=NOW + 1)
            outcome = "ok"
        except ChallengeError as e:
            outcome = e.code.value
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["CHALLENGE_REPLAYED"] * 7 + ["ok"]


def test_purge_forgets_only_expired_entries(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path / "r.sqlite")
    store.redeem(b"a" * 32, NOW + 10, NOW)
    store.redeem(b"b" * 32, NOW + 100, NOW)
    assert store.purge(NOW + 50) == 1
    assert store.count() == 1
    with pytest.raises(ChallengeError):
        store.redeem(b"b" * 32, NOW + 100, NOW + 60)


# --- the key file -------------------------------------------------------------------------


def test_key_file_is_private_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "challenge.key"
    key = ChallengeKey.create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ChallengeKey.load(path) == key
    assert ChallengeKey.load_or_create(path) == key
    with pytest.raises(ChallengeKeyError, match="exists"):
        ChallengeKey.create(path)
    assert key.secret.hex() not in repr(key)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_key_file_readable_by_others_wrong_size_or_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "challenge.key"
    ChallengeKey.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ChallengeKeyError, match="chmod 600"):
        ChallengeKey.load(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    os.chmod(short, 0o600)
    with pytest.raises(ChallengeKeyError, match="32 bytes"):
        ChallengeKey.load(short)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(ChallengeKeyError):
        ChallengeKey.load(link)
    with pytest.raises(ChallengeKeyError, match="does not exist"):
        ChallengeKey.load(tmp_path / "missing.key")
