"""Benchmark of quote generation: in-process and over gRPC, against the cryptographic floor.

One run sets up a platform (in-process, on Unix sockets), the PCS and the quoting service in a
temporary state directory, loads an application enclave and makes one REPORT for the QE, then
measures, each for ``--seconds``:

* ``floor_per_s``: one ECDSA P-256 signature (SHA-256, over a quote's 432-byte signed region)
  plus one AES-128-CMAC (over a 384-byte report body): the cryptography a quote cannot avoid;
* ``inprocess_per_s``: :meth:`QuotingEngine.get_quote` called directly (no QuotingService RPC;
  the QE still derives its report key with one EGETKEY call to the platform over its socket, as
  the design demands: quoting uses the platform only through its API);
* ``grpc_per_s``: ``GetQuote`` over the quoting service's Unix socket, one client thread;
* ``grpc_parallel_per_s``: the same from ``--threads`` client threads;
* ``egetkey_grpc_per_s``: the platform's ``GetKey`` alone over gRPC (the per-quote round trip).

Every quote of the run is checked to carry the REPORT's body. Usage:
``python bench/quote.py [--json] [--seconds S] [--threads N]``; ``--json`` prints one JSON line.
Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms

from sgx.quoting.v1 import quoting_pb2 as qpb
from sgx.quoting.v1 import quoting_pb2_grpc as qgrpc
from sgx_platform.arch.attributes import KeyName
from sgx_platform.arch.dcap.quote import Quote
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import EnclaveSession, PlatformClient
from sgx_platform.service import PlatformService
from sgx_platform.service import initialize_state as initialize_platform
from sgx_quoting.config import QuotingConfig
from sgx_quoting.enclaves import initialize_state
from sgx_quoting.service import QuotingServer
from sgx_quoting.state import create_pcs
from sgx_rpc.channel import unix_channel


def _rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    fn()  # warm up
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start), count


def _parallel_rate(fn: Callable[[], object], seconds: float, threads: int) -> tuple[float, int]:
    counts = [0] * threads
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            while not stop.is_set():
                fn()
                counts[i] += 1
        except BaseException as e:  # reported below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed, sum(counts)


def _floor(seconds: float) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    mac_key = bytes(16)
    region = bytes(432)
    body = bytes(384)

    def one() -> None:
        key.sign(region, ec.ECDSA(hashes.SHA256()))
        c = cmac.CMAC(algorithms.AES(mac_key))
        c.update(body)
        c.finalize()

    return _rate(one, seconds)[0]


def run(seconds: float, threads: int) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="sgxb", dir="/tmp"))
    platform: PlatformService | None = None
    quoting: QuotingServer | None = None
    try:
        initialize_platform(state / "platform")
        (state / "enclaves").mkdir(mode=0o755)
        manifest = initialize_state(state / "quoting", state / "enclaves")
        create_pcs(
            state / "pcs",
            qe_mrsigner=manifest.mrsigner.value,
            qe_isvsvn=manifest.qe.isvsvn,
            qe_isvprodid=manifest.qe.isvprodid,
        )
        platform = PlatformService(
            parse_config("lease_seconds = 600\n[epc]\npages = 512\n", state), max_workers=16
        )
        platform.start()
        quoting = QuotingServer(QuotingConfig.defaults(state), max_workers=16)
        quoting.start()

        image = build_image(seed=11)
        (state / "enclaves" / "app.sgxs").write_bytes(write_sgxs(image))
        sig = sign_sigstruct(generate_signing_key(), measure(image), isvprodid=1, isvsvn=1)
        device = PlatformClient.unix(state / "run" / "platform.sock")
        loaded = device.load_enclave_from_file(state / "enclaves" / "app.sgxs", sig.to_bytes())
        session = EnclaveSession(device, loaded.handle, loaded.enclave_id, loaded.lease_seconds)
        channel = unix_channel(state / "run" / "quoting.sock")
        stub = qgrpc.QuotingServiceStub(channel)
        target = stub.GetTargetInfo(qpb.GetTargetInfoRequest()).target_info
        report = device.create_report(loaded.handle, target, b"bench".ljust(64, b"\x00"))
        body = Report.from_bytes(report).body

        def inprocess() -> bytes:
            assert quoting is not None
            return quoting.engine.get_quote(report)

        def over_grpc() -> bytes:
            quote: bytes = stub.GetQuote(qpb.GetQuoteRequest(report=report), timeout=60).quote
            return quote

        for quote in (inprocess(), over_grpc()):
            assert Quote.from_bytes(quote).isv_report == body
        quote_bytes = len(quote)

        key_request = KeyRequest(keyname=int(KeyName.REPORT)).to_bytes()
        floor = _floor(seconds)
        local, local_n = _rate(inprocess, seconds)
        remote, remote_n = _rate(over_grpc, seconds)
        parallel, parallel_n = _parallel_rate(over_grpc, seconds, threads)
        egetkey, _ = _rate(lambda: device.get_key(loaded.handle, key_request), seconds)
        session.close()
        channel.close()
        device.close()
        return {
            "benchmark": "quote",
            "seconds": seconds,
            "threads": threads,
            "quote_bytes": quote_bytes,
            "floor_per_s": round(floor, 1),
            "inprocess_per_s": round(local, 1),
            "grpc_per_s": round(remote, 1),
            "grpc_parallel_per_s": round(parallel, 1),
            "egetkey_grpc_per_s": round(egetkey, 1),
            "quotes": local_n + remote_n + parallel_n,
            "inprocess_vs_floor": round(local / floor, 3),
            "grpc_vs_floor": round(remote / floor, 3),
        }
    finally:
        if quoting is not None:
            quoting.stop(grace=1)
        if platform is not None:
            platform.stop(grace=1)
        shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=4, help="client threads (parallel)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.threads < 1:
        parser.error("--seconds must be positive and --threads at least 1")
    result = run(args.seconds, args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"quote generation ({result['quote_bytes']} bytes per quote)")
        print(f"  floor (1 ECDSA P-256 sign + 1 AES-CMAC): {result['floor_per_s']:>10} /s")
        print(f"  in-process (engine, EGETKEY over gRPC):  {result['inprocess_per_s']:>10} /s")
        print(f"  over gRPC, 1 client:                     {result['grpc_per_s']:>10} /s")
        print(f"  over gRPC, {args.threads} clients:                    "
              f"{result['grpc_parallel_per_s']:>10} /s")
        print(f"  platform GetKey alone over gRPC:         {result['egetkey_grpc_per_s']:>10} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
