"""MRENCLAVE: the project measurer and builder against an independent measurer from §4.1.

The independent measurer below is written from the record definitions of SGX-REFERENCE §4.1
and uses nothing from the project: ECREATE/EADD/EEXTEND records built with plain ``struct``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import (
    EnclaveImage,
    ImagePage,
    build_image,
    enclave_size_for,
    measure,
)
from sgx_platform.arch.measure import MrEnclaveMeasurer, iter_measurement_stream, measure_stream
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.tcs import Tcs


def independent_mrenclave(
    ssa_frame_size: int, size: int, pages: Iterable[tuple[int, int, bytes, bool]]
) -> str:
    """SHA-256 of ECREATE, then per page EADD (+16 EEXTEND if measured). flags: raw SECINFO."""
    h = hashlib.sha256()
    h.update(b"ECREATE\0" + struct.pack("<IQ", ssa_frame_size, size) + bytes(44))
    for offset, flags, data, measured in pages:
        if (flags >> 8) & 0xFF == 1:  # TCS: the CPU measures R/W/X as 0
            flags &= ~0x7
        h.update(b"EADD\0\0\0\0" + struct.pack("<QQ", offset, flags) + bytes(40))
        if measured:
            for c in range(0, 4096, 256):
                h.update(b"EEXTEND\0" + struct.pack("<Q", offset + c) + bytes(48))
                h.update(data[c : c + 256])
    return h.hexdigest()


def _pages_of(image: EnclaveImage) -> list[tuple[int, int, bytes, bool]]:
    return [(p.offset, p.secinfo.raw_flags, p.data, p.measured) for p in image.pages]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"code_pages": 3, "data_pages": 2, "heap_pages": 5, "tcs": 3, "seed": 7},
        {"code_pages": 1, "data_pages": 0, "heap_pages": 1, "tcs": 1, "seed": 2**64 - 1},
        {"code_pages": 200, "data_pages": 40, "heap_pages": 300, "tcs": 2, "seed": 11},
    ],
)
def test_builder_images_match_the_independent_measurer(kwargs: dict[str, int]) -> None:
    image = build_image(**kwargs)
    expected = independent_mrenclave(image.ssa_frame_size, image.size, _pages_of(image))
    assert measure(image).hex() == expected
    assert hashlib.sha256(image.measurement_stream()).hexdigest() == expected


def test_large_image_uses_the_pipelined_path_and_agrees() -> None:
    image = build_image(code_pages=2100, data_pages=10, heap_pages=20, tcs=2, seed=3)
    assert len(image.pages) >= 2048
    expected = independent_mrenclave(image.ssa_frame_size, image.size, _pages_of(image))
    assert measure(image).hex() == expected
    stream = iter_measurement_stream(image.ssa_frame_size, image.size, image.pages)
    assert measure_stream(stream, pipelined=False).hex() == expected


_page = st.tuples(
    st.sampled_from([0x100, 0x101, 0x107, 0x200, 0x201, 0x203, 0x205, 0x207]),
    st.binary(min_size=1, max_size=8),
    st.booleans(),
)


@settings(max_examples=30, deadline=None)
@given(
    ssa=st.integers(1, 4),
    slots=st.lists(st.integers(0, 63), min_size=1, max_size=12, unique=True),
    contents=st.lists(_page, min_size=12, max_size=12),
)
def test_any_page_order_and_mix_matches(
    ssa: int, slots: list[int], contents: list[tuple[int, bytes, bool]]
) -> None:
    pages = []
    for slot, (flags, seed, measured) in zip(slots, contents, strict=False):
        data = (seed * 4096)[:4096]
        if flags >> 8 == 1 and flags & 0x7:
            flags &= ~0x7  # an image refuses TCS permissions; measured as 0 anyway
        pages.append((slot * 4096, flags, data, measured))
    image = EnclaveImage(
        ssa,
        0x40000,
        tuple(
            ImagePage(off, SecInfo.from_raw_flags(fl), data, measured=m)
            for off, fl, data, m in pages
        ),
    )
    assert measure(image).hex() == independent_mrenclave(ssa, 0x40000, pages)


def test_incremental_measurer_matches_and_zeroes_tcs_permissions() -> None:
    data = bytes(range(256)) * 16
    pages = [
        (0, 0x103, data, True),
        (0x1000, 0x205, data[::-1], True),
        (0x2000, 0x203, data, False),
    ]
    m = MrEnclaveMeasurer(1, 0x10000)
    m.add_page(0, SecInfo.from_raw_flags(0x103), data, measured=True)  # TCS with R/W claimed
    m.eadd(0x1000, SecInfo.from_raw_flags(0x205))
    for c in range(16):
        m.eextend(0x1000 + 256 * c, data[::-1][256 * c : 256 * c + 256])
    m.eadd(0x2000, SecInfo.from_raw_flags(0x203))
    result = m.finalize()
    assert result.hex() == independent_mrenclave(1, 0x10000, pages)
    assert m.finalize() is result
    with pytest.raises(MalformedStructureError, match="finalized"):
        m.eadd(0x3000, SecInfo(PageType.REG, SecInfoFlags.R))


@pytest.mark.parametrize(
    "action",
    [
        lambda m: m.eadd(0x1001, SecInfo(PageType.REG, SecInfoFlags.R)),
        lambda m: m.eadd(0x10000, SecInfo(PageType.REG, SecInfoFlags.R)),
        lambda m: m.eextend(0x80, bytes(256)),
        lambda m: m.eextend(0x100, bytes(255)),
        lambda m: m.eextend(0x10000, bytes(256)),
        lambda m: m.eextend_page(0, bytes(4095)),
        lambda m: m.update_raw(bytes(65)),
    ],
)
def test_incremental_measurer_rejects_bad_offsets_and_sizes(action: object) -> None:
    m = MrEnclaveMeasurer(1, 0x10000)
    with pytest.raises(MalformedStructureError):
        action(m)  # type: ignore[operator]


def test_measurement_changes_with_every_input() -> None:
    base = build_image(code_pages=2, data_pages=1, heap_pages=2, seed=1)
    ref = measure(base)
    first_code = next(p for p in base.pages if p.secinfo.flags & SecInfoFlags.X)
    flipped = bytearray(first_code.data)
    flipped[4095] ^= 1
    variants = [
        EnclaveImage(2, base.size, base.pages),
        EnclaveImage(base.ssa_frame_size, base.size * 2, base.pages),
        EnclaveImage(
            base.ssa_frame_size,
            base.size,
            tuple(
                ImagePage(p.offset, p.secinfo, bytes(flipped)) if p is first_code else p
                for p in base.pages
            ),
        ),
        EnclaveImage(base.ssa_frame_size, base.size, base.pages[::-1]),
        build_image(code_pages=2, data_pages=1, heap_pages=2, seed=2),
        build_image(code_pages=2, data_pages=1, heap_pages=3, seed=1),  # one more EADD
    ]
    assert len({ref, *(measure(v) for v in variants)}) == len(variants) + 1
    heap = [p for p in base.pages if not p.measured]
    changed_heap = EnclaveImage(
        base.ssa_frame_size,
        base.size,
        tuple(
            ImagePage(p.offset, p.secinfo, b"\x01" * 4096, False) if p in heap else p
            for p in base.pages
        ),
    )
    assert measure(changed_heap) == ref  # unmeasured contents do not count


# -- builder ----------------------------------------------------------------------------------


def test_builder_is_deterministic_and_seeded() -> None:
    a = build_image(code_pages=3, data_pages=2, heap_pages=1, tcs=2, seed=5)
    b = build_image(code_pages=3, data_pages=2, heap_pages=1, tcs=2, seed=5)
    c = build_image(code_pages=3, data_pages=2, heap_pages=1, tcs=2, seed=6)
    assert a == b and measure(a) == measure(b)
    assert a != c and measure(a) != measure(c)


def test_builder_layout() -> None:
    image = build_image(code_pages=3, data_pages=2, heap_pages=4, tcs=2, seed=9)
    kinds = []
    for p in image.pages:
        if p.secinfo.page_type is PageType.TCS:
            kinds.append("tcs")
        elif not p.measured:
            kinds.append("heap")
        elif p.secinfo.flags & SecInfoFlags.X:
            kinds.append("code")
        elif any(p.data):
            kinds.append("data")
        else:
            kinds.append("ssa")
    assert kinds == ["tcs"] * 2 + ["ssa"] * 4 + ["code"] * 3 + ["data"] * 2 + ["heap"] * 4
    assert [p.offset for p in image.pages] == [i * 4096 for i in range(15)]
    assert image.size == 0x10000 and image.ssa_frame_size == 1
    by_offset = {p.offset: p for p in image.pages}
    code_base = 6 * 4096
    for i, p in enumerate(image.pages[:2]):
        assert int(p.secinfo.flags) == 0 and p.measured
        tcs = Tcs.from_bytes(p.data)
        assert tcs.ossa == 2 * 4096 + i * 2 * 4096 and tcs.nssa == 2
        assert all(
            by_offset[tcs.ossa + k * 4096].secinfo.flags == SecInfoFlags.R | SecInfoFlags.W
            for k in range(tcs.nssa)
        )
        assert tcs.oentry == code_base and by_offset[tcs.oentry].secinfo.flags & SecInfoFlags.X
        assert tcs.ofsbase == tcs.ogsbase == 9 * 4096
        assert tcs.fslimit == tcs.gslimit == 0xFFFFFFFF
        assert (tcs.state, tcs.flags, tcs.cssa, tcs.aep) == (0, 0, 0, 0)
    for p in image.pages:
        if p.secinfo.page_type is PageType.REG and not p.secinfo.flags & SecInfoFlags.X:
            assert p.secinfo.flags == SecInfoFlags.R | SecInfoFlags.W
        if not p.measured:
            assert p.data == bytes(4096)


@pytest.mark.parametrize(
    ("code_pages", "size"), [(1, 16384), (5, 32768), (6, 65536), (13, 65536), (14, 131072)]
)
def test_enclave_size_is_the_smallest_power_of_two(code_pages: int, size: int) -> None:
    # 1 TCS and its 2 SSA pages come first
    image = build_image(code_pages=code_pages, data_pages=0, heap_pages=0, tcs=1)
    assert image.size == size


def test_enclave_size_is_at_least_8192() -> None:
    assert [enclave_size_for(n) for n in (0, 1, 2, 3, 4, 5)] == [8192] * 3 + [16384] * 2 + [32768]


@pytest.mark.parametrize(
    "kwargs",
    [{"tcs": 0}, {"code_pages": 0}, {"data_pages": -1}, {"seed": -1}, {"seed": 2**64}, {"nssa": 0}],
)
def test_builder_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(MalformedStructureError):
        build_image(**kwargs)


# -- image invariants ---------------------------------------------------------------------------

R, RW, RX, W = (
    SecInfoFlags.R,
    SecInfoFlags.R | SecInfoFlags.W,
    SecInfoFlags.R | SecInfoFlags.X,
    SecInfoFlags.W,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ImagePage(0x800, SecInfo(PageType.REG, R), bytes(4096)),
        lambda: ImagePage(0, SecInfo(PageType.REG, R), bytes(4095)),
        lambda: ImagePage(0, SecInfo(PageType.REG, W), bytes(4096)),
        lambda: ImagePage(0, SecInfo(PageType.TCS, RW), bytes(4096)),
        lambda: ImagePage(0, SecInfo(PageType.VA), bytes(4096)),
        lambda: ImagePage(0, SecInfo(PageType.REG, R | SecInfoFlags.PENDING), bytes(4096)),
        lambda: EnclaveImage(1, 12288, ()),
        lambda: EnclaveImage(1, 4096, ()),
        lambda: EnclaveImage(0, 8192, ()),
        lambda: EnclaveImage(1, 8192, (ImagePage(0, SecInfo(PageType.REG, R), bytes(4096)),) * 2),
        lambda: EnclaveImage(1, 8192, (ImagePage(8192, SecInfo(PageType.REG, R), bytes(4096)),)),
    ],
)
def test_image_invariants_are_enforced(make: object) -> None:
    with pytest.raises(MalformedStructureError):
        make()  # type: ignore[operator]


def test_measure_returns_the_value_type() -> None:
    assert isinstance(measure(build_image()), Measurement)
