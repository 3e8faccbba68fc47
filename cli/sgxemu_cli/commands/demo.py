"""``sgxemu demo``: the whole story in a fresh temporary directory, explained step by step.

Each step says in plain words what it does and why, runs the real commands against real
service processes, and checks that the outcome is the one the story expects (a denial counts
as behaving only when it is the expected denial, for the expected reason). The demo exits 0
only when every step behaved, and stops every service it started, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str


@dataclass
class World:
    """The demo's files: its working directory and two state directories."""

    work: Path
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def open_state(self) -> Path:
        return self.work / "open"

    @property
    def state(self) -> Path:
        return self.work / "s"

    @property
    def enclaves(self) -> Path:
        return self.state / "enclaves"

    @property
    def key(self) -> Path:
        return self.work / "vendor.pem"

    @property
    def image(self) -> Path:
        return self.work / "hello.sgxs"

    @property
    def sig(self) -> Path:
        return self.work / "hello.sig"

    @property
    def verifier(self) -> str:
        return str(self.notes["verifier"])


@dataclass(frozen=True)
class Step:
    title: str
    explanation: str
    run: Callable[[World], Outcome]


def sgxemu(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run one ``sgxemu`` command in-process, capturing what it prints."""
    from sgxemu_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = int(e.code) if isinstance(e.code, int) else EXIT_FAILURE
    return code, out.getvalue(), err.getvalue()


def _in(world: World, *argv: str) -> tuple[int, str, str]:
    return sgxemu(["--state", str(world.state), *argv])


def _failed(what: str, code: int, out: str, err: str) -> Outcome:
    detail = (err or out).strip().splitlines()
    return Outcome(False, f"{what} (exit {code}): {detail[-1] if detail else 'no output'}")


def _wrap(text: str, indent: str = "   ", hang: str = "") -> str:
    return textwrap.fill(text, width=92, initial_indent=indent, subsequent_indent=indent + hang)


# -- the enclave ----------------------------------------------------------------------------------


def _build_and_sign(world: World) -> Outcome:
    steps = [
        ["image", "build", "--out", str(world.image), "--code-pages", "4", "--data-pages", "2",
         "--heap-pages", "8", "--tcs", "2", "--seed", "7"],
        ["keygen", "--out", str(world.key)],
        ["sign", str(world.image), "--key", str(world.key), "--out", str(world.sig),
         "--isvprodid", "1", "--isvsvn", "3"],
    ]
    for argv in steps:
        code, out, err = sgxemu(argv)
        if code != 0:
            return _failed(" ".join(argv[:2]), code, out, err)
    code, out, err = sgxemu(["sigstruct", "show", str(world.sig), "--json"])
    if code != 0:
        return _failed("sigstruct show", code, out, err)
    shown = json.loads(out)
    code, measured, err = sgxemu(["measure", str(world.image)])
    if code != 0 or shown.get("mrenclave") != measured.strip():
        return Outcome(False, "the SIGSTRUCT's ENCLAVEHASH differs from the measured image")
    if not shown.get("signature_valid"):
        return Outcome(False, "the SIGSTRUCT's signature does not verify")
    world.notes["mrsigner"] = shown["mrsigner"]
    return Outcome(
        True,
        f"hello.sgxs measured: MRENCLAVE {measured.strip()[:16]}…; signed by a fresh key: "
        f"MRSIGNER {shown['mrsigner'][:16]}… (signature and q1/q2 valid)",
    )


# -- open launch mode: the article's problem ------------------------------------------------------


def _open_mode(world: World) -> Outcome:
    from sgxemu_cli import supervisor
    from sgxemu_cli.state import StateLayout

    code, out, err = sgxemu(
        ["--state", str(world.open_state), "init", "--launch-mode", "open",
         "--verifier-listen", "127.0.0.1:0"]
    )
    if code != 0:
        return _failed("init (open mode)", code, out, err)
    layout = StateLayout(world.open_state)
    shutil.copy(world.image, layout.enclaves / "hello.sgxs")
    shutil.copy(world.sig, layout.enclaves / "hello.sig")
    try:
        # The platform, and launchctl for the load policy it owns; no token is asked for.
        supervisor.up(layout, supervisor.SERVICES[:2])
        code, out, err = sgxemu(
            ["--state", str(world.open_state), "enclave", "load",
             str(layout.enclaves / "hello.sgxs"), str(layout.enclaves / "hello.sig")]
        )
    finally:
        supervisor.down(layout)
    if code != 0:
        return _failed("enclave load in open mode", code, out, err)
    return Outcome(
        True,
        "launched: nobody was asked whether this signer may run enclaves here",
    )


# -- token mode: the admin decides ----------------------------------------------------------------


def _token_world(world: World) -> Outcome:
    code, out, err = sgxemu(
        ["--state", str(world.state), "init", "--verifier-listen", "127.0.0.1:0", "--json"]
    )
    if code != 0:
        return _failed("init", code, out, err)
    world.notes["verifier"] = json.loads(out)["components"]["verifier"]["listen"]
    shutil.copy(world.image, world.enclaves / "hello.sgxs")
    shutil.copy(world.sig, world.enclaves / "hello.sig")
    code, out, err = _in(world, "up", "--detach")
    if code != 0:
        return _failed("up", code, out, err)
    services = [line.split()[0] for line in out.splitlines() if "SERVING" in line]
    return Outcome(True, f"{', '.join(services)} are up and healthy (token launch mode)")


def _load(world: World, image: Path | None = None) -> tuple[int, str, str]:
    image = image or world.enclaves / "hello.sgxs"
    return _in(world, "enclave", "load", str(image), str(world.enclaves / "hello.sig"))


def _denied_unknown_signer(world: World) -> Outcome:
    code, out, err = _load(world)
    if code == 0:
        return Outcome(False, "an unlisted signer launched in token mode")
    if "LAUNCH_SIGNER_NOT_LISTED" not in err or world.notes["mrsigner"] not in err:
        return _failed("expected a signer denial naming the MRSIGNER", code, out, err)
    print(_wrap(f"the platform said: {err.strip().removeprefix('sgxemu: ')}", "   > "))
    return Outcome(True, "denied, with the MRSIGNER, the rule and the admin's command")


def _admin_allows_and_locks(world: World) -> Outcome:
    code, out, err = _in(
        world, "launchctl", "add-signer", "--key", str(world.key), "--comment", "hello demo"
    )
    if code != 0:
        return _failed("launchctl add-signer", code, out, err)
    code, out, err = _load(world)
    if code != 0:
        return _failed("enclave load after add-signer", code, out, err)
    code, out, err = _in(world, "launchctl", "lock")
    if code != 0:
        return _failed("launchctl lock", code, out, err)
    code, out, err = _in(world, "launchctl", "add-signer", "ab" * 32, "--comment", "too late")
    if code == 0 or "locked" not in err:
        return _failed("expected the locked policy to refuse a change", code, out, err)
    print(_wrap(f"after the lock: {err.strip().removeprefix('sgxemu: ')}", "   > "))
    return Outcome(True, "the allowed signer launches; after lock, changes are refused")


def _load_policy(world: World) -> Outcome:
    elsewhere = world.work / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    shutil.copy(world.image, elsewhere / "hello.sgxs")
    code, out, err = _load(world, elsewhere / "hello.sgxs")
    if code == 0:
        return Outcome(False, "an image outside the allowed directory was loaded")
    if "IMAGE_PATH_NOT_ALLOWED" not in err:
        return _failed("expected the load policy's image_path denial", code, out, err)
    print(_wrap(f"the platform said: {err.strip().removeprefix('sgxemu: ')}", "   > "))
    return Outcome(True, "refused by the load policy, naming its rule")


# -- attestation ----------------------------------------------------------------------------------


def _attest_and_verify(world: World, name: str) -> tuple[int, dict[str, Any], str]:
    """Challenge, REPORT, quote, then verification at the verifier: (exit, document, stderr)."""
    quote, collateral, challenge = (world.work / f"{name}{ext}" for ext in (".bin", ".json", ".ch"))
    code, out, err = _in(
        world, "attest", str(world.enclaves / "hello.sgxs"), str(world.enclaves / "hello.sig"),
        "--quote-out", str(quote), "--collateral-out", str(collateral), "--challenge",
        "--verifier", world.verifier, "--challenge-out", str(challenge), "--json",
    )
    if code != 0:
        return code, {"error": (err or out).strip()}, err
    code, out, err = _in(
        world, "verify", str(quote), "--remote", world.verifier, "--collateral", str(collateral),
        "--challenge", str(challenge), "--json",
    )
    try:
        document: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        document = {"error": (err or out).strip()}
    return code, document, err


def _attestation(world: World) -> Outcome:
    import jwt

    code, doc, err = _attest_and_verify(world, "quote1")
    if code != 0 or not doc.get("accepted"):
        return _failed("attest + verify", code, json.dumps(doc)[:300], err)
    token = doc.get("token")
    if not token:
        return Outcome(False, "the verifier accepted the quote but issued no token")
    code, out, err = _in(world, "verifier", "jwks", "--remote", world.verifier)
    if code != 0:
        return _failed("verifier jwks", code, out, err)
    jwks = jwt.PyJWKSet.from_dict(json.loads(out))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next((k for k in jwks.keys if k.key_id == kid), None)
    if key is None:
        return Outcome(False, f"the token's key {kid} is not in the verifier's JWKS")
    claims = jwt.decode(token, key=key, algorithms=["ES256"], audience="sgxemu")
    identity = claims["sgx"]
    if identity["mrsigner"] != world.notes["mrsigner"] or identity["tcb_status"] != "UpToDate":
        return Outcome(False, f"the token's claims are not this enclave's: {identity}")
    print(_wrap(
        f"verdict: verified, TCB {doc['tcb_status']}, anchor {doc['trust_anchor']} — "
        f"{doc.get('warning', '')}", "   > "))
    return Outcome(
        True,
        f"quote verified and accepted; the ES256 token (kid {kid[:12]}…) checks against the "
        "verifier's JWKS",
    )


# -- sealing across a restart ---------------------------------------------------------------------


def _with_enclave(world: World, action: Callable[[Any, bytes], bytes]) -> bytes:
    """Load hello in the platform (retrying while launch control comes back), run ``action``."""
    from sgx_platform.rpc.client import PlatformClient, PlatformRpcError

    sig = (world.enclaves / "hello.sig").read_bytes()
    last: Exception | None = None
    for _ in range(100):
        try:
            with PlatformClient.unix(world.state / "run" / "platform.sock") as client:
                loaded = client.load_enclave_from_file(world.enclaves / "hello.sgxs", sig)
                try:
                    return action(client, loaded.handle)
                finally:
                    client.destroy_enclave(loaded.handle)
        except PlatformRpcError as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"the enclave could not be loaded: {last}")


def _sealing(world: World) -> Outcome:
    from sgxemu_cli import supervisor
    from sgxemu_cli.state import StateLayout

    secret = b"the demo's secret, for this enclave's signer only"
    sealed = _with_enclave(world, lambda client, handle: client.seal(handle, secret))
    layout = StateLayout(world.state)
    supervisor.stop_service(layout, "platform")
    supervisor.up(layout)  # starts the platform again; the others are still running
    opened = _with_enclave(world, lambda client, handle: client.unseal(handle, sealed)[0])
    if opened != secret:
        return Outcome(False, "the sealed data did not come back after the restart")
    return Outcome(
        True,
        f"sealed {len(secret)} bytes into a {len(sealed)}-byte sgx_sealed_data_t; after the "
        "platform restarted (new boot epoch, old handles stale) it unsealed intact",
    )


# -- TCB recovery ---------------------------------------------------------------------------------


def _tcb_recovery(world: World) -> Outcome:
    code, out, err = _in(world, "pcs", "tcb-recovery")
    if code != 0:
        return _failed("pcs tcb-recovery", code, out, err)
    code, doc, err = _attest_and_verify(world, "quote2")
    if code != 1 or not doc.get("verified") or doc.get("tcb_status") != "OutOfDate":
        return _failed(
            "expected a verified OutOfDate quote refused by the policy", code, str(doc)[:300], err
        )
    violations = doc.get("policy", {}).get("violations", [])
    print(_wrap(f"policy: {violations[0]['code']}: {violations[0]['message']}", "   > "))
    return Outcome(True, "the quote still verifies, but is OutOfDate: the policy refuses it")


def _tcb_update(world: World) -> Outcome:
    code, out, err = _in(world, "platform", "update-tcb")
    if code != 0:
        return _failed("platform update-tcb", code, out, err)
    code, doc, err = _attest_and_verify(world, "quote3")
    if code != 0 or doc.get("tcb_status") != "UpToDate" or not doc.get("accepted"):
        return _failed("expected UpToDate and accepted after the update", code, str(doc)[:300], err)
    return Outcome(True, "CPUSVN raised, PCK re-certified: UpToDate and accepted again")


def _down(world: World) -> Outcome:
    code, out, err = _in(world, "down")
    if code != 0:
        return _failed("down", code, out, err)
    leftovers = _processes_of(world.work)
    if leftovers:
        return Outcome(False, f"processes left behind: {leftovers}")
    return Outcome(True, "every service stopped gracefully; no process left behind")


def _processes_of(directory: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in cmdline and b"serve" in cmdline:
            found.append(int(proc.name))
    return found


STEPS: tuple[Step, ...] = (
    Step(
        "Build, measure and sign an example enclave",
        "An enclave is a set of 4 KiB pages (TCS, code, data, heap), written as an SGXS stream: "
        "the records the CPU hashes into MRENCLAVE while the enclave is built. Its vendor signs "
        "it with an RSA-3072 key (exponent 3); the hash of the key's modulus is MRSIGNER.",
        _build_and_sign,
    ),
    Step(
        "Open launch mode: any signer launches (the LWN article's problem)",
        "On mainline Linux the kernel writes each enclave's own signer into the launch-control "
        "registers before EINIT, so anybody who can open the enclave device can launch any "
        "self-signed enclave, and code hidden in it runs where nobody can look.",
        _open_mode,
    ),
    Step(
        "Token mode: start the platform, launchctl, quoting and the verifier",
        "Now the registers hold the launch enclave's signer and are locked at boot. Every "
        "EINIT needs a token from launchctl, which decides against the admin's allowlist.",
        _token_world,
    ),
    Step(
        "The same unknown signer is denied",
        "launchctl has never heard of this signer: no token, and EINIT fails closed.",
        _denied_unknown_signer,
    ),
    Step(
        "The admin allows the signer, then locks the policy",
        "Wettstein's proposal: set the allowed keys at system initialization, then make the set "
        "immutable. The lock is latched in the platform until it is reset.",
        _admin_allows_and_locks,
    ),
    Step(
        "The load policy: images only from the allowed directory",
        "Lutomirski's objection: executable pages should come from files the system can judge. "
        "The platform opens the image itself, only under allowed directories.",
        _load_policy,
    ),
    Step(
        "Remote attestation: challenge, report, quote, verification, token",
        "The verifier issues a challenge; the enclave puts SHA-256(challenge || user data) in "
        "its REPORT for the quoting enclave, which returns a DCAP quote v3 signed by its "
        "attestation key and certified by the PCK. The verifier checks it all and signs a token.",
        _attestation,
    ),
    Step(
        "Sealing survives a platform restart",
        "Sealed data is encrypted with a key only this signer's enclaves on this platform can "
        "derive. A restart is a reboot: enclaves are gone, the fused secrets are not.",
        _sealing,
    ),
    Step(
        "A TCB recovery: the verdict turns OutOfDate",
        "The provisioning authority publishes a new TCB level; this platform is now behind it.",
        _tcb_recovery,
    ),
    Step(
        "A TCB update restores it",
        "The platform's CPUSVN rises; the PCE derives a new PCK key and is certified again.",
        _tcb_update,
    ),
    Step(
        "Stop everything",
        "sgxemu down stops the services in reverse order, gracefully.",
        _down,
    ),
)


def run_demo(work: Path, steps: Sequence[Step] = STEPS) -> int:
    world = World(work)
    failed = False
    try:
        for number, step in enumerate(steps, 1):
            print(f"\n[{number}/{len(steps)}] {step.title}")
            print(_wrap(step.explanation))
            try:
                outcome = step.run(world)
            except Exception as e:  # the demo reports any failure as a failed step
                outcome = Outcome(False, f"unexpected error: {type(e).__name__}: {e}")
            print(_wrap(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.summary}", hang="     "))
            sys.stdout.flush()
            if not outcome.ok:
                failed = True
                break
    finally:
        from sgxemu_cli import supervisor
        from sgxemu_cli.state import StateLayout

        for state in (world.open_state, world.state):
            if (state / "sgxemu-state.json").exists():
                supervisor.down(StateLayout(state))
    if failed:
        print("\nThe demo stopped at a step that did not behave as the story expects.")
        return EXIT_FAILURE
    print(f"\nAll {len(steps)} steps behaved.")
    return EXIT_OK


def _handle(args: argparse.Namespace) -> int:
    # Unix socket paths must stay short: work under /tmp, not a long $TMPDIR.
    base = "/tmp" if Path("/tmp").is_dir() else None  # noqa: S108 - mkdtemp makes it private
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="sgxemu-demo-", dir=base))
        print(f"Working in {work} (kept afterwards)")
        return run_demo(work)
    with tempfile.TemporaryDirectory(prefix="sgxemu-demo-", dir=base) as tmp:
        print(f"Working in a fresh temporary directory: {tmp}")
        return run_demo(Path(tmp))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole story in a fresh temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.set_defaults(func=_handle)
