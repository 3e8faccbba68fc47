"""Acceptance (issue 9): ``bench/verify_load.py --json`` (the sustained-load run; a minute by
default) runs for a moment with two clients over loopback TLS and prints the one JSON line it
promises: verifications per second, p50/p99 latency, the error count (zero) and the server's
memory figures. No timing is asserted (STYLE.md); the minute-long figures are in
docs/ACCEPTANCE.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "verify_load.py"


def test_verify_load_bench_prints_one_json_line_without_errors() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--seconds", "1", "--clients", "2",
         "--quotes", "4"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stderr[-2000:]
    result = json.loads(lines[0])
    assert result["clients"] == 2 and result["verifications"] > 0
    assert result["errors"] == 0 and result["first_errors"] == []
    assert result["per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    for key in ("rss_kib_first", "rss_kib_last", "rss_kib_max", "rss_growth_kib", "rss_steady"):
        assert key in result, key
