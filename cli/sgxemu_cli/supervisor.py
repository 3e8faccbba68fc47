"""Starting, watching and stopping the services of one state directory (``up``/``down``/
``status``).

Invariants:
- Each service runs as its own process (``python -m sgxemu_cli --state S <name> serve``) in its
  own session, with its output in ``$STATE/logs/<name>.log`` and its pid in
  ``$STATE/run/<name>.pid`` (written atomically, removed when it stops).
- A pid file is trusted only when ``/proc/<pid>/cmdline`` is an sgxemu ``serve`` of this very
  state directory: a stale file whose pid was reused is never signalled.
- Services start in dependency order and each must answer its gRPC health check (and, where a
  service is SERVING before it can do its job, its readiness probe: launchctl's daemon must
  serve the platform's current boot) before the next starts; they stop in reverse order,
  SIGTERM first (graceful), SIGKILL only after a timeout.
- A service that dies is reported with the tail of its log, never hidden.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sgx.launchctl.v1 import launchctl_pb2, launchctl_pb2_grpc
from sgx_rpc.channel import tls_channel, unix_channel
from sgxemu_cli.errors import CliError
from sgxemu_cli.io import write_atomic
from sgxemu_cli.state import StateLayout


@dataclass(frozen=True)
class HealthTarget:
    """Where a service answers health checks: a Unix socket, or TLS on a TCP address."""

    unix_socket: Path | None = None
    tls_address: str | None = None
    tls_ca: Path | None = None

    def describe(self) -> str:
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        return f"{self.tls_address} (TLS)"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    #: The gRPC service whose health is checked ("" = the server as a whole).
    health_service: str
    target: Callable[[StateLayout], HealthTarget]
    #: Beyond health: True once the service can do its job (None: health says it all).
    ready: Callable[[StateLayout], bool] | None = None
    #: Where else it listens, for people (the verifier's TLS address).
    also_listens: Callable[[StateLayout], str | None] | None = None

    def describe(self, layout: StateLayout) -> str:
        where = self.target(layout).describe()
        extra = self.also_listens(layout) if self.also_listens is not None else None
        return f"{where}, {extra}" if extra else where


def _socket(name: str) -> Callable[[StateLayout], HealthTarget]:
    def target(layout: StateLayout) -> HealthTarget:
        return HealthTarget(unix_socket=layout.run / name)

    return target


def _launchctl_ready(layout: StateLayout) -> bool:
    """The daemon serves the platform's current boot (its LE loaded, its state checked against
    the latch). Its gRPC health is SERVING earlier, as soon as it listens."""
    try:
        with unix_channel(layout.run / "launchctl.sock") as channel:
            reply = launchctl_pb2_grpc.LaunchControlServiceStub(channel).GetStatus(
                launchctl_pb2.GetStatusRequest(), timeout=2.0
            )
    except grpc.RpcError:
        return False
    return bool(reply.ready)


def _verifier_tls(layout: StateLayout) -> str | None:
    """The verifier's TLS address from its verifier.toml, or None if it cannot be read."""
    try:
        config = tomllib.loads((layout.component("verifier") / "verifier.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    listen = config.get("server", {}).get("listen")
    return f"{listen} (TLS)" if isinstance(listen, str) else None


#: The services ``up`` starts, in dependency order: the platform first (everything launches
#: through it), launchctl (token mode needs it before any other launch), quoting (its PCE and
#: QE launch through both; it also serves the emulated PCS), then the verifier. Health is
#: checked on each one's local socket; the verifier also listens on TLS (verifier.toml).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("platform", "", _socket("platform.sock")),
    ServiceSpec("launchctl", "", _socket("launchctl.sock"), _launchctl_ready),
    ServiceSpec("quoting", "", _socket("quoting.sock")),
    ServiceSpec("verifier", "", _socket("verifier.sock"), also_listens=_verifier_tls),
)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    health: str
    address: str

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pid": self.pid,
            "running": self.running,
            "health": self.health,
            "address": self.address,
        }


def pid_file(layout: StateLayout, name: str) -> Path:
    return layout.run / f"{name}.pid"


def log_file(layout: StateLayout, name: str) -> Path:
    return layout.logs / f"{name}.log"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_service(pid: int, layout: StateLayout, name: str) -> bool:
    args = _cmdline(pid)
    if not args:
        return False
    try:
        i = args.index("--state")
    except ValueError:
        return False
    return (
        i + 1 < len(args)
        and Path(args[i + 1]) == layout.root
        and args[i + 2 : i + 4] == [name, "serve"]
    )


def running_pid(layout: StateLayout, name: str) -> int | None:
    """The pid of this state directory's ``name`` service if it is running, else None."""
    path = pid_file(layout, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_service(pid, layout, name) else None


def check_health(spec: ServiceSpec, layout: StateLayout, timeout: float = 2.0) -> str:
    """The health status name (SERVING, NOT_SERVING, ...) or UNREACHABLE."""
    target = spec.target(layout)
    if target.unix_socket is not None:
        if not target.unix_socket.exists():
            return "UNREACHABLE"
        channel = unix_channel(target.unix_socket)
    else:
        if target.tls_address is None or target.tls_ca is None:
            return "UNREACHABLE"
        channel = tls_channel(target.tls_address, target.tls_ca.read_bytes())
    try:
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=spec.health_service), timeout=timeout
            )
    except grpc.RpcError:
        return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def status(layout: StateLayout, specs: Sequence[ServiceSpec] = SERVICES) -> list[ServiceStatus]:
    out = []
    for spec in specs:
        pid = running_pid(layout, spec.name)
        health = check_health(spec, layout) if pid is not None else "STOPPED"
        out.append(
            ServiceStatus(spec.name, pid, pid is not None, health, spec.describe(layout))
        )
    return out


def _log_tail(layout: StateLayout, name: str, lines: int = 15) -> str:
    try:
        text = log_file(layout, name).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start_service(layout: StateLayout, spec: ServiceSpec, *, timeout: float = 30.0) -> int:
    """Start one service and wait until it is healthy; return its pid."""
    existing = running_pid(layout, spec.name)
    if existing is not None:
        return existing
    log = open(log_file(layout, spec.name), "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sgxemu_cli", "--state", str(layout.root), spec.name, "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    write_atomic(pid_file(layout, spec.name), f"{proc.pid}\n".encode(), mode=0o600)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            pid_file(layout, spec.name).unlink(missing_ok=True)
            raise CliError(
                f"the {spec.name} service exited with code {code} while starting; "
                f"its log ({log_file(layout, spec.name)}) ends with:\n"
                f"{_log_tail(layout, spec.name)}"
            )
        if check_health(spec, layout, timeout=1.0) == "SERVING" and (
            spec.ready is None or spec.ready(layout)
        ):
            return proc.pid
        time.sleep(0.1)
    stop_service(layout, spec.name)
    raise CliError(
        f"the {spec.name} service did not become healthy and ready within {timeout:.0f} s; "
        f"its log ends with:\n{_log_tail(layout, spec.name)}"
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def stop_service(layout: StateLayout, name: str, *, timeout: float = 10.0) -> bool:
    """Stop one service gracefully (SIGTERM, then SIGKILL); True if one was running."""
    pid = running_pid(layout, name)
    if pid is None:
        pid_file(layout, name).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    pid_file(layout, name).unlink(missing_ok=True)
    return True


def up(layout: StateLayout, specs: Sequence[ServiceSpec] = SERVICES) -> list[ServiceStatus]:
    """Start every service in order; on a failure, stop those this call started."""
    started: list[str] = []
    try:
        for spec in specs:
            was_running = running_pid(layout, spec.name) is not None
            start_service(layout, spec)
            if not was_running:
                started.append(spec.name)
    except BaseException:
        for name in reversed(started):
            stop_service(layout, name)
        raise
    return status(layout, specs)


def down(layout: StateLayout, specs: Sequence[ServiceSpec] = SERVICES) -> list[str]:
    """Stop every service in reverse order; returns the names of those that were running."""
    return [spec.name for spec in reversed(specs) if stop_service(layout, spec.name)]


def watch(layout: StateLayout, specs: Sequence[ServiceSpec] = SERVICES) -> int:
    """Foreground supervision: report and restart a service that dies; stop all on a signal."""
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    restarts: dict[str, int] = {}
    try:
        while not stop:
            time.sleep(0.5)
            for spec in specs:
                if stop or running_pid(layout, spec.name) is not None:
                    continue
                count = restarts.get(spec.name, 0) + 1
                restarts[spec.name] = count
                print(
                    f"sgxemu: the {spec.name} service died; its log ends with:\n"
                    f"{_log_tail(layout, spec.name)}",
                    file=sys.stderr,
                )
                if count > 3:
                    print(f"sgxemu: {spec.name} died {count} times; giving up", file=sys.stderr)
                    return 1
                print(f"sgxemu: restarting {spec.name} (attempt {count})", file=sys.stderr)
                try:
                    start_service(layout, spec)
                except CliError as e:
                    print(f"sgxemu: {e}", file=sys.stderr)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        down(layout, specs)
