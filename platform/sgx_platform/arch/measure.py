"""MRENCLAVE measurement — SGX-REFERENCE §4.1, §4.2.

MRENCLAVE is one SHA-256 stream of 64-byte records, in ioctl order:

* ECREATE: ``"ECREATE\\0"``, SSAFRAMESIZE u32 @8, SIZE u64 @12, zero to 64 bytes;
* EADD: ``"EADD\\0\\0\\0\\0"``, page offset u64 @8, SECINFO.FLAGS u64 @16 (for a TCS with R/W/X
  zeroed, as the CPU measures it), zero to 64 bytes;
* EEXTEND: ``"EEXTEND\\0"``, chunk offset u64 @8, zero to 64 bytes, then the 256 chunk bytes.

Invariants: a page offset is 4 KiB aligned and below SIZE; a chunk offset is 256-byte aligned
inside an EADDed page (the measurer does not track pages, the CPU does; the image-level
functions only measure whole pages). :class:`MrEnclaveMeasurer` follows the instructions one
at a time; :func:`iter_measurement_stream` produces the same bytes for a whole image in large
batches (one ``struct.pack`` per batch of pages, no per-chunk Python work beyond an argument
slot), so hashing runs close to raw SHA-256 speed.
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import chain, groupby
from operator import attrgetter
from typing import Protocol

from sgx_platform.arch.binary import require_bytes, require_uint
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secinfo import SecInfo

PAGE_SIZE = 4096
CHUNK_SIZE = 256
CHUNKS_PER_PAGE = PAGE_SIZE // CHUNK_SIZE
RECORD_SIZE = 64

TAG_ECREATE = 0x0045544145524345  # "ECREATE\0"
TAG_EADD = 0x0000000044444145  # "EADD\0\0\0\0"
TAG_EEXTEND = 0x00444E4554584545  # "EEXTEND\0"

_TAG_EADD_BYTES = TAG_EADD.to_bytes(8, "little")
_TAG_EEXTEND_BYTES = TAG_EEXTEND.to_bytes(8, "little")

_ECREATE = struct.Struct("<QIQ44x")
_EADD = struct.Struct("<QQQ40x")
_EEXTEND = struct.Struct("<QQ48x")
assert _ECREATE.size == _EADD.size == _EEXTEND.size == RECORD_SIZE

_CHUNKS = struct.Struct("<" + "256s" * CHUNKS_PER_PAGE)
_EEXTEND_PAGE = struct.Struct("<" + "8sQ48x256s" * CHUNKS_PER_PAGE)

#: Pages per batch of :func:`iter_measurement_stream` (about 650 KiB of stream per batch).
BATCH_PAGES = 128


def ecreate_record(ssa_frame_size: int, size: int) -> bytes:
    require_uint(ssa_frame_size, 32, "ECREATE SSAFRAMESIZE")
    require_uint(size, 64, "ECREATE SIZE")
    return _ECREATE.pack(TAG_ECREATE, ssa_frame_size, size)


def eadd_record(offset: int, measured_flags: int) -> bytes:
    """The EADD record; ``measured_flags`` is :meth:`SecInfo.measured_flags` (TCS: R/W/X = 0)."""
    require_uint(offset, 64, "EADD offset")
    require_uint(measured_flags, 64, "EADD SECINFO.FLAGS")
    return _EADD.pack(TAG_EADD, offset, measured_flags)


def eextend_header(offset: int) -> bytes:
    require_uint(offset, 64, "EEXTEND offset")
    return _EEXTEND.pack(TAG_EEXTEND, offset)


class MrEnclaveMeasurer:
    """Incremental MRENCLAVE, one ECREATE/EADD/EEXTEND at a time, as the CPU computes it."""

    __slots__ = ("_final", "_hash", "_size")

    def __init__(self, ssa_frame_size: int, size: int) -> None:
        self._hash = hashlib.sha256(ecreate_record(ssa_frame_size, size))
        self._size = size
        self._final: Measurement | None = None

    @property
    def size(self) -> int:
        return self._size

    def _check_open(self) -> None:
        if self._final is not None:
            raise MalformedStructureError("measurement already finalized (EINIT)")

    def _check_page(self, offset: int) -> None:
        require_uint(offset, 64, "page offset")
        if offset % PAGE_SIZE or offset >= self._size:
            raise MalformedStructureError(
                f"page offset {offset:#x} not 4 KiB aligned inside an enclave of {self._size:#x}"
            )

    def eadd(self, offset: int, secinfo: SecInfo) -> None:
        """Measure EADD of the page at ``offset`` (TCS measured with R/W/X zeroed)."""
        self._check_open()
        self._check_page(offset)
        self._hash.update(_EADD.pack(TAG_EADD, offset, secinfo.measured_flags()))

    def eextend(self, offset: int, chunk: bytes) -> None:
        """Measure EEXTEND of one 256-byte chunk at the 256-aligned ``offset``."""
        self._check_open()
        require_uint(offset, 64, "chunk offset")
        if offset % CHUNK_SIZE or offset >= self._size:
            raise MalformedStructureError(f"chunk offset {offset:#x} not 256-aligned in enclave")
        require_bytes(chunk, CHUNK_SIZE, "EEXTEND chunk")
        self._hash.update(_EEXTEND.pack(TAG_EEXTEND, offset) + chunk)

    def eextend_page(self, offset: int, page: bytes) -> None:
        """Measure the 16 EEXTENDs of a whole page, in one update."""
        self._check_open()
        self._check_page(offset)
        require_bytes(page, PAGE_SIZE, "page")
        args: list[object] = []
        for k, piece in enumerate(_CHUNKS.unpack(page)):
            args += (_TAG_EEXTEND_BYTES, offset + k * CHUNK_SIZE, piece)
        self._hash.update(_EEXTEND_PAGE.pack(*args))

    def add_page(self, offset: int, secinfo: SecInfo, page: bytes, *, measured: bool) -> None:
        """EADD, then (``measured``) EEXTEND of all 16 chunks — the kernel's ADD_PAGES order."""
        self.eadd(offset, secinfo)
        if measured:
            self.eextend_page(offset, page)

    def update_raw(self, records: bytes) -> None:
        """Feed already-encoded measurement records (e.g. from an SGXS stream)."""
        self._check_open()
        if len(records) % RECORD_SIZE:
            raise MalformedStructureError("measurement records must be whole 64-byte blocks")
        self._hash.update(records)

    def finalize(self) -> Measurement:
        """MRENCLAVE (EINIT). Idempotent; no record can be added afterwards."""
        if self._final is None:
            self._final = Measurement(self._hash.digest())
        return self._final


# -- batched whole-image measurement -----------------------------------------------------------

#: Argument slots per page in a batch: EADD (tag, offset, flags) + 16 x (tag, offset, data).
_SLOTS = 3 + 3 * CHUNKS_PER_PAGE


@lru_cache(maxsize=8)
def _page_struct(pages: int) -> struct.Struct:
    """The layout of ``pages`` measured pages: EADD record + 16 x (EEXTEND header + chunk)."""
    return struct.Struct("<" + ("8sQQ40x" + "8sQ48x256s" * CHUNKS_PER_PAGE) * pages)


@lru_cache(maxsize=8)
def _template(pages: int) -> tuple[object, ...]:
    args: list[object] = [None] * (_SLOTS * pages)
    args[0::_SLOTS] = [_TAG_EADD_BYTES] * pages
    for k in range(CHUNKS_PER_PAGE):
        args[3 + 3 * k :: _SLOTS] = [_TAG_EEXTEND_BYTES] * pages
    return tuple(args)


class MeasurablePage(Protocol):
    """What the batched measurement reads from a page (e.g. :class:`~.image.ImagePage`)."""

    @property
    def offset(self) -> int: ...

    @property
    def measured_flags(self) -> int: ...

    @property
    def data(self) -> bytes: ...

    @property
    def measured(self) -> bool: ...


_get_offset = attrgetter("offset")
_get_flags = attrgetter("measured_flags")
_get_data = attrgetter("data")
_get_measured = attrgetter("measured")


def _check_offsets(offsets: list[int], size: int) -> None:
    if min(offsets) < 0 or max(offsets) >= size or any(map((PAGE_SIZE - 1).__and__, offsets)):
        raise MalformedStructureError("page offset not 4 KiB aligned inside the enclave")


def _measured_batch(pages: Sequence[MeasurablePage], size: int) -> bytes:
    """EADD + 16 EEXTEND records (with data) for each page, as one bytes object."""
    n = len(pages)
    offsets: list[int] = list(map(_get_offset, pages))
    _check_offsets(offsets, size)
    datas: list[bytes] = list(map(_get_data, pages))
    args = list(_template(n))
    args[1::_SLOTS] = offsets
    args[2::_SLOTS] = list(map(_get_flags, pages))
    try:
        pieces = list(chain.from_iterable(map(_CHUNKS.unpack, datas)))
    except (struct.error, TypeError):
        raise MalformedStructureError("page data is not 4096 bytes") from None
    contiguous = offsets == list(range(offsets[0], offsets[0] + n * PAGE_SIZE, PAGE_SIZE))
    for k in range(CHUNKS_PER_PAGE):
        delta = k * CHUNK_SIZE
        if contiguous:
            first = offsets[0] + delta
            args[4 + 3 * k :: _SLOTS] = range(first, first + n * PAGE_SIZE, PAGE_SIZE)
        else:
            args[4 + 3 * k :: _SLOTS] = [o + delta for o in offsets]
        args[5 + 3 * k :: _SLOTS] = pieces[k::CHUNKS_PER_PAGE]
    return _page_struct(n).pack(*args)


def _unmeasured_batch(pages: Sequence[MeasurablePage], size: int) -> bytes:
    """The EADD records of pages added without EEXTEND."""
    offsets: list[int] = list(map(_get_offset, pages))
    _check_offsets(offsets, size)
    args: list[object] = [_TAG_EADD_BYTES] * (3 * len(pages))
    args[1::3] = offsets
    args[2::3] = list(map(_get_flags, pages))
    return struct.pack("<" + "8sQQ40x" * len(pages), *args)


def iter_measurement_stream(
    ssa_frame_size: int, size: int, pages: Iterable[MeasurablePage]
) -> Iterator[bytes]:
    """The exact bytes MRENCLAVE hashes, in batches of up to :data:`BATCH_PAGES` pages.

    ``pages`` come in EADD order; ``measured_flags`` is SECINFO.FLAGS as measured (a TCS with
    R/W/X zeroed). Offsets are checked (4 KiB aligned, below ``size``); duplicate offsets are
    the caller's business (:class:`~.image.EnclaveImage` forbids them).
    """
    yield ecreate_record(ssa_frame_size, size)
    for measured, group in groupby(pages, key=_get_measured):
        run = list(group)
        batch = _measured_batch if measured else _unmeasured_batch
        for start in range(0, len(run), BATCH_PAGES):
            yield batch(run[start : start + BATCH_PAGES], size)


#: Below this many pages, hashing in the calling thread is cheaper than starting a worker.
PIPELINE_MIN_PAGES = 2048


def measure_stream(chunks: Iterable[bytes], *, pipelined: bool = False) -> Measurement:
    """SHA-256 over measurement stream batches.

    ``pipelined`` hashes in a worker thread while the caller builds the next batch: hashlib
    releases the GIL while it hashes, so building and hashing overlap on two cores. The bounded
    queue keeps the builder at most two batches ahead and makes it block (releasing the GIL)
    whenever the hasher is behind. The digest is the same either way.
    """
    h = hashlib.sha256()
    if not pipelined:
        for chunk in chunks:
            h.update(chunk)
        return Measurement(h.digest())
    todo: queue.Queue[bytes | None] = queue.Queue(maxsize=2)

    def hasher() -> None:
        while (item := todo.get()) is not None:
            h.update(item)

    worker = threading.Thread(target=hasher, name="mrenclave-sha256", daemon=True)
    worker.start()
    try:
        for chunk in chunks:
            todo.put(chunk)
    finally:
        todo.put(None)
        worker.join()
    return Measurement(h.digest())


def measure_pages(ssa_frame_size: int, size: int, pages: Sequence[MeasurablePage]) -> Measurement:
    """MRENCLAVE of an enclave built by ECREATE and then ``pages`` in EADD order."""
    stream = iter_measurement_stream(ssa_frame_size, size, pages)
    return measure_stream(stream, pipelined=len(pages) >= PIPELINE_MIN_PAGES)
