"""SGXS streams: the real Fortanix files, round trips and every rejection."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import EnclaveImage, ImagePage, build_image, measure
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.sgxs import measure_sgxs, read_sgxs, write_sgxs

REAL = {
    "test_enclave.sgxs": "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
    "report.sgxs": "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290",
}


def ecreate(ssa: int = 1, size: int = 0x10000, tag: bytes = b"ECREATE\0") -> bytes:
    return tag + struct.pack("<IQ", ssa, size) + bytes(44)


def eadd(offset: int, flags: int = 0x203) -> bytes:
    return b"EADD\0\0\0\0" + struct.pack("<QQ", offset, flags) + bytes(40)


def chunk(offset: int, data: bytes = b"", tag: bytes = b"EEXTEND\0") -> bytes:
    return tag + struct.pack("<Q", offset) + bytes(48) + data.ljust(256, b"\0")


def full_page(offset: int, fill: int = 0xAB, tag: bytes = b"EEXTEND\0") -> bytes:
    return b"".join(chunk(offset + c * 256, bytes([fill]) * 256, tag) for c in range(16))


def measured_records_sha256(stream: bytes) -> str:
    """Independent: SHA-256 over ECREATE/EADD/EEXTEND(+data) records, UNMEASRD skipped."""
    h, pos = hashlib.sha256(), 0
    while pos < len(stream):
        tag = stream[pos : pos + 8]
        if tag in (b"EEXTEND\0", b"UNMEASRD"):
            if tag == b"EEXTEND\0":
                h.update(stream[pos : pos + 320])
            pos += 320
        else:
            h.update(stream[pos : pos + 64])
            pos += 64
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_measure_and_round_trip(real_vectors: Path, name: str) -> None:
    raw = (real_vectors / "fortanix-rust-sgx" / "sigstruct" / name).read_bytes()
    image = read_sgxs(raw)
    assert measure_sgxs(raw).hex() == REAL[name]
    assert measure(image).hex() == REAL[name]
    assert hashlib.sha256(raw).hexdigest() == REAL[name]  # all pages measured: file = stream
    assert measured_records_sha256(raw) == REAL[name]
    assert write_sgxs(image) == raw
    assert all(p.measured for p in image.pages)


def test_test_enclave_layout(real_vectors: Path) -> None:
    raw = (real_vectors / "fortanix-rust-sgx" / "sigstruct" / "test_enclave.sgxs").read_bytes()
    image = read_sgxs(raw)
    assert (image.ssa_frame_size, image.size) == (1, 0x40000)
    assert [(p.offset, p.secinfo.raw_flags) for p in image.pages] == [
        (0x0, 0x201),
        (0x1000, 0x205),
        (0x2000, 0x203),
        (0x4000, 0x201),
        (0x15000, 0x100),
        (0x16000, 0x203),
        (0x27000, 0x203),
        (0x28000, 0x203),
        (0x39000, 0x203),
    ]
    assert image.pages[4].secinfo.page_type is PageType.TCS


@settings(max_examples=25, deadline=None)
@given(
    code=st.integers(1, 4),
    data=st.integers(0, 3),
    heap=st.integers(0, 4),
    tcs=st.integers(1, 3),
    seed=st.integers(0, 2**64 - 1),
)
def test_builder_images_round_trip(code: int, data: int, heap: int, tcs: int, seed: int) -> None:
    image = build_image(code_pages=code, data_pages=data, heap_pages=heap, tcs=tcs, seed=seed)
    stream = write_sgxs(image)
    assert read_sgxs(stream) == image
    assert write_sgxs(read_sgxs(stream)) == stream
    assert measure_sgxs(stream) == measure(image)
    assert measured_records_sha256(stream) == measure(image).hex()


def test_unmeasured_pages_keep_their_data() -> None:
    page = ImagePage(0x1000, SecInfo(PageType.REG, SecInfoFlags.R), b"\x5a" * 4096, False)
    image = EnclaveImage(1, 0x4000, (page,))
    stream = write_sgxs(image)
    assert stream.count(b"UNMEASRD") == 16 and b"EEXTEND" not in stream
    assert read_sgxs(stream) == image


def test_eadd_only_and_sparse_unmeasured_pages() -> None:
    stream = (
        ecreate()
        + eadd(0)
        + eadd(0x1000)
        + chunk(0x1100, b"\x07" * 256, b"UNMEASRD")
        + chunk(0x1F00, b"\x08" * 256, b"UNMEASRD")
    )
    image = read_sgxs(stream)
    assert [p.measured for p in image.pages] == [False, False]
    assert image.pages[0].data == bytes(4096)
    assert image.pages[1].data == bytes(256) + b"\x07" * 256 + bytes(3328) + b"\x08" * 256
    # Written back canonically: 16 UNMEASRD chunks per page, same image, same MRENCLAVE.
    again = write_sgxs(image)
    assert again != stream and read_sgxs(again) == image
    assert measure_sgxs(stream) == measure_sgxs(again)
    assert measure_sgxs(stream).hex() == measured_records_sha256(stream)


def test_unsized_stream_takes_the_smallest_covering_size() -> None:
    body = eadd(0x5000) + full_page(0x5000)
    image = read_sgxs(ecreate(size=0x1234, tag=b"UNSIZED\0") + body)
    assert image.size == 0x8000
    assert read_sgxs(ecreate(size=0, tag=b"UNSIZED\0")).size == 8192
    sized = write_sgxs(image)
    assert sized.startswith(ecreate(size=0x8000))


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"", "too short"),
        (ecreate()[:63], "too short"),
        (eadd(0), "must start with ECREATE"),
        (ecreate() + eadd(0)[:63], "truncated record"),
        (ecreate() + eadd(0) + chunk(0)[:319], "truncated EEXTEND"),
        (ecreate() + eadd(0) + chunk(0, tag=b"UNMEASRD")[:100], "truncated UNMEASRD"),
        (ecreate() + b"EBOGUS\0\0" + bytes(56), "unknown record tag"),
        (ecreate() + ecreate(), "second ECREATE"),
        (ecreate() + ecreate(tag=b"UNSIZED\0"), "second ECREATE"),
        (ecreate() + chunk(0), "outside an EADDed page"),
        (ecreate() + eadd(0) + chunk(0x1000), "not a 256-byte chunk"),
        (ecreate() + eadd(0x1000) + chunk(0x0F00), "not a 256-byte chunk"),
        (ecreate() + eadd(0) + chunk(0x80), "not a 256-byte chunk"),
        (ecreate() + eadd(0) + chunk(0x100) + chunk(0x100), "repeats or comes out of order"),
        (ecreate() + eadd(0) + chunk(0x200) + chunk(0x100), "repeats or comes out of order"),
        (ecreate() + eadd(0) + full_page(0)[: 320 * 15], "partially measured"),
        (ecreate() + eadd(0) + chunk(0), "partially measured"),
        (
            ecreate() + eadd(0) + full_page(0)[: 320 * 15] + chunk(0xF00, tag=b"UNMEASRD"),
            "partially measured",
        ),
        (ecreate() + eadd(0) + full_page(0) + chunk(0xF00), "outside an EADDed page"),
        (ecreate() + eadd(0) + eadd(0), "twice"),
        (ecreate() + eadd(0) + full_page(0) + eadd(0x1000) + eadd(0), "twice"),
        (ecreate() + eadd(0x800), "not page aligned"),
        (ecreate() + eadd(0x10000), "outside the enclave size"),
        (ecreate() + eadd(0, 0x101), "permissions 0"),
        (ecreate() + eadd(0, 0x202), "writable but not readable"),
        (ecreate() + eadd(0, 0x301), "EADD takes only REG or TCS"),
        (ecreate() + eadd(0, 0x2201), "unknown page type"),
        (ecreate() + eadd(0, 0x10201), "reserved bits"),
        (ecreate(size=0x3000), "power of two"),
        (ecreate(ssa=0), "SSAFRAMESIZE"),
    ],
)
def test_rejections(stream: bytes, message: str) -> None:
    with pytest.raises(MalformedStructureError, match=message):
        read_sgxs(stream)


@pytest.mark.parametrize("record", ["ecreate", "eadd", "eextend", "unmeasrd"])
def test_reserved_record_bytes_must_be_zero(record: str) -> None:
    stream = bytearray(
        ecreate() + eadd(0) + full_page(0) + eadd(0x1000) + full_page(0x1000, tag=b"UNMEASRD")
    )
    position = {
        "ecreate": 63,
        "eadd": 64 + 63,
        "eextend": 128 + 63,
        "unmeasrd": 128 + 5120 + 64 + 63,
    }
    stream[position[record]] = 1
    with pytest.raises(MalformedStructureError, match="reserved bytes"):
        read_sgxs(bytes(stream))
