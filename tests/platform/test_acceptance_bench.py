"""Acceptance (issue 4): ``bench/platform_grpc.py --json`` runs (tiny sizes) and prints the one
JSON line it promises: the enclave build rate through gRPC against in-process and EREPORT and
EGETKEY calls per second over gRPC, from the same run. No timing is asserted (STYLE.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "platform_grpc.py"


def test_platform_grpc_bench_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--pages", "16", "--seconds", "0.05",
         "--rounds", "1"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["pages"] == 16
    for key in ("inprocess_file", "grpc_file", "grpc_wire"):
        assert result["build_pages_per_s"][key] > 0, key
    for key in ("inprocess_ereport", "inprocess_egetkey", "grpc_ereport", "grpc_egetkey"):
        assert result["calls_per_s"][key] > 0, key
    assert result["grpc_file_vs_inprocess"] > 0
