"""kill -9 of the daemon at seeded random moments during a burst of changes: no acknowledged
change is lost, none is half-applied, the audit chain verifies, and the lock holds across a
crash. (Capped to a few rounds; ``bench/launch_soak.py`` runs the long version.)"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.rpc.client import LaunchctlClient, LaunchctlRpcError
from sgx_platform.arch.measurement import Measurement

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


def start_daemon(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", f"daemon did not start (exit {proc.poll()})"
    return proc


def signer(i: int) -> SignerEntry:
    return SignerEntry(Measurement(i.to_bytes(32, "big")), comment=f"burst {i}")


def digest(i: int) -> bytes:
    return (0xD0000000 + i).to_bytes(32, "big")


class Burst:
    """Sequential changes over the admin socket until stopped; records what was acknowledged."""

    def __init__(self, socket: Path, first: int) -> None:
        self.client = LaunchctlClient.unix(socket, timeout=5)
        self.next = first
        self.acked_signers: set[int] = set()
        self.acked_digests: set[int] = set()
        self.in_flight: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.is_set():
            i = self.in_flight = self.next
            try:
                if i % 3 == 2:
                    self.client.allow_digest(digest(i))
                    self.acked_digests.add(i)
                else:
                    self.client.add_signer(signer(i))
                    self.acked_signers.add(i)
            except LaunchctlRpcError:
                return  # the daemon died under this call: it is unacknowledged
            self.next += 1

    def __enter__(self) -> Burst:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.client.close()


def test_kill_9_during_a_burst_loses_no_acknowledged_change(world: Any, keys: Any) -> None:
    rng = random.Random(20260405)
    world.start_platform("token")
    admin_socket = world.state / "run" / "launchctl-admin" / "admin.sock"
    acked_signers: set[int] = set()
    acked_digests: set[int] = set()
    in_flight: set[int] = set()
    first = 0
    proc = start_daemon(world.state)
    try:
        for _ in range(3):
            with Burst(admin_socket, first) as burst:
                time.sleep(rng.uniform(0.05, 0.35))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            acked_signers |= burst.acked_signers
            acked_digests |= burst.acked_digests
            if burst.in_flight is not None:
                in_flight.add(burst.in_flight)
            proc = start_daemon(world.state)  # refuses to start on a damaged database
            admin = world.admin()
            present = {int.from_bytes(e.mrsigner.value, "big") for e in admin.signers()
                       if e.comment.startswith("burst")}
            digests = {int.from_bytes(d, "big") - 0xD0000000
                       for d in admin.status().policy.allowed_digests or ()}
            assert acked_signers <= present and acked_digests <= digests
            assert present - acked_signers <= in_flight
            assert digests - acked_digests <= in_flight
            log = admin.audit(verify=True, limit=10000)
            assert log.verified, (log.first_broken_sequence, log.reason)
            added = [e for e in log.entries if e.event == "signer_added"]
            changed = [e for e in log.entries if e.event == "load_policy_changed"]
            assert len(added) == len(present) and len(changed) == len(digests)
            first = burst.next + 1
        assert len(acked_signers) + len(acked_digests) >= 6
        # The lock holds across a crash.
        world.admin().lock()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = start_daemon(world.state)
        with pytest.raises(LaunchctlRpcError) as e:
            world.admin().add_signer(signer(10**6))
        assert e.value.reason == "POLICY_LOCKED"
        assert world.admin().status().locked
    finally:
        proc.kill()
        proc.wait()
