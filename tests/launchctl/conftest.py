"""Fixtures for launchctl: signing keys, a state directory made by ``initialize_state``, and a
world of real services (the platform from sgx_platform.service, the daemon from
sgx_launchctl.service) on Unix sockets in a short temporary directory.

The state directory is initialized once per session (the launch-authority key generation is
the slow part) and copied for every test, so every test gets its own fuses, database and
sockets.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_launchctl.config import load_config
from sgx_launchctl.rpc.client import LaunchctlClient
from sgx_launchctl.service import LaunchctlService, initialize_state
from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import (
    DEFAULT_ATTRIBUTE_MASK,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
)
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import LoadResult, PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform

MODE64 = int(AttributeFlags.MODE64BIT)


@dataclass(frozen=True)
class Keys:
    app: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    vendor: rsa.RSAPrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(generate_signing_key(), generate_signing_key(), generate_signing_key())


@dataclass(frozen=True)
class Template:
    state: Path
    summary: dict[str, str]
    key_file: Path


@pytest.fixture(scope="session")
def template(keys: Keys) -> Iterator[Template]:
    """A state directory as ``sgxemu init`` lays out the platform and launchctl parts."""
    with tempfile.TemporaryDirectory(prefix="lct", dir="/tmp") as d:
        state = Path(d) / "s"
        state.mkdir(mode=0o700)
        initialize_platform(state / "platform")
        key_file = Path(d) / "launch-authority.pem"
        summary = initialize_state(
            state, vendor_mrsigner=mrsigner_of_public_key(keys.vendor), export_key_to=key_file
        )
        yield Template(state, summary, key_file)


@dataclass
class World:
    """Real services on one state directory; helpers to build, sign and load enclaves."""

    root: Path
    state: Path
    le_mrsigner: str
    platform: PlatformService | None = None
    launchctl: LaunchctlService | None = None
    mode: str = "token"
    epc_pages: int = 1024
    _clients: list[Any] = field(default_factory=list)

    # -- configuration --------------------------------------------------------------------------

    def write_launchctl_config(self, text: str = "") -> None:
        """``launchctl.toml``: fast polling plus ``text`` (e.g. a [boot] table)."""
        (self.state / "launchctl" / "launchctl.toml").write_text(
            "[platform]\npoll_seconds = 0.05\ntimeout = 5.0\n" + text
        )

    def platform_config_text(self, mode: str) -> str:
        text = f'launch_mode = "{mode}"\n[epc]\npages = {self.epc_pages}\n'
        if mode == "token":
            text = f'le_pubkey_hash = "{self.le_mrsigner}"\n' + text
        return text + '[launchctl]\nsocket = "run/launchctl-authority/authority.sock"\n'

    # -- services -------------------------------------------------------------------------------

    def start_platform(self, mode: str | None = None) -> PlatformService:
        self.mode = mode or self.mode
        config = parse_config(self.platform_config_text(self.mode), self.state)
        self.platform = PlatformService(config)
        self.platform.start()
        return self.platform

    def stop_platform(self) -> None:
        if self.platform is not None:
            self.platform.stop(0.5)
            self.platform = None

    def start_launchctl(self, **kw: Any) -> LaunchctlService:
        service = LaunchctlService(load_config(self.state), **kw)
        service.start()
        self.launchctl = service
        return service

    def stop_launchctl(self) -> None:
        if self.launchctl is not None:
            self.launchctl.stop(0.5)
            self.launchctl = None

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop_launchctl()
        self.stop_platform()

    # -- clients --------------------------------------------------------------------------------

    def _client(self, client: Any) -> Any:
        self._clients.append(client)
        return client

    def device(self) -> PlatformClient:
        return self._client(PlatformClient.unix(self.state / "run" / "platform.sock",
                                                timeout=20))

    def owner(self) -> PlatformClient:
        return self._client(
            PlatformClient.unix(self.state / "run" / "platform-owner" / "owner.sock", timeout=20)
        )

    def provision(self) -> PlatformClient:
        return self._client(
            PlatformClient.unix(self.state / "run" / "platform-provision.sock", timeout=20)
        )

    def admin(self) -> LaunchctlClient:
        return self._client(
            LaunchctlClient.unix(self.state / "run" / "launchctl-admin" / "admin.sock",
                                 timeout=20)
        )

    def public(self) -> LaunchctlClient:
        return self._client(LaunchctlClient.unix(self.state / "run" / "launchctl.sock",
                                                 timeout=20))

    def authority(self) -> LaunchctlClient:
        return self._client(
            LaunchctlClient.unix(
                self.state / "run" / "launchctl-authority" / "authority.sock", timeout=20
            )
        )

    # -- enclaves -------------------------------------------------------------------------------

    def enclave(
        self,
        key: rsa.RSAPrivateKey,
        *,
        seed: int = 1,
        name: str | None = None,
        flags: int = MODE64,
        attribute_mask: Attributes = DEFAULT_ATTRIBUTE_MASK,
        **sign: Any,
    ) -> tuple[str, bytes]:
        """Build an image into ``$STATE/enclaves`` and sign it; returns (name, SIGSTRUCT)."""
        image = build_image(seed=seed)
        name = name or f"enclave-{seed}.sgxs"
        (self.state / "enclaves" / name).write_bytes(write_sgxs(image))
        sig = sign_sigstruct(
            key, measure(image), attributes=Attributes(flags, 3),
            attribute_mask=attribute_mask, date=0x20250101, **sign,
        )
        return name, sig.to_bytes()

    def load(self, name: str, sigstruct: bytes, **kw: Any) -> LoadResult:
        client = self.device()
        result = client.load_enclave_from_file(name, sigstruct, **kw)
        if result.initialized:
            client.destroy_enclave(result.handle)
        return result


@pytest.fixture
def world(template: Template) -> Iterator[World]:
    """A fresh copy of the template state; nothing started yet."""
    root = Path(tempfile.mkdtemp(prefix="lcw", dir="/tmp"))
    state = root / "s"
    shutil.copytree(template.state, state, symlinks=True)
    w = World(root, state, template.summary["le_mrsigner"])
    w.write_launchctl_config()
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(world: World) -> World:
    """The world with the platform (token mode) and the daemon started."""
    world.start_platform("token")
    world.start_launchctl()
    return world
