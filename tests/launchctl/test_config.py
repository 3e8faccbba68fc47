"""launchctl.toml: TOML into frozen dataclasses, unknown keys rejected, boot configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sgx_launchctl.allowlist import Allowlist, SignerEntry
from sgx_launchctl.boot import apply_boot_config, describe_boot_config
from sgx_launchctl.config import load_config, parse_config
from sgx_launchctl.errors import ConfigError
from sgx_launchctl.policy import LoadPolicy
from sgx_launchctl.service import DEFAULT_CONFIG_TEXT
from sgx_launchctl.store import LaunchState
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.signing import mrsigner_of_public_key, sign_sigstruct

STATE = Path("/srv/sgxemu")
A = "aa" * 32


def test_defaults() -> None:
    c = parse_config("", STATE)
    assert c.database == STATE / "launchctl" / "launchctl.db"
    assert c.launch_enclave.image == STATE / "enclaves" / "launch-enclave.sgxs"
    assert c.sockets.public == STATE / "run" / "launchctl.sock"
    assert c.sockets.admin == STATE / "run" / "launchctl-admin" / "admin.sock"
    assert c.sockets.authority == STATE / "run" / "launchctl-authority" / "authority.sock"
    assert c.sockets.public_mode == 0o666
    assert c.platform.socket == STATE / "run" / "platform.sock"
    assert c.platform.owner_socket == STATE / "run" / "platform-owner" / "owner.sock"
    assert c.tcp is None and c.boot.empty and c.enclaves_dir == STATE / "enclaves"


def test_the_default_file_parses_to_the_defaults() -> None:
    assert parse_config(DEFAULT_CONFIG_TEXT, STATE) == parse_config("", STATE)


def test_a_full_document() -> None:
    c = parse_config(
        f"""
        database = "/var/lib/lc.db"
        [launch_enclave]
        image = "le/le.sgxs"
        [sockets]
        public_mode = 0o660
        admin = "/tmp/a/admin.sock"
        [platform]
        timeout = 3
        poll_seconds = 0.5
        [tcp]
        address = "127.0.0.1:0"
        [boot]
        lock = true
        [[boot.signers]]
        mrsigner = "{A}"
        allow_debug = true
        isvprodids = [1, 2]
        min_isvsvn = 3
        comment = "ours"
        [boot.load_policy]
        allowed_dirs = ["images", "/opt/enclaves"]
        allowed_digests = ["{"cd" * 32}"]
        no_write_exec = false
        """,
        STATE,
    )
    assert c.database == Path("/var/lib/lc.db")
    assert c.launch_enclave.image == STATE / "le" / "le.sgxs"
    assert c.sockets.public_mode == 0o660 and c.sockets.admin == Path("/tmp/a/admin.sock")
    assert (c.platform.timeout, c.platform.poll_seconds) == (3.0, 0.5)
    assert c.tcp is not None and c.tcp.certificate == STATE / "tls" / "launchctl.pem"
    assert c.boot.lock
    assert c.boot.signers == (
        SignerEntry(Measurement.from_hex(A), True, False, frozenset({1, 2}), 3, "ours"),
    )
    assert c.boot.load_policy.allowed_dirs == (str(STATE / "images"), "/opt/enclaves")
    assert c.boot.load_policy.allowed_digests == (b"\xcd" * 32,)
    assert c.boot.load_policy.rules == (("no_write_exec", False),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bogus = 1", "unknown configuration key"),
        ("[sockets]\nextra = 1", "sockets.extra"),
        ("[boot]\nlock = 1", "boot.lock: expected a boolean"),
        ("[boot]\nlok = true", "boot.lok"),
        ("[[boot.signers]]\nallow_debug = true", "exactly one of"),
        (f'[[boot.signers]]\nmrsigner = "{A}"\nkey = "k.pem"', "exactly one of"),
        ('[[boot.signers]]\nmrsigner = "abc"', "boot.signers"),
        (f'[[boot.signers]]\nmrsigner = "{A}"\nisvprodids = [70000]', "ISVPRODID"),
        (f'[[boot.signers]]\nmrsigner = "{A}"\nextra = 1', "boot.signers"),
        ('[boot.load_policy]\nallowed_digests = ["00"]', "allowed_digests"),
        ("[boot.load_policy]\nno_everything = true", "no_everything"),
        ("[sockets]\npublic_mode = 0o1777", "public_mode"),
        ('[sockets]\nadmin = "run/admin.sock"', "private directories"),
        ("[platform]\ntimeout = 0", "positive"),
        ('[tcp]\naddress = "nope"', "HOST:PORT"),
        ("not toml [", "not valid TOML"),
        ('[[boot.signers]]\nkey = "k.pem"', "read only by load_config"),
    ],
)
def test_bad_documents_are_refused(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(text, STATE)


def test_load_config_reads_signer_keys_and_sigstructs(tmp_path: Path, keys: Any) -> None:
    (tmp_path / "launchctl").mkdir()
    key_pem = keys.app.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "app.pem").write_bytes(key_pem)
    sig = sign_sigstruct(keys.other, Measurement(b"\x01" * 32), date=0x20250101)
    (tmp_path / "other.sig").write_bytes(sig.to_bytes())
    (tmp_path / "launchctl" / "launchctl.toml").write_text(
        '[[boot.signers]]\nkey = "app.pem"\n[[boot.signers]]\nsigstruct = "other.sig"\n'
        "allow_provision_key = true\n"
    )
    c = load_config(tmp_path)
    assert [e.mrsigner for e in c.boot.signers] == [
        mrsigner_of_public_key(keys.app), mrsigner_of_public_key(keys.other)
    ]
    assert c.boot.signers[1].allow_provision_key
    (tmp_path / "launchctl" / "launchctl.toml").write_text('[[boot.signers]]\nkey = "gone.pem"')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path, tmp_path / "missing.toml")
    assert load_config(tmp_path / "empty") == parse_config("", tmp_path / "empty")


def test_boot_configuration_merges_and_never_removes() -> None:
    c = parse_config(
        f'[boot]\nlock = true\n[[boot.signers]]\nmrsigner = "{A}"\nallow_debug = true\n'
        '[boot.load_policy]\nallowed_dirs = ["/opt/e"]\nno_write_exec = false\n',
        STATE,
    )
    kept = SignerEntry(Measurement(b"\x01" * 32), comment="added at run time")
    replaced = SignerEntry(Measurement.from_hex(A), comment="old")
    state = LaunchState(Allowlist.of([kept, replaced]), LoadPolicy.defaults("/s/enclaves"))
    merged = apply_boot_config(state, c.boot, b"\x07" * 8)
    assert merged.allowlist.get(kept.mrsigner) == kept
    assert merged.allowlist.get(replaced.mrsigner) == c.boot.signers[0]
    assert merged.load_policy.allowed_dirs == ("/s/enclaves", "/opt/e")
    assert not merged.load_policy.is_on("no_write_exec")
    assert merged.boot_applied == b"\x07" * 8
    assert describe_boot_config(c.boot)["lock"] is True
