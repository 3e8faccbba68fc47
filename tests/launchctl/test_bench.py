"""The launch benchmarks run and print one JSON line (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(*argv: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True,
                         timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    result: dict[str, object] = json.loads(lines[0])
    return result


def test_launch_bench_compares_token_and_open_mode() -> None:
    result = _run(str(BENCH / "launch.py"), "--json", "--seconds", "0.05")
    assert result["benchmark"] == "launch"
    for mode in ("token", "open"):
        numbers = result[mode]
        assert isinstance(numbers, dict)
        assert numbers["launches"] >= 3 and numbers["launches_per_s"] > 0
    assert isinstance(result["token_over_open"], float)


def test_soak_runs_a_round() -> None:
    result = _run(str(BENCH / "launch_soak.py"), "--json", "--rounds", "1", "--max-delay", "0.1")
    assert result["benchmark"] == "launch_soak" and result["rounds"] == 1
    assert result["ok"] is True and result["violations"] == []
    launches = result["launches"]
    assert isinstance(launches, dict) and launches["unlisted_admitted"] == 0
