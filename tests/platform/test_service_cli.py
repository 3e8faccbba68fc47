"""``sgxemu platform ...`` and ``sgxemu enclave load`` against a real platform service."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, mrsigner_of_public_key, sign_sigstruct
from sgx_platform.config import load_config
from sgx_platform.rpc.client import PlatformClient
from sgx_platform.service import DEFAULT_CONFIG_TEXT, PlatformService
from sgxemu_cli import main as cli_main
from sgxemu_cli.commands.init import InitOptions, initialize

IMAGE = build_image(code_pages=2, data_pages=1, heap_pages=1)


def make_state(root: Path) -> Path:
    state = root / "s"
    initialize(state, InitOptions(state, launch_mode="open"))
    # A standalone platform: open mode with its own load policy, no launchctl to pull it from.
    (state / "platform" / "platform.toml").write_text(DEFAULT_CONFIG_TEXT)
    return state


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sgxc", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def state(work: Path) -> Path:
    return make_state(work)


@pytest.fixture()
def service(state: Path) -> Iterator[PlatformService]:
    svc = PlatformService(load_config(state), max_workers=4)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop(grace=1)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


def sgxemu(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli_main.main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def files(work: Path, key: rsa.RSAPrivateKey, **sign_kw: object) -> tuple[Path, Path]:
    image, sig = work / "app.sgxs", work / "app.sig"
    image.write_bytes(write_sgxs(IMAGE))
    sig.write_bytes(sign_sigstruct(key, measure(IMAGE), **sign_kw).to_bytes())  # type: ignore[arg-type]
    return image, sig


def test_enclave_load_prints_identity_and_destroys_the_enclave(
    capsys: pytest.CaptureFixture[str], service: PlatformService, state: Path, work: Path,
    key: rsa.RSAPrivateKey,
) -> None:
    image, sig = files(work, key)
    s = str(state)
    code, out, err = sgxemu(capsys, "--state", s, "enclave", "load", str(image), str(sig))
    assert code == 1 and out == ""
    assert "IMAGE_PATH_NOT_ALLOWED" in err and "copy it into" in err
    code, out, err = sgxemu(capsys, "--state", s, "enclave", "load", str(image), str(sig),
                            "--install", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mrenclave"] == measure(IMAGE).hex()
    assert doc["mrsigner"] == mrsigner_of_public_key(key).hex()
    assert doc["pages"] == len(IMAGE.pages) and doc["epc_pages_freed"] > 0
    assert service.driver.info().enclave_count == 0, "destroyed on exit"
    # Now the image is in the allowed directory: load it by that path, as text.
    installed = state / "enclaves" / "app.sgxs"
    code, out, err = sgxemu(capsys, "enclave", "load", str(installed), str(sig), "--debug",
                            "--state", s)
    assert code == 0, err
    assert f"MRENCLAVE {measure(IMAGE).hex()}" in out and "destroyed" in out


def test_enclave_load_refusals_and_bad_input(
    capsys: pytest.CaptureFixture[str], service: PlatformService, state: Path, work: Path,
    key: rsa.RSAPrivateKey,
) -> None:
    s = str(state)
    image, _ = files(work, key)
    other = sign_sigstruct(key, measure(build_image(code_pages=1, seed=5))).to_bytes()
    (work / "other.sig").write_bytes(other)
    code, _, err = sgxemu(capsys, "--state", s, "enclave", "load", str(image),
                          str(work / "other.sig"), "--install")
    assert code == 1
    assert "SGX_INVALID_MEASUREMENT" in err and "SGX code 4" in err
    (work / "short.sig").write_bytes(bytes(100))
    code, _, err = sgxemu(capsys, "--state", s, "enclave", "load", str(image),
                          str(work / "short.sig"))
    assert code == 64 and "1808" in err
    code, _, err = sgxemu(capsys, "--state", s, "enclave", "load", str(image),
                          str(work / "missing.sig"))
    assert code == 64
    assert service.driver.info().enclave_count == 0


def test_enclave_load_with_provision_key(
    capsys: pytest.CaptureFixture[str], service: PlatformService, state: Path, work: Path,
    key: rsa.RSAPrivateKey,
) -> None:
    attributes = Attributes(int(AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY), 3)
    image, sig = files(work, key, attributes=attributes)
    code, out, err = sgxemu(capsys, "--state", str(state), "enclave", "load", str(image),
                            str(sig), "--install", "--provision", "--json")
    assert code == 0, err
    assert json.loads(out)["provision_key"] is True


def test_platform_info_and_owner_commands(
    capsys: pytest.CaptureFixture[str], service: PlatformService, state: Path
) -> None:
    s = str(state)
    code, out, err = sgxemu(capsys, "--state", s, "platform", "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["launch_mode"] == "open" and info["enclave_count"] == 0
    code, out, _ = sgxemu(capsys, "--state", s, "platform", "update-tcb", "--json")
    assert code == 0 and json.loads(out)["cpu_svn"] != info["cpu_svn"]
    code, _, err = sgxemu(capsys, "--state", s, "platform", "update-tcb", "--cpusvn",
                          info["cpu_svn"])
    assert code == 1 and "TCB_NOT_RAISED" in err
    code, out, _ = sgxemu(capsys, "--state", s, "platform", "set-owner-epoch", "ab" * 16)
    assert code == 0 and "OWNEREPOCH set" in out
    code, _, err = sgxemu(capsys, "--state", s, "platform", "set-owner-epoch", "abcd")
    assert code == 64 and "16 bytes" in err
    code, out, _ = sgxemu(capsys, "--state", s, "platform", "reset", "--json")
    assert code == 0 and json.loads(out)["boot_epoch"] == info["boot_epoch"] + 1
    code, out, _ = sgxemu(capsys, "--state", s, "platform", "info")
    assert code == 0 and "launch_mode: open" in out


def test_commands_without_a_running_service_say_how_to_start_it(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    code, _, err = sgxemu(capsys, "--state", str(state), "platform", "info", "--timeout", "2")
    assert code == 1 and "sgxemu platform serve" in err
    code, _, err = sgxemu(capsys, "--state", str(state / "nope"), "platform", "info")
    assert code == 64 and "sgxemu" in err


def test_platform_serve_runs_until_sigterm(state: Path) -> None:
    script = "import sys\nfrom sgxemu_cli import main as m\nsys.exit(m.main(sys.argv[1:]))\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "--state", str(state), "platform", "serve", "--log-json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "platform serving" in line or not line:
                break
        assert any("platform device: unix:" in x for x in lines), lines
        with PlatformClient.unix(load_config(state).sockets.device, timeout=10) as client:
            assert client.info().epc_pages_total > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        logs = [json.loads(x) for x in proc.stderr.read().splitlines() if x.startswith("{")]
        assert any(entry.get("event") == "platform_started" for entry in logs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not load_config(state).sockets.device.exists(), "sockets removed on shutdown"


def test_serve_refuses_to_steal_a_live_socket(
    capsys: pytest.CaptureFixture[str], service: PlatformService, state: Path
) -> None:
    code, _, err = sgxemu(capsys, "--state", str(state), "platform", "serve")
    assert code == 1 and "another server is listening" in err
    with PlatformClient.unix(service.config.sockets.device, timeout=10) as client:
        assert client.info().epc_pages_total > 0, "the running service is untouched"
