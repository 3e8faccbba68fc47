"""The platform through its real gRPC service: the ioctl error cases of SGX-REFERENCE §1.3 and
the selftest analogues of §8, plus report/key/seal, debug access, leases, reset and owner calls.

Every test starts a real PlatformService on Unix sockets in a short temporary directory and talks
to it through real channels with the platform's client.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx.platform.v1 import platform_pb2 as pb
from sgx_platform.arch.attributes import AttributeFlags, Attributes, KeyName
from sgx_platform.arch.image import ImagePage, build_image, measure
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measure import MrEnclaveMeasurer
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import Report, TargetInfo
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct, signing_attributes
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.arch.tcs import Tcs
from sgx_platform.config import parse_config
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService, initialize_state

S = grpc.StatusCode
PAGE = 4096
R, W, X = SecInfoFlags.R, SecInfoFlags.W, SecInfoFlags.X
MODE64 = Attributes(int(AttributeFlags.MODE64BIT), 3)


# -- harness ------------------------------------------------------------------------------------


class Platform:
    """A running platform service in its own state directory, with a client per socket."""

    def __init__(self, state: Path, toml: str = "") -> None:
        self.state = state
        if not (state / "platform" / "fuses").exists():
            initialize_state(state / "platform")
        self.config = parse_config(toml, state)
        self.service = PlatformService(self.config, max_workers=4)
        self.service.start()
        s = self.config.sockets
        self.device = PlatformClient.unix(s.device, timeout=30)
        self.provision = PlatformClient.unix(s.provision, timeout=30)
        self.owner = PlatformClient.unix(s.owner, timeout=30)

    def close(self) -> None:
        for client in (self.device, self.provision, self.owner):
            client.close()
        self.service.stop(grace=1)


@pytest.fixture()
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxp", dir="/tmp"))
    d.chmod(0o755)
    (d / "enclaves").mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def start(state: Path) -> Iterator[Callable[..., Platform]]:
    running: list[Platform] = []

    def make(toml: str = "") -> Platform:
        p = Platform(state, toml)
        running.append(p)
        return p

    yield make
    for p in running:
        p.close()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def refused(call: Callable[[], object], code: grpc.StatusCode, reason: str) -> PlatformRpcError:
    with pytest.raises(PlatformRpcError) as e:
        call()
    got = e.value
    assert (got.code, got.reason) == (code, reason), (got.code, got.reason, got.message)
    if reason != "PERMISSION_DENIED":  # the role check (sgx_rpc's interceptor) has no errno
        assert got.errno_name, "every error names its errno"
    assert got.message, "every error carries a sentence"
    return got


# -- images built over the wire (no executable pages: the default policy allows those) ---------


NO_PERMISSIONS = SecInfoFlags(0)


def _secinfo(page_type: PageType, flags: SecInfoFlags = NO_PERMISSIONS) -> bytes:
    return SecInfo(page_type, flags).to_bytes()


def data_image(*, ro_pages: int = 1, rw_pages: int = 1, size: int = 8 * PAGE) -> list[ImagePage]:
    """TCS, one SSA page, read-only pages, read-write pages; all measured."""
    tcs = Tcs(ossa=PAGE, nssa=1, oentry=2 * PAGE).to_bytes()
    pages = [ImagePage(0, SecInfo(PageType.TCS), tcs),
             ImagePage(PAGE, SecInfo(PageType.REG, R | W), bytes(PAGE))]
    off = 2 * PAGE
    for i in range(ro_pages):
        pages.append(ImagePage(off, SecInfo(PageType.REG, R), bytes([0x10 + i]) * PAGE))
        off += PAGE
    for i in range(rw_pages):
        pages.append(ImagePage(off, SecInfo(PageType.REG, R | W), bytes([0x20 + i]) * PAGE))
        off += PAGE
    assert off <= size
    return pages


def mrenclave_of(pages: list[ImagePage], size: int, ssa: int = 1) -> Measurement:
    m = MrEnclaveMeasurer(ssa, size)
    for p in pages:
        m.add_page(p.offset, p.secinfo, p.data, measured=p.measured)
    return m.finalize()


def secs_bytes(size: int = 8 * PAGE, attributes: Attributes = MODE64, **kw: int) -> bytes:
    return Secs(size=size, base_address=kw.pop("base", size), ssa_frame_size=1,
                attributes=attributes, **kw).to_bytes()


def wire_build(client: PlatformClient, pages: list[ImagePage], size: int = 8 * PAGE,
               attributes: Attributes = MODE64) -> bytes:
    handle = client.create_enclave(secs_bytes(size, attributes)).enclave_handle
    for p in pages:
        added = client.add_pages(handle, p.offset, p.data, p.secinfo.to_bytes(), measure=p.measured)
        assert added == PAGE
    return handle


def sign(key: rsa.RSAPrivateKey, mrenclave: Measurement, **kw: object) -> bytes:
    return sign_sigstruct(key, mrenclave, **kw).to_bytes()  # type: ignore[arg-type]


# -- CREATE --------------------------------------------------------------------------------------


def test_create_errors(start: Callable[..., Platform]) -> None:
    p = start()
    c = p.device
    e = refused(lambda: c.create_enclave(bytes(100)), S.INVALID_ARGUMENT, "MALFORMED_SECS")
    assert e.errno_name == "EINVAL"
    not_pow2 = bytearray(secs_bytes())
    not_pow2[0:8] = (3 * PAGE).to_bytes(8, "little")
    assert refused(lambda: c.create_enclave(bytes(not_pow2)), S.INVALID_ARGUMENT,
                   "SECS_SIZE").errno_name == "EINVAL"
    # ECREATE #GP → EIO: base not aligned to size, XFRM without x87/SSE, reserved bytes.
    misaligned = secs_bytes(base=PAGE)
    no_legacy = secs_bytes(attributes=Attributes(int(AttributeFlags.MODE64BIT), 0))
    reserved = bytearray(secs_bytes())
    reserved[300] = 1
    for bad in (misaligned, no_legacy, bytes(reserved)):
        assert refused(lambda b=bad: c.create_enclave(b), S.INVALID_ARGUMENT,
                       "ECREATE_FAULT").errno_name == "EIO"
    assert p.device.info().enclave_count == 0


def test_create_out_of_epc_without_eviction_is_enomem(start: Callable[..., Platform]) -> None:
    p = start("[epc]\npages = 4\neviction = false\n")
    handles = [p.device.create_enclave(secs_bytes()).enclave_handle for _ in range(2)]
    e = refused(lambda: p.device.create_enclave(secs_bytes()), S.RESOURCE_EXHAUSTED,
                "EPC_EXHAUSTED")
    assert e.errno_name == "ENOMEM"
    assert e.metadata["free"] == "0" and e.metadata["capacity"] == "4"
    p.device.destroy_enclave(handles[0])
    p.device.create_enclave(secs_bytes())


# -- ADD_PAGES -----------------------------------------------------------------------------------


def test_add_pages_argument_errors(start: Callable[..., Platform]) -> None:
    c = start().device
    h = c.create_enclave(secs_bytes()).enclave_handle
    reg = _secinfo(PageType.REG, R | W)
    for offset, data in (
        (100, bytes(PAGE)),  # offset not page aligned
        (0, b""),  # length 0
        (0, bytes(PAGE + 1)),  # length not page aligned
        (8 * PAGE, bytes(PAGE)),  # beyond the enclave size
        (7 * PAGE, bytes(2 * PAGE)),  # runs past the end
    ):
        e = refused(lambda o=offset, d=data: c.add_pages(h, o, d, reg, measure=True),
                    S.INVALID_ARGUMENT, "OFFSET_LENGTH")
        assert e.errno_name == "EINVAL"
    bad_secinfos = {
        "wrong size": reg[:63],
        "reserved byte": reg[:40] + b"\x01" + reg[41:],
        "SECS type": _secinfo(PageType.SECS, R),
        "VA type": _secinfo(PageType.VA, R),
        "W without R": _secinfo(PageType.REG, W),
        "PENDING": _secinfo(PageType.REG, R | SecInfoFlags.PENDING),
    }
    for name, secinfo in bad_secinfos.items():
        e = refused(lambda s=secinfo: c.add_pages(h, 0, bytes(PAGE), s, measure=True),
                    S.INVALID_ARGUMENT, "SECINFO")
        assert e.errno_name == "EINVAL", name
    assert c.info().epc_pages_free == c.info().epc_pages_total - 2, "nothing was added"


def test_tcs_pages_with_permissions_are_einval(start: Callable[..., Platform]) -> None:
    c = start().device
    h = c.create_enclave(secs_bytes()).enclave_handle
    tcs = Tcs(ossa=PAGE, nssa=1, oentry=0).to_bytes()
    for perms in (R, R | W, X):
        raw = (int(PageType.TCS) << 8) | int(perms)
        secinfo = raw.to_bytes(8, "little") + bytes(56)
        e = refused(lambda s=secinfo: c.add_pages(h, 0, tcs, s, measure=True),
                    S.INVALID_ARGUMENT, "TCS_PERMISSIONS")
        assert e.errno_name == "EINVAL"
    assert c.add_pages(h, 0, tcs, _secinfo(PageType.TCS), measure=True) == PAGE


def test_a_re_added_offset_is_ebusy(start: Callable[..., Platform]) -> None:
    c = start().device
    h = c.create_enclave(secs_bytes()).enclave_handle
    reg = _secinfo(PageType.REG, R | W)
    assert c.add_pages(h, PAGE, bytes(2 * PAGE), reg, measure=True) == 2 * PAGE
    e = refused(lambda: c.add_pages(h, 2 * PAGE, bytes(PAGE), reg, measure=True), S.ABORTED,
                "PAGE_ALREADY_ADDED")
    assert e.errno_name == "EBUSY" and e.metadata["count"] == "0"
    # Pages before the clash are added (the kernel's partial count).
    e = refused(lambda: c.add_pages(h, 0, bytes(2 * PAGE), reg, measure=True), S.ABORTED,
                "PAGE_ALREADY_ADDED")
    assert e.metadata["count"] == str(PAGE)
    assert c.info().epc_pages_free == c.info().epc_pages_total - 5  # SECS, VA, 3 pages


def test_eadd_fault_is_eio(start: Callable[..., Platform]) -> None:
    c = start().device
    h = c.create_enclave(secs_bytes()).enclave_handle
    bad_tcs = bytearray(Tcs(ossa=PAGE, nssa=1, oentry=0).to_bytes())
    bad_tcs[100] = 1  # TCS reserved bytes must be zero (EADD #GP)
    e = refused(lambda: c.add_pages(h, 0, bytes(bad_tcs), _secinfo(PageType.TCS), measure=True),
                S.INVALID_ARGUMENT, "EADD_FAULT")
    assert e.errno_name == "EIO"


def test_add_pages_out_of_epc_without_eviction(start: Callable[..., Platform]) -> None:
    c = start("[epc]\npages = 4\neviction = false\n").device
    h = c.create_enclave(secs_bytes()).enclave_handle  # SECS + VA page
    e = refused(lambda: c.add_pages(h, 0, bytes(3 * PAGE), _secinfo(PageType.REG, R | W),
                                    measure=False), S.RESOURCE_EXHAUSTED, "EPC_EXHAUSTED")
    assert e.errno_name == "ENOMEM" and e.metadata["count"] == str(2 * PAGE)


def test_add_pages_after_init_is_einval(start: Callable[..., Platform], key: rsa.RSAPrivateKey
                                        ) -> None:
    c = start().device
    pages = data_image()
    h = wire_build(c, pages)
    c.init_enclave(h, sign(key, mrenclave_of(pages, 8 * PAGE)))
    e = refused(lambda: c.add_pages(h, 6 * PAGE, bytes(PAGE), _secinfo(PageType.REG, R),
                                    measure=True), S.FAILED_PRECONDITION, "WRONG_STATE")
    assert e.errno_name == "EINVAL"


# -- INIT ----------------------------------------------------------------------------------------


def test_init_errors_in_kernel_order(start: Callable[..., Platform], key: rsa.RSAPrivateKey
                                     ) -> None:
    c = start().device
    pages = data_image()
    h = wire_build(c, pages)
    good = sign(key, mrenclave_of(pages, 8 * PAGE))
    assert refused(lambda: c.init_enclave(h, good[:-1]), S.INVALID_ARGUMENT,
                   "MALFORMED_SIGSTRUCT").errno_name == "EINVAL"
    vendor = bytearray(good)
    vendor[16:20] = (0x1234).to_bytes(4, "little")
    assert refused(lambda: c.init_enclave(h, bytes(vendor)), S.INVALID_ARGUMENT,
                   "SIGSTRUCT_VENDOR").errno_name == "EINVAL"
    reserved_attr = sign(key, mrenclave_of(pages, 8 * PAGE),
                         attributes=Attributes(int(AttributeFlags.MODE64BIT) | 1 << 40, 3))
    assert refused(lambda: c.init_enclave(h, reserved_attr), S.INVALID_ARGUMENT,
                   "SIGSTRUCT_RESERVED_BITS").errno_name == "EINVAL"
    mrenclave, mrsigner = c.init_enclave(h, good)
    assert mrenclave == mrenclave_of(pages, 8 * PAGE)
    assert mrsigner == Sigstruct.from_bytes(good).mrsigner
    assert refused(lambda: c.init_enclave(h, good), S.FAILED_PRECONDITION,
                   "WRONG_STATE").errno_name == "EINVAL"


def test_the_cpu_refusing_einit_is_eperm_with_the_sgx_code(
    start: Callable[..., Platform], key: rsa.RSAPrivateKey
) -> None:
    c = start().device
    pages = data_image()
    mrenclave = mrenclave_of(pages, 8 * PAGE)
    good = sign(key, mrenclave)
    tampered = [dataclasses.replace(pages[2], data=b"\xff" * PAGE), *pages[:2], *pages[3:]]
    tampered.sort(key=lambda p: p.offset)
    h = wire_build(c, tampered)
    e = refused(lambda: c.init_enclave(h, good), S.PERMISSION_DENIED, "SGX_INVALID_MEASUREMENT")
    assert (e.errno_name, e.sgx_code) == ("EPERM", 4)
    assert e.metadata["sgx_code_name"] == "INVALID_MEASUREMENT"
    bad_sig = bytearray(good)
    bad_sig[600] ^= 1
    h = wire_build(c, pages)
    e = refused(lambda: c.init_enclave(h, bytes(bad_sig)), S.PERMISSION_DENIED,
                "SGX_INVALID_SIGNATURE")
    assert (e.errno_name, e.sgx_code) == ("EPERM", 8)
    # DEBUG asked for, but the signer masked DEBUG = 0 (--no-debug).
    attrs, mask = signing_attributes(no_debug=True)
    no_debug = sign(key, mrenclave, attributes=attrs, attribute_mask=mask)
    debug_attrs = Attributes(MODE64.flags | int(AttributeFlags.DEBUG), 3)
    h = wire_build(c, pages, attributes=debug_attrs)
    e = refused(lambda: c.init_enclave(h, no_debug), S.PERMISSION_DENIED,
                "SGX_INVALID_ATTRIBUTE")
    assert (e.errno_name, e.sgx_code) == ("EPERM", 2)
    # A failed EINIT leaves the enclave CREATED: the right SIGSTRUCT still works.
    h = wire_build(c, pages)
    refused(lambda: c.init_enclave(h, bytes(bad_sig)), S.PERMISSION_DENIED,
            "SGX_INVALID_SIGNATURE")
    c.init_enclave(h, good)


def test_open_mode_writes_the_signer_and_an_owner_lock_stops_it(
    start: Callable[..., Platform], key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    p = start()
    pages = data_image()
    mrenclave = mrenclave_of(pages, 8 * PAGE)
    h = wire_build(p.device, pages)
    _, signer = p.device.init_enclave(h, sign(key, mrenclave))
    assert p.device.info().le_pubkey_hash == signer.to_bytes(), "open mode: registers = signer"
    assert p.owner.lock_le_registers() == signer.to_bytes()
    h = wire_build(p.device, pages)
    p.device.init_enclave(h, sign(key, mrenclave))  # same signer still matches
    h = wire_build(p.device, pages)
    e = refused(lambda: p.device.init_enclave(h, sign(other_key, mrenclave)),
                S.PERMISSION_DENIED, "SGX_INVALID_EINITTOKEN")
    assert e.sgx_code == 16


def test_attribute_gates_provisionkey_and_einittoken_key(
    start: Callable[..., Platform], key: rsa.RSAPrivateKey
) -> None:
    p = start()
    c = p.device
    pages = data_image()
    mrenclave = mrenclave_of(pages, 8 * PAGE)
    prov = Attributes(MODE64.flags | int(AttributeFlags.PROVISIONKEY), 3)
    sig = sign(key, mrenclave, attributes=prov)
    h = wire_build(c, pages, attributes=prov)
    e = refused(lambda: c.init_enclave(h, sig), S.PERMISSION_DENIED, "PROVISIONKEY_NOT_GRANTED")
    assert (e.errno_name, e.rule) == ("EACCES", "attributes")
    assert "GrantProvisionKey" in (e.hint or "")
    refused(lambda: p.device.grant_provision_key(h), S.PERMISSION_DENIED, "PERMISSION_DENIED")
    p.provision.grant_provision_key(h)
    c.init_enclave(h, sig)
    # The granted enclave may derive a PROVISION key.
    key_request = KeyRequest(keyname=int(KeyName.PROVISION), attribute_mask=Attributes(3, 0))
    assert len(c.get_key(h, key_request.to_bytes())) == 16
    token_key = Attributes(MODE64.flags | int(AttributeFlags.EINITTOKEN_KEY), 3)
    h = wire_build(c, pages, attributes=token_key)
    e = refused(lambda: c.init_enclave(h, sign(key, mrenclave, attributes=token_key)),
                S.PERMISSION_DENIED, "EINITTOKEN_KEY_NOT_ALLOWED")
    assert e.errno_name == "EACCES"


def test_unknown_handles(start: Callable[..., Platform]) -> None:
    p = start()
    c = p.device
    h = c.create_enclave(secs_bytes()).enclave_handle
    forged = h[:8] + bytes(len(h) - 8)
    for call in (lambda: p.provision.grant_provision_key(forged), lambda: c.renew_lease(forged),
                 lambda: c.add_pages(forged, 0, bytes(PAGE), _secinfo(PageType.REG, R),
                                     measure=True),
                 lambda: c.destroy_enclave(b"junk")):
        assert refused(call, S.NOT_FOUND, "UNKNOWN_HANDLE").errno_name == "EBADF"


# -- selftest analogues (§8) ----------------------------------------------------------------------


def _write_image(state: Path, name: str, **kw: int) -> tuple[str, Measurement]:
    image = build_image(**kw)
    (state / "enclaves" / name).write_bytes(write_sgxs(image))
    return name, measure(image)


def test_builder_image_loads_and_its_pages_are_written_and_read_through_the_handle(
    start: Callable[..., Platform], state: Path, key: rsa.RSAPrivateKey
) -> None:
    p = start()
    name, mrenclave = _write_image(state, "hello.sgxs", code_pages=2, data_pages=2, heap_pages=1)
    loaded = p.device.load_enclave_from_file(name, sign(key, mrenclave))
    assert loaded.initialized and loaded.mrenclave == mrenclave
    image = build_image(code_pages=2, data_pages=2, heap_pages=1)
    data_page = [pg for pg in image.pages if pg.secinfo.permissions == R | W and pg.measured][-1]
    code_page = next(pg for pg in image.pages if pg.secinfo.permissions & X)
    h = loaded.handle
    assert p.device.read_memory(h, data_page.offset, PAGE) == data_page.data
    magic = (0x1122334455667788).to_bytes(8, "little")
    p.device.write_memory(h, data_page.offset + 8, magic)
    assert p.device.read_memory(h, data_page.offset + 8, 8) == magic
    assert p.device.read_memory(h, code_page.offset, 16) == code_page.data[:16]
    # Code pages are R+X: a write faults with the SGX bit (error code 0x8007).
    e = refused(lambda: p.device.write_memory(h, code_page.offset, magic), S.PERMISSION_DENIED,
                "EPCM_FAULT")
    assert e.metadata["error_code"] == "0x8007" and e.errno_name == "EFAULT"
    # A TCS is not readable by enclave code (EPCM permissions 0): 0x8005.
    e = refused(lambda: p.device.read_memory(h, 0, 8), S.PERMISSION_DENIED, "EPCM_FAULT")
    assert e.metadata["error_code"] == "0x8005"
    refused(lambda: p.device.read_memory(h, image.size - 8, 16), S.INVALID_ARGUMENT,
            "OUT_OF_RANGE")


def test_a_write_to_a_read_only_page_faults_with_the_sgx_code(
    start: Callable[..., Platform], key: rsa.RSAPrivateKey
) -> None:
    c = start().device
    pages = data_image(ro_pages=1, rw_pages=1)
    h = wire_build(c, pages)
    c.init_enclave(h, sign(key, mrenclave_of(pages, 8 * PAGE)))
    ro, rw = 2 * PAGE, 3 * PAGE
    assert c.read_memory(h, ro, 4) == b"\x10" * 4
    e = refused(lambda: c.write_memory(h, ro + 16, b"\x01"), S.PERMISSION_DENIED, "EPCM_FAULT")
    assert (e.metadata["error_code"], e.metadata["offset"]) == ("0x8007", hex(ro + 16))
    assert c.read_memory(h, ro + 16, 1) == b"\x10", "a faulting write changes nothing"
    # A write spanning an RW page and the RO page below it is all-or-nothing.
    refused(lambda: c.write_memory(h, rw - 4, b"\x02" * 8), S.PERMISSION_DENIED, "EPCM_FAULT")
    assert c.read_memory(h, rw, 4) == b"\x20" * 4
    c.write_memory(h, rw, b"\x02" * 8)
    assert c.read_memory(h, rw, 8) == b"\x02" * 8
    e = refused(lambda: c.read_memory(h, 6 * PAGE, 8), S.INVALID_ARGUMENT, "PAGE_NOT_PRESENT")
    assert e.metadata["error_code"] == "0x4"


def test_a_heap_the_size_of_the_whole_epc_builds_with_eviction_and_destroy_frees_every_page(
    start: Callable[..., Platform], state: Path, key: rsa.RSAPrivateKey
) -> None:
    epc = 48
    p = start(f"[epc]\npages = {epc}\neviction = true\n")
    name, mrenclave = _write_image(state, "big.sgxs", code_pages=1, data_pages=1, heap_pages=epc)
    loaded = p.device.load_enclave_from_file(name, sign(key, mrenclave))
    assert loaded.initialized
    info = p.device.info()
    assert info.epc_pages_evicted > 0 and info.epc_pages_free == 0
    image = build_image(code_pages=1, data_pages=1, heap_pages=epc)
    heap = [pg.offset for pg in image.pages if not pg.measured]
    for i, offset in enumerate(heap[:: max(1, len(heap) // 12)]):
        p.device.write_memory(loaded.handle, offset + 64, i.to_bytes(4, "little") * 4)
    for i, offset in enumerate(heap[:: max(1, len(heap) // 12)]):
        assert p.device.read_memory(loaded.handle, offset + 64, 16) == i.to_bytes(4, "little") * 4
    freed = p.device.destroy_enclave(loaded.handle)
    assert freed > 0
    after = p.device.info()
    assert (after.epc_pages_free, after.epc_pages_evicted, after.enclave_count) == (epc, 0, 0)


def test_destroy_returns_every_page(start: Callable[..., Platform], key: rsa.RSAPrivateKey
                                    ) -> None:
    c = start("[epc]\npages = 64\n").device
    total = c.info().epc_pages_total
    pages = data_image(ro_pages=2, rw_pages=3)
    h = wire_build(c, pages)
    c.init_enclave(h, sign(key, mrenclave_of(pages, 8 * PAGE)))
    assert c.info().epc_pages_free == total - len(pages) - 2  # SECS + VA
    assert c.destroy_enclave(h) == len(pages) + 2
    assert c.info().epc_pages_free == total
    refused(lambda: c.read_memory(h, 0, 1), S.NOT_FOUND, "UNKNOWN_HANDLE")
    # An enclave destroyed before INIT also gives everything back.
    h = c.create_enclave(secs_bytes()).enclave_handle
    c.add_pages(h, PAGE, bytes(PAGE), _secinfo(PageType.REG, R), measure=False)
    assert c.destroy_enclave(h) == 3 and c.info().epc_pages_free == total


# -- inside the enclave: report, key, seal; debug access -----------------------------------------


def test_report_key_and_seal(start: Callable[..., Platform], key: rsa.RSAPrivateKey) -> None:
    c = start().device
    pages = data_image()
    mrenclave = mrenclave_of(pages, 8 * PAGE)
    a = wire_build(c, pages)
    c.init_enclave(a, sign(key, mrenclave, isvprodid=7))
    b = wire_build(c, data_image(ro_pages=2, rw_pages=0))
    c.init_enclave(b, sign(key, mrenclave_of(data_image(ro_pages=2, rw_pages=0), 8 * PAGE),
                           isvprodid=7))
    self_report = Report.from_bytes(c.create_report(a, b"", b""))
    assert self_report.body.mrenclave == mrenclave and self_report.body.isvprodid == 7
    target_b = TargetInfo.from_report_body(Report.from_bytes(c.create_report(b)).body)
    data = bytes(range(64))
    report = Report.from_bytes(c.create_report(a, target_b.to_bytes(), data))
    assert report.body.report_data == data
    # B checks the REPORT with its report key (what the quoting enclave does).
    from sgx_platform.keys import aes_cmac

    report_key = c.get_key(b, KeyRequest(keyname=int(KeyName.REPORT),
                                         key_id=report.key_id).to_bytes())
    assert aes_cmac(report_key, report.mac_body()) == report.mac
    refused(lambda: c.create_report(a, bytes(511), data), S.INVALID_ARGUMENT,
            "MALFORMED_TARGETINFO")
    refused(lambda: c.create_report(a, b"", bytes(63)), S.INVALID_ARGUMENT,
            "MALFORMED_REPORTDATA")
    e = refused(lambda: c.get_key(a, KeyRequest(keyname=int(KeyName.PROVISION)).to_bytes()),
                S.PERMISSION_DENIED, "SGX_INVALID_ATTRIBUTE")
    assert e.sgx_code == 2
    assert refused(lambda: c.get_key(a, KeyRequest(keyname=9).to_bytes()), S.INVALID_ARGUMENT,
                   "SGX_INVALID_KEYNAME").sgx_code == 256
    # Seal under MRSIGNER in A, open in B (same signer and product); MRENCLAVE only in A.
    blob = c.seal(a, b"secret", b"aad", policy=pb.SEAL_POLICY_MRSIGNER)
    assert c.unseal(b, blob) == (b"secret", b"aad")
    blob = c.seal(a, b"secret", policy=pb.SEAL_POLICY_MRENCLAVE)
    assert c.unseal(a, blob) == (b"secret", b"")
    e = refused(lambda: c.unseal(b, blob), S.INVALID_ARGUMENT, "UNSEAL_FAILED")
    assert e.errno_name == "EBADMSG"
    refused(lambda: c.unseal(a, b"junk"), S.INVALID_ARGUMENT, "MALFORMED_SEALED_DATA")
    refused(lambda: c.seal(a, b""), S.INVALID_ARGUMENT, "SEAL_PARAMETER")
    # Before INIT nothing runs inside.
    h = c.create_enclave(secs_bytes()).enclave_handle
    refused(lambda: c.create_report(h), S.FAILED_PRECONDITION, "WRONG_STATE")


def test_debug_access_only_for_debug_enclaves(start: Callable[..., Platform],
                                              key: rsa.RSAPrivateKey) -> None:
    c = start().device
    pages = data_image(ro_pages=1, rw_pages=0)
    mrenclave = mrenclave_of(pages, 8 * PAGE)
    prod = wire_build(c, pages)
    c.init_enclave(prod, sign(key, mrenclave))
    e = refused(lambda: c.debug_read(prod, 2 * PAGE, 8), S.PERMISSION_DENIED, "NOT_DEBUGGABLE")
    assert e.errno_name == "EFAULT"
    refused(lambda: c.debug_write(prod, 2 * PAGE, b"x"), S.PERMISSION_DENIED, "NOT_DEBUGGABLE")
    debug = wire_build(c, pages, attributes=Attributes(MODE64.flags | 2, 3))
    c.init_enclave(debug, sign(key, mrenclave))
    assert c.debug_read(debug, 2 * PAGE, 4) == b"\x10" * 4
    c.debug_write(debug, 2 * PAGE, b"\x99")  # EDBGWR ignores the EPCM's missing W
    assert c.read_memory(debug, 2 * PAGE, 2) == b"\x99\x10"


# -- lifetime: leases, reset, restart ------------------------------------------------------------


def test_an_unrenewed_lease_ends_and_its_pages_return(start: Callable[..., Platform]) -> None:
    c = start("lease_seconds = 0.4\n").device
    total = c.info().epc_pages_total
    kept = c.create_enclave(secs_bytes()).enclave_handle
    dropped = c.create_enclave(secs_bytes()).enclave_handle
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.info().enclave_count > 1:
        c.renew_lease(kept)
        time.sleep(0.1)
    assert c.info().enclave_count == 1
    assert c.info().epc_pages_free == total - 2
    refused(lambda: c.renew_lease(dropped), S.NOT_FOUND, "UNKNOWN_HANDLE")
    c.renew_lease(kept)


def test_reset_and_restart_make_old_handles_stale(
    start: Callable[..., Platform], key: rsa.RSAPrivateKey
) -> None:
    p = start()
    pages = data_image()
    h = wire_build(p.device, pages)
    p.device.init_enclave(h, sign(key, mrenclave_of(pages, 8 * PAGE)))
    p.owner.latch_launch_policy(b"\x01" * 32)
    p.owner.lock_le_registers()
    before = p.device.info()
    reset = p.owner.reset()
    assert reset.enclaves_destroyed == 1 and reset.boot_epoch != before.boot_epoch
    e = refused(lambda: p.device.read_memory(h, 3 * PAGE, 4), S.NOT_FOUND, "STALE_HANDLE")
    assert e.errno_name == "ESTALE"
    after = p.device.info()
    assert after.epc_pages_free == after.epc_pages_total
    assert not after.le_pubkey_hash_locked and after.launch_policy_latch == b""
    h2 = p.device.create_enclave(secs_bytes()).enclave_handle
    p.close()
    restarted = start()
    assert restarted.device.info().boot_epoch != after.boot_epoch
    refused(lambda: restarted.device.renew_lease(h2), S.NOT_FOUND, "STALE_HANDLE")


# -- owner calls and platform info ---------------------------------------------------------------


def test_owner_calls(start: Callable[..., Platform], key: rsa.RSAPrivateKey) -> None:
    p = start()
    info = p.device.info()
    assert info.launch_mode == pb.LAUNCH_MODE_OPEN and len(info.boot_epoch) == 8
    pages = data_image()
    h = wire_build(p.device, pages)
    p.device.init_enclave(h, sign(key, mrenclave_of(pages, 8 * PAGE)))
    blob = p.device.seal(h, b"kept", policy=pb.SEAL_POLICY_MRENCLAVE)
    # Owner calls are refused on the device socket.
    refused(lambda: p.device.update_tcb(), S.PERMISSION_DENIED, "PERMISSION_DENIED")
    refused(lambda: p.device.reset(), S.PERMISSION_DENIED, "PERMISSION_DENIED")
    new_svn = p.owner.update_tcb()
    assert new_svn[0] == info.cpu_svn[0] + 1 and p.device.info().cpu_svn == new_svn
    refused(lambda: p.owner.update_tcb(info.cpu_svn), S.FAILED_PRECONDITION, "TCB_NOT_RAISED")
    refused(lambda: p.owner.update_tcb(b"\x01"), S.INVALID_ARGUMENT, "MALFORMED_CPUSVN")
    assert p.device.unseal(h, blob) == (b"kept", b"")
    p.owner.set_owner_epoch(b"\x42" * 16)
    refused(lambda: p.device.unseal(h, blob), S.INVALID_ARGUMENT, "UNSEAL_FAILED")
    refused(lambda: p.owner.set_owner_epoch(b"short"), S.INVALID_ARGUMENT,
            "MALFORMED_OWNER_EPOCH")
    p.owner.set_le_pubkey_hash(b"\x07" * 32)
    assert p.device.info().le_pubkey_hash == b"\x07" * 32
    assert p.owner.lock_le_registers() == b"\x07" * 32
    e = refused(lambda: p.owner.set_le_pubkey_hash(b"\x08" * 32), S.FAILED_PRECONDITION,
                "REGISTERS_LOCKED")
    assert e.errno_name == "EPERM"
    p.owner.latch_launch_policy(b"\x05" * 32)
    assert p.device.info().launch_policy_latch == b"\x05" * 32
    refused(lambda: p.owner.latch_launch_policy(b"\x05" * 32), S.FAILED_PRECONDITION,
            "LATCH_SET")
    refused(lambda: p.owner.latch_launch_policy(b"\x05"), S.INVALID_ARGUMENT,
            "MALFORMED_DIGEST")


def test_metrics_count_calls_and_denials_by_rule(start: Callable[..., Platform]) -> None:
    p = start()
    m = p.service.metrics
    p.device.info()
    h = p.device.create_enclave(secs_bytes()).enclave_handle
    code = SecInfo(PageType.REG, R | X).to_bytes()
    refused(lambda: p.device.add_pages(h, 0, bytes(PAGE), code, measure=True),
            S.PERMISSION_DENIED, "LOAD_NO_EXEC_FROM_WIRE")
    assert m.value("sgxemu_platform_calls_total", {"method": "GetPlatformInfo",
                                                   "code": "OK"}) == 1
    assert m.value("sgxemu_platform_calls_total", {"method": "AddPages",
                                                   "code": "PERMISSION_DENIED"}) == 1
    assert m.value("sgxemu_platform_denials_total", {"rule": "no_exec_from_wire",
                                                     "reason": "LOAD_NO_EXEC_FROM_WIRE"}) == 1
    total = m.value("sgxemu_platform_epc_pages", {"state": "total"})
    assert m.value("sgxemu_platform_epc_pages", {"state": "used"}) == 2 and total > 2
    assert m.value("sgxemu_platform_enclaves") == 1


def test_metrics_are_exposed_over_http(start: Callable[..., Platform]) -> None:
    import urllib.request

    p = start('[metrics]\naddress = "127.0.0.1:0"\n')
    p.device.info()
    url = f"http://{p.service.addresses['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'sgxemu_platform_calls_total{code="OK",method="GetPlatformInfo"} 1.0' in text
    assert 'sgxemu_platform_epc_pages{state="free"}' in text
