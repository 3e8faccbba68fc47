"""Quote appraisal throughput: sgxemu's verifier against dcap-qvl, same quotes, same run.

Builds ``--quotes`` distinct emulated SGX quotes on the fixture PKI (``sgx_quoting.fixtures``):
each has its own REPORTDATA and therefore its own ISV signature by the attestation key, while
all share one platform and one collateral set (QuoteCollateralV3 from the emulated PCS). Then,
in one process and one thread:

* ``ours_per_s``: ``sgx_verifier.appraisal.appraise`` over every quote, after one warm-up pass
  over other quotes (the collateral's signature and parse caches are warm, each quote's own
  signature is new);
* ``dcap_qvl_per_s``: ``dcap_qvl.verify_with_root_ca`` over the same quotes;
* ``ratio`` = ours / dcap-qvl (goal >= 3);
* first sight (collateral never seen before): every cache cleared before each of ``--cold``
  appraisals; ``ours_first_sight_ms`` is their median, ``ours_first_sight_per_s`` its inverse,
  ``dcap_qvl_first_sight_ms`` dcap-qvl's median on the same quotes (it caches nothing).

Both verifiers must return UpToDate for every quote, or the run fails. ``--json`` prints one
JSON line. Timings belong here, never in test assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import dcap_qvl

from sgx_platform.arch.dcap.quote import PckCertChainCertificationData
from sgx_quoting.fixtures import fixture
from sgx_verifier.anchors import AnchorSet, load_anchor
from sgx_verifier.appraisal import appraise, clear_caches
from sgx_verifier.collateral import Collateral
from sgx_verifier.verdict import TcbStatus


def _quotes(count: int) -> tuple[list[bytes], Any, Any, bytes, int]:
    f = fixture()
    pcs = f.pcs()
    chain = pcs.select_pck(f.tcb, pce_id=f.platform.pce_id)
    cert_data = PckCertChainCertificationData(chain.pem() + b"\x00")
    quotes = [
        f.quote(
            isv_report=f.isv_report(report_data=i.to_bytes(8, "little") + bytes(56)),
            certification_data=cert_data,
        )
        for i in range(count)
    ]
    collateral = pcs.collateral_for_quote(quotes[0])
    return quotes, collateral, f.pki.root.der, f.pki.root.der, int(f.now.timestamp())


def run(count: int, cold: int) -> dict[str, Any]:
    quotes, qc, root_der, _, at = _quotes(count + cold + 8)
    warmup, timed, first = quotes[:8], quotes[8 : 8 + count], quotes[8 + count :]
    ours_collateral = Collateral.from_quote_collateral_v3(qc)
    theirs_collateral = dcap_qvl.QuoteCollateralV3.from_json(qc.to_json())
    anchors = AnchorSet.of([load_anchor(root_der, "sgxemu-fixture-root")])

    def ours(quote: bytes) -> None:
        verdict = appraise(quote, ours_collateral, anchors=anchors, at=at)
        if not verdict.verified or verdict.tcb_status is not TcbStatus.UP_TO_DATE:
            raise SystemExit(f"sgxemu did not verify a bench quote: {verdict.failures}")

    def theirs(quote: bytes) -> None:
        report = dcap_qvl.verify_with_root_ca(quote, theirs_collateral, root_der, at)
        if report.status != "UpToDate":
            raise SystemExit(f"dcap-qvl returned {report.status}")

    # First sight: nothing cached.
    ours_cold, theirs_cold = [], []
    for quote in first:
        clear_caches()
        start = time.perf_counter()
        ours(quote)
        ours_cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs(quote)
        theirs_cold.append(time.perf_counter() - start)

    # Steady state: warm collateral, fresh quotes.
    for quote in warmup:
        ours(quote)
        theirs(quote)
    # Interleaved chunks, so a load change on the machine hits both sides alike.
    ours_s = theirs_s = 0.0
    for i in range(0, count, 100):
        chunk = timed[i : i + 100]
        start = time.perf_counter()
        for quote in chunk:
            ours(quote)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        for quote in chunk:
            theirs(quote)
        theirs_s += time.perf_counter() - start

    ours_per_s = count / ours_s
    theirs_per_s = count / theirs_s
    cold_ms = statistics.median(ours_cold) * 1000
    return {
        "bench": "verify",
        "quotes": count,
        "ours_per_s": round(ours_per_s, 1),
        "dcap_qvl_per_s": round(theirs_per_s, 1),
        "ratio": round(ours_per_s / theirs_per_s, 2),
        "goal_ratio": 3.0,
        "ours_first_sight_ms": round(cold_ms, 3),
        "ours_first_sight_per_s": round(1000 / cold_ms, 1),
        "dcap_qvl_first_sight_ms": round(statistics.median(theirs_cold) * 1000, 3),
        "first_sight_samples": len(first),
        "threads": 1,
        "dcap_qvl_version": dcap_qvl.__version__,
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=2000, help="distinct quotes (default 2000)")
    parser.add_argument("--cold", type=int, default=20, help="first-sight samples (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.quotes < 1 or args.cold < 1:
        parser.error("--quotes and --cold must be positive")
    result = run(args.quotes, args.cold)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key:>26}: {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
