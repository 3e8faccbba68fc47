"""Acceptance (issue 5): the real ``sgxemu launchctl serve`` daemon, killed with SIGKILL at
seeded random moments during a burst of admin changes, loses no acknowledged change, leaves
none half-applied, and ``sgxemu launchctl audit --verify`` still passes.

The daemon runs exactly as an operator starts it (``python -m sgxemu_cli --state S launchctl
serve``) against the real platform service; the changes go over its admin socket through the
launchctl gRPC client. Capped: three kills, bursts of at most 0.4 s
(``bench/launch_soak.py`` is the long soak).

What "none half-applied" means here: every entry in the allowlist is byte-for-byte the entry
that was sent (all constraints, not only the MRSIGNER), it has exactly one ``signer_added``
audit entry carrying that same entry, there is no audit entry for a change that is not in the
allowlist, and the authenticated audit length equals the number of entries read back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from sgx_launchctl.allowlist import SignerEntry
from sgx_launchctl.rpc.client import LaunchctlClient, LaunchctlRpcError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.signing import mrsigner_of_public_key

SEED = 0x5EED_0005
KILLS = 3
TAG = "acceptance-burst"
#: What a call sees when the daemon is killed under it (anything else is a real refusal).
DEAD_DAEMON = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN)


def serve(state: Path) -> subprocess.Popen[str]:
    """``sgxemu --state STATE launchctl serve`` as a subprocess; returns once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgxemu_cli", "--state", str(state), "launchctl", "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("launchctl serving"):
            return proc
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"launchctl serve did not start (exit {proc.returncode}): {err[-2000:]}")


def cli(state: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sgxemu_cli", "--state", str(state), "launchctl", *argv],
        capture_output=True, text=True, timeout=60,
    )


def entry_for(i: int, rng: random.Random) -> SignerEntry:
    """A seeded entry with seeded constraints, so a partial write would show."""
    return SignerEntry(
        Measurement((0xACCE0000_00000000 + i).to_bytes(32, "big")),
        allow_debug=rng.random() < 0.5,
        allow_provision_key=rng.random() < 0.3,
        isvprodids=frozenset(rng.sample(range(1, 50), rng.randint(1, 3)))
        if rng.random() < 0.5 else None,
        min_isvsvn=rng.randint(0, 9),
        comment=f"{TAG} {i}",
    )


class Burst:
    """Sequential add-signer calls until stopped; records what was acknowledged."""

    def __init__(self, socket: Path, entries: list[SignerEntry]) -> None:
        self.client = LaunchctlClient.unix(socket, timeout=5)
        self.entries = entries
        self.acked: list[SignerEntry] = []
        self.in_flight: SignerEntry | None = None
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for entry in self.entries:
            if self.stop.is_set():
                return
            self.in_flight = entry
            try:
                self.client.add_signer(entry)
            except LaunchctlRpcError as e:
                # The daemon died under this call: unacknowledged. Anything but a dead
                # daemon would be a real refusal and is recorded as a failure.
                if e.code not in DEAD_DAEMON:
                    self.errors.append(f"{e.code} {e.reason}: {e.message}")
                return
            self.acked.append(entry)
            self.in_flight = None

    def __enter__(self) -> Burst:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.client.close()


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()


def check_consistent(world: Any, acked: dict[str, SignerEntry],
                     in_flight: dict[str, SignerEntry]) -> None:
    admin = world.admin()
    present = {e.mrsigner.hex(): e for e in admin.signers() if e.comment.startswith(TAG)}
    # No acknowledged change is lost, and what is stored is exactly what was sent.
    missing = sorted(set(acked) - set(present))
    assert not missing, f"acknowledged changes lost: {missing}"
    for key, entry in present.items():
        sent = acked.get(key) or in_flight.get(key)
        assert sent is not None, f"an entry nobody sent (or that was never in flight): {key}"
        assert entry.canonical() == sent.canonical(), f"half-applied entry {key}"
    # Exactly one audit entry per stored change, carrying that change; none without a change.
    log = admin.audit(verify=True, limit=100000)
    assert log.verified is True, (log.first_broken_sequence, log.reason)
    assert log.length == len(log.entries) == admin.status().audit_length
    audited: dict[str, int] = {}
    for line in log.entries:
        if line.event != "signer_added":
            continue
        entry = line.details["entry"]
        if not str(entry["comment"]).startswith(TAG):
            continue
        audited[entry["mrsigner"]] = audited.get(entry["mrsigner"], 0) + 1
        assert entry["mrsigner"] in present, f"audit entry for a change not applied: {entry}"
        assert entry == present[entry["mrsigner"]].canonical()
    assert audited == dict.fromkeys(present, 1), "a change without exactly one audit entry"
    # The operator's view: `sgxemu launchctl audit --verify --json` passes.
    done = cli(world.state, "audit", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verification"] == {"verified": True, "first_broken_sequence": None,
                                      "reason": None}
    assert report["length"] == log.length


def test_kill_9_of_launchctl_serve_during_a_burst(world: Any, keys: Any) -> None:
    rng = random.Random(SEED)
    (world.state / "sgxemu-state.json").write_text('{"format": 1}\n')
    world.start_platform("token")
    admin_socket = world.state / "run" / "launchctl-admin" / "admin.sock"
    entries = [entry_for(i, rng) for i in range(2000)]
    acked: dict[str, SignerEntry] = {}
    in_flight: dict[str, SignerEntry] = {}
    position = 0
    proc = serve(world.state)
    try:
        for _ in range(KILLS):
            with Burst(admin_socket, entries[position:]) as burst:
                time.sleep(rng.uniform(0.05, 0.4))
                kill9(proc)
            assert not burst.errors, burst.errors
            assert not burst.thread.is_alive()
            acked.update((e.mrsigner.hex(), e) for e in burst.acked)
            if burst.in_flight is not None:
                in_flight[burst.in_flight.mrsigner.hex()] = burst.in_flight
            position += len(burst.acked) + (burst.in_flight is not None)
            proc = serve(world.state)  # refuses to serve a damaged or rolled-back database
            check_consistent(world, acked, in_flight)
        assert len(acked) >= KILLS, "the bursts were too short to test anything"

        # Behaviour, not only bookkeeping: a signer acknowledged just before a kill launches
        # after the restart (the change reached the next EINIT).
        name, sig = world.enclave(keys.app, seed=31)
        app = SignerEntry(mrsigner_of_public_key(keys.app), comment=f"{TAG} app")
        world.admin().add_signer(app)
        kill9(proc)
        proc = serve(world.state)
        assert world.load(name, sig).initialized
        acked[app.mrsigner.hex()] = app
        check_consistent(world, acked, in_flight)
    finally:
        if proc.poll() is None:
            kill9(proc)
