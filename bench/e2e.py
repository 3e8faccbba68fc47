"""End-to-end attestations per second over gRPC, against a whole world of real services.

The script creates a fresh state directory (``sgxemu init``, token launch mode), starts the
four services as separate processes (``sgxemu up --detach``), builds and signs an enclave,
allows its signer, and imports the platform's collateral into the verifier's store (fetched
once from the emulated PCS, as a PCCS cache would). Then ``--clients`` threads, each with its
own channels and its own enclave loaded once (as an application keeps its enclave), repeat
the whole attestation for ``--seconds``:

  CreateChallenge (verifier, TLS) -> GetTargetInfo (quoting) -> CreateReport with
  REPORTDATA[0:32] = SHA-256(challenge || user data) (platform) -> GetQuote (quoting) ->
  VerifyQuote with the challenge (verifier: appraisal, policy, challenge redeemed, token).

Every attestation must come back verified and accepted with a token; the first token of
each client is also checked against the verifier's JWKS (GetJwks) with PyJWT. With
``--send-collateral`` each VerifyQuote carries the collateral JSON instead of using the store.

Reported (one JSON line with ``--json``): attestations, attestations per second, latency
p50/p99 (ms) of one whole attestation, the mean of each step (ms), errors (must be 0) and the
setup time. The world is stopped (``sgxemu down``) and removed at the end, whatever happened.
Exit 1 on any error. Usage: ``python bench/e2e.py [--clients 4] [--seconds 10] [--json]``.
Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from sgx.quoting.v1 import provisioning_pb2, provisioning_pb2_grpc, quoting_pb2, quoting_pb2_grpc
from sgx.verifier.v1 import verifier_pb2, verifier_pb2_grpc
from sgx_platform.arch.binding import report_data_for
from sgx_platform.rpc.client import EnclaveSession, PlatformClient
from sgx_rpc.channel import tls_channel, unix_channel
from sgxemu_cli.main import main as sgxemu_main

STEPS = ("challenge", "target_info", "report", "quote", "verify")


def sgxemu(*argv: str | Path) -> str:
    """One ``sgxemu`` command in-process; its output, or RuntimeError with its error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sgxemu_main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"sgxemu {' '.join(map(str, argv))}: exit {code}: {err.getvalue()}")
    return out.getvalue()


@dataclass(frozen=True)
class World:
    root: Path
    image: Path
    sigstruct: bytes
    verifier_address: str
    ca_pem: bytes


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    errors: list[str] = field(default_factory=list)


def set_up(base: Path) -> World:
    root = base / "s"
    sgxemu("--state", root, "init", "--verifier-listen", "127.0.0.1:0")
    sgxemu("--state", root, "up", "--detach")
    image = root / "enclaves" / "bench.sgxs"
    sgxemu("image", "build", "--out", image, "--seed", "11")
    sgxemu("keygen", "--out", base / "signer.pem")
    sgxemu("sign", image, "--key", base / "signer.pem", "--out", base / "bench.sig")
    sgxemu("--state", root, "launchctl", "add-signer", "--key", base / "signer.pem")
    with open(root / "verifier" / "verifier.toml", "rb") as f:
        address = str(tomllib.load(f)["server"]["listen"])
    # One quote to learn the platform's collateral, imported into the verifier's store.
    sgxemu("--state", root, "attest", image, base / "bench.sig", "--quote-out", base / "q.bin")
    sgxemu("--state", root, "pcs", "collateral", "--quote", base / "q.bin", "--out",
           base / "collateral.json")  # fmt: skip
    sgxemu("--state", root, "verifier", "collateral", "import", base / "collateral.json")
    return World(
        root, image, (base / "bench.sig").read_bytes(), address, (root / "tls/ca.pem").read_bytes()
    )


def client(
    world: World,
    stop_at: threading.Event,
    start: threading.Barrier,
    send_collateral: bool,
    result: ClientResult,
    index: int,
) -> None:
    platform = PlatformClient.unix(world.root / "run" / "platform.sock", timeout=30)
    quoting_channel = unix_channel(world.root / "run" / "quoting.sock")
    verifier_channel = tls_channel(world.verifier_address, world.ca_pem)
    quoting = quoting_pb2_grpc.QuotingServiceStub(quoting_channel)
    verifier = verifier_pb2_grpc.QuoteVerificationServiceStub(verifier_channel)
    user_data = f"client {index}".encode()
    collateral = ""
    checked_token = False
    try:
        loaded = platform.load_enclave_from_file(world.image, world.sigstruct)
        with EnclaveSession(platform, loaded.handle, loaded.enclave_id, loaded.lease_seconds):
            if send_collateral:
                with unix_channel(world.root / "run" / "pcs.sock") as pcs_channel:
                    pcs = provisioning_pb2_grpc.ProvisioningServiceStub(pcs_channel)
                    # The collateral is per platform: learn it from one quote, outside the timing.
                    target = quoting.GetTargetInfo(quoting_pb2.GetTargetInfoRequest()).target_info
                    report = platform.create_report(loaded.handle, target, bytes(64))
                    quote = quoting.GetQuote(quoting_pb2.GetQuoteRequest(report=report)).quote
                    collateral = pcs.GetCollateral(
                        provisioning_pb2.GetCollateralRequest(quote=quote), timeout=30
                    ).quote_collateral_json
            warm = True
            start.wait()
            while warm or not stop_at.is_set():
                marks = [time.perf_counter()]
                challenge = verifier.CreateChallenge(
                    verifier_pb2.CreateChallengeRequest(), timeout=30
                ).challenge
                marks.append(time.perf_counter())
                target = quoting.GetTargetInfo(
                    quoting_pb2.GetTargetInfoRequest(), timeout=30
                ).target_info
                marks.append(time.perf_counter())
                report_data = report_data_for(challenge, user_data)
                report = platform.create_report(loaded.handle, target, report_data)
                marks.append(time.perf_counter())
                quote = quoting.GetQuote(
                    quoting_pb2.GetQuoteRequest(report=report), timeout=30
                ).quote
                marks.append(time.perf_counter())
                verdict = verifier.VerifyQuote(
                    verifier_pb2.VerifyQuoteRequest(
                        quote=quote,
                        collateral_json=collateral,
                        challenge=challenge,
                        user_data=user_data,
                    ),
                    timeout=30,
                )
                marks.append(time.perf_counter())
                if not (verdict.verified and verdict.accepted and verdict.token):
                    result.errors.append(
                        f"not accepted: {[f.code for f in verdict.failures]} "
                        f"{[(v.code, v.detail) for v in verdict.policy.violations]}"
                    )
                elif not checked_token:
                    check_token(verifier, verdict.token, quote)
                    checked_token = True
                if warm:  # the first round warms caches and connections: not counted
                    warm = False
                    continue
                result.latencies.append(marks[-1] - marks[0])
                for name, begin, end in zip(STEPS, marks[:-1], marks[1:], strict=True):
                    result.steps[name] += end - begin
    except Exception as e:  # any failure is reported and counted
        result.errors.append(f"{type(e).__name__}: {e}")
        with contextlib.suppress(threading.BrokenBarrierError):
            start.abort()
    finally:
        platform.close()
        quoting_channel.close()
        verifier_channel.close()


def check_token(
    verifier: verifier_pb2_grpc.QuoteVerificationServiceStub, token: str, quote: bytes
) -> None:
    jwks = verifier.GetJwks(verifier_pb2.GetJwksRequest(), timeout=30).jwks_json
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(jwks).keys}
    claims = jwt.decode(
        token,
        keys[jwt.get_unverified_header(token)["kid"]].key,
        algorithms=["ES256"],
        audience="sgxemu",
        issuer="sgxemu-verifier",
    )
    if claims["sub"] != "sha256:" + hashlib.sha256(quote).hexdigest():
        raise ValueError("the token names another quote")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(clients: int, seconds: float, send_collateral: bool) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="sgxbe2e", dir="/tmp"))
    root = base / "s"
    try:
        began = time.perf_counter()
        world = set_up(base)
        setup = time.perf_counter() - began
        stop_at = threading.Event()
        start = threading.Barrier(clients + 1)
        results = [ClientResult() for _ in range(clients)]
        threads = [
            threading.Thread(
                target=client, args=(world, stop_at, start, send_collateral, results[i], i)
            )
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop_at.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
    finally:
        with contextlib.suppress(Exception):
            sgxemu("--state", root, "down")
        shutil.rmtree(base, ignore_errors=True)

    latencies = [x for r in results for x in r.latencies]
    errors = [e for r in results for e in r.errors]
    count = len(latencies)
    return {
        "bench": "e2e",
        "clients": clients,
        "seconds": round(elapsed, 2),
        "collateral": "request" if send_collateral else "store",
        "attestations": count,
        "attestations_per_second": round(count / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 1) if latencies else None,
        "step_mean_ms": {
            name: round(sum(r.steps[name] for r in results) / count * 1e3, 2) if count else None
            for name in STEPS
        },
        "errors": len(errors),
        "first_errors": errors[:3],
        "setup_seconds": round(setup, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (threads)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument(
        "--send-collateral", action="store_true", help="send collateral with every VerifyQuote"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be >= 1 and --seconds > 0")
    report = run(args.clients, args.seconds, args.send_collateral)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['attestations']} end-to-end attestations in {report['seconds']} s with "
            f"{report['clients']} clients: {report['attestations_per_second']}/s, "
            f"p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, errors {report['errors']}"
        )
        print(f"mean per step (ms): {report['step_mean_ms']}")
        for error in report["first_errors"]:  # type: ignore[attr-defined]
            print(f"error: {error}")
    ok = report["errors"] == 0 and report["attestations"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
