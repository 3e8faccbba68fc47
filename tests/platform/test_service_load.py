"""The load rules (the LSM question of the seed) end to end, through the real gRPC service.

Each rule denies what it should with its reason code, names itself and the fix in the
ErrorInfo, counts in the denial metric, and leaves no enclave behind; switched off, it lets the
same load through; an image in $STATE/enclaves/ loads with every rule on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.image import EnclaveImage, build_image, measure
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import parse_config
from sgx_platform.load_policy import LoadPolicy
from sgx_platform.rpc.client import PlatformClient, PlatformRpcError
from sgx_platform.service import PlatformService, initialize_state

S = grpc.StatusCode
R, W, X = SecInfoFlags.R, SecInfoFlags.W, SecInfoFlags.X
RULES = ("exec_only_from_file", "no_write_exec", "no_exec_from_wire", "no_unmeasured_exec")


class Platform:
    def __init__(self, state: Path, toml: str, provider: object = None) -> None:
        if not (state / "platform" / "fuses").exists():
            initialize_state(state / "platform")
        self.config = parse_config(toml, state)
        self.service = PlatformService(
            self.config, policy_provider=provider, max_workers=4  # type: ignore[arg-type]
        )
        self.service.start()
        self.client = PlatformClient.unix(self.config.sockets.device, timeout=30)

    def close(self) -> None:
        self.client.close()
        self.service.stop(grace=1)

    def denials(self, rule: str, reason: str) -> float:
        return self.service.metrics.value(
            "sgxemu_platform_denials_total", {"rule": rule, "reason": reason}
        )


@pytest.fixture()
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxl", dir="/tmp"))
    d.chmod(0o755)
    (d / "enclaves").mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def start(state: Path) -> Iterator[Callable[..., Platform]]:
    running: list[Platform] = []

    def make(toml: str = "", provider: object = None) -> Platform:
        p = Platform(state, toml, provider)
        running.append(p)
        return p

    yield make
    for p in running:
        p.close()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def rules_off(*off: str) -> str:
    return "[load_policy]\n" + "".join(f"{r} = {'false' if r in off else 'true'}\n" for r in RULES)


def put(state: Path, name: str, image: EnclaveImage) -> bytes:
    data = write_sgxs(image)
    (state / "enclaves" / name).write_bytes(data)
    return hashlib.sha256(data).digest()


def signed(key: rsa.RSAPrivateKey, image: EnclaveImage) -> bytes:
    return sign_sigstruct(key, measure(image)).to_bytes()


def with_page(image: EnclaveImage, index: int, **changes: object) -> EnclaveImage:
    pages = list(image.pages)
    pages[index] = dataclasses.replace(pages[index], **changes)  # type: ignore[arg-type]
    return EnclaveImage(image.ssa_frame_size, image.size, tuple(pages))


BASE = build_image(code_pages=2, data_pages=1, heap_pages=1)
CODE_INDEX = next(i for i, p in enumerate(BASE.pages) if p.secinfo.permissions & X)


def denied(
    p: Platform, call: Callable[[], object], rule: str, reason: str, *, file_load: bool = True
) -> PlatformRpcError:
    before = p.denials(rule, reason)
    with pytest.raises(PlatformRpcError) as e:
        call()
    err = e.value
    assert (err.code, err.reason) == (S.PERMISSION_DENIED, reason), (err.reason, err.message)
    assert (err.errno_name, err.rule) == ("EACCES", rule)
    assert err.hint, "a denial says how to fix it"
    if rule in RULES:
        assert f"rule {rule}" in err.message, "a denial names its rule"
    assert p.denials(rule, reason) == before + 1
    info = p.client.info()
    if file_load:
        assert info.enclave_count == 0 and info.epc_pages_free == info.epc_pages_total, (
            "a denied file load leaves nothing behind"
        )
    else:  # the wire client's enclave stays CREATED, but no page of the call was added
        assert info.epc_pages_free == info.epc_pages_total - 2 * info.enclave_count
    return err


def test_an_image_in_the_enclaves_directory_loads_with_every_rule_on(
    start: Callable[..., Platform], state: Path, key: rsa.RSAPrivateKey
) -> None:
    p = start()
    assert p.config.load_policy == LoadPolicy.defaults(state / "enclaves")
    digest = put(state, "app.sgxs", BASE)
    for path in ("app.sgxs", str(state / "enclaves" / "app.sgxs")):
        loaded = p.client.load_enclave_from_file(path, signed(key, BASE))
        assert loaded.initialized and loaded.mrenclave == measure(BASE)
        assert loaded.image_sha256 == digest and loaded.page_count == len(BASE.pages)
        p.client.destroy_enclave(loaded.handle)


def test_no_write_exec(start: Callable[..., Platform], state: Path,
                       key: rsa.RSAPrivateKey) -> None:
    rwx = with_page(BASE, CODE_INDEX, secinfo=SecInfo(PageType.REG, R | W | X))
    put(state, "rwx.sgxs", rwx)
    p = start()
    e = denied(p, lambda: p.client.load_enclave_from_file("rwx.sgxs", signed(key, rwx)),
               "no_write_exec", "LOAD_NO_WRITE_EXEC")
    assert "set no_write_exec off" in (e.hint or "")
    p.close()
    relaxed = start(rules_off("no_write_exec"))
    assert relaxed.client.load_enclave_from_file("rwx.sgxs", signed(key, rwx)).initialized


def test_no_unmeasured_exec(start: Callable[..., Platform], state: Path,
                            key: rsa.RSAPrivateKey) -> None:
    unmeasured = with_page(BASE, CODE_INDEX, measured=False)
    put(state, "unmeasured.sgxs", unmeasured)
    p = start()
    denied(p, lambda: p.client.load_enclave_from_file("unmeasured.sgxs",
                                                      signed(key, unmeasured)),
           "no_unmeasured_exec", "LOAD_NO_UNMEASURED_EXEC")
    p.close()
    relaxed = start(rules_off("no_unmeasured_exec"))
    loaded = relaxed.client.load_enclave_from_file("unmeasured.sgxs", signed(key, unmeasured))
    assert loaded.mrenclave == measure(unmeasured)


def _wire(client: PlatformClient, image: EnclaveImage, *, code_only: bool = False) -> bytes:
    """Build ``image`` with AddPages (``code_only``: just its first executable page)."""
    secs = Secs(size=image.size, base_address=image.size, ssa_frame_size=image.ssa_frame_size,
                attributes=Attributes(int(AttributeFlags.MODE64BIT), 3))
    handle = client.create_enclave(secs.to_bytes()).enclave_handle
    pages = [image.pages[CODE_INDEX]] if code_only else image.pages
    for page in pages:
        client.add_pages(handle, page.offset, page.data, page.secinfo.to_bytes(),
                         measure=page.measured)
    return handle


def test_executable_pages_from_the_wire(start: Callable[..., Platform],
                                        key: rsa.RSAPrivateKey) -> None:
    p = start()
    denied(p, lambda: _wire(p.client, BASE, code_only=True), "no_exec_from_wire",
           "LOAD_NO_EXEC_FROM_WIRE", file_load=False)
    p.close()
    p = start(rules_off("no_exec_from_wire"))
    e = denied(p, lambda: _wire(p.client, BASE, code_only=True), "exec_only_from_file",
               "LOAD_EXEC_ONLY_FROM_FILE", file_load=False)
    assert "LoadEnclaveFromFile" in (e.hint or "")
    p.close()
    p = start(rules_off("no_exec_from_wire", "exec_only_from_file"))
    handle = _wire(p.client, BASE)
    mrenclave, _ = p.client.init_enclave(handle, signed(key, BASE))
    assert mrenclave == measure(BASE), "the wire build measures like the file load"
    # Non-executable pages from the wire are fine under every rule (see test_service.py).


def test_the_digest_list(start: Callable[..., Platform], state: Path,
                         key: rsa.RSAPrivateKey) -> None:
    listed = put(state, "listed.sgxs", BASE)
    other = build_image(code_pages=1, data_pages=1, seed=9)
    other_digest = put(state, "other.sgxs", other)
    p = start(f'[load_policy]\nallowed_digests = ["{listed.hex()}"]\n')
    loaded = p.client.load_enclave_from_file("listed.sgxs", signed(key, BASE))
    assert loaded.initialized
    p.client.destroy_enclave(loaded.handle)
    e = denied(p, lambda: p.client.load_enclave_from_file("other.sgxs", signed(key, other)),
               "exec_only_from_file", "LOAD_EXEC_ONLY_FROM_FILE")
    assert other_digest.hex() in e.message and f"allow-digest {other_digest.hex()}" in (
        e.hint or ""
    )
    p.close()
    p = start(
        f'[load_policy]\nallowed_digests = ["{listed.hex()}"]\nexec_only_from_file = false\n'
    )
    assert p.client.load_enclave_from_file("other.sgxs", signed(key, other)).initialized


def test_the_platform_opens_images_only_under_allowed_directories_and_follows_no_symlink(
    start: Callable[..., Platform], state: Path, key: rsa.RSAPrivateKey
) -> None:
    outside = state / "outside"
    outside.mkdir()
    (outside / "app.sgxs").write_bytes(write_sgxs(BASE))
    os.symlink(outside / "app.sgxs", state / "enclaves" / "link.sgxs")
    os.symlink(outside, state / "enclaves" / "linkdir")
    p = start()
    sig = signed(key, BASE)
    cases = {
        str(outside / "app.sgxs"): "IMAGE_PATH_NOT_ALLOWED",
        "../outside/app.sgxs": "IMAGE_PATH_NOT_ALLOWED",
        "link.sgxs": "IMAGE_SYMLINK",
        "linkdir/app.sgxs": "IMAGE_SYMLINK",
    }
    for path, reason in cases.items():
        e = denied(p, lambda path=path: p.client.load_enclave_from_file(path, sig),
                   "image_path", reason)
        assert e.errno_name == "EACCES"
    with pytest.raises(PlatformRpcError) as missing:
        p.client.load_enclave_from_file("missing.sgxs", sig)
    assert (missing.value.code, missing.value.reason) == (S.NOT_FOUND, "IMAGE_NOT_FOUND")
    (state / "enclaves" / "junk.sgxs").write_bytes(b"not an sgxs stream")
    with pytest.raises(PlatformRpcError) as junk:
        p.client.load_enclave_from_file("junk.sgxs", sig)
    assert (junk.value.code, junk.value.reason) == (S.INVALID_ARGUMENT, "IMAGE_MALFORMED")


def test_a_policy_provider_that_fails_fails_closed(start: Callable[..., Platform], state: Path,
                                                   key: rsa.RSAPrivateKey) -> None:
    class Down:
        def load_policy(self) -> LoadPolicy:
            raise ConnectionError("launchctl is not running")

    put(state, "app.sgxs", BASE)
    p = start(provider=Down())
    denied(p, lambda: p.client.load_enclave_from_file("app.sgxs", signed(key, BASE)),
           "load_policy", "LOAD_POLICY_UNAVAILABLE")
    handle = p.client.create_enclave(
        Secs(size=8192, base_address=8192, attributes=Attributes(4, 3)).to_bytes()
    ).enclave_handle
    data = SecInfo(PageType.REG, R | W).to_bytes()
    with pytest.raises(PlatformRpcError) as e:
        p.client.add_pages(handle, 0, bytes(4096), data, measure=True)
    assert e.value.reason == "LOAD_POLICY_UNAVAILABLE"


def test_provision_key_defers_init_until_the_grant(
    start: Callable[..., Platform], state: Path, key: rsa.RSAPrivateKey
) -> None:
    put(state, "pce.sgxs", BASE)
    p = start()
    provision = PlatformClient.unix(p.config.sockets.provision, timeout=30)
    try:
        attributes = Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY), 3)
        sig = sign_sigstruct(key, measure(BASE), attributes=attributes).to_bytes()
        loaded = p.client.load_enclave_from_file("pce.sgxs", sig, provision_key=True)
        assert not loaded.initialized and loaded.mrenclave is None
        with pytest.raises(PlatformRpcError) as e:
            p.client.init_enclave(loaded.handle, sig)
        assert e.value.reason == "PROVISIONKEY_NOT_GRANTED"
        provision.grant_provision_key(loaded.handle)
        mrenclave, _ = p.client.init_enclave(loaded.handle, sig)
        assert mrenclave == measure(BASE)
    finally:
        provision.close()
