"""Configuration of the quoting service (``$STATE/quoting/quoting.toml``, optional).

Every key, with its default::

    metrics_address = ""            # "HOST:PORT" serves Prometheus metrics; empty: off
    request_timeout = 60.0          # seconds, for each call to the platform and the PCS

    [socket]
    path = "run/quoting.sock"       # relative to the state directory
    mode = 0o666                    # the gate: who may ask for quotes

    [platform]
    device = "run/platform.sock"
    provision = "run/platform-provision.sock"

    [pcs]
    socket = "run/pcs.sock"
    serve = true                    # also serve the PCS ($STATE/pcs) from this process
    socket_mode = 0o600

    [tcp]                           # optional: QuotingService over TCP with mTLS
    address = "127.0.0.1:7447"
    certificate = "tls/quoting.pem"
    private_key = "tls/quoting.key"
    client_ca = "tls/ca.pem"

Invariants: nothing is read at import time; the TOML goes into frozen dataclasses; unknown keys,
wrong types and out-of-range values raise :class:`QuotingConfigError` naming the key; relative
paths are relative to the state directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from sgx_quoting.enclave_errors import QuotingStateError
from sgx_rpc.config_table import TomlTable

CONFIG_FILE_NAME = "quoting.toml"


class QuotingConfigError(QuotingStateError, ValueError):
    """A configuration file that is unreadable, not TOML, or has unknown or invalid keys."""


@dataclass(frozen=True)
class TcpConfig:
    address: str
    certificate: Path
    private_key: Path
    client_ca: Path


@dataclass(frozen=True)
class QuotingConfig:
    state_dir: Path
    socket: Path
    socket_mode: int
    platform_device: Path
    platform_provision: Path
    pcs_socket: Path
    serve_pcs: bool
    pcs_socket_mode: int
    request_timeout: float = 60.0
    tcp: TcpConfig | None = None
    metrics_address: str | None = None

    @property
    def quoting_dir(self) -> Path:
        """The quoting service's own directory: manifest, sealed attestation key."""
        return self.state_dir / "quoting"

    @property
    def enclaves_dir(self) -> Path:
        """Where the PCE and QE images and SIGSTRUCTs are (the platform's allowed directory)."""
        return self.state_dir / "enclaves"

    @property
    def pcs_dir(self) -> Path:
        """The PCS's directory (read only by the PCS served with ``serve_pcs``)."""
        return self.state_dir / "pcs"

    @classmethod
    def defaults(cls, state_dir: Path) -> QuotingConfig:
        return parse_config("", state_dir)


def _path(state_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else state_dir / path


def _mode(value: int, key: str) -> int:
    if not 0 <= value <= 0o777:
        raise QuotingConfigError(f"{key} must be a file mode in 0..0o777")
    return value


def parse_config(text: str, state_dir: Path) -> QuotingConfig:
    """The configuration from TOML ``text`` (empty: every default)."""
    state_dir = Path(state_dir).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise QuotingConfigError(f"{CONFIG_FILE_NAME} is not valid TOML: {e}") from e
    top = TomlTable(data, error=QuotingConfigError)
    metrics = top.take("metrics_address", str, "")
    timeout = float(top.take("request_timeout", (int, float), 60.0))
    if not timeout > 0:
        raise QuotingConfigError("request_timeout must be positive")

    socket = _path(state_dir, "run/quoting.sock")
    socket_mode = 0o666
    if (t := top.table("socket")) is not None:
        socket = _path(state_dir, t.take("path", str, str(socket)))
        socket_mode = _mode(t.take("mode", int, socket_mode), "socket.mode")
        t.finish()

    device = _path(state_dir, "run/platform.sock")
    provision = _path(state_dir, "run/platform-provision.sock")
    if (t := top.table("platform")) is not None:
        device = _path(state_dir, t.take("device", str, str(device)))
        provision = _path(state_dir, t.take("provision", str, str(provision)))
        t.finish()

    pcs_socket = _path(state_dir, "run/pcs.sock")
    serve_pcs = True
    pcs_mode = 0o600
    if (t := top.table("pcs")) is not None:
        pcs_socket = _path(state_dir, t.take("socket", str, str(pcs_socket)))
        serve_pcs = t.take("serve", bool, serve_pcs)
        pcs_mode = _mode(t.take("socket_mode", int, pcs_mode), "pcs.socket_mode")
        t.finish()

    tcp = None
    if (t := top.table("tcp")) is not None:
        tcp = TcpConfig(
            address=t.take("address", str, "127.0.0.1:7447"),
            certificate=_path(state_dir, t.take("certificate", str, "tls/quoting.pem")),
            private_key=_path(state_dir, t.take("private_key", str, "tls/quoting.key")),
            client_ca=_path(state_dir, t.take("client_ca", str, "tls/ca.pem")),
        )
        t.finish()
    top.finish()
    return QuotingConfig(
        state_dir=state_dir,
        socket=socket,
        socket_mode=socket_mode,
        platform_device=device,
        platform_provision=provision,
        pcs_socket=pcs_socket,
        serve_pcs=serve_pcs,
        pcs_socket_mode=pcs_mode,
        request_timeout=timeout,
        tcp=tcp,
        metrics_address=metrics or None,
    )


def load_config(state_dir: Path, path: Path | None = None) -> QuotingConfig:
    """``$STATE/quoting/quoting.toml`` (or ``path``); a missing default file means defaults."""
    state_dir = Path(state_dir).absolute()
    file = path if path is not None else state_dir / "quoting" / CONFIG_FILE_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is not None:
            raise QuotingConfigError(f"no configuration file {file}") from None
        text = ""
    except OSError as e:
        raise QuotingConfigError(f"cannot read {file}: {e.strerror}") from e
    return parse_config(text, state_dir)
