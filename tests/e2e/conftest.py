"""End-to-end fixtures: a whole sgxemu world, its services started by ``sgxemu up --detach``.

``world`` is module-scoped: each test module that uses it gets its own fresh state directory
(under /tmp, short enough for Unix socket paths), started once with ``sgxemu up --detach`` as
separate processes, and always stopped with ``sgxemu down`` afterwards; the teardown then
checks that no process of that state directory is left (by scanning ``/proc/*/cmdline``).

Commands run in-process through ``sgxemu_cli.main.main`` (what the ``sgxemu`` script calls),
so the services are children of the test process; :meth:`World.kill9` reaps them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from sgx.quoting.v1 import provisioning_pb2_grpc, quoting_pb2_grpc
from sgx.verifier.v1 import verifier_pb2_grpc
from sgx_platform.rpc.client import PlatformClient
from sgx_rpc.channel import tls_channel, unix_channel
from sgxemu_cli import supervisor
from sgxemu_cli.main import main
from sgxemu_cli.state import StateLayout

SERVICES = ("platform", "launchctl", "quoting", "verifier")


@dataclass(frozen=True)
class Run:
    """One ``sgxemu`` command's exit code and output."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def sgxemu(*argv: str | Path) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


def processes_of(root: Path) -> list[tuple[int, str]]:
    """Live processes whose command line names ``root`` (zombies have an empty cmdline)."""
    needle = os.fsencode(root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


@dataclass(frozen=True)
class Keys:
    """Enclave signing keys made with ``sgxemu keygen`` (RSA-3072, e=3)."""

    app: Path
    admin: Path
    extra: Path


@pytest.fixture(scope="session")
def keys() -> Iterator[Keys]:
    directory = Path(tempfile.mkdtemp(prefix="sgxe2ek", dir="/tmp"))
    try:
        paths = Keys(directory / "app.pem", directory / "admin.pem", directory / "extra.pem")
        for path in (paths.app, paths.admin, paths.extra):
            run = sgxemu("keygen", "--out", path)
            assert run.code == 0, run.err
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class World:
    """A running world: its state directory, a scratch directory and its service endpoints."""

    root: Path
    work: Path
    keys: Keys

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.root)

    @property
    def enclaves(self) -> Path:
        return self.root / "enclaves"

    def sgxemu(self, *argv: str | Path) -> Run:
        return sgxemu("--state", self.root, *argv)

    @property
    def verifier_address(self) -> str:
        with open(self.root / "verifier" / "verifier.toml", "rb") as f:
            return str(tomllib.load(f)["server"]["listen"])

    @property
    def ca_pem(self) -> bytes:
        return (self.root / "tls" / "ca.pem").read_bytes()

    # -- clients of the running services, exactly as an application makes them -------------

    def platform(self) -> PlatformClient:
        return PlatformClient.unix(self.root / "run" / "platform.sock", timeout=30)

    def verifier_channel(self) -> grpc.Channel:
        return tls_channel(self.verifier_address, self.ca_pem)

    def verifier(self, channel: grpc.Channel) -> verifier_pb2_grpc.QuoteVerificationServiceStub:
        return verifier_pb2_grpc.QuoteVerificationServiceStub(channel)

    def quoting_channel(self) -> grpc.Channel:
        return unix_channel(self.root / "run" / "quoting.sock")

    def quoting(self, channel: grpc.Channel) -> quoting_pb2_grpc.QuotingServiceStub:
        return quoting_pb2_grpc.QuotingServiceStub(channel)

    def pcs(self, channel: grpc.Channel) -> provisioning_pb2_grpc.ProvisioningServiceStub:
        return provisioning_pb2_grpc.ProvisioningServiceStub(channel)

    def pcs_channel(self) -> grpc.Channel:
        return unix_channel(self.root / "run" / "pcs.sock")

    # -- enclaves ---------------------------------------------------------------------------

    def build_signed(self, name: str, key: Path, *, seed: int = 3) -> tuple[Path, Path]:
        """Build an enclave image in the allowed directory and sign it (SIGSTRUCT in work/)."""
        image = self.enclaves / f"{name}.sgxs"
        sig = self.work / f"{name}.sig"
        run = sgxemu("image", "build", "--out", image, "--seed", str(seed))
        assert run.code == 0, run.err
        run = sgxemu("sign", image, "--key", key, "--out", sig)
        assert run.code == 0, run.err
        return image, sig

    # -- processes --------------------------------------------------------------------------

    def pid(self, service: str) -> int:
        pid = supervisor.running_pid(self.layout, service)
        assert pid is not None, f"{service} is not running"
        return pid

    def up(self) -> None:
        run = self.sgxemu("up", "--detach")
        assert run.code == 0, run.err
        assert run.out.count("SERVING") == len(SERVICES), run.out

    def kill9(self, service: str) -> int:
        """SIGKILL one service (no chance to clean up), wait until it is gone; its old pid."""
        pid = self.pid(service)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.02)
        assert supervisor.running_pid(self.layout, service) is None
        return pid

    def restart(self, service: str) -> None:
        """``sgxemu up --detach`` again: starts what is not running; the others stay."""
        others = {s: self.pid(s) for s in SERVICES if s != service}
        self.up()
        assert {s: self.pid(s) for s in others} == others


def _start_world(keys: Keys, *extra_init: str) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="sgxe2e", dir="/tmp"))
    root, work = base / "s", base / "w"
    work.mkdir()
    world = World(root, work, keys)
    try:
        run = sgxemu("--state", root, "init", "--verifier-listen", "127.0.0.1:0", *extra_init)
        assert run.code == 0, run.err
        world.up()
        yield world
    finally:
        down = sgxemu("--state", root, "down")
        left = processes_of(root)
        for kill_pid, _ in left:  # only when down failed: never leave a process behind
            with contextlib.suppress(OSError):
                os.kill(kill_pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        assert down.code == 0, down.err
        assert left == [], f"processes of {root} left after sgxemu down: {left}"


@pytest.fixture(scope="module")
def world(keys: Keys) -> Iterator[World]:
    """A fresh token-mode world per test module, up for the whole module, then down."""
    yield from _start_world(keys)
