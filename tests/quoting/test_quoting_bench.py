"""The quote benchmark runs and prints one JSON line (tiny durations; no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "quote.py"


def test_bench_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--seconds", "0.05", "--threads", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["benchmark"] == "quote" and result["threads"] == 2
    for key in (
        "floor_per_s",
        "inprocess_per_s",
        "grpc_per_s",
        "grpc_parallel_per_s",
        "egetkey_grpc_per_s",
        "quotes",
        "quote_bytes",
    ):
        assert result[key] > 0, key
