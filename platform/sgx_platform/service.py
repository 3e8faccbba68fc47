"""The platform service: CPU + driver + gRPC on the device, provision and owner sockets.

Invariants:

* Three Unix sockets, each granting one role by its file mode (ADR 0010, DESIGN.md): the device
  socket (``$STATE/run/platform.sock``, default 0666, the ``/dev/sgx_enclave`` gate), the
  provision socket (``platform-provision.sock``, default 0660, optionally chgrp'ed, the
  ``/dev/sgx_provision`` gate) and the owner socket (``run/platform-owner/owner.sock``, 0600,
  inside a 0700 directory, for reset, TCB, owner epoch, LE registers and the latch). Sockets
  are never reachable with a wider mode than configured (``sgx_rpc`` binds them under a
  temporary name, chmods, then renames). Optional TCP always uses mTLS with the local service
  CA.
* One boot of the CPU per service object; a restart (a new object on the same fuses) and a
  reset both change the boot epoch, which makes every old enclave handle stale.
* Expired leases are reaped in the background, returning their EPC pages.
* With ``[launchctl]`` configured, the launch-control daemon is the launch authority (token
  mode) and, unless ``load_policy = false``, the source of the load policy; unreachable, both
  fail closed.
* Nothing is read at import time; configuration comes in as a
  :class:`~sgx_platform.config.PlatformConfig`. Logs are structured (``event`` and ``fields``
  on every record from the driver; :class:`JsonLogFormatter` prints them as JSON lines).
"""

from __future__ import annotations

import datetime
import grp
import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from sgx_platform.config import CONFIG_FILE_NAME, PlatformConfig
from sgx_platform.cpu import SgxCpu
from sgx_platform.driver import Driver
from sgx_platform.fuses import PlatformFuses
from sgx_platform.launch_authority import LaunchAuthority
from sgx_platform.load_policy import LoadPolicyProvider, StaticLoadPolicyProvider
from sgx_platform.metrics import PlatformMetrics
from sgx_platform.rpc.launchctl import LaunchControlClient
from sgx_platform.rpc.servicer import (
    ROLE_DEVICE,
    ROLE_OWNER,
    ROLE_PROVISION,
    SERVICE_NAME,
    PlatformServicer,
    authorizer,
    register,
)
from sgx_rpc.files import write_atomic
from sgx_rpc.server import Listener, ServiceHost, TlsListener, UnixListener

log = logging.getLogger(__name__)

FUSES_DIR_NAME = "fuses"

DEFAULT_CONFIG_TEXT = """\
# The platform service's configuration (sgx_platform.config documents every key).
launch_mode = "open"

[epc]
pages = 8192
eviction = true

[load_policy]
exec_only_from_file = true
no_write_exec = true
no_exec_from_wire = true
no_unmeasured_exec = true
"""


def initialize_state(platform_dir: Path) -> dict[str, str]:
    """Create the platform's part of a state directory: fused secrets and a default config.

    ``platform_dir`` is ``$STATE/platform`` (created 0700). Refuses to overwrite fuses.
    Returns a summary for ``sgxemu init``.
    """
    platform_dir = Path(platform_dir)
    if platform_dir.is_symlink():
        raise ValueError(f"{platform_dir} is a symbolic link; refusing to use it")
    platform_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(platform_dir, 0o700)
    fuses = PlatformFuses.create(platform_dir / FUSES_DIR_NAME)
    config = platform_dir / CONFIG_FILE_NAME
    if not config.exists():
        write_atomic(config, DEFAULT_CONFIG_TEXT.encode("utf-8"), mode=0o600)
    return {
        "fuses": str(fuses.directory),
        "config": str(config),
        "cpusvn": fuses.cpusvn.hex(),
    }


class PlatformService:
    """The composed platform: call :meth:`start`, then :meth:`stop` (or :meth:`serve_forever`)."""

    def __init__(
        self,
        config: PlatformConfig,
        *,
        launch_authority: LaunchAuthority | None = None,
        policy_provider: LoadPolicyProvider | None = None,
        fuses: PlatformFuses | None = None,
        max_workers: int = 8,
    ) -> None:
        self.config = config
        self.fuses = fuses or PlatformFuses.open(config.platform_dir / FUSES_DIR_NAME)
        self.cpu = SgxCpu(self.fuses, epc_pages=config.epc.pages, eviction=config.epc.eviction)
        self.launchctl: LaunchControlClient | None = None
        if config.launchctl is not None:
            cpu = self.cpu
            self.launchctl = LaunchControlClient.unix(
                config.launchctl.socket,
                boot_epoch=lambda: cpu.boot_epoch.to_bytes(8, "little"),
                timeout=config.launchctl.timeout_seconds,
            )
            launch_authority = launch_authority or self.launchctl
            if config.launchctl.load_policy and policy_provider is None:
                policy_provider = self.launchctl
        self.driver = Driver(
            self.cpu,
            policy_provider=policy_provider or StaticLoadPolicyProvider(config.load_policy),
            launch_mode=config.launch_mode,
            le_pubkey_hash=config.le_pubkey_hash,
            launch_authority=launch_authority,
            lease_seconds=config.lease_seconds,
            max_image_bytes=config.max_image_bytes,
        )
        self.metrics = PlatformMetrics(self.driver.info)
        self.servicer = PlatformServicer(self.driver, self.metrics)
        self.host = ServiceHost(
            authorizer(), [register(self.servicer)], [SERVICE_NAME], max_workers=max_workers
        )
        self._listeners: dict[str, Listener] = {}
        self._addresses: dict[str, str] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._metrics_server: Any = None

    @property
    def addresses(self) -> dict[str, str]:
        """Where each listener ended up (``device``, ``provision``, ``owner``, ``tcp``)."""
        return dict(self._addresses)

    def _make_listeners(self) -> None:
        s = self.config.sockets
        s.directory.mkdir(parents=True, exist_ok=True)
        _private_dir(s.owner_directory)
        self._listeners = {
            "device": UnixListener(s.device, s.device_mode, ROLE_DEVICE),
            "provision": UnixListener(s.provision, s.provision_mode, ROLE_PROVISION),
            "owner": UnixListener(s.owner, 0o600, ROLE_OWNER),
        }
        if self.config.tcp is not None:
            tcp = self.config.tcp
            self._listeners["tcp"] = TlsListener(
                tcp.address,
                tcp.certificate.read_bytes(),
                tcp.private_key.read_bytes(),
                client_ca_pem=tcp.client_ca.read_bytes(),
            )
        for listener in self._listeners.values():
            self.host.add(listener)

    def start(self) -> dict[str, str]:
        """Bind every listener, start serving, reaping leases and (if configured) metrics."""
        self._make_listeners()
        bound = self.host.start()
        self._addresses = {name: bound[listener] for name, listener in self._listeners.items()}
        group = self.config.sockets.provision_group
        if group is not None:
            os.chown(self.config.sockets.provision, -1, grp.getgrnam(group).gr_gid)
        _warn_if_unreachable(self.config.sockets.device, self.config.sockets.device_mode)
        self._reaper = threading.Thread(target=self._reap, name="lease-reaper", daemon=True)
        self._reaper.start()
        if self.config.metrics_address is not None:
            host, port = self.config.metrics_address.rsplit(":", 1)
            server, _ = start_http_server(int(port), host, registry=self.metrics.registry)
            self._metrics_server = server
            self._addresses["metrics"] = f"{host}:{server.server_port}"
        info = self.driver.info()
        log.info(
            "platform_started boot=%d mode=%s epc_pages=%d addresses=%s",
            int.from_bytes(info.boot_epoch, "little"), info.launch_mode.value,
            info.epc_pages_total, self._addresses,
            extra={"event": "platform_started", "fields": dict(self._addresses)},
        )
        return self.addresses

    def _reap(self) -> None:
        period = min(1.0, self.config.lease_seconds / 4)
        while not self._stop.wait(period):
            try:
                self.driver.reap_expired()
            except Exception:  # keep reaping whatever one round hit
                log.exception("lease reaper round failed")

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self.host.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        if self.launchctl is not None:
            self.launchctl.close()

    def serve_forever(self, grace: float = 5.0) -> None:
        self._stop.clear()
        self.host.serve_forever(grace)
        self.stop(grace)


def _private_dir(path: Path) -> None:
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; refusing to put the owner socket there")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _warn_if_unreachable(socket_path: Path, mode: int) -> None:
    """The device socket's mode is the gate only if others can reach the socket at all."""
    if not mode & 0o077:
        return
    for parent in socket_path.parents:
        try:
            st = parent.stat()
        except OSError:
            return
        if not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
            log.warning(
                "the device socket %s has mode %04o but %s is not traversable by others; only "
                "its owner can connect", socket_path, mode, parent,
            )
            return


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event is not None:
            document["event"] = event
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                document.update({k: _jsonable(v) for k, v in fields.items() if k not in document})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, sort_keys=False)


def _jsonable(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
