"""Acceptance (issue 2): images from the builder, with TCS pages and an unmeasured heap, measured
by ``sgxemu measure`` give the MRENCLAVE of an independent measurer.

End to end through the commands: ``sgxemu image build --out FILE`` writes the SGXS file and
``sgxemu measure FILE`` prints MRENCLAVE. The independent measurer below reads that same file
with nothing but ``struct`` and ``hashlib``, from the record definitions of SGX-REFERENCE §4.1
and the SGXS stream notes of §4.3 (ECREATE; per page EADD with the TCS permissions zeroed;
EEXTEND header + 256 bytes; UNMEASRD chunks skipped). It imports nothing from the project, so a
shared mistake in the project's reader, builder and measurer cannot hide.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxemu_cli.main import main

ECREATE, EADD, EEXTEND = 0x0045544145524345, 0x0000000044444145, 0x00444E4554584545
UNMEASRD, UNSIZED = 0x44525341454D4E55, 0x0044455A49534E55
PT_TCS = 1


@dataclass
class Independent:
    mrenclave: str
    tcs_pages: int
    eadd_records: int
    measured_chunks: int
    unmeasured_chunks: int


def independent_measure(sgxs: bytes) -> Independent:
    h = hashlib.sha256()
    pos, tcs, eadds, measured, unmeasured = 0, 0, 0, 0, 0
    first = True
    while pos < len(sgxs):
        header = sgxs[pos : pos + 64]
        assert len(header) == 64, "truncated record"
        (tag,) = struct.unpack_from("<Q", header, 0)
        pos += 64
        if first:
            assert tag == ECREATE, "the builder writes a sized ECREATE first"
            ssa, size = struct.unpack_from("<IQ", header, 8)
            h.update(struct.pack("<QIQ", ECREATE, ssa, size).ljust(64, b"\0"))
            first = False
        elif tag == EADD:
            offset, flags = struct.unpack_from("<QQ", header, 8)
            if (flags >> 8) & 0xFF == PT_TCS:
                tcs += 1
                flags &= ~0x7  # the CPU measures a TCS with R/W/X zero
            h.update(struct.pack("<QQQ", EADD, offset, flags).ljust(64, b"\0"))
            eadds += 1
        elif tag == EEXTEND:
            (offset,) = struct.unpack_from("<Q", header, 8)
            chunk = sgxs[pos : pos + 256]
            assert len(chunk) == 256
            h.update(struct.pack("<QQ", EEXTEND, offset).ljust(64, b"\0"))
            h.update(chunk)
            pos += 256
            measured += 1
        elif tag == UNMEASRD:
            pos += 256  # page content, loaded but not measured
            unmeasured += 1
        else:
            raise AssertionError(f"unexpected record tag {tag:#x}")
    return Independent(h.hexdigest(), tcs, eadds, measured, unmeasured)


def build_and_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int, data: int,
                      heap: int, tcs: int, seed: int) -> tuple[str, Independent]:
    image = tmp_path / f"img-{code}-{data}-{heap}-{tcs}-{seed}.sgxs"
    argv = ["image", "build", "--out", str(image), "--code-pages", str(code), "--data-pages",
            str(data), "--heap-pages", str(heap), "--tcs", str(tcs), "--seed", str(seed)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["measure", str(image)]) == 0
    out, _ = capsys.readouterr()
    return out.strip(), independent_measure(image.read_bytes())


@pytest.mark.parametrize(
    ("code", "data", "heap", "tcs", "seed"),
    [(1, 1, 1, 1, 0), (3, 2, 5, 3, 7), (20, 4, 64, 2, 2**64 - 1), (2, 0, 300, 4, 11)],
)
def test_sgxemu_measure_equals_the_independent_measurer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    code: int, data: int, heap: int, tcs: int, seed: int,
) -> None:
    ours, independent = build_and_measure(tmp_path, capsys, code, data, heap, tcs, seed)
    assert ours == independent.mrenclave
    # The image really has what the item is about: TCS pages and an unmeasured heap.
    assert independent.tcs_pages == tcs
    assert independent.unmeasured_chunks >= 16 * heap
    assert independent.eadd_records * 16 == independent.measured_chunks + (
        independent.unmeasured_chunks)


# capsys is drained after every command, so sharing it across examples is safe.
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.integers(1, 6), data=st.integers(0, 4), heap=st.integers(1, 12),
       tcs=st.integers(1, 4), seed=st.integers(0, 2**64 - 1))
def test_any_builder_image_matches(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
    code: int, data: int, heap: int, tcs: int, seed: int,
) -> None:
    ours, independent = build_and_measure(tmp_path_factory.mktemp("m"), capsys, code, data,
                                           heap, tcs, seed)
    assert ours == independent.mrenclave and independent.tcs_pages == tcs


def test_the_independent_measurer_reproduces_the_published_vector(real_vectors: Path) -> None:
    """Its own check: the §4.3 vector, which has a TCS page, gives the published MRENCLAVE."""
    sgxs = (real_vectors / "fortanix-rust-sgx" / "sigstruct" / "test_enclave.sgxs").read_bytes()
    result = independent_measure(sgxs)
    assert result.mrenclave == "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    assert result.tcs_pages == 1
