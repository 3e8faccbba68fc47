"""Benchmark: enclave launches per second in token mode (every EINIT asks the launch-control
daemon for a token, which audits the decision durably) against open mode (no token), in the
same run, through the real services on Unix sockets.

One launch is ``LoadEnclaveFromFile`` (the platform opens the image, pulls the load policy from
the daemon, builds and initializes the enclave) followed by ``DestroyEnclave``. Both modes use
the daemon as the load-policy provider, so the difference is the token: the daemon's decision,
its audit transaction (fsync) and the token MAC.

Usage: ``python bench/launch.py [--json] [--seconds S] [--pages N]``; ``--json`` prints one JSON
line. Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sgx_launchctl.allowlist import SignerEntry, mrsigner_from_hex
from sgx_launchctl.config import load_config
from sgx_launchctl.rpc.client import LaunchctlClient
from sgx_launchctl.service import LaunchctlService, initialize_state
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform


@dataclass(frozen=True)
class Bench:
    """A state directory with the platform's and launchctl's parts, and a signed app image."""

    state: Path
    le_mrsigner: str
    app_mrsigner: str
    image: str
    sigstruct: bytes


def make_state(root: Path, *, code_pages: int = 1) -> Bench:
    state = root / "s"
    state.mkdir(mode=0o700)
    initialize_platform(state / "platform")
    vendor = generate_signing_key()
    summary = initialize_state(
        state, vendor_mrsigner=mrsigner_of_public_key(vendor), export_key_to=None
    )
    (state / "launchctl" / "launchctl.toml").write_text("[platform]\npoll_seconds = 0.2\n")
    app = generate_signing_key()
    image = build_image(code_pages=code_pages, seed=7)
    (state / "enclaves" / "app.sgxs").write_bytes(write_sgxs(image))
    sig = sign_sigstruct(app, measure(image), date=0x20250101)
    return Bench(state, summary["le_mrsigner"], mrsigner_of_public_key(app).hex(),
                 "app.sgxs", sig.to_bytes())


def platform_config_text(bench: Bench, mode: str, epc_pages: int = 4096) -> str:
    text = f'launch_mode = "{mode}"\n[epc]\npages = {epc_pages}\n'
    if mode == "token":
        text = f'le_pubkey_hash = "{bench.le_mrsigner}"\n' + text
    return text + '[launchctl]\nsocket = "run/launchctl-authority/authority.sock"\n'


@contextmanager
def services(bench: Bench, mode: str) -> Iterator[tuple[PlatformService, LaunchctlService]]:
    platform = PlatformService(parse_config(platform_config_text(bench, mode), bench.state))
    platform.start()
    launchctl = LaunchctlService(load_config(bench.state))
    try:
        launchctl.start()
        try:
            yield platform, launchctl
        finally:
            launchctl.stop(1)
    finally:
        platform.stop(1)


def device(bench: Bench) -> PlatformClient:
    return PlatformClient.unix(bench.state / "run" / "platform.sock", timeout=30)


def admin(bench: Bench) -> LaunchctlClient:
    return LaunchctlClient.unix(bench.state / "run" / "launchctl-admin" / "admin.sock",
                                timeout=30)


def launch_once(client: PlatformClient, bench: Bench) -> None:
    loaded = client.load_enclave_from_file(bench.image, bench.sigstruct)
    client.destroy_enclave(loaded.handle)


def launches_per_second(bench: Bench, mode: str, seconds: float) -> dict[str, float]:
    with services(bench, mode):
        with admin(bench) as a:
            a.add_signer(SignerEntry(mrsigner_from_hex(bench.app_mrsigner)))
        with device(bench) as client:
            launch_once(client, bench)  # warm up (channels, first policy pull)
            n = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds or n < 3:
                launch_once(client, bench)
                n += 1
            elapsed = time.perf_counter() - start
    return {"launches": n, "seconds": round(elapsed, 3), "launches_per_s": round(n / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--seconds", type=float, default=3.0, help="per mode")
    parser.add_argument("--pages", type=int, default=1, help="code pages of the launched image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="lcb", dir="/tmp"))
    try:
        bench = make_state(root, code_pages=args.pages)
        token = launches_per_second(bench, "token", args.seconds)
        opened = launches_per_second(bench, "open", args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "launch",
        "code_pages": args.pages,
        "token": token,
        "open": opened,
        "token_over_open": round(token["launches_per_s"] / opened["launches_per_s"], 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"token mode: {token['launches_per_s']} launches/s ({token['launches']} launches)")
        print(f"open mode:  {opened['launches_per_s']} launches/s ({opened['launches']} launches)")
        print(f"token/open: {result['token_over_open']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
