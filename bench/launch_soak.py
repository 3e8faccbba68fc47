"""Soak: the launch-control daemon killed with SIGKILL at seeded random moments, many times,
while an admin makes a burst of changes and a client keeps launching enclaves.

Checked after every restart (the long version of tests/launchctl/test_crash.py):
* every acknowledged change (add-signer, allow-digest) is present; at most the one call in
  flight when the kill came is present without an acknowledgement (none half-applied: each
  present change has exactly its audit entry);
* the audit chain verifies against the authenticated head;
* no launch of an unlisted signer ever succeeded; launches while the daemon was down failed
  closed.

Usage: ``python bench/launch_soak.py [--rounds N] [--seed S] [--max-delay SECONDS] [--json]``.
Exit 0 when every round held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.rpc.client import LaunchctlClient, LaunchctlRpcError
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService

_spec = importlib.util.spec_from_file_location("bench_launch", Path(__file__).with_name(
    "launch.py"))
assert _spec is not None and _spec.loader is not None
bench_launch: Any = importlib.util.module_from_spec(_spec)
sys.modules["bench_launch"] = bench_launch
_spec.loader.exec_module(bench_launch)

DAEMON = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sgx_launchctl.config import load_config
    from sgx_launchctl.service import LaunchctlService
    service = LaunchctlService(load_config(Path(sys.argv[1])))
    service.start()
    print("READY", flush=True)
    service.serve_forever()
    """
)
DIGEST_BASE = 0xD0000000


def start_daemon(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        _, err = proc.communicate()
        raise RuntimeError(f"the daemon did not start (exit {proc.returncode}): {err[-2000:]}")
    return proc


class Admin(threading.Thread):
    def __init__(self, socket: Path, first: int) -> None:
        super().__init__(daemon=True)
        self.client = LaunchctlClient.unix(socket, timeout=5)
        self.next = first
        self.signers: set[int] = set()
        self.digests: set[int] = set()
        self.in_flight: int | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            i = self.in_flight = self.next
            try:
                if i % 3 == 2:
                    self.client.allow_digest((DIGEST_BASE + i).to_bytes(32, "big"))
                    self.digests.add(i)
                else:
                    self.client.add_signer(SignerEntry(Measurement(i.to_bytes(32, "big")),
                                                       comment=f"soak {i}"))
                    self.signers.add(i)
            except LaunchctlRpcError:
                return
            self.next += 1


class Launcher(threading.Thread):
    """Alternates a listed and an unlisted enclave; counts outcomes."""

    def __init__(self, device: Path, listed: tuple[str, bytes], unlisted: tuple[str, bytes]):
        super().__init__(daemon=True)
        self.client = PlatformClient.unix(device, timeout=10)
        self.listed, self.unlisted = listed, unlisted
        self.halt = threading.Event()
        self.counts = {"admitted": 0, "denied": 0, "failed_closed": 0, "unlisted_admitted": 0,
                       "other_errors": 0}

    def run(self) -> None:
        turn = 0
        while not self.halt.is_set():
            name, sig = self.listed if turn % 2 == 0 else self.unlisted
            try:
                loaded = self.client.load_enclave_from_file(name, sig)
                self.client.destroy_enclave(loaded.handle)
                key = "admitted" if turn % 2 == 0 else "unlisted_admitted"
            except PlatformRpcError as e:
                if e.reason in ("LAUNCH_AUTHORITY_UNAVAILABLE", "LOAD_POLICY_UNAVAILABLE"):
                    key = "failed_closed"
                elif e.reason.startswith(("LAUNCH_", "LOAD_")):
                    key = "denied"
                else:
                    key = "other_errors"
            self.counts[key] += 1
            turn += 1
            if key == "failed_closed":
                time.sleep(0.01)


def soak(rounds: int, seed: int, max_delay: float) -> dict[str, Any]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="lcs", dir="/tmp"))
    violations: list[str] = []
    acked_signers: set[int] = set()
    acked_digests: set[int] = set()
    in_flight: set[int] = set()
    totals: dict[str, int] = {}
    try:
        bench = bench_launch.make_state(root)
        state = bench.state
        other = generate_signing_key()
        image = build_image(seed=8)
        (state / "enclaves" / "other.sgxs").write_bytes(write_sgxs(image))
        unlisted = ("other.sgxs", sign_sigstruct(other, measure(image),
                                                 date=0x20250101).to_bytes())
        platform = PlatformService(parse_config(
            bench_launch.platform_config_text(bench, "token"), state))
        platform.start()
        admin_socket = state / "run" / "launchctl-admin" / "admin.sock"
        proc = start_daemon(state)
        try:
            with LaunchctlClient.unix(admin_socket) as a:
                a.add_signer(SignerEntry(Measurement.from_hex(bench.app_mrsigner)))
                # The burst lists digests; both images stay loadable by the load policy.
                for name in (bench.image, unlisted[0]):
                    a.allow_digest(hashlib.sha256((state / "enclaves" / name).read_bytes())
                                   .digest())
            launcher = Launcher(state / "run" / "platform.sock",
                                (bench.image, bench.sigstruct), unlisted)
            launcher.start()
            first = 0
            for r in range(rounds):
                admin = Admin(admin_socket, first)
                admin.start()
                time.sleep(rng.uniform(0.02, max_delay))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                admin.halt.set()
                admin.join(timeout=20)
                admin.client.close()
                acked_signers |= admin.signers
                acked_digests |= admin.digests
                if admin.in_flight is not None:
                    in_flight.add(admin.in_flight)
                time.sleep(rng.uniform(0.0, 0.1))  # launches meanwhile must fail closed
                proc = start_daemon(state)
                with LaunchctlClient.unix(admin_socket) as a:
                    present = {int.from_bytes(e.mrsigner.value, "big") for e in a.signers()
                               if e.comment.startswith("soak")}
                    digests = {int.from_bytes(d, "big") - DIGEST_BASE
                               for d in a.status().policy.allowed_digests or ()
                               if 0 <= int.from_bytes(d, "big") - DIGEST_BASE < 1 << 32}
                    log = a.audit(verify=True, limit=10000)
                if not acked_signers <= present or not acked_digests <= digests:
                    violations.append(f"round {r}: an acknowledged change is missing")
                if present - acked_signers - in_flight or digests - acked_digests - in_flight:
                    violations.append(f"round {r}: an unacknowledged change appeared")
                if not log.verified:
                    violations.append(f"round {r}: audit broken at {log.first_broken_sequence}")
                added = sum(1 for e in log.entries if e.event == "signer_added") - 1
                changed = sum(1 for e in log.entries if e.event == "load_policy_changed") - 2
                if log.length <= 10000 and (added != len(present) or changed != len(digests)):
                    violations.append(f"round {r}: a change without its audit entry")
                first = admin.next + 1
            launcher.halt.set()
            launcher.join(timeout=30)
            launcher.client.close()
            totals = dict(launcher.counts)
            if totals["unlisted_admitted"]:
                violations.append("an unlisted signer launched")
        finally:
            proc.kill()
            proc.wait()
            platform.stop(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "launch_soak",
        "rounds": rounds,
        "seed": seed,
        "acknowledged_changes": len(acked_signers) + len(acked_digests),
        "launches": totals,
        "violations": violations,
        "ok": not violations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20260405)
    parser.add_argument("--max-delay", type=float, default=0.5,
                        help="longest burst before a kill (seconds)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    result = soak(args.rounds, args.seed, args.max_delay)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['rounds']} kills, {result['acknowledged_changes']} acknowledged changes, "
              f"launches {result['launches']}")
        print("all rounds held" if result["ok"] else "\n".join(result["violations"]))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
