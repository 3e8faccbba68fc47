"""The Fortanix SGXS stream: an enclave image as its own measurement stream (SGX-REFERENCE §4.3).

Records are 64 bytes, little-endian, tagged by a u64: ECREATE (SSAFRAMESIZE u32 @8, SIZE u64
@12), UNSIZED (an ECREATE whose SIZE is not final), EADD (offset u64 @8, SECINFO.FLAGS u64 @16),
EEXTEND and UNMEASRD (chunk offset u64 @8, then 256 data bytes). Every byte after the defined
fields of a record must be zero.

Invariants of :func:`read_sgxs` (stricter than Fortanix's canonical reader where the image model
needs it): exactly one ECREATE/UNSIZED, first; EADD offsets 4 KiB aligned and distinct; a chunk
record belongs to the page of the EADD just before it, at a 256-aligned offset, in increasing
order without repeats; a page is measured when all 16 chunks are EEXTENDed, unmeasured when it
has only UNMEASRD chunks (missing chunks are zero) or none; anything in between (a partially
measured page) is rejected. Every violation raises :class:`MalformedStructureError`.

:func:`write_sgxs` writes ECREATE, then per page EADD and 16 EEXTEND (measured) or 16 UNMEASRD
(unmeasured) records, so ``read_sgxs(write_sgxs(image)) == image`` for every image, and
``write_sgxs(read_sgxs(s)) == s`` for every stream whose pages carry all 16 chunks (both
Fortanix test files do). Streams that leave chunks of an unmeasured page out, or start with
UNSIZED, read fine but are written back in this canonical form. An UNSIZED stream's enclave
size is taken as the smallest power of two ≥ 8192 that covers its last page.

The MRENCLAVE of a stream (:func:`measure_sgxs`) is SHA-256 over its ECREATE, EADD and EEXTEND
records (with data), skipping UNMEASRD ones — equal to :func:`~.image.measure` of the image read.
"""

from __future__ import annotations

import struct

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.image import EnclaveImage, ImagePage, enclave_size_for, measure
from sgx_platform.arch.measure import (
    CHUNK_SIZE,
    CHUNKS_PER_PAGE,
    PAGE_SIZE,
    RECORD_SIZE,
    TAG_EADD,
    TAG_ECREATE,
    TAG_EEXTEND,
    ecreate_record,
)
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secinfo import SecInfo

TAG_UNSIZED = 0x0044455A49534E55  # "UNSIZED\0"
TAG_UNMEASRD = 0x44525341454D4E55  # "UNMEASRD"

_HEADER = struct.Struct("<Q56s")
_ECREATE_BODY = struct.Struct("<IQ44s")
_EADD_BODY = struct.Struct("<QQ40s")
_CHUNK_BODY = struct.Struct("<Q48s")
_EADD = struct.Struct("<QQQ40x")
_CHUNK_HEADER = struct.Struct("<QQ48x")
_PAGE_RECORDS = struct.Struct("<" + "64s256s" * CHUNKS_PER_PAGE)
_PAGE_WRITE = struct.Struct("<QQQ40x" + "QQ48x256s" * CHUNKS_PER_PAGE)
_PAGE_CHUNKS = struct.Struct("<" + "256s" * CHUNKS_PER_PAGE)
assert _PAGE_RECORDS.size == CHUNKS_PER_PAGE * (RECORD_SIZE + CHUNK_SIZE)

_ALL_CHUNKS = (1 << CHUNKS_PER_PAGE) - 1


_PAGE_HEADERS = struct.Struct("<" + "QQ48x" * CHUNKS_PER_PAGE)


def _measured_headers(offset: int) -> bytes:
    """The 16 EEXTEND headers of the page at ``offset``, concatenated."""
    args: list[int] = []
    for c in range(CHUNKS_PER_PAGE):
        args += (TAG_EEXTEND, offset + c * CHUNK_SIZE)
    return _PAGE_HEADERS.pack(*args)


class _PageBuilder:
    """Collects the chunk records of one EADDed page."""

    __slots__ = ("chunks", "eextended", "last", "offset", "secinfo", "unmeasured")

    def __init__(self, offset: int, secinfo: SecInfo) -> None:
        self.offset = offset
        self.secinfo = secinfo
        self.chunks: list[bytes] = [bytes(CHUNK_SIZE)] * CHUNKS_PER_PAGE
        self.eextended = 0
        self.unmeasured = 0
        self.last = -1

    def add_chunk(self, offset: int, data: bytes, measured: bool) -> None:
        rel = offset - self.offset
        if offset % CHUNK_SIZE or not 0 <= rel < PAGE_SIZE:
            raise MalformedStructureError(
                f"SGXS: chunk at {offset:#x} is not a 256-byte chunk of the page EADDed at "
                f"{self.offset:#x}"
            )
        index = rel // CHUNK_SIZE
        if index <= self.last:
            raise MalformedStructureError(
                f"SGXS: chunk at {offset:#x} repeats or comes out of order"
            )
        self.last = index
        self.chunks[index] = data
        if measured:
            self.eextended |= 1 << index
        else:
            self.unmeasured |= 1 << index

    def finish(self) -> ImagePage:
        if self.eextended and (self.eextended != _ALL_CHUNKS or self.unmeasured):
            raise MalformedStructureError(
                f"SGXS: page at {self.offset:#x} is partially measured "
                f"(EEXTEND mask {self.eextended:#06x})"
            )
        return ImagePage(
            self.offset, self.secinfo, b"".join(self.chunks), measured=bool(self.eextended)
        )


def _require_zero(rest: bytes, what: str, pos: int) -> None:
    if any(rest):
        raise MalformedStructureError(f"SGXS: {what} record at byte {pos}: reserved bytes set")


def read_sgxs(data: bytes) -> EnclaveImage:
    """Parse an SGXS stream into an :class:`EnclaveImage` (see the module invariants)."""
    data = bytes(data)
    if len(data) < RECORD_SIZE:
        raise MalformedStructureError(f"SGXS: {len(data)} bytes is too short for ECREATE")
    tag, body = _HEADER.unpack_from(data, 0)
    if tag not in (TAG_ECREATE, TAG_UNSIZED):
        raise MalformedStructureError(f"SGXS: stream must start with ECREATE, found {tag:#018x}")
    ssa_frame_size, size, rest = _ECREATE_BODY.unpack(body)
    if tag == TAG_ECREATE:
        _require_zero(rest, "ECREATE", 0)
    sized = tag == TAG_ECREATE

    pages: list[ImagePage] = []
    seen: set[int] = set()
    current: _PageBuilder | None = None
    pos = RECORD_SIZE
    end = len(data)
    while pos < end:
        if end - pos < RECORD_SIZE:
            raise MalformedStructureError(f"SGXS: truncated record at byte {pos}")
        tag, body = _HEADER.unpack_from(data, pos)
        if tag == TAG_EADD:
            offset, flags, rest = _EADD_BODY.unpack(body)
            _require_zero(rest, "EADD", pos)
            if offset % PAGE_SIZE:
                raise MalformedStructureError(f"SGXS: EADD offset {offset:#x} not page aligned")
            if offset in seen:
                raise MalformedStructureError(f"SGXS: EADD of {offset:#x} twice")
            seen.add(offset)
            if current is not None:
                pages.append(current.finish())
            secinfo = SecInfo.from_raw_flags(flags)
            pos += RECORD_SIZE
            # Fast path: the 16 EEXTENDs of this page, in order.
            if end - pos >= _PAGE_RECORDS.size:
                fields = _PAGE_RECORDS.unpack_from(data, pos)
                if b"".join(fields[0::2]) == _measured_headers(offset):
                    pages.append(ImagePage(offset, secinfo, b"".join(fields[1::2])))
                    current = None
                    pos += _PAGE_RECORDS.size
                    continue
            current = _PageBuilder(offset, secinfo)
        elif tag in (TAG_EEXTEND, TAG_UNMEASRD):
            what = "EEXTEND" if tag == TAG_EEXTEND else "UNMEASRD"
            if end - pos < RECORD_SIZE + CHUNK_SIZE:
                raise MalformedStructureError(f"SGXS: truncated {what} data at byte {pos}")
            offset, rest = _CHUNK_BODY.unpack(body)
            _require_zero(rest, what, pos)
            if current is None:
                raise MalformedStructureError(
                    f"SGXS: {what} at {offset:#x} outside an EADDed page (byte {pos})"
                )
            chunk = data[pos + RECORD_SIZE : pos + RECORD_SIZE + CHUNK_SIZE]
            current.add_chunk(offset, chunk, tag == TAG_EEXTEND)
            pos += RECORD_SIZE + CHUNK_SIZE
        elif tag in (TAG_ECREATE, TAG_UNSIZED):
            raise MalformedStructureError(f"SGXS: second ECREATE at byte {pos}")
        else:
            raise MalformedStructureError(f"SGXS: unknown record tag {tag:#018x} at byte {pos}")
    if current is not None:
        pages.append(current.finish())
    if not sized:
        size = enclave_size_for(max(seen) // PAGE_SIZE + 1 if seen else 0)
    return EnclaveImage(ssa_frame_size, size, tuple(pages))


def write_sgxs(image: EnclaveImage) -> bytes:
    """Encode ``image`` canonically: unmeasured pages as 16 UNMEASRD chunk records."""
    out = [ecreate_record(image.ssa_frame_size, image.size)]
    for page in image.pages:
        chunk_tag = TAG_EEXTEND if page.measured else TAG_UNMEASRD
        args: list[object] = [TAG_EADD, page.offset, page.secinfo.raw_flags]
        for c, piece in enumerate(_PAGE_CHUNKS.unpack(page.data)):
            args += (chunk_tag, page.offset + c * CHUNK_SIZE, piece)
        out.append(_PAGE_WRITE.pack(*args))
    return b"".join(out)


def measure_sgxs(data: bytes) -> Measurement:
    """MRENCLAVE of an SGXS stream (SHA-256 over its measured records)."""
    return measure(read_sgxs(data))
