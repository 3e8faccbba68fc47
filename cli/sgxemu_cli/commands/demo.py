"""``sgxemu demo``: the whole story in a fresh temporary directory, explained step by step.

Each step says in plain words what it does and why, runs real commands, and checks that the
outcome is the one the story expects. The demo exits 0 only when every step behaved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sgxemu_cli.errors import EXIT_FAILURE, EXIT_OK


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str


@dataclass(frozen=True)
class Step:
    title: str
    explanation: str
    run: Callable[[Path], Outcome]


def _sgxemu(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run one ``sgxemu`` command in-process, capturing what it prints."""
    from sgxemu_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = int(e.code) if isinstance(e.code, int) else EXIT_FAILURE
    return code, out.getvalue(), err.getvalue()


def _build(work: Path) -> Outcome:
    code, _, err = _sgxemu(
        [
            "image",
            "build",
            "--out",
            str(work / "hello.sgxs"),
            "--code-pages",
            "4",
            "--data-pages",
            "2",
            "--heap-pages",
            "8",
            "--tcs",
            "2",
            "--seed",
            "7",
        ]
    )
    if code != 0:
        return Outcome(False, f"image build failed: {err.strip()}")
    size = (work / "hello.sgxs").stat().st_size
    return Outcome(True, f"wrote hello.sgxs ({size} bytes of SGXS measurement stream)")


def _keygen(work: Path) -> Outcome:
    code, _, err = _sgxemu(["keygen", "--out", str(work / "vendor.pem")])
    if code != 0:
        return Outcome(False, f"keygen failed: {err.strip()}")
    return Outcome(True, "wrote vendor.pem (RSA-3072, public exponent 3, mode 0600)")


def _measure(work: Path) -> Outcome:
    code, out, err = _sgxemu(["measure", str(work / "hello.sgxs")])
    if code != 0:
        return Outcome(False, f"measure failed: {err.strip()}")
    mrenclave = out.strip()
    (work / "mrenclave.txt").write_text(mrenclave)
    return Outcome(len(mrenclave) == 64, f"MRENCLAVE = {mrenclave}")


def _sign(work: Path) -> Outcome:
    code, _, err = _sgxemu(
        [
            "sign",
            str(work / "hello.sgxs"),
            "--key",
            str(work / "vendor.pem"),
            "--out",
            str(work / "hello.sig"),
            "--isvprodid",
            "1",
            "--isvsvn",
            "3",
        ]
    )
    if code != 0:
        return Outcome(False, f"sign failed: {err.strip()}")
    return Outcome(True, "wrote hello.sig (a 1808-byte SIGSTRUCT)")


def _show(work: Path) -> Outcome:
    code, out, err = _sgxemu(["sigstruct", "show", str(work / "hello.sig"), "--json"])
    if code != 0:
        return Outcome(False, f"sigstruct show failed: {err.strip()}")
    shown = json.loads(out)
    expected = (work / "mrenclave.txt").read_text()
    if shown.get("mrenclave") != expected:
        return Outcome(False, "the SIGSTRUCT's ENCLAVEHASH does not match the measured image")
    if not shown.get("signature_valid"):
        return Outcome(False, "the SIGSTRUCT's signature does not verify")
    return Outcome(
        True,
        f"ENCLAVEHASH matches MRENCLAVE; signature valid; MRSIGNER = {shown.get('mrsigner')}",
    )


def _tamper(work: Path) -> Outcome:
    sig = bytearray((work / "hello.sig").read_bytes())
    sig[1024] ^= 0x01  # ISVPRODID: a signed field
    (work / "tampered.sig").write_bytes(bytes(sig))
    code, out, _ = _sgxemu(["sigstruct", "show", str(work / "tampered.sig"), "--json"])
    if code != 0:
        return Outcome(False, "sigstruct show could not read the tampered SIGSTRUCT")
    if json.loads(out).get("signature_valid"):
        return Outcome(False, "a SIGSTRUCT with a flipped signed bit still verified")
    return Outcome(True, "one flipped bit in ISVPRODID: the signature no longer verifies")


STEPS: tuple[Step, ...] = (
    Step(
        "Build an example enclave image",
        "An enclave is a set of 4 KiB pages: TCS pages (where threads enter), code, data and a "
        "heap. The builder writes them as an SGXS stream, the exact sequence of records the CPU "
        "hashes while the enclave is built.",
        _build,
    ),
    Step(
        "Make an enclave signing key",
        "Every enclave is signed by its vendor with an RSA-3072 key whose exponent is 3. The "
        "hash of the key's modulus is the enclave's MRSIGNER, the identity launch control and "
        "sealing use.",
        _keygen,
    ),
    Step(
        "Measure the image",
        "MRENCLAVE is SHA-256 over the ECREATE, EADD and EEXTEND records: layout, page types, "
        "permissions and contents. Change one byte of a measured page and it changes.",
        _measure,
    ),
    Step(
        "Sign it",
        "The SIGSTRUCT carries the expected MRENCLAVE, the product id and security version, the "
        "attributes the enclave may have, and the vendor's signature over all of it.",
        _sign,
    ),
    Step(
        "Show and check the SIGSTRUCT",
        "EINIT will refuse an enclave whose measurement differs from the SIGSTRUCT or whose "
        "signature does not verify; here we check both offline.",
        _show,
    ),
    Step(
        "Tamper with it",
        "A signed field changed after signing must be caught.",
        _tamper,
    ),
)


def _say(text: str) -> None:
    print(textwrap.fill(text, width=88, initial_indent="   ", subsequent_indent="   "))


def run_demo(work: Path, steps: Sequence[Step] = STEPS) -> int:
    failures = 0
    for number, step in enumerate(steps, 1):
        print(f"\n[{number}/{len(steps)}] {step.title}")
        _say(step.explanation)
        try:
            outcome = step.run(work)
        except Exception as e:  # the demo reports any failure as a failed step
            outcome = Outcome(False, f"unexpected error: {type(e).__name__}: {e}")
        print(f"   {'ok  ' if outcome.ok else 'FAIL'} {outcome.summary}")
        failures += not outcome.ok
        if not outcome.ok:
            break
    if failures:
        print("\nThe demo stopped at a step that did not behave as the story expects.")
        return EXIT_FAILURE
    print(f"\nAll {len(steps)} steps behaved.")
    return EXIT_OK


def _handle(args: argparse.Namespace) -> int:
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="sgxemu-demo-"))
        print(f"Working in {work} (kept afterwards)")
        return run_demo(work)
    with tempfile.TemporaryDirectory(prefix="sgxemu-demo-") as tmp:
        print(f"Working in a fresh temporary directory: {tmp}")
        code = run_demo(Path(tmp))
    sys.stdout.flush()
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole story in a fresh temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.set_defaults(func=_handle)
