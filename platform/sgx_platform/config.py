"""The platform service's configuration: TOML into frozen dataclasses.

Invariants: nothing is read at import time; :func:`load_config` reads one file and
:func:`parse_config` one TOML document; every table and key is known (an unknown key, a wrong
type or an out-of-range value raises :class:`ConfigError` naming the key); relative paths are
relative to the state directory; every default is stated here and nowhere else.

Example (every key optional)::

    launch_mode = "open"          # or "token": the LE registers hold le_pubkey_hash, locked
    le_pubkey_hash = ""           # token mode: hex SHA-256 of the LE signer's modulus
    lease_seconds = 60.0
    max_image_bytes = 268435456

    [epc]
    pages = 8192
    eviction = true

    [sockets]
    directory = "run"             # device and provision sockets
    device_mode = 0o666           # the gate, like /dev/sgx_enclave
    provision_mode = 0o660        # like /dev/sgx_provision
    provision_group = ""          # group owning the provision socket (default: unchanged)
    owner_directory = "run/platform-owner"   # 0700; the owner socket inside is 0600

    [tcp]                         # optional: TCP with mTLS
    address = "127.0.0.1:7001"
    certificate = "tls/platform.pem"
    private_key = "tls/platform.key"
    client_ca = "tls/ca.pem"

    [metrics]                     # optional: Prometheus exposition over HTTP
    address = "127.0.0.1:9464"

    [launchctl]                   # optional: the launch-control daemon's authority socket
    socket = "run/launchctl-authority/authority.sock"
    timeout_seconds = 5.0         # deadline of each token or policy request
    load_policy = true            # pull the load policy from it (fail closed when unreachable)

    [load_policy]
    allowed_dirs = ["enclaves"]
    allowed_digests = []          # absent: any image; present: only these SHA-256 (hex)
    exec_only_from_file = true
    no_write_exec = true
    no_exec_from_wire = true
    no_unmeasured_exec = true
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.errors import PlatformError
from sgx_platform.load_policy import DEFAULT_MAX_IMAGE_BYTES, LoadPolicy, LoadRule
from sgx_rpc.config_table import TomlTable

CONFIG_FILE_NAME = "platform.toml"
DEVICE_SOCKET = "platform.sock"
PROVISION_SOCKET = "platform-provision.sock"
OWNER_SOCKET = "owner.sock"


class ConfigError(PlatformError, ValueError):
    """A configuration file that is unreadable, not TOML, or has unknown or invalid keys."""


class LaunchMode(StrEnum):
    """How EINIT is gated (ADR 0010)."""

    #: As mainline Linux: the driver writes each enclave's own signer into the LE registers.
    OPEN = "open"
    #: The LE registers hold the launch enclave's signer, locked at boot; EINIT needs a token.
    TOKEN = "token"  # noqa: S105 (a mode name, not a secret)


@dataclass(frozen=True)
class EpcConfig:
    pages: int = 8192
    eviction: bool = True


@dataclass(frozen=True)
class SocketConfig:
    directory: Path
    owner_directory: Path
    device_mode: int = 0o666
    provision_mode: int = 0o660
    provision_group: str | None = None

    @property
    def device(self) -> Path:
        return self.directory / DEVICE_SOCKET

    @property
    def provision(self) -> Path:
        return self.directory / PROVISION_SOCKET

    @property
    def owner(self) -> Path:
        return self.owner_directory / OWNER_SOCKET


@dataclass(frozen=True)
class TcpConfig:
    address: str
    certificate: Path
    private_key: Path
    client_ca: Path


@dataclass(frozen=True)
class LaunchctlConfig:
    """Where the launch authority (and, with ``load_policy``, the load policy) comes from."""

    socket: Path
    timeout_seconds: float = 5.0
    load_policy: bool = True


@dataclass(frozen=True)
class PlatformConfig:
    state_dir: Path
    launch_mode: LaunchMode
    le_pubkey_hash: Measurement | None
    lease_seconds: float
    max_image_bytes: int
    epc: EpcConfig
    sockets: SocketConfig
    load_policy: LoadPolicy
    tcp: TcpConfig | None = None
    metrics_address: str | None = None
    launchctl: LaunchctlConfig | None = None

    @property
    def platform_dir(self) -> Path:
        """The platform's own directory (fuses, config): ``$STATE/platform``."""
        return self.state_dir / "platform"

    @classmethod
    def defaults(cls, state_dir: Path) -> PlatformConfig:
        return parse_config("", state_dir)


def _path(state_dir: Path, value: str, key: str) -> Path:
    if not value:
        raise ConfigError(f"{key}: empty path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else state_dir / path


def _mode(value: int, key: str) -> int:
    if not 0 <= value <= 0o777:
        raise ConfigError(f"{key}: a file mode is 0o000..0o777, got {value:#o}")
    return value


def _positive(value: int | float, key: str) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be positive, got {value}")


def _digest(text: str, key: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not hex") from None
    if len(raw) != 32:
        raise ConfigError(f"{key}: a SHA-256 digest is 32 bytes (64 hex digits)")
    return raw


def parse_config(text: str, state_dir: Path) -> PlatformConfig:
    """Parse a TOML document (empty: all defaults) for the state directory ``state_dir``."""
    state_dir = Path(state_dir).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    top = TomlTable(data, error=ConfigError)
    mode_text = top.take("launch_mode", str, LaunchMode.OPEN.value)
    try:
        launch_mode = LaunchMode(mode_text)
    except ValueError:
        raise ConfigError(
            f"launch_mode: {mode_text!r} is not one of {', '.join(m.value for m in LaunchMode)}"
        ) from None
    hash_text = top.take("le_pubkey_hash", str, "")
    le_hash = None
    if hash_text:
        try:
            le_hash = Measurement.from_hex(hash_text)
        except MalformedStructureError as e:
            raise ConfigError(f"le_pubkey_hash: {e}") from None
    if launch_mode is LaunchMode.TOKEN and le_hash is None:
        raise ConfigError(
            "le_pubkey_hash: token mode needs the launch enclave signer's hash (64 hex digits)"
        )
    lease = float(top.take("lease_seconds", (int, float), 60.0))
    _positive(lease, "lease_seconds")
    max_image = top.take("max_image_bytes", int, DEFAULT_MAX_IMAGE_BYTES)
    _positive(max_image, "max_image_bytes")

    epc = EpcConfig()
    if (t := top.table("epc")) is not None:
        pages = t.take("pages", int, epc.pages)
        _positive(pages, "epc.pages")
        epc = EpcConfig(pages=pages, eviction=t.take("eviction", bool, epc.eviction))
        t.finish()

    directory = state_dir / "run"
    owner_directory: Path | None = None
    device_mode, provision_mode, group = 0o666, 0o660, None
    if (t := top.table("sockets")) is not None:
        if (d := t.take("directory", str, None)) is not None:
            directory = _path(state_dir, d, "sockets.directory")
        if (d := t.take("owner_directory", str, None)) is not None:
            owner_directory = _path(state_dir, d, "sockets.owner_directory")
        device_mode = _mode(t.take("device_mode", int, device_mode), "sockets.device_mode")
        provision_mode = _mode(
            t.take("provision_mode", int, provision_mode), "sockets.provision_mode"
        )
        group = t.take("provision_group", str, "") or None
        t.finish()
    sockets = SocketConfig(
        directory=directory,
        owner_directory=owner_directory or directory / "platform-owner",
        device_mode=device_mode,
        provision_mode=provision_mode,
        provision_group=group,
    )

    tcp = None
    if (t := top.table("tcp")) is not None:
        address = t.take("address", str, "")
        if not address or ":" not in address:
            raise ConfigError("tcp.address: expected HOST:PORT")
        tcp = TcpConfig(
            address=address,
            certificate=_path(state_dir, t.take("certificate", str, "tls/platform.pem"),
                              "tcp.certificate"),
            private_key=_path(state_dir, t.take("private_key", str, "tls/platform.key"),
                              "tcp.private_key"),
            client_ca=_path(state_dir, t.take("client_ca", str, "tls/ca.pem"), "tcp.client_ca"),
        )
        t.finish()

    metrics = None
    if (t := top.table("metrics")) is not None:
        metrics = t.take("address", str, "")
        if not metrics or ":" not in metrics:
            raise ConfigError("metrics.address: expected HOST:PORT")
        t.finish()

    launchctl = None
    if (t := top.table("launchctl")) is not None:
        socket = t.take("socket", str, "")
        if not socket:
            raise ConfigError("launchctl.socket: the authority socket's path is required")
        timeout = float(t.take("timeout_seconds", (int, float), 5.0))
        _positive(timeout, "launchctl.timeout_seconds")
        launchctl = LaunchctlConfig(
            socket=_path(state_dir, socket, "launchctl.socket"),
            timeout_seconds=timeout,
            load_policy=t.take("load_policy", bool, True),
        )
        t.finish()

    policy = LoadPolicy.defaults(state_dir / "enclaves")
    if (t := top.table("load_policy")) is not None:
        dirs = t.take("allowed_dirs", list, None)
        if dirs is not None:
            if not all(isinstance(d, str) for d in dirs):
                raise ConfigError("load_policy.allowed_dirs: expected an array of paths")
            allowed = tuple(_path(state_dir, d, "load_policy.allowed_dirs") for d in dirs)
        else:
            allowed = policy.allowed_dirs
        digests_list = t.take("allowed_digests", list, None)
        digests = None
        if digests_list is not None:
            if not all(isinstance(d, str) for d in digests_list):
                raise ConfigError("load_policy.allowed_digests: expected an array of hex strings")
            digests = frozenset(_digest(d, "load_policy.allowed_digests") for d in digests_list)
        enabled = frozenset(
            rule for rule in LoadRule if t.take(rule.value, bool, True)
        )
        t.finish()
        policy = LoadPolicy(allowed, digests, enabled)
    top.finish()
    return PlatformConfig(
        state_dir=state_dir,
        launch_mode=launch_mode,
        le_pubkey_hash=le_hash,
        lease_seconds=lease,
        max_image_bytes=max_image,
        epc=epc,
        sockets=sockets,
        load_policy=policy,
        tcp=tcp,
        metrics_address=metrics,
        launchctl=launchctl,
    )


def load_config(state_dir: Path, path: Path | None = None) -> PlatformConfig:
    """Read ``path`` (default ``$STATE/platform/platform.toml``; missing: all defaults)."""
    state_dir = Path(state_dir).absolute()
    explicit = path is not None
    file = path if path is not None else state_dir / "platform" / CONFIG_FILE_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{file}: configuration file does not exist") from None
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read the configuration: {e}") from None
    try:
        return parse_config(text, state_dir)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
