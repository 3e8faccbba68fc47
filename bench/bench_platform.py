"""Benchmark of the emulated SGX CPU, in-process (no gRPC).

Not ``bench/platform.py``: a ``platform.py`` on ``sys.path`` would shadow the standard
library (tests/test_hygiene.py forbids it).

Measures:
* ``pages_added_per_s``: EADD + 16 EEXTENDs (SGX_PAGE_MEASURE) per page while building an
  enclave, EPC large enough that nothing is evicted;
* ``pages_added_evicting_per_s``: the same into an EPC a quarter of the enclave's size;
* ``ereport_per_s`` and ``egetkey_per_s`` (SEAL key) from an initialized enclave.

Usage: ``python bench/bench_platform.py [--json] [--pages N] [--seconds S]``; ``--json`` prints one
JSON line. Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName, KeyPolicy
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.cpu import EnclaveContext, EnclaveRef, SgxCpu
from sgx_platform.fuses import PlatformFuses

BASE = 1 << 40


def _add_pages(cpu: SgxCpu, image: EnclaveImage) -> EnclaveRef:
    ref = cpu.ecreate(
        Secs(
            size=image.size,
            base_address=BASE,
            ssa_frame_size=image.ssa_frame_size,
            attributes=Attributes(int(AttributeFlags.MODE64BIT), 3),
        )
    )
    for page in image.pages:
        cpu.eadd(ref, BASE + page.offset, page.data, page.secinfo)
        if page.measured:
            cpu.eextend_page(ref, BASE + page.offset)
    return ref


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(64):
            fn()
        n += 64
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run(pages: int, seconds: float) -> dict[str, float | int]:
    image = build_image(code_pages=pages // 2, data_pages=pages - pages // 2 - 3, seed=1)
    key = generate_signing_key()
    sig = sign_sigstruct(key, measure(image), date=0x20250101)
    with tempfile.TemporaryDirectory() as tmp:
        fuses = PlatformFuses.create(Path(tmp) / "fuses")
        cpu = SgxCpu(fuses, epc_pages=2 * len(image.pages) + 16)
        t0 = time.perf_counter()
        ref = _add_pages(cpu, image)
        added = len(image.pages) / (time.perf_counter() - t0)
        cpu.le_pubkeyhash.write(sig.mrsigner)
        ctx: EnclaveContext = cpu.einit(ref, sig)

        small = SgxCpu(PlatformFuses.open(fuses.directory), epc_pages=len(image.pages) // 4)
        t0 = time.perf_counter()
        _add_pages(small, image)
        evicting = len(image.pages) / (time.perf_counter() - t0)

        target = ctx.target_info()
        request = KeyRequest(
            keyname=int(KeyName.SEAL),
            keypolicy=int(KeyPolicy.MRSIGNER),
            cpusvn=cpu.cpusvn,
            key_id=b"\x01" * 32,
        )
        ereport = _rate(lambda: ctx.ereport(target), seconds)
        egetkey = _rate(lambda: ctx.egetkey(request), seconds)
    return {
        "pages": len(image.pages),
        "pages_added_per_s": round(added, 1),
        "pages_added_evicting_per_s": round(evicting, 1),
        "ereport_per_s": round(ereport, 1),
        "egetkey_per_s": round(egetkey, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--pages", type=int, default=2048, help="enclave pages (default 2048)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per ENCLU loop")
    args = parser.parse_args(argv)
    if args.pages < 16:
        parser.error("--pages must be at least 16")
    result = run(args.pages, args.seconds)
    if args.json:
        print(json.dumps({"benchmark": "platform", **result}, sort_keys=True))
    else:
        for name, value in result.items():
            print(f"{name:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
