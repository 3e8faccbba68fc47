"""Benchmark of the platform service over gRPC against the same driver in-process, in one run.

Not ``bench/platform.py`` (a ``platform.py`` on ``sys.path`` would shadow the standard library);
the in-process CPU benchmark is ``bench/bench_platform.py``.

Measures:
* ``build_pages_per_s``: enclave build rate, pages per second (ECREATE, EADD + 16 EEXTEND per
  measured page, EINIT) for the same image, three ways: ``inprocess_file`` (the driver's
  load-from-file, no gRPC), ``grpc_file`` (``LoadEnclaveFromFile`` over the device socket) and
  ``grpc_wire`` (``CreateEnclave`` + one ``AddPages`` per page + ``InitEnclave``; the two wire
  rules of the load policy are switched off for this run so code pages may come over the wire);
* ``calls_per_s``: ``EREPORT`` and ``EGETKEY`` (SEAL key) per second, in-process and over gRPC.

Usage: ``python bench/platform_grpc.py [--json] [--pages N] [--seconds S] [--rounds R]``;
``--json`` prints one JSON line. Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName, KeyPolicy
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import PlatformService, initialize_state

CONFIG = """
lease_seconds = 600
[epc]
pages = {epc}
eviction = false
[load_policy]
no_exec_from_wire = false
exec_only_from_file = false
"""


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(16):
            fn()
        n += 16
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def _best(fn: Callable[[], int], rounds: int) -> float:
    """Best pages/s over ``rounds`` builds (``fn`` builds one enclave and returns its pages)."""
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        pages = fn()
        best = max(best, pages / (time.perf_counter() - t0))
    return best


def _wire_build(client: PlatformClient, image: EnclaveImage, sig: bytes) -> bytes:
    secs = Secs(size=image.size, base_address=image.size, ssa_frame_size=image.ssa_frame_size,
                attributes=Attributes(int(AttributeFlags.MODE64BIT), 3))
    handle = client.create_enclave(secs.to_bytes()).enclave_handle
    for page in image.pages:
        client.add_pages(handle, page.offset, page.data, page.secinfo.to_bytes(),
                         measure=page.measured)
    client.init_enclave(handle, sig)
    return handle


def run(pages: int, seconds: float, rounds: int) -> dict[str, object]:
    image = build_image(code_pages=pages // 2, data_pages=pages - pages // 2 - 3, seed=1)
    n = len(image.pages)
    sig = sign_sigstruct(generate_signing_key(), measure(image), date=0x20250101).to_bytes()
    seal = KeyRequest(keyname=int(KeyName.SEAL), keypolicy=int(KeyPolicy.MRSIGNER),
                      attribute_mask=Attributes(3, 0)).to_bytes()
    state = Path(tempfile.mkdtemp(prefix="sgxb", dir="/tmp"))
    try:
        state.chmod(0o755)
        (state / "enclaves").mkdir(mode=0o755)
        (state / "enclaves" / "bench.sgxs").write_bytes(write_sgxs(image))
        initialize_state(state / "platform")
        service = PlatformService(parse_config(CONFIG.format(epc=4 * n + 64), state))
        service.start()
        driver = service.driver
        client = PlatformClient.unix(service.config.sockets.device, timeout=120)
        try:

            def inprocess() -> int:
                loaded = driver.load_from_file("bench.sgxs", sig)
                driver.destroy(loaded.handle)
                return n

            def grpc_file() -> int:
                loaded = client.load_enclave_from_file("bench.sgxs", sig)
                client.destroy_enclave(loaded.handle)
                return n

            def grpc_wire() -> int:
                client.destroy_enclave(_wire_build(client, image, sig))
                return n

            build = {
                "inprocess_file": _best(inprocess, rounds),
                "grpc_file": _best(grpc_file, rounds),
                "grpc_wire": _best(grpc_wire, rounds),
            }
            handle = client.load_enclave_from_file("bench.sgxs", sig).handle
            calls = {
                "inprocess_ereport": _rate(lambda: driver.create_report(handle, b"", b""),
                                           seconds),
                "inprocess_egetkey": _rate(lambda: driver.get_key(handle, seal), seconds),
                "grpc_ereport": _rate(lambda: client.create_report(handle), seconds),
                "grpc_egetkey": _rate(lambda: client.get_key(handle, seal), seconds),
            }
        finally:
            client.close()
            service.stop(grace=1)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return {
        "pages": n,
        "rounds": rounds,
        "build_pages_per_s": {k: round(v, 1) for k, v in build.items()},
        "grpc_file_vs_inprocess": round(build["grpc_file"] / build["inprocess_file"], 3),
        "calls_per_s": {k: round(v, 1) for k, v in calls.items()},
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--pages", type=int, default=512, help="pages per enclave (default 512)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per call rate")
    parser.add_argument("--rounds", type=int, default=3, help="builds per way (best is kept)")
    args = parser.parse_args(argv)
    if args.pages < 8:
        parser.error("--pages must be at least 8")
    result = run(args.pages, args.seconds, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"enclave of {result['pages']} pages, best of {result['rounds']} builds:")
        for name, rate in result["build_pages_per_s"].items():  # type: ignore[attr-defined]
            print(f"  build {name:15s} {rate:12.1f} pages/s")
        print(f"  gRPC file load / in-process: {result['grpc_file_vs_inprocess']}")
        for name, rate in result["calls_per_s"].items():  # type: ignore[attr-defined]
            print(f"  {name:18s} {rate:12.1f} calls/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
