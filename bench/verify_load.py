"""Sustained load on the quote verification service, over loopback TLS.

The service runs in a child process (its own interpreter, so the clients do not share its GIL)
with a collateral store holding the emulated PCS fixture's collateral and a clock frozen inside
that collateral's validity; several client threads call ``VerifyQuote`` for a bounded time over
one TLS channel each, cycling through distinct fixture quotes (different REPORTDATA, so no two
consecutive calls verify the same bytes). Every call must come back verified and accepted with
a token. With ``--challenges`` every call first asks ``CreateChallenge`` and sends a quote
bound to it (the quote is signed in the client, outside the timed region).

Reported (one JSON line with ``--json``): verifications and verifications per second, latency
p50/p99 in milliseconds, errors (must be 0), and the server's resident set size sampled every
second after a warm-up: first, last, maximum and the growth from first to last (steady memory:
growth under ``--max-rss-growth-kib``). Exit 1 when errors occurred or memory grew beyond that.

Usage: ``python bench/verify_load.py [--seconds 60] [--clients 8] [--quotes 32] [--json]``.
Loopback only (127.0.0.1). Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgx.verifier.v1 import verifier_pb2 as pb
from sgx.verifier.v1 import verifier_pb2_grpc as pb_grpc
from sgx_rpc.channel import tls_channel, wait_ready

EMULATED = "sgxemu-emulated"


def _tls_files(directory: Path) -> bytes:
    """A throwaway CA and a server certificate for 127.0.0.1; returns the CA PEM."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sgxemu-verifier")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _server(directory: str, workers: int, conn: Connection) -> None:
    """The child: build and start the verifier, report its address, serve until told."""
    from sgx_quoting.fixtures import fixture
    from sgx_verifier.fetch import items_from_bytes
    from sgx_verifier.rpc.server import build_server, build_service
    from sgx_verifier.service import AnchorConfig, VerifierConfig

    f = fixture()
    base = Path(directory)
    (base / "emulated-root.der").write_bytes(f.pki.root.der)
    config = VerifierConfig(
        listen="127.0.0.1:0",
        tls_certificate=base / "server.pem",
        tls_key=base / "server.key",
        anchors=(AnchorConfig(EMULATED, base / "emulated-root.der"),),
        base_dir=base,
    )
    frozen = f.now.timestamp() + 60
    service = build_service(config, clock=lambda: frozen)
    collateral = f.pcs().collateral_for_quote(f.quote()).to_json().encode()
    items = [("fixture", item) for item in items_from_bytes(collateral)]
    service.import_items(items, source="bench")
    server = build_server(config, service, max_workers=workers)
    addresses = server.start()
    conn.send(next(iter(addresses.values())))
    conn.recv()  # stop
    server.stop(5)
    conn.send("stopped")


def _quotes(count: int, challenges: bool) -> list[bytes]:
    from sgx_quoting.fixtures import fixture

    f = fixture()
    if challenges:
        return []
    return [
        f.quote(isv_report=f.isv_report(report_data=i.to_bytes(4, "little") + bytes(60)))
        for i in range(count)
    ]


def _client(
    address: str,
    ca: bytes,
    quotes: list[bytes],
    offset: int,
    deadline: float,
    challenges: bool,
    out: dict[str, Any],
) -> None:
    from sgx_platform.arch.binding import report_data_for
    from sgx_quoting.fixtures import fixture

    f = fixture()
    latencies: list[float] = []
    errors: list[str] = []
    with tls_channel(address, ca) as channel:
        wait_ready(channel, 10)
        stub = pb_grpc.QuoteVerificationServiceStub(channel)
        i = offset
        while time.monotonic() < deadline:
            request = pb.VerifyQuoteRequest()
            if challenges:
                issued = stub.CreateChallenge(pb.CreateChallengeRequest(), timeout=30)
                report_data = report_data_for(issued.challenge)
                request.quote = f.quote(isv_report=f.isv_report(report_data=report_data))
                request.challenge = issued.challenge
                request.policy.trust_anchors.values.append(EMULATED)
                request.policy.require_challenge = True
            else:
                request.quote = quotes[i % len(quotes)]
            i += 1
            started = time.perf_counter()
            try:
                reply = stub.VerifyQuote(request, timeout=30)
            except Exception as e:  # a benchmark counts every failure
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - started)
            if not (reply.verified and reply.accepted and reply.token):
                errors.append(f"not accepted: {[v.code for v in reply.policy.violations]}")
    out["latencies"] = latencies
    out["errors"] = errors


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="vload-") as tmp:
        ca = _tls_files(Path(tmp))
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_server, args=(tmp, args.workers, child), daemon=True)
        proc.start()
        address: str = parent.recv()
        assert proc.pid is not None
        quotes = _quotes(args.quotes, args.challenges)
        # Warm-up: first sight of every quote and of the collateral.
        warm: dict[str, Any] = {}
        _client(address, ca, quotes, 0, time.monotonic() + min(3.0, args.seconds / 4),
                args.challenges, warm)  # fmt: skip
        samples: list[int] = [_rss_kib(proc.pid)]
        deadline = time.monotonic() + args.seconds
        results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
        threads = [
            threading.Thread(
                target=_client,
                args=(address, ca, quotes, n * 7, deadline, args.challenges, results[n]),
            )
            for n in range(args.clients)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            samples.append(_rss_kib(proc.pid))
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        parent.send("stop")
        parent.recv()
        proc.join(timeout=10)
    latencies = [x for r in results for x in r.get("latencies", [])]
    errors = [e for r in results for e in r.get("errors", [])] + warm.get("errors", [])
    return {
        "bench": "verify_load",
        "clients": args.clients,
        "server_workers": args.workers,
        "challenges": args.challenges,
        "seconds": round(elapsed, 2),
        "verifications": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
        "errors": len(errors),
        "first_errors": errors[:3],
        "rss_kib_first": samples[0],
        "rss_kib_last": samples[-1],
        "rss_kib_max": max(samples),
        "rss_growth_kib": samples[-1] - samples[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=8, help="server threads (default 8)")
    parser.add_argument("--quotes", type=int, default=32, help="distinct quotes (default 32)")
    parser.add_argument("--challenges", action="store_true", help="a fresh challenge per call")
    parser.add_argument(
        "--max-rss-growth-kib",
        type=int,
        default=32 * 1024,
        help="fail when the server's RSS grows more than this after warm-up (default 32 MiB)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients <= 0 or args.quotes <= 0:
        parser.error("--seconds, --clients and --quotes must be positive")
    report = run(args)
    steady = report["rss_growth_kib"] <= args.max_rss_growth_kib
    report["rss_steady"] = steady
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>16}: {value}")
    return 0 if report["errors"] == 0 and steady else 1


if __name__ == "__main__":
    sys.exit(main())
