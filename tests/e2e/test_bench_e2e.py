"""Smoke run of ``bench/e2e.py``: it builds its own world, attests, and tears the world down.

No timing is asserted (timings belong in bench/): only that every attestation was accepted
with a token, that the report is one JSON line with the documented fields, and that no
process of the bench's world is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "e2e.py"


def test_bench_e2e_reports_one_json_line_and_leaves_nothing_running() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "2", "--seconds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["bench"] == "e2e" and report["clients"] == 2
    assert report["errors"] == 0 and report["attestations"] > 0
    assert report["p99_ms"] >= report["p50_ms"] > 0
    assert set(report["step_mean_ms"]) == {"challenge", "target_info", "report", "quote", "verify"}
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        if b"/tmp/sgxbe2e" in text and b"serve" in text:
            left.append(text.replace(b"\0", b" ").decode(errors="replace"))
    assert left == []
