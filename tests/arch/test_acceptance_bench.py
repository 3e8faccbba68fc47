"""Acceptance (issue 2): ``bench/measure.py --json`` runs and prints the one JSON line it
promises, with ``ratio`` (ours / hashlib throughput over the same measured stream, same run).
No timing is asserted here (STYLE.md); the figure is recorded in docs/ACCEPTANCE.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "measure.py"


def test_measure_bench_prints_one_json_line_with_the_ratio() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--json", "--repeat", "1"],
                         capture_output=True, text=True, check=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["image_mib"] == 64
    assert result["ours_mib_s"] > 0 and result["hashlib_mib_s"] > 0
    # The throughputs are rounded to 0.1 MiB/s in the output, the ratio is not.
    assert abs(result["ratio"] - result["ours_mib_s"] / result["hashlib_mib_s"]) < 0.01
    assert isinstance(result["goal_met"], bool)
    assert result["goal_met"] == (result["ratio"] >= 0.7)
