"""The platform benchmark runs and prints one JSON line (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_platform.py"


def test_bench_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--pages", "16", "--seconds", "0.01"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["benchmark"] == "platform" and result["pages"] == 16
    for key in (
        "pages_added_per_s",
        "pages_added_evicting_per_s",
        "ereport_per_s",
        "egetkey_per_s",
    ):
        assert result[key] > 0, key
