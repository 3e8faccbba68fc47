"""The quoting service's configuration: defaults, every key, and strict rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgx_quoting.config import QuotingConfig, QuotingConfigError, load_config, parse_config


def test_defaults(tmp_path: Path) -> None:
    config = QuotingConfig.defaults(tmp_path)
    assert config.socket == tmp_path / "run" / "quoting.sock"
    assert config.socket_mode == 0o666
    assert config.platform_device == tmp_path / "run" / "platform.sock"
    assert config.platform_provision == tmp_path / "run" / "platform-provision.sock"
    assert config.pcs_socket == tmp_path / "run" / "pcs.sock"
    assert config.serve_pcs and config.pcs_socket_mode == 0o600
    assert config.tcp is None and config.metrics_address is None
    assert config.quoting_dir == tmp_path / "quoting"
    assert config.pcs_dir == tmp_path / "pcs"
    assert load_config(tmp_path) == config


def test_every_key(tmp_path: Path) -> None:
    config = parse_config(
        """
        metrics_address = "127.0.0.1:0"
        request_timeout = 5
        [socket]
        path = "/tmp/q.sock"
        mode = 0o660
        [platform]
        device = "other/dev.sock"
        provision = "other/prov.sock"
        [pcs]
        socket = "/run/pcs.sock"
        serve = false
        socket_mode = 0o640
        [tcp]
        address = "127.0.0.1:0"
        """,
        tmp_path,
    )
    assert config.metrics_address == "127.0.0.1:0"
    assert config.request_timeout == 5.0
    assert (config.socket, config.socket_mode) == (Path("/tmp/q.sock"), 0o660)
    assert config.platform_device == tmp_path / "other" / "dev.sock"
    assert config.platform_provision == tmp_path / "other" / "prov.sock"
    assert (config.pcs_socket, config.serve_pcs, config.pcs_socket_mode) == (
        Path("/run/pcs.sock"),
        False,
        0o640,
    )
    assert config.tcp is not None
    assert config.tcp.certificate == tmp_path / "tls" / "quoting.pem"
    assert config.tcp.client_ca == tmp_path / "tls" / "ca.pem"


@pytest.mark.parametrize(
    "text",
    [
        "nonsense = 1",
        "[socket]\npath = 1",
        "[socket]\nmode = 0o1000",
        "[socket]\nmode = true",
        "[socket]\nextra = 1",
        "[pcs]\nserve = 1",
        "[platform]\nsocket = 'x'",
        "[tcp]\nport = 1",
        "request_timeout = 0",
        "request_timeout = 'slow'",
        "socket = 'x'",
        "this is not toml",
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(QuotingConfigError):
        parse_config(text, tmp_path)


def test_an_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(QuotingConfigError, match="no configuration file"):
        load_config(tmp_path, tmp_path / "missing.toml")
    (tmp_path / "quoting").mkdir()
    (tmp_path / "quoting" / "quoting.toml").write_text("[pcs]\nserve = false\n")
    assert not load_config(tmp_path).serve_pcs
