"""bench/verify.py runs end to end and prints the one JSON line it promises (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "verify.py"


def test_bench_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quotes", "4", "--cold", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in (
        "ours_per_s",
        "dcap_qvl_per_s",
        "ratio",
        "ours_first_sight_ms",
        "dcap_qvl_first_sight_ms",
    ):
        assert result[key] > 0, key
    assert result["quotes"] == 4 and result["threads"] == 1
