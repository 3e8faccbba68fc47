"""MRENCLAVE throughput: ``sgx_platform.arch`` against raw hashlib over the same stream.

Builds a 64 MiB enclave image in memory (TCS, SSA, code and data pages, a few unmeasured heap
pages), then times, in the same run, best of ``--repeat``:

* ours: ``measure(image)`` — building the ECREATE/EADD/EEXTEND stream from the pages and
  hashing it (pipelined: hashing in a worker thread while the next batch is built);
* ours, single thread: the same stream hashed in the calling thread;
* hashlib: ``hashlib.sha256`` over the already materialized measurement stream.

``ratio`` = ours throughput / hashlib throughput (goal ≥ 0.7). Throughputs are in MiB of
measurement stream per second. ``--json`` prints one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable

from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.measure import iter_measurement_stream, measure_stream

MIB = 1 << 20


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(repeat: int) -> dict[str, float | int | bool]:
    # 2 TCS + 4 SSA + 8192 code + 8178 data + 8 heap = 16384 pages = 64 MiB.
    image = build_image(code_pages=8192, data_pages=8178, heap_pages=8, tcs=2, seed=1)
    assert image.size == 64 * MIB and len(image.pages) == 16384
    stream = image.measurement_stream()
    stream_mib = len(stream) / MIB

    t_hashlib, digest = _best(lambda: hashlib.sha256(stream).digest(), repeat)
    t_ours, ours = _best(lambda: measure(image), repeat)
    t_single, single = _best(
        lambda: measure_stream(
            iter_measurement_stream(image.ssa_frame_size, image.size, image.pages),
            pipelined=False,
        ),
        repeat,
    )
    assert getattr(ours, "value", None) == digest == getattr(single, "value", None)
    return {
        "image_mib": image.size // MIB,
        "stream_mib": round(stream_mib, 2),
        "ours_mib_s": round(stream_mib / t_ours, 1),
        "ours_single_thread_mib_s": round(stream_mib / t_single, 1),
        "hashlib_mib_s": round(stream_mib / t_hashlib, 1),
        "ratio": round(t_hashlib / t_ours, 3),
        "single_thread_ratio": round(t_hashlib / t_single, 3),
        "goal_met": t_hashlib / t_ours >= 0.7,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (best counts)")
    args = parser.parse_args()
    result = run(max(1, args.repeat))
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:26} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
