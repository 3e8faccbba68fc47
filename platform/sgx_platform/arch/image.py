"""Enclave images: the pages an enclave is built from, their MRENCLAVE, and a test builder.

Invariants of :class:`EnclaveImage`: SIZE is a power of two ≥ 8192; SSAFRAMESIZE ≥ 1; pages
are kept in EADD order, each at a distinct 4 KiB-aligned offset below SIZE, of type REG or TCS,
with exactly 4096 data bytes; SECINFO flags carry no PENDING/MODIFIED/PR bit and no W without
R (SDM EADD #GP); a TCS page has permissions 0 (the kernel refuses anything else). A page is
either measured (EADD + 16 EEXTENDs) or not measured at all (EADD only): partially measured
pages are not representable. :func:`measure` gives the MRENCLAVE the CPU would compute
loading the pages in order.

:func:`build_image` is deterministic for a seed: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from operator import attrgetter

from sgx_platform.arch.binary import require_uint
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.measure import (
    PAGE_SIZE,
    iter_measurement_stream,
    measure_pages,
)
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.tcs import Tcs

MIN_ENCLAVE_SIZE = 8192
ZERO_PAGE = bytes(PAGE_SIZE)
#: Upper bound on pages the builder makes (64 GiB of enclave); keeps arithmetic sane.
MAX_BUILD_PAGES = 1 << 24

_STATE_BITS = int(SecInfoFlags.PENDING | SecInfoFlags.MODIFIED | SecInfoFlags.PR)


@dataclass(frozen=True, slots=True)
class ImagePage:
    """One page as EADD receives it; ``measured`` says whether its 16 chunks are EEXTENDed."""

    offset: int
    secinfo: SecInfo
    data: bytes
    measured: bool = True

    def __post_init__(self) -> None:
        require_uint(self.offset, 64, "page offset")
        if self.offset % PAGE_SIZE:
            raise MalformedStructureError(f"page offset {self.offset:#x} is not 4 KiB aligned")
        if not isinstance(self.secinfo, SecInfo):
            raise MalformedStructureError("page secinfo must be a SecInfo")
        if not isinstance(self.data, bytes) or len(self.data) != PAGE_SIZE:
            raise MalformedStructureError(f"page at {self.offset:#x}: data is not 4096 bytes")
        if not isinstance(self.measured, bool):
            raise MalformedStructureError("page measured must be a bool")
        flags = int(self.secinfo.flags)
        where = f"page at {self.offset:#x}"
        if self.secinfo.page_type not in (PageType.REG, PageType.TCS):
            raise MalformedStructureError(f"{where}: EADD takes only REG or TCS pages")
        if flags & _STATE_BITS:
            raise MalformedStructureError(f"{where}: PENDING/MODIFIED/PR set in EADD SECINFO")
        if flags & SecInfoFlags.W and not flags & SecInfoFlags.R:
            raise MalformedStructureError(f"{where}: writable but not readable")
        if self.secinfo.page_type is PageType.TCS and self.secinfo.permissions:
            raise MalformedStructureError(f"{where}: a TCS page must have permissions 0")

    @property
    def measured_flags(self) -> int:
        """SECINFO.FLAGS as EADD measures it."""
        return self.secinfo.measured_flags()


_get_offset = attrgetter("offset")


@dataclass(frozen=True, slots=True)
class EnclaveImage:
    """An enclave's layout: SECS SSAFRAMESIZE and SIZE, and its pages in EADD order."""

    ssa_frame_size: int
    size: int
    pages: tuple[ImagePage, ...]

    def __post_init__(self) -> None:
        require_uint(self.ssa_frame_size, 32, "SSAFRAMESIZE")
        if self.ssa_frame_size < 1:
            raise MalformedStructureError("SSAFRAMESIZE must be at least 1")
        require_uint(self.size, 64, "enclave size")
        if self.size < MIN_ENCLAVE_SIZE or self.size & (self.size - 1):
            raise MalformedStructureError(
                f"enclave size {self.size:#x} is not a power of two >= {MIN_ENCLAVE_SIZE:#x}"
            )
        if not isinstance(self.pages, tuple) or not all(
            isinstance(p, ImagePage) for p in self.pages
        ):
            raise MalformedStructureError("image pages must be a tuple of ImagePage")
        offsets = list(map(_get_offset, self.pages))
        if len(set(offsets)) != len(offsets):
            raise MalformedStructureError("image has two pages at the same offset")
        if offsets and max(offsets) >= self.size:
            raise MalformedStructureError(
                f"page at {max(offsets):#x} lies outside the enclave size {self.size:#x}"
            )

    def page_at(self, offset: int) -> ImagePage | None:
        for page in self.pages:
            if page.offset == offset:
                return page
        return None

    def measurement_stream(self) -> bytes:
        """The exact bytes MRENCLAVE hashes (ECREATE, EADD and EEXTEND records)."""
        return b"".join(iter_measurement_stream(self.ssa_frame_size, self.size, self.pages))


def measure(image: EnclaveImage) -> Measurement:
    """MRENCLAVE of ``image``: ECREATE, then per page EADD and (if measured) 16 EEXTENDs."""
    return measure_pages(image.ssa_frame_size, image.size, image.pages)


def enclave_size_for(pages: int) -> int:
    """The smallest power of two ≥ max(8192, pages * 4096)."""
    need = max(MIN_ENCLAVE_SIZE, pages * PAGE_SIZE)
    return 1 << (need - 1).bit_length()


def _pseudo_random(seed: int, label: bytes, pages: int) -> bytes:
    """Deterministic filler: SHAKE-256 over a labelled seed."""
    if pages == 0:
        return b""
    return hashlib.shake_256(b"sgxemu-image\0" + label + seed.to_bytes(8, "little")).digest(
        pages * PAGE_SIZE
    )


_R = SecInfoFlags.R
_RW = SecInfoFlags.R | SecInfoFlags.W
_RX = SecInfoFlags.R | SecInfoFlags.X


def build_image(
    *,
    code_pages: int = 1,
    data_pages: int = 1,
    heap_pages: int = 0,
    tcs: int = 1,
    seed: int = 0,
    ssa_frame_size: int = 1,
    nssa: int = 2,
) -> EnclaveImage:
    """A synthetic, loadable enclave image.

    Layout from offset 0: ``tcs`` TCS pages (type TCS, permissions 0), each followed in the SSA
    region by ``nssa`` frames of ``ssa_frame_size`` pages (R+W, zero, measured); then
    ``code_pages`` R+X pages of seeded pseudo-random bytes; ``data_pages`` R+W pages of seeded
    pseudo-random bytes; ``heap_pages`` R+W zero pages that are *not* measured. Each TCS has
    OSSA at its SSA frames, NSSA = ``nssa``, OENTRY at the first code page, OFSBASE/OGSBASE at
    the first data page (0 without data pages) and FS/GS limits 0xFFFFFFFF.
    """
    for name, value in (
        ("code_pages", code_pages),
        ("data_pages", data_pages),
        ("heap_pages", heap_pages),
        ("tcs", tcs),
        ("ssa_frame_size", ssa_frame_size),
        ("nssa", nssa),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedStructureError(f"{name} must be a non-negative integer")
    require_uint(seed, 64, "seed")
    if tcs < 1:
        raise MalformedStructureError("an enclave needs at least one TCS")
    if code_pages < 1:
        raise MalformedStructureError("an enclave needs at least one code page for OENTRY")
    if ssa_frame_size < 1 or nssa < 1:
        raise MalformedStructureError("ssa_frame_size and nssa must be at least 1")
    ssa_pages = tcs * nssa * ssa_frame_size
    total = tcs + ssa_pages + code_pages + data_pages + heap_pages
    if total > MAX_BUILD_PAGES:
        raise MalformedStructureError(f"{total} pages is more than the builder makes")

    ssa_base = tcs * PAGE_SIZE
    code_base = ssa_base + ssa_pages * PAGE_SIZE
    data_base = code_base + code_pages * PAGE_SIZE
    heap_base = data_base + data_pages * PAGE_SIZE
    tls_base = data_base if data_pages else 0

    pages: list[ImagePage] = []
    tcs_secinfo = SecInfo(PageType.TCS)
    for i in range(tcs):
        control = Tcs(
            ossa=ssa_base + i * nssa * ssa_frame_size * PAGE_SIZE,
            nssa=nssa,
            oentry=code_base,
            ofsbase=tls_base,
            ogsbase=tls_base,
        )
        pages.append(ImagePage(i * PAGE_SIZE, tcs_secinfo, control.to_bytes()))
    rw = SecInfo(PageType.REG, _RW)
    pages.extend(ImagePage(ssa_base + i * PAGE_SIZE, rw, ZERO_PAGE) for i in range(ssa_pages))
    code = _pseudo_random(seed, b"code", code_pages)
    rx = SecInfo(PageType.REG, _RX)
    pages.extend(
        ImagePage(code_base + i * PAGE_SIZE, rx, code[i * PAGE_SIZE : (i + 1) * PAGE_SIZE])
        for i in range(code_pages)
    )
    data = _pseudo_random(seed, b"data", data_pages)
    pages.extend(
        ImagePage(data_base + i * PAGE_SIZE, rw, data[i * PAGE_SIZE : (i + 1) * PAGE_SIZE])
        for i in range(data_pages)
    )
    pages.extend(
        ImagePage(heap_base + i * PAGE_SIZE, rw, ZERO_PAGE, measured=False)
        for i in range(heap_pages)
    )
    return EnclaveImage(ssa_frame_size, enclave_size_for(total), tuple(pages))
