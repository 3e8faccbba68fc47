"""The launch-control service: daemon + gRPC listeners, and its part of ``sgxemu init``.

Invariants:

* Three Unix sockets, each granting one role by where it is (DESIGN.md): the public socket
  (``$STATE/run/launchctl.sock``, mode 0666 by default: reads), the admin socket
  (``run/launchctl-admin/admin.sock``, 0600 inside a 0700 directory: changes) and the authority
  socket (``run/launchctl-authority/authority.sock``, 0600 inside a 0700 directory: the
  platform's token and policy requests). Optional TCP always uses mTLS with the local service
  CA; the admin certificate grants the admin role.
* The listeners start *before* the daemon launches its enclave, because the platform pulls the
  load policy from the daemon while loading it; until the daemon is ready every platform
  request gets the fail-closed answers of :mod:`sgx_launchctl.daemon`. If the daemon cannot
  start (a tampered or rolled-back database...), the listeners stop again and the error is
  raised: nothing is served.
* :func:`initialize_state` never writes the launch-authority private key into the state
  directory.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

from sgx_launchctl.allowlist import Allowlist, SignerEntry
from sgx_launchctl.config import CONFIG_FILE_NAME, LaunchctlConfig
from sgx_launchctl.daemon import DEFAULT_WAIT_SECONDS, LaunchControl
from sgx_launchctl.errors import InitError
from sgx_launchctl.le import create_launch_enclave
from sgx_launchctl.platform_api import PlatformApi
from sgx_launchctl.rpc.platform import GrpcPlatform
from sgx_launchctl.rpc.servicer import (
    ROLE_ADMIN,
    ROLE_PLATFORM,
    ROLE_READER,
    SERVICE_NAME,
    LaunchControlServicer,
    authorizer,
    register,
)
from sgx_launchctl.store import create_pending
from sgx_platform.arch.measurement import Measurement
from sgx_rpc.files import write_atomic
from sgx_rpc.server import Listener, ServiceHost, TlsListener, UnixListener

log = logging.getLogger(__name__)

VENDOR_COMMENT = "emulated vendor signer (quoting and provisioning enclaves)"

DEFAULT_CONFIG_TEXT = """\
# The launch-control daemon's configuration and boot configuration
# (sgx_launchctl.config documents every key). Relative paths are relative to the state
# directory.

[boot]
# Applied at every platform boot before any other enclave launches. Signers listed here are
# added (or replace the entry of the same MRSIGNER); `lock = true` then locks the launch policy
# until the next platform reset.
lock = false

# [[boot.signers]]
# mrsigner = "<64 hex digits>"     # or: key = "signer.pem", or: sigstruct = "enclave.sig"
# allow_debug = false
# allow_provision_key = false
# isvprodids = [1]
# min_isvsvn = 0
# comment = "my enclaves"

# [boot.load_policy]
# allowed_dirs = ["enclaves"]
# allowed_digests = []
# exec_only_from_file = true
# no_write_exec = true
# no_exec_from_wire = true
# no_unmeasured_exec = true
"""


def _private_dir(path: Path) -> None:
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; refusing to put a private socket there")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def initialize_state(
    state_dir: Path,
    *,
    vendor_mrsigner: Measurement,
    export_key_to: Path | None,
    final_state_dir: Path | None = None,
    date: datetime.date | None = None,
) -> dict[str, str]:
    """launchctl's part of ``sgxemu init`` in ``state_dir`` (which may be a staging directory
    renamed to ``final_state_dir`` afterwards).

    Builds the launch enclave and signs it with a fresh launch-authority key, which is exported
    to ``export_key_to`` (a new file outside the state directory) or destroyed (``None``);
    creates the database listing the emulated vendor signer ``vendor_mrsigner`` with
    PROVISIONKEY allowed (sealed at the daemon's first start), and a default
    ``launchctl/launchctl.toml``. Returns a summary; ``le_mrsigner`` is what the platform's
    ``le_pubkey_hash`` must be set to for token mode.
    """
    state_dir = Path(state_dir).absolute()
    final = Path(final_state_dir).absolute() if final_state_dir is not None else state_dir
    if export_key_to is not None:
        key_path = Path(export_key_to).absolute()
        for directory in {state_dir, final}:
            if key_path == directory or key_path.is_relative_to(directory):
                raise InitError(
                    f"{key_path} is inside the state directory {directory}; the launch-"
                    "authority key must be kept elsewhere (offline)",
                    hint="name a path outside the state directory, or let it be destroyed",
                )
    config = LaunchctlConfig.defaults(state_dir)
    _private_dir(config.database.parent)
    config.enclaves_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if config.database.exists():
        raise InitError(f"{config.database} already exists; refusing to overwrite the state")
    info = create_launch_enclave(
        config.launch_enclave, state_dir=state_dir, export_key_to=export_key_to, date=date
    )
    vendor = SignerEntry(
        mrsigner=vendor_mrsigner, allow_provision_key=True, comment=VENDOR_COMMENT
    )
    create_pending(config.database, Allowlist.of([vendor]))
    config_file = config.database.parent / CONFIG_FILE_NAME
    if not config_file.exists():
        write_atomic(config_file, DEFAULT_CONFIG_TEXT.encode("utf-8"), mode=0o600)

    def shown(path: Path) -> str:
        return str(final / path.relative_to(state_dir))

    return {
        "le_mrsigner": info.mrsigner.hex(),
        "le_mrenclave": info.mrenclave.hex(),
        "le_image": shown(config.launch_enclave.image),
        "le_sigstruct": shown(config.launch_enclave.sigstruct),
        "launch_authority_key": str(info.key_exported_to) if info.key_exported_to
        else "destroyed",
        "database": shown(config.database),
        "config": shown(config_file),
        "vendor_mrsigner": vendor_mrsigner.hex(),
    }


class LaunchctlService:
    """The composed service: call :meth:`start`, then :meth:`stop` (or :meth:`serve_forever`)."""

    def __init__(
        self,
        config: LaunchctlConfig,
        *,
        platform: PlatformApi | None = None,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        max_workers: int = 8,
    ) -> None:
        self.config = config
        self.platform = platform or GrpcPlatform.unix(
            config.platform.socket, config.platform.owner_socket, timeout=config.platform.timeout
        )
        self.daemon = LaunchControl(config, self.platform, wait_seconds=wait_seconds)
        self.host = ServiceHost(
            authorizer(),
            [register(LaunchControlServicer(self.daemon))],
            [SERVICE_NAME],
            max_workers=max_workers,
        )
        self._listeners: dict[str, Listener] = {}
        self._addresses: dict[str, str] = {}

    @property
    def addresses(self) -> dict[str, str]:
        """Where each listener ended up (``public``, ``admin``, ``authority``, ``tcp``)."""
        return dict(self._addresses)

    def start(self) -> dict[str, str]:
        s = self.config.sockets
        s.public.parent.mkdir(parents=True, exist_ok=True)
        _private_dir(s.admin.parent)
        _private_dir(s.authority.parent)
        self._listeners = {
            "public": UnixListener(s.public, s.public_mode, ROLE_READER),
            "admin": UnixListener(s.admin, 0o600, ROLE_ADMIN),
            "authority": UnixListener(s.authority, 0o600, ROLE_PLATFORM),
        }
        tcp = self.config.tcp
        if tcp is not None:
            self._listeners["tcp"] = TlsListener(
                tcp.address,
                tcp.certificate.read_bytes(),
                tcp.private_key.read_bytes(),
                client_ca_pem=tcp.client_ca.read_bytes(),
            )
        for listener in self._listeners.values():
            self.host.add(listener)
        bound = self.host.start()
        self._addresses = {name: bound[listener] for name, listener in self._listeners.items()}
        try:
            self.daemon.start()
        except BaseException:
            self.host.stop(0)
            self.platform.close()
            raise
        log.info("launchctl serving on %s", self._addresses)
        return self.addresses

    def stop(self, grace: float = 5.0) -> None:
        self.host.stop(grace)
        self.daemon.stop()
        self.platform.close()

    def serve_forever(self, grace: float = 5.0) -> None:
        try:
            self.host.serve_forever(grace)
        finally:
            self.daemon.stop()
            self.platform.close()
