"""EPC accounting (§1.7), exhaustion errors, EWB/ELDU integrity and anti-replay."""

from __future__ import annotations

import pytest

from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.secinfo import PageType, SecInfoFlags
from sgx_platform.epc import PAGE_SIZE, Epc, EpcmInfo
from sgx_platform.errors import EpcExhaustedError, EvictedPageIntegrityError

RW = EpcmInfo(PageType.REG, SecInfoFlags.R | SecInfoFlags.W)
BASE = 0x10000


def _page(n: int) -> bytes:
    return bytes([n & 0xFF]) * PAGE_SIZE


def test_ecreate_takes_secs_and_first_va_page() -> None:
    epc = Epc(8, eviction=False)
    epc.create_enclave(1)
    assert epc.used_pages == 2
    u = epc.usage(1)
    assert (u.secs, u.resident, u.va, u.evicted) == (1, 0, 1, 0)


def test_va_page_every_512_pages_counting_the_secs() -> None:
    epc = Epc(2000, eviction=False)
    epc.create_enclave(1)
    for i in range(511):  # page_cnt 1 -> 512: still one VA page
        epc.add_page(1, BASE + i * PAGE_SIZE, RW, _page(i))
    assert epc.usage(1).va == 1
    epc.add_page(1, BASE + 511 * PAGE_SIZE, RW, _page(0))  # page_cnt 512 % 512 == 0 -> VA #2
    assert epc.usage(1).va == 2
    assert epc.used_pages == 1 + 512 + 2
    # VA pages are not freed by removing pages, only with the enclave.
    epc.remove_page(1, BASE)
    assert epc.usage(1).va == 2
    epc.destroy_enclave(1)
    assert epc.used_pages == 0


def test_without_eviction_the_error_names_pages_asked_and_free() -> None:
    epc = Epc(4, eviction=False)
    epc.create_enclave(1)
    epc.add_page(1, BASE, RW, _page(1))
    epc.add_page(1, BASE + PAGE_SIZE, RW, _page(2))
    with pytest.raises(EpcExhaustedError) as info:
        epc.add_page(1, BASE + 2 * PAGE_SIZE, RW, _page(3))
    assert (info.value.requested, info.value.free, info.value.capacity) == (1, 0, 4)
    assert "1 page(s) requested, 0 free of 4" in str(info.value)
    with pytest.raises(EpcExhaustedError) as info2:
        epc.check_room(5, "ADD_PAGES of 5 pages")
    assert "5 page(s) requested, 0 free" in str(info2.value)
    with pytest.raises(EpcExhaustedError, match="ECREATE"):
        epc.create_enclave(2)


def test_eviction_keeps_contents_and_permissions() -> None:
    epc = Epc(4)
    epc.create_enclave(1)
    ro = EpcmInfo(PageType.REG, SecInfoFlags.R)
    for i in range(10):
        epc.add_page(1, BASE + i * PAGE_SIZE, ro if i % 2 else RW, _page(i))
    assert epc.used_pages == 4
    u = epc.usage(1)
    assert u.resident == 2 and u.evicted == 8
    for i in range(10):
        got = epc.page(1, BASE + i * PAGE_SIZE)
        assert got is not None
        info, data = got
        assert bytes(data) == _page(i)
        assert info == (ro if i % 2 else RW)
    assert epc.used_pages == 4


def test_eviction_is_lru() -> None:
    epc = Epc(5)
    epc.create_enclave(1)
    a, b, c = BASE, BASE + PAGE_SIZE, BASE + 2 * PAGE_SIZE
    epc.add_page(1, a, RW, _page(1))
    epc.add_page(1, b, RW, _page(2))
    epc.add_page(1, c, RW, _page(3))
    assert epc.free_pages == 0
    epc.page(1, a)  # a becomes most recently used
    epc.add_page(1, BASE + 3 * PAGE_SIZE, RW, _page(4))
    assert epc.is_resident(1, a) and not epc.is_resident(1, b) and epc.is_resident(1, c)


def test_nothing_to_evict_still_exhausts() -> None:
    epc = Epc(2)
    epc.create_enclave(1)
    with pytest.raises(EpcExhaustedError):
        epc.add_page(1, BASE, RW, _page(0))


def _evicted_setup() -> tuple[Epc, int]:
    epc = Epc(3)
    epc.create_enclave(1)
    epc.add_page(1, BASE, RW, _page(7))
    epc.add_page(1, BASE + PAGE_SIZE, RW, _page(8))  # evicts BASE
    assert not epc.is_resident(1, BASE)
    return epc, BASE


@pytest.mark.parametrize(
    "where", [0, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 64, PAGE_SIZE + 100, PAGE_SIZE + 127]
)
def test_tampered_evicted_copy_is_detected(where: int) -> None:
    # Bytes: ciphertext [0,4096), PCMD SECINFO [4096,4160), ENCLAVEID, reserved, MAC [4208,4224).
    epc, addr = _evicted_setup()
    copy = bytearray(epc.evicted_copy(1, addr))
    copy[where] ^= 0x01
    epc.replace_evicted_copy(1, addr, bytes(copy))
    with pytest.raises(EvictedPageIntegrityError) as info:
        epc.page(1, addr)
    assert info.value.code is SgxErrorCode.MAC_COMPARE_FAIL
    # The page stays evicted (not silently replaced) and the EPC accounting is intact.
    assert not epc.is_resident(1, addr)
    assert epc.used_pages == epc.usage(1).total_resident


def test_pcmd_secinfo_cannot_be_upgraded() -> None:
    epc = Epc(3)
    epc.create_enclave(1)
    ro = EpcmInfo(PageType.REG, SecInfoFlags.R)
    epc.add_page(1, BASE, ro, _page(7))
    epc.add_page(1, BASE + PAGE_SIZE, RW, _page(8))
    copy = bytearray(epc.evicted_copy(1, BASE))
    copy[PAGE_SIZE] |= int(SecInfoFlags.W)  # SECINFO.FLAGS byte 0: grant W
    epc.replace_evicted_copy(1, BASE, bytes(copy))
    with pytest.raises(EvictedPageIntegrityError):
        epc.page(1, BASE)


def test_truncated_or_missing_copy_is_detected() -> None:
    epc, addr = _evicted_setup()
    epc.replace_evicted_copy(1, addr, epc.evicted_copy(1, addr)[:-1])
    with pytest.raises(EvictedPageIntegrityError, match="truncated"):
        epc.page(1, addr)


def test_replayed_older_copy_is_detected() -> None:
    epc, addr = _evicted_setup()
    old = epc.evicted_copy(1, addr)
    got = epc.page(1, addr)  # ELDU (evicts the other page)
    assert got is not None
    got[1][0:4] = b"new!"
    epc.page(1, BASE + PAGE_SIZE)  # brings the other back, evicting addr again
    assert not epc.is_resident(1, addr)
    assert epc.evicted_copy(1, addr) != old
    epc.replace_evicted_copy(1, addr, old)
    with pytest.raises(EvictedPageIntegrityError, match="replayed"):
        epc.page(1, addr)


def test_copy_of_another_page_is_detected() -> None:
    epc = Epc(3)
    epc.create_enclave(1)
    for i in range(3):
        epc.add_page(1, BASE + i * PAGE_SIZE, RW, _page(i))
    # pages 0 and 1 are evicted now; swap their copies
    c0, c1 = epc.evicted_copy(1, BASE), epc.evicted_copy(1, BASE + PAGE_SIZE)
    epc.replace_evicted_copy(1, BASE, c1)
    epc.replace_evicted_copy(1, BASE + PAGE_SIZE, c0)
    with pytest.raises(EvictedPageIntegrityError):
        epc.page(1, BASE)


def test_copy_from_another_boot_is_detected() -> None:
    epc, addr = _evicted_setup()
    other, _ = _evicted_setup()  # a different boot key, same version numbers
    epc.replace_evicted_copy(1, addr, other.evicted_copy(1, addr))
    with pytest.raises(EvictedPageIntegrityError):
        epc.page(1, addr)


def test_remove_evicted_page_frees_slot() -> None:
    epc, addr = _evicted_setup()
    epc.remove_page(1, addr)
    assert epc.page(1, addr) is None
    assert epc.usage(1).evicted == 0
    with pytest.raises(KeyError):
        epc.remove_page(1, addr)


def test_destroy_frees_everything_across_enclaves() -> None:
    epc = Epc(6)
    epc.create_enclave(1)
    epc.create_enclave(2)
    for i in range(4):
        epc.add_page(1, BASE + i * PAGE_SIZE, RW, _page(i))
    epc.add_page(2, BASE, RW, _page(9))  # evicts one of enclave 1's pages
    assert epc.usage(1).evicted >= 1
    epc.destroy_enclave(1)
    assert epc.used_pages == 3
    with pytest.raises(KeyError):
        epc.usage(1)
