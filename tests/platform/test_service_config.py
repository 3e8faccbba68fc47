"""The platform configuration: TOML into frozen dataclasses, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_platform.config import ConfigError, LaunchMode, load_config, parse_config
from sgx_platform.load_policy import ALL_RULES, LoadRule

STATE = Path("/srv/sgxemu")
LE = "ab" * 32


def test_defaults() -> None:
    c = parse_config("", STATE)
    assert c.launch_mode is LaunchMode.OPEN and c.le_pubkey_hash is None
    assert c.sockets.device == STATE / "run" / "platform.sock"
    assert c.sockets.provision == STATE / "run" / "platform-provision.sock"
    assert c.sockets.owner == STATE / "run" / "platform-owner" / "owner.sock"
    assert (c.sockets.device_mode, c.sockets.provision_mode) == (0o666, 0o660)
    assert c.load_policy.allowed_dirs == (STATE / "enclaves",)
    assert c.load_policy.enabled == ALL_RULES and c.load_policy.allowed_digests is None
    assert c.tcp is None and c.metrics_address is None
    assert c.epc.eviction and c.epc.pages > 0
    assert c.platform_dir == STATE / "platform"


def test_a_full_document() -> None:
    c = parse_config(
        f"""
        launch_mode = "token"
        le_pubkey_hash = "{LE}"
        lease_seconds = 5
        [epc]
        pages = 64
        eviction = false
        [sockets]
        directory = "/tmp/r"
        device_mode = 0o600
        [tcp]
        address = "127.0.0.1:0"
        [metrics]
        address = "127.0.0.1:0"
        [load_policy]
        allowed_dirs = ["images", "/opt/enclaves"]
        allowed_digests = ["{"cd" * 32}"]
        no_write_exec = false
        """,
        STATE,
    )
    assert c.launch_mode is LaunchMode.TOKEN and c.le_pubkey_hash is not None
    assert c.le_pubkey_hash.hex() == LE
    assert c.lease_seconds == 5.0
    assert (c.epc.pages, c.epc.eviction) == (64, False)
    assert c.sockets.device == Path("/tmp/r/platform.sock")
    assert c.sockets.owner_directory == Path("/tmp/r/platform-owner")
    assert c.sockets.device_mode == 0o600
    assert c.tcp is not None and c.tcp.certificate == STATE / "tls" / "platform.pem"
    assert c.load_policy.allowed_dirs == (STATE / "images", Path("/opt/enclaves"))
    assert c.load_policy.allowed_digests == frozenset({bytes.fromhex("cd" * 32)})
    assert c.load_policy.enabled == ALL_RULES - {LoadRule.NO_WRITE_EXEC}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1", "bogus"),
        ("[epc]\nsize = 3", "epc.size"),
        ("[load_policy]\nno_such_rule = true", "load_policy.no_such_rule"),
        ("[frobnicate]\n", "frobnicate"),
        ('launch_mode = "closed"', "launch_mode"),
        ('launch_mode = "token"', "le_pubkey_hash"),
        ('le_pubkey_hash = "abcd"', "le_pubkey_hash"),
        ("lease_seconds = 0", "lease_seconds"),
        ("lease_seconds = true", "lease_seconds"),
        ('lease_seconds = "5"', "lease_seconds"),
        ("[epc]\npages = -1", "epc.pages"),
        ("[epc]\neviction = 1", "epc.eviction"),
        ("[sockets]\ndevice_mode = 0o1777", "sockets.device_mode"),
        ('[tcp]\naddress = "nohost"', "tcp.address"),
        ('[load_policy]\nallowed_digests = ["xyz"]', "allowed_digests"),
        ('[load_policy]\nallowed_digests = ["abcd"]', "allowed_digests"),
        ("[load_policy]\nallowed_dirs = [1]", "allowed_dirs"),
        ("this is not toml", "TOML"),
    ],
)
def test_bad_documents_are_rejected_naming_the_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(text, STATE)


def test_load_config_reads_the_platform_file(tmp_path: Path) -> None:
    assert load_config(tmp_path).launch_mode is LaunchMode.OPEN, "missing file: defaults"
    (tmp_path / "platform").mkdir()
    (tmp_path / "platform" / "platform.toml").write_text("[epc]\npages = 7\n")
    assert load_config(tmp_path).epc.pages == 7
    (tmp_path / "platform" / "platform.toml").write_text("[epc]\nbad = 7\n")
    with pytest.raises(ConfigError, match=r"platform\.toml"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path, tmp_path / "nope.toml")


def test_the_launchctl_table() -> None:
    c = parse_config('[launchctl]\nsocket = "run/lc/authority.sock"\nload_policy = false\n', STATE)
    assert c.launchctl is not None
    assert c.launchctl.socket == STATE / "run" / "lc" / "authority.sock"
    assert (c.launchctl.timeout_seconds, c.launchctl.load_policy) == (5.0, False)
    for bad, needle in (("[launchctl]\n", "launchctl.socket"),
                        ('[launchctl]\nsocket = "x"\ntimeout_seconds = 0\n', "timeout_seconds"),
                        ('[launchctl]\nsocket = "x"\nhost = "y"\n', "launchctl.host")):
        with pytest.raises(ConfigError, match=needle):
            parse_config(bad, STATE)
