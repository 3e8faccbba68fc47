"""The daemon's configuration file, ``$STATE/launchctl/launchctl.toml``: TOML into frozen
dataclasses. It also carries the boot configuration (``[boot]``, see :mod:`sgx_launchctl.boot`).

Invariants: nothing is read at import time; :func:`load_config` reads the file (and the key or
SIGSTRUCT files ``[[boot.signers]]`` name) and :func:`parse_config` one TOML document; every
table and key is known (an unknown key, a wrong type or an out-of-range value raises
:class:`ConfigError` naming the key); relative paths are relative to the state directory;
every default is stated here and nowhere else.

Example (every key optional)::

    database = "launchctl/launchctl.db"

    [launch_enclave]
    image = "enclaves/launch-enclave.sgxs"
    sigstruct = "launchctl/launch-enclave.sig"             # token mode: with EINITTOKEN_KEY
    open_sigstruct = "launchctl/launch-enclave-open.sig"   # open mode: without it

    [sockets]
    public = "run/launchctl.sock"            # reads: list, status, audit, policy show
    public_mode = 0o666
    admin = "run/launchctl-admin/admin.sock"             # in a 0700 directory: admin calls
    authority = "run/launchctl-authority/authority.sock" # 0700 directory: the platform asks here

    [platform]
    socket = "run/platform.sock"                          # device socket
    owner_socket = "run/platform-owner/owner.sock"        # for the launch-policy latch
    timeout = 10.0
    poll_seconds = 1.0
    startup_seconds = 60.0                                # retrying while the platform reconnects

    [tcp]                                    # optional: mTLS (admin certificate for admin calls)
    address = "127.0.0.1:7002"
    certificate = "tls/launchctl.pem"
    private_key = "tls/launchctl.key"
    client_ca = "tls/ca.pem"

    [boot]                                   # applied at every platform boot
    lock = false

    [[boot.signers]]
    mrsigner = "64 hex digits"               # or key = "signer.pem", or sigstruct = "x.sig"
    allow_debug = false
    allow_provision_key = false
    isvprodids = [1]
    min_isvsvn = 0
    comment = "text"

    [boot.load_policy]
    allowed_dirs = ["enclaves"]
    allowed_digests = ["64 hex digits"]
    exec_only_from_file = true               # each rule: true or false
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from sgx_launchctl.allowlist import (
    SignerEntry,
    mrsigner_from_hex,
    mrsigner_from_key_pem,
    mrsigner_from_sigstruct,
)
from sgx_launchctl.errors import ConfigError, InvalidRequestError
from sgx_launchctl.policy import RULES, digest_from_hex
from sgx_rpc.config_table import TomlTable

CONFIG_FILE_NAME = "launchctl.toml"
DATABASE_NAME = "launchctl.db"
LE_IMAGE_NAME = "launch-enclave.sgxs"
LE_SIGSTRUCT_NAME = "launch-enclave.sig"
LE_OPEN_SIGSTRUCT_NAME = "launch-enclave-open.sig"
MAX_KEY_FILE = 1 << 20


@dataclass(frozen=True)
class LaunchEnclaveFiles:
    image: Path
    sigstruct: Path
    open_sigstruct: Path


@dataclass(frozen=True)
class SocketConfig:
    public: Path
    admin: Path
    authority: Path
    public_mode: int = 0o666


@dataclass(frozen=True)
class PlatformLink:
    socket: Path
    owner_socket: Path
    timeout: float = 10.0
    poll_seconds: float = 1.0
    #: How long the daemon keeps retrying its LE load while the platform cannot reach it yet.
    startup_seconds: float = 60.0


@dataclass(frozen=True)
class TcpConfig:
    address: str
    certificate: Path
    private_key: Path
    client_ca: Path


@dataclass(frozen=True)
class BootLoadPolicy:
    """What the boot configuration adds to the load policy (empty: leave it as it is)."""

    allowed_dirs: tuple[str, ...] = ()
    allowed_digests: tuple[bytes, ...] = ()
    rules: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class BootConfig:
    """Applied at every platform boot before any other enclave launches."""

    signers: tuple[SignerEntry, ...] = ()
    load_policy: BootLoadPolicy = BootLoadPolicy()
    lock: bool = False

    @property
    def empty(self) -> bool:
        return not self.signers and self.load_policy == BootLoadPolicy() and not self.lock


@dataclass(frozen=True)
class LaunchctlConfig:
    state_dir: Path
    database: Path
    launch_enclave: LaunchEnclaveFiles
    sockets: SocketConfig
    platform: PlatformLink
    boot: BootConfig
    tcp: TcpConfig | None = None

    @property
    def enclaves_dir(self) -> Path:
        """``$STATE/enclaves``: the default allowed directory of the load policy."""
        return self.state_dir / "enclaves"

    @classmethod
    def defaults(cls, state_dir: Path) -> LaunchctlConfig:
        return parse_config("", state_dir)


def _path(state_dir: Path, value: str, key: str) -> Path:
    if not value or "\x00" in value:
        raise ConfigError(f"{key}: empty path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else state_dir / path


def _strings(t: TomlTable, key: str) -> list[str] | None:
    values = t.take(key, list, None)
    if values is None:
        return None
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{t.name(key)}: expected an array of strings")
    return [str(v) for v in values]


def _read_file(path: Path, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"{key}: {path} is larger than {MAX_KEY_FILE} bytes")
    return data


def _signer(t: TomlTable, state_dir: Path, where: str, read_files: bool) -> SignerEntry:
    sources = {k: t.take(k, str, None) for k in ("mrsigner", "key", "sigstruct")}
    given = {k: v for k, v in sources.items() if v is not None}
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of mrsigner, key, sigstruct")
    (kind, value), = given.items()
    try:
        if kind == "mrsigner":
            mrsigner = mrsigner_from_hex(value)
        elif not read_files:
            raise ConfigError(f"{where}.{kind}: files are read only by load_config")
        elif kind == "key":
            path = _path(state_dir, value, f"{where}.key")
            mrsigner = mrsigner_from_key_pem(_read_file(path, f"{where}.key"))
        else:
            path = _path(state_dir, value, f"{where}.sigstruct")
            mrsigner = mrsigner_from_sigstruct(_read_file(path, f"{where}.sigstruct"))
        ids = t.take("isvprodids", list, None)
        entry = SignerEntry(
            mrsigner=mrsigner,
            allow_debug=t.take("allow_debug", bool, False),
            allow_provision_key=t.take("allow_provision_key", bool, False),
            isvprodids=None if ids is None else frozenset(ids),
            min_isvsvn=t.take("min_isvsvn", int, 0),
            comment=t.take("comment", str, ""),
        )
    except InvalidRequestError as e:
        raise ConfigError(f"{where}: {e}") from None
    t.finish()
    return entry


def _boot(t: TomlTable, state_dir: Path, read_files: bool) -> BootConfig:
    lock = t.take("lock", bool, False)
    signers_raw = t.take("signers", list, [])
    signers = []
    for i, item in enumerate(signers_raw):
        if not isinstance(item, dict):
            raise ConfigError(f"boot.signers[{i}]: expected a table")
        signers.append(_signer(TomlTable(item, f"boot.signers[{i}]", error=ConfigError), state_dir,
                               f"boot.signers[{i}]", read_files))
    policy = BootLoadPolicy()
    if (p := t.table("load_policy")) is not None:
        dirs = tuple(
            str(_path(state_dir, d, "boot.load_policy.allowed_dirs"))
            for d in _strings(p, "allowed_dirs") or ()
        )
        try:
            digests = tuple(digest_from_hex(d) for d in _strings(p, "allowed_digests") or ())
        except InvalidRequestError as e:
            raise ConfigError(f"boot.load_policy.allowed_digests: {e}") from None
        rules = tuple(
            (rule, value) for rule in RULES if (value := p.take(rule, bool, None)) is not None
        )
        p.finish()
        policy = BootLoadPolicy(dirs, digests, rules)
    t.finish()
    return BootConfig(tuple(signers), policy, lock)


def parse_config(text: str, state_dir: Path, *, read_files: bool = False) -> LaunchctlConfig:
    """Parse one TOML document (empty: all defaults) for the state directory ``state_dir``.

    With ``read_files`` the key and SIGSTRUCT files of ``[[boot.signers]]`` are read (as
    :func:`load_config` does); without, such entries are refused.
    """
    state_dir = Path(state_dir).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    top = TomlTable(data, error=ConfigError)
    database = _path(state_dir, top.take("database", str, f"launchctl/{DATABASE_NAME}"),
                     "database")

    le = LaunchEnclaveFiles(
        image=state_dir / "enclaves" / LE_IMAGE_NAME,
        sigstruct=state_dir / "launchctl" / LE_SIGSTRUCT_NAME,
        open_sigstruct=state_dir / "launchctl" / LE_OPEN_SIGSTRUCT_NAME,
    )
    if (t := top.table("launch_enclave")) is not None:
        le = LaunchEnclaveFiles(
            image=_path(state_dir, t.take("image", str, str(le.image)), "launch_enclave.image"),
            sigstruct=_path(state_dir, t.take("sigstruct", str, str(le.sigstruct)),
                            "launch_enclave.sigstruct"),
            open_sigstruct=_path(state_dir, t.take("open_sigstruct", str,
                                                   str(le.open_sigstruct)),
                                 "launch_enclave.open_sigstruct"),
        )
        t.finish()

    run = state_dir / "run"
    sockets = SocketConfig(
        public=run / "launchctl.sock",
        admin=run / "launchctl-admin" / "admin.sock",
        authority=run / "launchctl-authority" / "authority.sock",
    )
    if (t := top.table("sockets")) is not None:
        mode = t.take("public_mode", int, sockets.public_mode)
        if not 0 <= mode <= 0o777:
            raise ConfigError(f"sockets.public_mode: a file mode is 0o000..0o777, got {mode:#o}")
        sockets = SocketConfig(
            public=_path(state_dir, t.take("public", str, str(sockets.public)),
                         "sockets.public"),
            admin=_path(state_dir, t.take("admin", str, str(sockets.admin)), "sockets.admin"),
            authority=_path(state_dir, t.take("authority", str, str(sockets.authority)),
                            "sockets.authority"),
            public_mode=mode,
        )
        t.finish()
    if sockets.admin.parent == sockets.public.parent or (
        sockets.authority.parent == sockets.public.parent
    ):
        raise ConfigError(
            "sockets: the admin and authority sockets need their own private directories"
        )

    link = PlatformLink(socket=run / "platform.sock",
                        owner_socket=run / "platform-owner" / "owner.sock")
    if (t := top.table("platform")) is not None:
        timeout = float(t.take("timeout", (int, float), link.timeout))
        poll = float(t.take("poll_seconds", (int, float), link.poll_seconds))
        startup = float(t.take("startup_seconds", (int, float), link.startup_seconds))
        if timeout <= 0 or poll <= 0 or startup <= 0:
            raise ConfigError(
                "platform.timeout, platform.poll_seconds and platform.startup_seconds must be "
                "positive"
            )
        link = PlatformLink(
            socket=_path(state_dir, t.take("socket", str, str(link.socket)), "platform.socket"),
            owner_socket=_path(state_dir, t.take("owner_socket", str, str(link.owner_socket)),
                               "platform.owner_socket"),
            timeout=timeout,
            poll_seconds=poll,
            startup_seconds=startup,
        )
        t.finish()

    tcp = None
    if (t := top.table("tcp")) is not None:
        address = t.take("address", str, "")
        if not address or ":" not in address:
            raise ConfigError("tcp.address: expected HOST:PORT")
        tcp = TcpConfig(
            address=address,
            certificate=_path(state_dir, t.take("certificate", str, "tls/launchctl.pem"),
                              "tcp.certificate"),
            private_key=_path(state_dir, t.take("private_key", str, "tls/launchctl.key"),
                              "tcp.private_key"),
            client_ca=_path(state_dir, t.take("client_ca", str, "tls/ca.pem"),
                            "tcp.client_ca"),
        )
        t.finish()

    boot = BootConfig()
    if (t := top.table("boot")) is not None:
        boot = _boot(t, state_dir, read_files)
    top.finish()
    return LaunchctlConfig(
        state_dir=state_dir,
        database=database,
        launch_enclave=le,
        sockets=sockets,
        platform=link,
        boot=boot,
        tcp=tcp,
    )


def config_path(state_dir: Path) -> Path:
    return Path(state_dir).absolute() / "launchctl" / CONFIG_FILE_NAME


def load_config(state_dir: Path, path: Path | None = None) -> LaunchctlConfig:
    """Read ``path`` (default ``$STATE/launchctl/launchctl.toml``; missing: all defaults)."""
    state_dir = Path(state_dir).absolute()
    explicit = path is not None
    file = path if path is not None else config_path(state_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{file}: configuration file does not exist") from None
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read the configuration: {e}") from None
    try:
        return parse_config(text, state_dir, read_files=True)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
