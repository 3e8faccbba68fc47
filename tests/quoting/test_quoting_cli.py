"""``sgxemu attest``, ``sgxemu quoting serve|info|deploy-enclaves``, and the init functions.

The services run for real (platform, PCS and quoting in-process on the state directory's
sockets; ``quoting serve`` itself in a subprocess, stopped with SIGTERM); the command runs
through ``sgxemu_cli.main.main`` with the quoting module registered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sgx_platform.arch.dcap.quote import Quote
from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import write_sgxs
from sgx_platform.arch.signing import generate_signing_key, sign_sigstruct
from sgx_platform.config import load_config as load_platform_config
from sgx_platform.service import DEFAULT_CONFIG_TEXT, PlatformService
from sgx_quoting.config import QuotingConfig
from sgx_quoting.enclaves import EnclaveManifest
from sgx_quoting.service import QuotingServer
from sgx_quoting.state import PcsStore
from sgx_rpc.channel import unix_channel
from sgxemu_cli import main as cli_main
from sgxemu_cli.commands.init import InitOptions, initialize
from sgxemu_cli.state import StateLayout


def _run(state: Path, *argv: str) -> int:
    return cli_main.main(["--state", str(state), *argv])


@pytest.fixture(scope="module")
def initialized() -> Iterator[Path]:
    """An initialized state directory (in open launch mode), copied per test."""
    base = Path(tempfile.mkdtemp(prefix="sgxc", dir="/tmp"))
    state = base / "s"
    summary = initialize(state, InitOptions(state, launch_mode="open"))
    # A standalone platform: open mode with its own load policy, no launchctl to pull it from.
    (state / "platform" / "platform.toml").write_text(DEFAULT_CONFIG_TEXT)
    assert summary["pcs"]["qe_mrsigner"] == summary["quoting"]["vendor_mrsigner"]
    layout = StateLayout(state)
    image = build_image(seed=42)
    (layout.enclaves / "app.sgxs").write_bytes(write_sgxs(image))
    sig = sign_sigstruct(generate_signing_key(), measure(image), isvprodid=9, isvsvn=2)
    (base / "app.sig").write_bytes(sig.to_bytes())
    try:
        yield state
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def state(initialized: Path) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="sgxc", dir="/tmp"))
    copy = base / "s"
    shutil.copytree(initialized, copy, symlinks=True)
    shutil.copy(initialized.parent / "app.sig", base / "app.sig")
    try:
        yield copy
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Services:
    def __init__(self, state: Path) -> None:
        self.platform = PlatformService(load_platform_config(state))
        self.platform.start()
        self.quoting = QuotingServer(QuotingConfig.defaults(state))
        self.quoting.start()

    def stop(self) -> None:
        self.quoting.stop(grace=1)
        self.platform.stop(grace=1)


@pytest.fixture()
def services(state: Path) -> Iterator[Services]:
    s = Services(state)
    try:
        yield s
    finally:
        s.stop()


def _attest(state: Path, *extra: str) -> int:
    return _run(
        state,
        "attest",
        str(state / "enclaves" / "app.sgxs"),
        str(state.parent / "app.sig"),
        "--quote-out",
        str(state.parent / "q.bin"),
        *extra,
    )


def test_init_lays_out_the_quoting_side(initialized: Path) -> None:
    manifest = EnclaveManifest.load(initialized / "quoting", initialized / "enclaves")
    assert manifest.pce.image.parent == initialized / "enclaves"
    with PcsStore(initialized / "pcs").session() as pcs:
        qe = pcs.state.qe_identity
    assert qe.mrsigner == manifest.mrsigner.value
    assert qe.isvprodid == manifest.qe.isvprodid


def test_attest_writes_a_quote_and_its_collateral(
    state: Path, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _attest(
        state, "--report-data", "c0ffee", "--collateral-out", str(state.parent / "c.json"),
        "--json",
    ) == 0
    document = json.loads(capsys.readouterr().out)
    quote = (state.parent / "q.bin").read_bytes()
    parsed = Quote.from_bytes(quote)
    assert parsed.isv_report.report_data == bytes.fromhex("c0ffee") + bytes(61)
    assert (parsed.isv_report.isvprodid, parsed.isv_report.isvsvn) == (9, 2)
    assert document["mrenclave"] == parsed.isv_report.mrenclave.hex()
    assert document["quote_bytes"] == len(quote)
    collateral = dcap_qvl.QuoteCollateralV3.from_json((state.parent / "c.json").read_text())
    root = PcsStore(state / "pcs").load_pki().root_ca_der
    verdict = dcap_qvl.verify_with_root_ca(quote, collateral, root, int(time.time()))
    assert verdict.status == "UpToDate"
    # The enclave was destroyed on exit: only the PCE and QE are left.
    assert services.platform.driver.info().enclave_count == 2


def test_attest_with_a_challenge_from_the_verifier(
    state: Path, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    from sgx_verifier.rpc.server import build_server, build_service
    from sgx_verifier.service import VerifierConfig
    from sgxemu_cli.commands.verifier import initialize_verifier

    layout = StateLayout(state)
    initialize_verifier(layout, PcsStore(state / "pcs").load_pki().root_ca_der)
    config = dataclasses.replace(
        VerifierConfig.load(state / "verifier" / "verifier.toml"), listen="127.0.0.1:0"
    )
    server = build_server(config, build_service(config))
    server.start()
    try:
        address = next(a for a in server.addresses.values() if not a.startswith("unix:"))
        code = _attest(
            state, "--challenge", "--user-data", "abcd", "--verifier", address,
            "--challenge-out", str(state.parent / "challenge.bin"), "--json",
        )
    finally:
        server.stop(grace=1)
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    challenge = (state.parent / "challenge.bin").read_bytes()
    assert document["challenge"] == challenge.hex()
    body = Quote.from_bytes((state.parent / "q.bin").read_bytes()).isv_report
    assert body.report_data[:32] == hashlib.sha256(challenge + bytes.fromhex("abcd")).digest()
    assert body.report_data[32:] == bytes(32)


@pytest.mark.parametrize(
    "extra",
    [
        ("--report-data", "zz"),
        ("--report-data", "00" * 65),
        ("--user-data", "00"),
        ("--report-data", "00", "--challenge"),
    ],
)
def test_attest_refuses_unusable_input(state: Path, extra: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as usage:
        code = _attest(state, *extra)
        raise SystemExit(code)
    assert usage.value.code == 64


def test_attest_refuses_unusable_files(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (state.parent / "short.sig").write_bytes(b"\x00" * 100)
    assert _run(
        state, "attest", str(state / "enclaves" / "app.sgxs"), str(state.parent / "short.sig"),
        "--quote-out", str(state.parent / "q.bin"),
    ) == 64
    assert _run(
        state, "attest", str(state / "enclaves" / "missing.sgxs"), str(state.parent / "app.sig"),
        "--quote-out", str(state.parent / "q.bin"),
    ) == 64
    assert "does not exist" in capsys.readouterr().err


def test_attest_says_which_service_does_not_answer(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _attest(state) == 1
    assert "platform service does not answer" in capsys.readouterr().err
    platform = PlatformService(load_platform_config(state))
    platform.start()
    try:
        assert _attest(state) == 1
        assert "quoting service does not answer" in capsys.readouterr().err
        assert platform.driver.info().enclave_count == 0
    finally:
        platform.stop(grace=1)


def test_attest_reports_a_refused_load(state: Path, services: Services,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    outside = state.parent / "app.sgxs"
    shutil.copy(state / "enclaves" / "app.sgxs", outside)
    assert _run(
        state, "attest", str(outside), str(state.parent / "app.sig"),
        "--quote-out", str(state.parent / "q.bin"),
    ) == 1
    assert "the platform refused" in capsys.readouterr().err
    assert not (state.parent / "q.bin").exists()


def test_quoting_info_and_deploy(
    state: Path, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(state, "quoting", "info", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    manifest = EnclaveManifest.load(state / "quoting", state / "enclaves")
    assert info["qe"]["mrenclave"] == manifest.qe.mrenclave.hex()
    assert info["pce"]["svn"] == manifest.pce.isvsvn
    assert _run(state, "quoting", "deploy-enclaves", "--qe-svn", "5", "--json") == 0
    assert json.loads(capsys.readouterr().out)["qe_svn"] == "5"
    assert _run(state, "quoting", "deploy-enclaves", "--qe-svn", "4") == 1
    assert "never lowers" in capsys.readouterr().err
    assert _run(state, "quoting", "deploy-enclaves") == 64


def test_quoting_serve_serves_until_sigterm(state: Path) -> None:
    platform = PlatformService(load_platform_config(state))
    platform.start()
    script = (
        "import sys\n"
        "from sgxemu_cli import main as m\n"
        "sys.exit(m.main(sys.argv[1:]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, "--state", str(state), "quoting", "serve"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    socket = state / "run" / "quoting.sock"
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with unix_channel(socket) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="sgx.quoting.v1.QuotingService"), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert platform.driver.info().enclave_count == 2
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err.decode()[-2000:]
        assert b"quoting service serving" in out
        assert not socket.exists()
        assert platform.driver.info().enclave_count == 0  # the enclaves were destroyed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        platform.stop(grace=1)


def test_a_grpc_error_is_not_leaked_as_a_traceback(
    state: Path, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    services.quoting.stop(grace=1)
    assert _run(state, "quoting", "info") == 1
    assert "quoting service does not answer" in capsys.readouterr().err
    with pytest.raises(grpc.RpcError):
        with unix_channel(state / "run" / "quoting.sock") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_quoting_over_mtls_and_metrics(state: Path) -> None:
    from urllib.request import urlopen

    from sgx.quoting.v1 import quoting_pb2 as qpb
    from sgx.quoting.v1 import quoting_pb2_grpc as qgrpc
    from sgx_quoting.config import parse_config
    from sgx_rpc.channel import tls_channel

    platform = PlatformService(load_platform_config(state))
    platform.start()
    config = parse_config(
        'metrics_address = "127.0.0.1:0"\n[tcp]\naddress = "127.0.0.1:0"\n', state
    )
    server = QuotingServer(config)
    addresses = server.start()
    tls = state / "tls"
    ca = (tls / "ca.pem").read_bytes()
    try:
        with tls_channel(
            addresses["tcp"],
            ca,
            client_certificate_pem=(tls / "admin.pem").read_bytes(),
            client_key_pem=(tls / "admin.key").read_bytes(),
        ) as channel:
            info = qgrpc.QuotingServiceStub(channel).GetQuotingInfo(
                qpb.GetQuotingInfoRequest(), timeout=10
            )
        assert len(info.attestation_public_key) == 64
        with tls_channel(addresses["tcp"], ca) as channel, pytest.raises(grpc.RpcError) as no_cert:
            qgrpc.QuotingServiceStub(channel).GetQuotingInfo(
                qpb.GetQuotingInfoRequest(), timeout=10
            )
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
        with urlopen(f"http://{addresses['metrics']}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'sgxemu_quoting_calls_total{code="OK",method="GetQuotingInfo"} 1.0' in text
        assert "sgxemu_quoting_enclave_launches_total 1.0" in text
    finally:
        server.stop(grace=1)
        platform.stop(grace=1)
