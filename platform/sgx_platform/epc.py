"""The Enclave Page Cache: a capacity in 4 KiB pages, per-enclave accounting, EWB/ELDU eviction.

Invariants:

* ``used_pages == Σ over enclaves (1 SECS + resident REG/TCS pages + VA pages) <= capacity``.
  VA pages follow the kernel (§1.7): one per 512 pages of ``page_cnt``, where ``page_cnt``
  counts the SECS and every page ever added; the first is taken at ECREATE; VA pages are
  never evicted and only freed with the enclave. The SECS is never evicted (a simplification of
  the kernel, which evicts it after its last child).
* Eviction (when enabled) writes the least recently used REG/TCS page to the enclave's
  *untrusted* backing store as ``AES-128-GCM(boot key, contents)`` with the PCMD (SECINFO,
  ENCLAVEID, MAC) beside it. The per-boot key never leaves this object. Each EWB takes a fresh
  version from a per-boot counter and keeps it in the page's VA slot (trusted, inside the EPC);
  the version is the GCM nonce and, with the PCMD's first 112 bytes and the linear address, the
  associated data. ELDU accepts a copy only if it authenticates under the slot's version, so an
  altered copy and a replayed older copy are both refused (:class:`EvictedPageIntegrityError`,
  SGX_MAC_COMPARE_FAIL), and the slot is emptied only by a successful ELDU or a removal.
* Without eviction, an allocation that does not fit raises :class:`EpcExhaustedError` naming
  the pages asked for and the pages free; with eviction it raises only when nothing is left to
  evict.
* This module knows nothing about permissions: it stores each page's EPCM type and permissions
  and hands them back; the CPU enforces them.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.errors import EpcExhaustedError, EvictedPageIntegrityError

PAGE_SIZE = 4096
VA_SLOT_COUNT = 512
PCMD_SIZE = 128
EVICTED_COPY_SIZE = PAGE_SIZE + PCMD_SIZE

# PCMD (§1.7): SECINFO[64] @0, ENCLAVEID u64 @64, reserved[40] @72, MAC[16] @112.
_PCMD = struct.Struct("<64sQ40s16s")
assert _PCMD.size == PCMD_SIZE
_PCMD_MACED = 112
_AAD_TAIL = struct.Struct("<QQ")  # linear address, version


@dataclass(frozen=True, slots=True)
class EpcmInfo:
    """A page's EPCM type and R/W/X permissions (fixed for SGX1 pages)."""

    page_type: PageType
    permissions: SecInfoFlags

    def secinfo(self) -> SecInfo:
        return SecInfo(self.page_type, self.permissions)


@dataclass(frozen=True, slots=True)
class EnclaveEpcUsage:
    """EPC pages one enclave holds (resident) and has evicted."""

    secs: int
    resident: int
    va: int
    evicted: int

    @property
    def total_resident(self) -> int:
        return self.secs + self.resident + self.va


@dataclass(slots=True)
class _ResidentPage:
    info: EpcmInfo
    data: bytearray


@dataclass(slots=True)
class _EnclavePages:
    page_cnt: int = 0
    va_pages: int = 0
    resident: dict[int, _ResidentPage] = field(default_factory=dict)
    evicted: dict[int, EpcmInfo] = field(default_factory=dict)
    va_slots: dict[int, int] = field(default_factory=dict)  # linaddr -> version (trusted)
    backing: dict[int, bytes] = field(default_factory=dict)  # linaddr -> copy (untrusted)


class Epc:
    """The EPC of one boot: ``capacity_pages`` pages, eviction optional."""

    __slots__ = ("_capacity", "_enclaves", "_eviction", "_gcm", "_lru", "_next_version", "_used")

    def __init__(self, capacity_pages: int, *, eviction: bool = True) -> None:
        if capacity_pages < 2:
            raise ValueError("the EPC needs at least 2 pages (a SECS and a VA page)")
        self._capacity = capacity_pages
        self._eviction = eviction
        self._used = 0
        self._enclaves: dict[int, _EnclavePages] = {}
        self._lru: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._gcm = AESGCM(AESGCM.generate_key(bit_length=128))
        self._next_version = 1

    # -- accounting ------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def eviction(self) -> bool:
        return self._eviction

    @property
    def used_pages(self) -> int:
        return self._used

    @property
    def free_pages(self) -> int:
        return self._capacity - self._used

    def usage(self, eid: int) -> EnclaveEpcUsage:
        pages = self._pages(eid)
        return EnclaveEpcUsage(
            secs=1, resident=len(pages.resident), va=pages.va_pages, evicted=len(pages.evicted)
        )

    def check_room(self, pages: int, what: str) -> None:
        """Raise :class:`EpcExhaustedError` unless ``pages`` more pages could be provided."""
        available = self.free_pages + (len(self._lru) if self._eviction else 0)
        if pages > available:
            raise EpcExhaustedError(pages, self.free_pages, self._capacity, what)

    def _allocate(self, pages: int, what: str) -> None:
        """Take ``pages`` free pages, evicting LRU pages first if allowed and needed."""
        if pages <= self.free_pages:
            self._used += pages
            return
        if not self._eviction:
            raise EpcExhaustedError(pages, self.free_pages, self._capacity, what)
        self.check_room(pages, what)
        while self.free_pages < pages:
            eid, linaddr = next(iter(self._lru))
            self.evict(eid, linaddr)
        self._used += pages

    def _grow(self, pages: _EnclavePages) -> int:
        """VA pages needed to account one more page (kernel ``sgx_encl_grow``)."""
        return 1 if pages.page_cnt % VA_SLOT_COUNT == 0 else 0

    # -- enclaves ---------------------------------------------------------------------------

    def create_enclave(self, eid: int) -> None:
        """ECREATE: the SECS page and the enclave's first VA page."""
        if eid in self._enclaves:
            raise ValueError(f"enclave {eid} already has EPC pages")
        pages = _EnclavePages()
        va = self._grow(pages)
        self._allocate(1 + va, f"ECREATE needs a SECS page and {va} VA page(s)")
        pages.va_pages += va
        pages.page_cnt = 1
        self._enclaves[eid] = pages

    def destroy_enclave(self, eid: int) -> None:
        """Free every page of the enclave (resident, SECS, VA) and drop its backing copies."""
        pages = self._enclaves.pop(eid)
        for linaddr in pages.resident:
            self._lru.pop((eid, linaddr), None)
        self._used -= len(pages.resident) + 1 + pages.va_pages

    def add_page(self, eid: int, linaddr: int, info: EpcmInfo, contents: bytes) -> None:
        """EADD's EPC side: a new resident page (the caller checked the address is free)."""
        if len(contents) != PAGE_SIZE:
            raise ValueError("an EPC page is 4096 bytes")
        pages = self._pages(eid)
        if linaddr in pages.resident or linaddr in pages.evicted:
            raise ValueError(f"enclave {eid} already has a page at {linaddr:#x}")
        va = self._grow(pages)
        self._allocate(1 + va, f"adding a page at {linaddr:#x} ({va} VA page(s) with it)")
        pages.va_pages += va
        pages.page_cnt += 1
        pages.resident[linaddr] = _ResidentPage(info, bytearray(contents))
        self._lru[(eid, linaddr)] = None

    def remove_page(self, eid: int, linaddr: int) -> None:
        """EREMOVE of a REG/TCS page, resident or evicted (its VA slot is freed too)."""
        pages = self._pages(eid)
        if linaddr in pages.resident:
            del pages.resident[linaddr]
            self._lru.pop((eid, linaddr), None)
            self._used -= 1
        elif linaddr in pages.evicted:
            del pages.evicted[linaddr]
            pages.va_slots.pop(linaddr, None)
            pages.backing.pop(linaddr, None)
        else:
            raise KeyError(linaddr)

    def page_info(self, eid: int, linaddr: int) -> EpcmInfo | None:
        """The EPCM entry of a page, resident or evicted, without loading it."""
        pages = self._pages(eid)
        if linaddr in pages.resident:
            return pages.resident[linaddr].info
        return pages.evicted.get(linaddr)

    def linear_addresses(self, eid: int) -> list[int]:
        pages = self._pages(eid)
        return sorted([*pages.resident, *pages.evicted])

    def page(self, eid: int, linaddr: int) -> tuple[EpcmInfo, bytearray] | None:
        """A page's EPCM entry and its (mutable) contents, loading it back if evicted."""
        pages = self._pages(eid)
        resident = pages.resident.get(linaddr)
        if resident is None:
            if linaddr not in pages.evicted:
                return None
            resident = self._load(eid, pages, linaddr)
        self._lru.move_to_end((eid, linaddr))
        return resident.info, resident.data

    def is_resident(self, eid: int, linaddr: int) -> bool:
        return linaddr in self._pages(eid).resident

    # -- EWB / ELDU -------------------------------------------------------------------------

    def evict(self, eid: int, linaddr: int) -> None:
        """EWB: encrypt the page to the untrusted backing store, version into its VA slot."""
        pages = self._pages(eid)
        page = pages.resident.pop(linaddr)
        self._lru.pop((eid, linaddr), None)
        version = self._next_version
        self._next_version += 1
        pcmd_head = _PCMD.pack(page.info.secinfo().to_bytes(), eid, bytes(40), bytes(16))[
            :_PCMD_MACED
        ]
        sealed = self._gcm.encrypt(
            _nonce(version), bytes(page.data), pcmd_head + _AAD_TAIL.pack(linaddr, version)
        )
        ciphertext, tag = sealed[:PAGE_SIZE], sealed[PAGE_SIZE:]
        pages.backing[linaddr] = ciphertext + pcmd_head + tag
        pages.va_slots[linaddr] = version
        pages.evicted[linaddr] = page.info
        self._used -= 1

    def _load(self, eid: int, pages: _EnclavePages, linaddr: int) -> _ResidentPage:
        """ELDU: authenticate the backing copy against the VA slot and bring it back."""
        self._allocate(1, f"reloading the evicted page at {linaddr:#x}")
        try:
            contents, info = self._open_copy(eid, pages, linaddr)
        except BaseException:
            self._used -= 1
            raise
        del pages.evicted[linaddr]
        del pages.va_slots[linaddr]
        del pages.backing[linaddr]
        page = _ResidentPage(info, bytearray(contents))
        pages.resident[linaddr] = page
        self._lru[(eid, linaddr)] = None
        return page

    def _open_copy(self, eid: int, pages: _EnclavePages, linaddr: int) -> tuple[bytes, EpcmInfo]:
        version = pages.va_slots[linaddr]
        copy = pages.backing.get(linaddr, b"")
        where = f"enclave {eid} page {linaddr:#x}"
        if len(copy) != EVICTED_COPY_SIZE:
            raise EvictedPageIntegrityError(f"{where}: the evicted copy is missing or truncated")
        ciphertext, pcmd = copy[:PAGE_SIZE], copy[PAGE_SIZE:]
        secinfo_raw, pcmd_eid, _reserved, tag = _PCMD.unpack(pcmd)
        try:
            contents = self._gcm.decrypt(
                _nonce(version),
                ciphertext + tag,
                pcmd[:_PCMD_MACED] + _AAD_TAIL.pack(linaddr, version),
            )
        except InvalidTag:
            raise EvictedPageIntegrityError(
                f"{where}: the evicted copy does not authenticate under VA version {version} "
                "(altered or replayed)"
            ) from None
        # Authenticated from here on: the PCMD fields are the ones EWB wrote.
        try:
            secinfo = SecInfo.from_bytes(secinfo_raw)
        except MalformedStructureError as e:  # pragma: no cover - EWB wrote a valid one
            raise EvictedPageIntegrityError(f"{where}: bad SECINFO in PCMD") from e
        if pcmd_eid != eid:  # pragma: no cover - the AAD binds it
            raise EvictedPageIntegrityError(f"{where}: PCMD names enclave {pcmd_eid}")
        return contents, EpcmInfo(secinfo.page_type, secinfo.permissions)

    # -- the untrusted backing store (what the kernel holds) ---------------------------------

    def evicted_copy(self, eid: int, linaddr: int) -> bytes:
        """The backing-store copy of an evicted page: ciphertext (4096) || PCMD (128)."""
        return self._pages(eid).backing[linaddr]

    def replace_evicted_copy(self, eid: int, linaddr: int, copy: bytes) -> None:
        """Overwrite a backing-store copy, as whoever controls untrusted memory can."""
        pages = self._pages(eid)
        if linaddr not in pages.evicted:
            raise KeyError(linaddr)
        pages.backing[linaddr] = bytes(copy)

    def _pages(self, eid: int) -> _EnclavePages:
        try:
            return self._enclaves[eid]
        except KeyError:
            raise KeyError(f"enclave {eid} has no EPC pages") from None

    def __repr__(self) -> str:
        return (
            f"Epc(capacity={self._capacity}, used={self._used}, eviction={self._eviction}, "
            f"enclaves={len(self._enclaves)})"
        )


def _nonce(version: int) -> bytes:
    return version.to_bytes(12, "little")
