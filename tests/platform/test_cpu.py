"""The CPU outside EINIT: ECREATE/EADD/EEXTEND checks, enclave memory and EPCM permissions,
EDBGRD/EDBGWR, EREPORT, EREMOVE, reset/restart staleness, and eviction with a tiny EPC."""

from __future__ import annotations

import dataclasses

import pytest

from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.image import EnclaveImage, ImagePage
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import TargetInfo
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.tcs import Tcs
from sgx_platform.cpu import SgxCpu
from sgx_platform.epc import PAGE_SIZE
from sgx_platform.errors import (
    EnclaveInstructionError,
    EpcExhaustedError,
    EvictedPageIntegrityError,
    GeneralProtectionFault,
    PageFault,
    ReportVerificationError,
    StaleEnclaveError,
)
from sgx_platform.fuses import PlatformFuses

BASE = 0x1_0000_0000
MODE64 = int(AttributeFlags.MODE64BIT)
DEBUG = int(AttributeFlags.DEBUG)
R, W, X = SecInfoFlags.R, SecInfoFlags.W, SecInfoFlags.X


def _secs(**kw) -> Secs:  # type: ignore[no-untyped-def]
    base = {
        "size": 0x4000,
        "base_address": BASE,
        "ssa_frame_size": 1,
        "attributes": Attributes(MODE64, 3),
    }
    base.update(kw)
    return Secs(**base)  # type: ignore[arg-type]


# -- ECREATE ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "secs"),
    [
        ("SSAFRAMESIZE 0", _secs(ssa_frame_size=0)),
        ("SIZE not a power of two", _secs(size=0x3000)),
        ("SIZE below 8192", _secs(size=0x1000, base_address=BASE)),
        ("BASEADDR not aligned to SIZE", _secs(base_address=BASE + 0x1000)),
        ("INIT set", _secs(attributes=Attributes(MODE64 | 1, 3))),
        ("reserved flag bit 3", _secs(attributes=Attributes(MODE64 | 0x8, 3))),
        ("high reserved flag bit", _secs(attributes=Attributes(MODE64 | 1 << 40, 3))),
        ("CET (not emulated)", _secs(attributes=Attributes(MODE64 | 0x40, 3))),
        ("XFRM without SSE", _secs(attributes=Attributes(MODE64, 1))),
        ("XFRM unsupported MPX", _secs(attributes=Attributes(MODE64, 0x1B))),
        ("XFRM partial AVX-512", _secs(attributes=Attributes(MODE64, 0x27))),
        ("MISCSELECT unsupported bit", _secs(miscselect=0x2)),
        ("CONFIGID without KSS", _secs(configid=b"\x01" * 64)),
        ("CONFIGSVN without KSS", _secs(configsvn=1)),
        ("32-bit enclave above 4 GiB", _secs(attributes=Attributes(0, 3))),
        ("64-bit enclave too large", _secs(size=1 << 37, base_address=1 << 37)),
    ],
)
def test_ecreate_gp(cpu: SgxCpu, what: str, secs: Secs) -> None:
    with pytest.raises(GeneralProtectionFault) as info:
        cpu.ecreate(secs)
    assert info.value.leaf == "ECREATE", what
    assert cpu.epc.used_pages == 0


def test_ecreate_accepts_legal_variants(cpu: SgxCpu) -> None:
    cpu.ecreate(_secs(attributes=Attributes(MODE64, 0xE7)))  # AVX-512 complete
    cpu.ecreate(_secs(attributes=Attributes(0, 3), base_address=0x10000))  # 32-bit, low
    kss = MODE64 | int(AttributeFlags.KSS)
    cpu.ecreate(_secs(attributes=Attributes(kss, 3), configid=b"\x01" * 64, configsvn=2))
    assert cpu.epc.used_pages == 6  # 3 x (SECS + VA)


def test_ecreate_from_bytes_with_reserved_is_gp(cpu: SgxCpu) -> None:
    raw = bytearray(_secs().to_bytes())
    raw[4000] = 1
    with pytest.raises(GeneralProtectionFault):
        cpu.ecreate(bytes(raw))
    cpu.ecreate(_secs().to_bytes())


def test_ecreate_without_room(fuses: PlatformFuses) -> None:
    cpu = SgxCpu(fuses, epc_pages=3, eviction=False)
    cpu.ecreate(_secs())
    with pytest.raises(EpcExhaustedError) as info:
        cpu.ecreate(_secs())
    assert (info.value.requested, info.value.free) == (2, 1)


# -- EADD / EEXTEND -----------------------------------------------------------------------------

PAGE = bytes(range(256)) * 16
RW_REG = SecInfo(PageType.REG, R | W)


def test_eadd_checks(cpu: SgxCpu) -> None:
    ref = cpu.ecreate(_secs())
    bad = [
        ("not page aligned", BASE + 8, RW_REG),
        ("below ELRANGE", BASE - PAGE_SIZE, RW_REG),
        ("above ELRANGE", BASE + 0x4000, RW_REG),
        ("VA page", BASE, SecInfo(PageType.VA, R)),
        ("SECS page", BASE, SecInfo(PageType.SECS)),
        ("TRIM page", BASE, SecInfo(PageType.TRIM)),
        ("PENDING", BASE, SecInfo(PageType.REG, R | SecInfoFlags.PENDING)),
        ("W without R", BASE, SecInfo(PageType.REG, W)),
    ]
    for what, addr, secinfo in bad:
        with pytest.raises(GeneralProtectionFault):
            cpu.eadd(ref, addr, PAGE, secinfo)
        assert cpu.epc_usage(ref).resident == 0, what
    with pytest.raises(GeneralProtectionFault):
        cpu.eadd(ref, BASE, PAGE[:-1], RW_REG)
    cpu.eadd(ref, BASE, PAGE, RW_REG)
    with pytest.raises(GeneralProtectionFault, match="already added"):
        cpu.eadd(ref, BASE, PAGE, RW_REG)


def test_eadd_tcs(cpu: SgxCpu, kit) -> None:  # type: ignore[no-untyped-def]
    ref = cpu.ecreate(_secs(attributes=Attributes(MODE64 | DEBUG, 3)))
    with pytest.raises(GeneralProtectionFault, match="bad TCS"):
        cpu.eadd(ref, BASE, b"\x01" * PAGE_SIZE, SecInfo(PageType.TCS))
    tcs = Tcs(ossa=0x1000, nssa=1, oentry=0x2000, state=1, cssa=1, aep=0x1234, flags=1)
    # R/W requested for a TCS: EADD forces the EPCM permissions to 0 (SDM EADD).
    cpu.eadd(ref, BASE, tcs.to_bytes(), SecInfo(PageType.TCS, R | W))
    stored = Tcs.from_bytes(cpu.edbgrd(ref, BASE, PAGE_SIZE))
    assert (stored.state, stored.cssa, stored.aep, stored.flags) == (0, 0, 0, 0)
    assert (stored.ossa, stored.nssa, stored.oentry) == (0x1000, 1, 0x2000)
    info = cpu.epc.page_info(ref.eid, BASE)
    assert info is not None and info.permissions == SecInfoFlags(0)


def test_tcs_measured_with_permissions_zero(cpu: SgxCpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=40)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ref = cpu.ecreate(_secs(size=image.size))
    for page in image.pages:
        secinfo = page.secinfo
        if secinfo.page_type is PageType.TCS:
            secinfo = SecInfo(PageType.TCS, R | W)  # measured as if 0
        cpu.eadd(ref, BASE + page.offset, page.data, secinfo)
        if page.measured:
            cpu.eextend_page(ref, BASE + page.offset)
    cpu.einit(ref, sig)


def test_eextend_checks(cpu: SgxCpu) -> None:
    ref = cpu.ecreate(_secs())
    cpu.eadd(ref, BASE, PAGE, RW_REG)
    with pytest.raises(GeneralProtectionFault):
        cpu.eextend(ref, BASE + 0x80)
    with pytest.raises(GeneralProtectionFault):
        cpu.eextend(ref, BASE + 0x4000)
    with pytest.raises(PageFault):
        cpu.eextend(ref, BASE + PAGE_SIZE)  # no page there
    cpu.eextend(ref, BASE + 0x100)


def test_no_eadd_after_an_einit_attempt(cpu: SgxCpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=41)
    sig = kit.sign(image, kit.keys.app)
    ref = kit.create_and_add(cpu, image)
    with pytest.raises(EnclaveInstructionError):
        cpu.einit(ref, sig)  # registers still hold Intel's hash
    with pytest.raises(GeneralProtectionFault, match="finalized"):
        cpu.eadd(ref, BASE + image.size - PAGE_SIZE, PAGE, RW_REG)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = cpu.einit(ref, sig)
    with pytest.raises(GeneralProtectionFault, match="initialized"):
        cpu.eadd(ctx.ref, BASE + image.size - PAGE_SIZE, PAGE, RW_REG)
    with pytest.raises(GeneralProtectionFault, match="initialized"):
        cpu.eextend(ctx.ref, BASE)


# -- enclave memory within EPCM permissions -----------------------------------------------------


def _image_with_ro_page(kit) -> EnclaveImage:  # type: ignore[no-untyped-def]
    image = kit.image(seed=50, data_pages=2)
    last = max(p.offset for p in image.pages)
    assert last + PAGE_SIZE < image.size  # room for the read-only page and a hole after it
    ro = ImagePage(last + PAGE_SIZE, SecInfo(PageType.REG, R), b"\x77" * PAGE_SIZE)
    return dataclasses.replace(image, pages=(*image.pages, ro))


@pytest.fixture
def loaded(cpu, kit):  # type: ignore[no-untyped-def]
    image = _image_with_ro_page(kit)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    return image, kit.load(cpu, image, sig)


def _addr(image: EnclaveImage, kind: str) -> int:
    for p in image.pages:
        perms = p.secinfo.permissions
        if kind == "tcs" and p.secinfo.page_type is PageType.TCS:
            return BASE + p.offset
        if kind == "rw" and perms == R | W and p.measured and any(p.data):
            return BASE + p.offset
        if kind == "rx" and perms == R | X:
            return BASE + p.offset
        if kind == "ro" and perms == R:
            return BASE + p.offset
    raise AssertionError(kind)


def test_read_and_write_own_pages(loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    rw = _addr(image, "rw")
    page = next(p for p in image.pages if BASE + p.offset == rw)
    assert ctx.read(rw, PAGE_SIZE) == page.data
    ctx.write(rw + 100, b"hello")
    assert ctx.read(rw + 98, 9) == page.data[98:100] + b"hello" + page.data[105:107]
    assert (
        ctx.read(_addr(image, "rx"), 16)
        == next(p for p in image.pages if p.secinfo.permissions == R | X).data[:16]
    )
    assert ctx.read(_addr(image, "ro"), 4) == b"\x77" * 4


@pytest.mark.parametrize("kind", ["ro", "rx", "tcs"])
def test_write_to_non_writable_page_faults_8007(loaded, kind: str) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    addr = _addr(image, kind)
    before = ctx.read(addr, 8) if kind != "tcs" else None
    with pytest.raises(PageFault) as info:
        ctx.write(addr + 8, b"x")
    assert int(info.value.error_code) == 0x8007
    assert info.value.address == addr + 8
    if before is not None:
        assert ctx.read(addr, 8) == before


def test_read_of_tcs_faults_8005(loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    with pytest.raises(PageFault) as info:
        ctx.read(_addr(image, "tcs"), 8)
    assert int(info.value.error_code) == 0x8005


def test_unbacked_and_outside_addresses_fault(loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    used = {p.offset for p in image.pages}
    hole = next(o for o in range(0, image.size, PAGE_SIZE) if o not in used)
    with pytest.raises(PageFault) as info:
        ctx.read(BASE + hole, 1)
    assert int(info.value.error_code) == 0x4
    with pytest.raises(PageFault) as info:
        ctx.write(BASE + hole, b"1")
    assert int(info.value.error_code) == 0x6
    with pytest.raises(PageFault):
        ctx.read(BASE - 1, 2)
    with pytest.raises(PageFault):
        ctx.read(BASE + image.size - 1, 2)


def test_write_across_pages_is_all_or_nothing(loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    ro = _addr(image, "ro")
    prev = ro - PAGE_SIZE
    # the page below the read-only one is the last data page (writable)
    ctx.write(prev + PAGE_SIZE - 4, b"abcd")
    with pytest.raises(PageFault) as info:
        ctx.write(prev + PAGE_SIZE - 4, b"WXYZ1234")
    assert info.value.address == ro
    assert ctx.read(prev + PAGE_SIZE - 4, 8) == b"abcd" + b"\x77" * 4


# -- EDBGRD / EDBGWR ----------------------------------------------------------------------------


def test_debug_access_only_for_debug_enclaves(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = _image_with_ro_page(kit)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    prod = kit.load(cpu, image, sig)
    with pytest.raises(GeneralProtectionFault):
        cpu.edbgrd(prod.ref, _addr(image, "ro"), 8)
    with pytest.raises(GeneralProtectionFault):
        cpu.edbgwr(prod.ref, _addr(image, "rw"), b"x")

    dbg = kit.load(cpu, image, sig, flags=MODE64 | DEBUG)
    ro = _addr(image, "ro")
    assert cpu.edbgrd(dbg.ref, ro, 4) == b"\x77" * 4
    cpu.edbgwr(dbg.ref, ro, b"dbg!")  # ignores EPCM permissions
    assert dbg.read(ro, 4) == b"dbg!"
    tcs = _addr(image, "tcs")
    cpu.edbgwr(dbg.ref, tcs + 8, (1).to_bytes(8, "little"))  # TCS.FLAGS.DBGOPTIN
    assert Tcs.from_bytes(cpu.edbgrd(dbg.ref, tcs, PAGE_SIZE)).flags == 1
    with pytest.raises(GeneralProtectionFault, match=r"TCS\.FLAGS"):
        cpu.edbgwr(dbg.ref, tcs + 16, b"\x00")


# -- EREPORT ------------------------------------------------------------------------------------


def test_report_verifies_only_at_its_target(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    ctxs = []
    for seed in (60, 61, 62):
        image = kit.image(seed=seed)
        sig = kit.sign(image, kit.keys.app, isvprodid=seed)
        cpu.le_pubkeyhash.write(sig.mrsigner)
        ctxs.append(kit.load(cpu, image, sig))
    app, qe, third = ctxs
    report = app.ereport(qe.target_info(), b"\x42" * 64)
    assert report.body.mrenclave == app.identity.mrenclave
    assert report.body.report_data == b"\x42" * 64
    assert report.body.cpusvn == cpu.cpusvn
    qe.verify_report(report)
    with pytest.raises(ReportVerificationError):
        third.verify_report(report)
    forged = dataclasses.replace(report, body=dataclasses.replace(report.body, isvprodid=99))
    with pytest.raises(ReportVerificationError):
        qe.verify_report(forged)
    # Self-targeted report: EGETKEY(REPORT) of the reporter itself.
    app.verify_report(app.ereport(app.target_info()))
    # A different enclave reporting to the same target also verifies there.
    qe.verify_report(third.ereport(qe.target_info()))


def test_report_mac_is_cmac_over_body_with_target_key(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    from sgx_platform.keys import aes_cmac

    image = kit.image(seed=63)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    report = ctx.ereport(ctx.target_info())
    key = ctx.egetkey(KeyRequest(keyname=int(KeyName.REPORT), key_id=report.key_id))
    assert aes_cmac(key, report.to_bytes()[:384]) == report.mac
    with pytest.raises(GeneralProtectionFault):
        ctx.ereport(ctx.target_info(), b"short")


def test_report_to_a_target_that_differs(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=64)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    ti = ctx.target_info()
    for other in (
        dataclasses.replace(ti, measurement=Measurement(b"\x01" * 32)),
        dataclasses.replace(ti, attributes=Attributes(ti.attributes.flags | DEBUG, 3)),
        dataclasses.replace(ti, miscselect=1),
    ):
        with pytest.raises(ReportVerificationError):
            ctx.verify_report(ctx.ereport(other))


def test_egetkey_from_bytes(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=66)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    request = KeyRequest(keyname=int(KeyName.REPORT), key_id=b"\x03" * 32)
    assert ctx.egetkey(request.to_bytes()) == ctx.egetkey(request)
    for offset, value in ((6, 1), (100, 1), (3, 0x01)):  # reserved @6, @78.., KEYPOLICY bit 8
        raw = bytearray(request.to_bytes())
        raw[offset] = value
        with pytest.raises(GeneralProtectionFault):
            ctx.egetkey(bytes(raw))


def test_egetkey_provision_needs_provisionkey(cpu, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.image(seed=65)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    with pytest.raises(EnclaveInstructionError) as info:
        ctx.egetkey(KeyRequest(keyname=int(KeyName.PROVISION), cpusvn=cpu.cpusvn))
    assert info.value.code is SgxErrorCode.INVALID_ATTRIBUTE
    prov = MODE64 | int(AttributeFlags.PROVISIONKEY)
    sig2 = kit.sign(image, kit.keys.app, attributes=Attributes(prov, 3))
    ctx2 = kit.load(cpu, image, sig2, flags=prov)
    k = ctx2.egetkey(KeyRequest(keyname=int(KeyName.PROVISION), cpusvn=cpu.cpusvn))
    assert len(k) == 16
    # PROVISION has no owner epoch: an owner change keeps it.
    cpu.set_owner_epoch(b"\x99" * 16)
    assert ctx2.egetkey(KeyRequest(keyname=int(KeyName.PROVISION), cpusvn=cpu.cpusvn)) == k


# -- EREMOVE, reset, restart --------------------------------------------------------------------


def test_eremove_and_destroy(cpu, loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    rw = _addr(image, "rw")
    used = cpu.epc.used_pages
    cpu.eremove(ctx.ref, rw)
    assert cpu.epc.used_pages == used - 1
    with pytest.raises(PageFault):
        ctx.read(rw, 1)
    with pytest.raises(PageFault):
        cpu.eremove(ctx.ref, rw)
    with pytest.raises(EnclaveInstructionError) as info:
        cpu.eremove_secs(ctx.ref)
    assert info.value.code is SgxErrorCode.CHILD_PRESENT
    cpu.destroy(ctx.ref)
    assert cpu.epc.used_pages == 0
    with pytest.raises(StaleEnclaveError, match="destroyed"):
        ctx.read(_addr(image, "ro"), 1)
    with pytest.raises(StaleEnclaveError):
        cpu.destroy(ctx.ref)


def test_reset_makes_everything_stale(cpu, loaded) -> None:  # type: ignore[no-untyped-def]
    image, ctx = loaded
    epoch = cpu.boot_epoch
    cpu.le_pubkeyhash.write(Measurement(b"\x01" * 32))
    cpu.le_pubkeyhash.lock()
    cpu.launch_policy_latch.latch(b"\x02" * 32)
    cpu.reset()
    assert cpu.boot_epoch != epoch
    assert cpu.epc.used_pages == 0 and cpu.enclaves() == []
    assert not cpu.le_pubkeyhash.locked and cpu.launch_policy_latch.value is None
    with pytest.raises(StaleEnclaveError, match="boot"):
        ctx.read(_addr(image, "ro"), 1)
    with pytest.raises(StaleEnclaveError):
        ctx.ereport(TargetInfo(Measurement(bytes(32))))
    with pytest.raises(StaleEnclaveError):
        cpu.eadd(ctx.ref, BASE, PAGE, RW_REG)


def test_restart_on_same_fuses_is_a_new_boot(fuses, cpu, loaded) -> None:  # type: ignore[no-untyped-def]
    _, ctx = loaded
    restarted = SgxCpu(PlatformFuses.open(fuses.directory), epc_pages=64)
    assert restarted.boot_epoch > cpu.boot_epoch
    with pytest.raises(StaleEnclaveError):
        restarted.edbgrd(ctx.ref, BASE, 1)


# -- eviction with a tiny EPC (Must show) -------------------------------------------------------


def _big_image(kit, pages: int) -> EnclaveImage:  # type: ignore[no-untyped-def]
    return kit.image(seed=70, code_pages=2, data_pages=pages, heap_pages=8)


def test_enclave_several_times_the_epc_builds_and_round_trips(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    cpu = SgxCpu(fuses, epc_pages=16)
    image = _big_image(kit, 60)  # ~75 pages into a 16-page EPC
    assert len(image.pages) > 4 * 16
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)  # EINIT succeeds: measurement survived eviction
    usage = cpu.epc_usage(ctx.ref)
    assert usage.evicted > 0 and usage.total_resident <= 16
    writable = [BASE + p.offset for p in image.pages if p.secinfo.permissions == R | W]
    for i, addr in enumerate(writable):
        ctx.write(addr, i.to_bytes(4, "little") * 1024)
    for i, addr in enumerate(writable):
        assert ctx.read(addr, PAGE_SIZE) == i.to_bytes(4, "little") * 1024
    for p in image.pages:
        if p.secinfo.permissions == R | X:
            assert ctx.read(BASE + p.offset, PAGE_SIZE) == p.data
    assert cpu.epc.used_pages <= 16


def _evicted_page(cpu: SgxCpu, ctx, image: EnclaveImage) -> int:  # type: ignore[no-untyped-def]
    for p in image.pages:
        addr = BASE + p.offset
        if p.secinfo.permissions == R | W and not cpu.epc.is_resident(ctx.ref.eid, addr):
            return addr
    raise AssertionError("no evicted page")


def test_tampered_evicted_page_is_detected(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    cpu = SgxCpu(fuses, epc_pages=12)
    image = _big_image(kit, 30)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    addr = _evicted_page(cpu, ctx, image)
    copy = bytearray(cpu.epc.evicted_copy(ctx.ref.eid, addr))
    copy[123] ^= 0x40
    cpu.epc.replace_evicted_copy(ctx.ref.eid, addr, bytes(copy))
    with pytest.raises(EvictedPageIntegrityError) as info:
        ctx.read(addr, 16)
    assert info.value.code is SgxErrorCode.MAC_COMPARE_FAIL


def test_replayed_evicted_page_is_detected(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    cpu = SgxCpu(fuses, epc_pages=12)
    image = _big_image(kit, 30)
    sig = kit.sign(image, kit.keys.app)
    cpu.le_pubkeyhash.write(sig.mrsigner)
    ctx = kit.load(cpu, image, sig)
    addr = _evicted_page(cpu, ctx, image)
    old_copy = cpu.epc.evicted_copy(ctx.ref.eid, addr)
    ctx.write(addr, b"balance=0")  # reload, change ...
    for p in image.pages:  # ... and push it out again by touching everything else
        other = BASE + p.offset
        if other != addr and p.secinfo.permissions & R:
            ctx.read(other, 1)
    assert not cpu.epc.is_resident(ctx.ref.eid, addr)
    cpu.epc.replace_evicted_copy(ctx.ref.eid, addr, old_copy)
    with pytest.raises(EvictedPageIntegrityError, match="replayed"):
        ctx.read(addr, 9)


def test_without_eviction_a_large_enclave_fails_clearly(fuses, kit) -> None:  # type: ignore[no-untyped-def]
    cpu = SgxCpu(fuses, epc_pages=16, eviction=False)
    image = _big_image(kit, 30)
    with pytest.raises(EpcExhaustedError) as info:
        kit.create_and_add(cpu, image)
    assert info.value.free == 0 and info.value.requested == 1
    assert "requested" in str(info.value) and "free" in str(info.value)
