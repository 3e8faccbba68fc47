"""``sgxemu verifier`` (serve, challenge, collateral import/refresh/status) and the
``verify --policy/--remote`` helpers, on a real state directory; ``serve`` runs as a separate
process and is stopped with SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgx_platform.arch.binding import report_data_for
from sgx_quoting.fixtures import fixture
from sgxemu_cli.commands import verifier as cli
from sgxemu_cli.errors import CliError, UsageError
from sgxemu_cli.service_pki import create_service_pki
from sgxemu_cli.state import StateLayout, make_private_dir

REPO = Path(__file__).resolve().parents[2]

_RUNNER = """
import argparse, sys
from sgxemu_cli.commands import verifier
parser = argparse.ArgumentParser(prog="sgxemu")
parser.add_argument("--state")
sub = parser.add_subparsers(dest="command", required=True)
verifier.register(sub)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgxemu")
    parser.add_argument("--state")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return parser


def run(state: Path, *argv: str) -> int:
    args = _parser().parse_args(["--state", str(state), *argv])
    result: int = args.func(args)
    return result


@pytest.fixture()
def state() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vcli", dir="/tmp") as d:
        layout = StateLayout(Path(d) / "s")
        make_private_dir(layout.root)
        for path in (layout.tls, layout.run):
            make_private_dir(path)
        create_service_pki(layout.tls, ("verifier",))
        layout.marker.write_text("{}")
        summary = cli.initialize_verifier(layout, fixture().pki.root.der)
        assert Path(summary["config"]).is_file()
        yield layout.root


def _collateral(tmp: Path) -> Path:
    f = fixture()
    path = tmp / "collateral.json"
    path.write_text(f.pcs().collateral_for_quote(f.quote()).to_json())
    return path


def test_init_writes_a_private_config_with_the_emulated_anchor(state: Path) -> None:
    home = state / "verifier"
    assert (home / "verifier.toml").stat().st_mode & 0o777 == 0o600
    assert 'name = "sgxemu-emulated"' in (home / "verifier.toml").read_text()
    assert (home / "challenge.key").stat().st_mode & 0o777 == 0o600
    config = cli.load_config(_parser().parse_args(["--state", str(state), "verifier", "serve"]))
    assert [a.name for a in config.anchor_set()] == ["intel-sgx-root-ca", "sgxemu-emulated"]


def test_collateral_import_and_status(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _collateral(tmp_path)
    assert run(state, "verifier", "collateral", "import", str(path), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [i["placement"] for i in doc["items"]] == ["became_latest"] * 4
    assert run(state, "verifier", "collateral", "import", str(path), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [i["placement"] for i in doc["items"]] == ["already_latest"] * 4
    # The fixture collateral (June 2025) has long expired by the wall clock: status says so.
    assert run(state, "verifier", "collateral", "status", "--json") == 1
    status = json.loads(capsys.readouterr().out)
    assert len(status["latest"]) == 4 and all(r["seconds_left"] < 0 for r in status["latest"])


def test_forged_or_junk_collateral_is_refused(state: Path, tmp_path: Path) -> None:
    doc = json.loads(_collateral(tmp_path).read_text())
    doc["qe_identity_signature"] = "00" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    with pytest.raises(CliError, match="nothing was imported"):
        run(state, "verifier", "collateral", "import", str(forged))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    with pytest.raises(UsageError, match="known formats"):
        run(state, "verifier", "collateral", "import", str(junk))
    with pytest.raises(UsageError, match="does not exist"):
        run(state, "verifier", "collateral", "import", str(tmp_path / "missing"))


def test_refresh_needs_a_configured_source(state: Path, tmp_path: Path) -> None:
    quote = tmp_path / "q.bin"
    quote.write_bytes(fixture().quote())
    # init points the local verifier at its world's PCS socket; nothing serves it here.
    with pytest.raises(CliError, match=r"(?i)pcs"):
        run(state, "verifier", "collateral", "refresh", "--quote", str(quote))
    config = state / "verifier" / "verifier.toml"
    text = config.read_text()
    assert '[pcs]\ngrpc = "unix:../run/pcs.sock"\n' in text
    config.write_text(text.replace('[pcs]\ngrpc = "unix:../run/pcs.sock"\n', ""))
    with pytest.raises(CliError, match="no PCS or PCCS"):
        run(state, "verifier", "collateral", "refresh", "--quote", str(quote))


def test_load_policy_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("allow_debug = 'yes'\n")
    with pytest.raises(UsageError, match="allow_debug"):
        cli.load_policy(str(bad))


@pytest.fixture()
def serving(state: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    assert run(state, "verifier", "collateral", "import", str(_collateral(tmp_path))) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, "--state", str(state), "verifier", "serve",
         "--listen", "127.0.0.1:0"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    address = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and address is None:
        line = proc.stderr.readline()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if match:
            address = match.group(1)
        elif not line and proc.poll() is not None:
            break
    assert address is not None, f"the verifier did not start (exit {proc.poll()})"
    try:
        yield state, address
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not (state / "run" / "verifier.sock").exists()


def test_serve_challenge_and_remote_verify(
    serving: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, address = serving
    assert run(state, "verifier", "challenge", "--json") == 0
    challenge = bytes.fromhex(json.loads(capsys.readouterr().out)["challenge"])
    assert len(challenge) == 96

    parser = argparse.ArgumentParser()
    parser.add_argument("--state")
    parser.add_argument("--json", action="store_true")
    cli.add_verify_options(parser)
    policy = tmp_path / "policy.toml"
    policy.write_text('trust_anchors = ["sgxemu-emulated"]\nallow_debug = false\n')
    args = parser.parse_args(
        ["--state", str(state), "--json", "--remote", address, "--policy", str(policy)]
    )
    f = fixture()
    at = int(f.now.timestamp()) + 60
    assert cli.verify_remote(args, f.quote(), at=at) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and doc["accepted"] and doc["tcb_status"] == "UpToDate"
    # The fixture's collateral is from 2025: verified as of then, so accepted but no token.
    assert doc["trust_anchor"] == "sgxemu-emulated" and "token" not in doc
    assert set(doc["collateral"]) == {"tcb_info", "qe_identity", "pck_crl", "root_ca_crl"}

    debug = f.quote(isv_report=f.isv_report(debug=True))
    assert cli.verify_remote(args, debug, at=at) == 1
    assert json.loads(capsys.readouterr().out)["policy"]["violations"][0]["code"] == (
        "POLICY_DEBUG_ENCLAVE"
    )
    # The default policy (no --policy) trusts Intel only, the wall clock has passed the
    # fixture's collateral: not verified.
    plain = parser.parse_args(["--state", str(state), "--json", "--remote", address])
    assert cli.verify_remote(plain, f.quote()) == 2
    assert cli.verify_remote(plain, b"junk") == 64
    bound = f.quote(isv_report=f.isv_report(report_data=report_data_for(challenge)))
    assert cli.verify_remote(args, bound, at=at) == 0


def test_config_is_strict_and_resolves_relative_paths(tmp_path: Path) -> None:
    from sgx_verifier.service import ConfigError, VerifierConfig

    config = VerifierConfig.from_toml(
        '[server]\nlisten = "127.0.0.1:9"\n[storage]\ncollateral_db = "db/c.sqlite"\n'
        '[[anchors]]\nname = "x"\ncertificate = "/abs/root.der"\n',
        tmp_path,
    )
    assert config.listen == "127.0.0.1:9"
    assert config.resolve(config.collateral_db) == tmp_path / "db" / "c.sqlite"
    assert config.anchors[0].certificate == Path("/abs/root.der")
    for text, match in [
        ("[serverr]\n", "unknown sections"),
        ('[server]\nlisen = "x"\n', "unknown keys"),
        ("[tokens]\nlifetime = 0\n", "positive integer"),
        ('[[anchors]]\nname = "x"\n', "exactly name and certificate"),
        ("[server\n", "not valid TOML"),
    ]:
        with pytest.raises(ConfigError, match=match):
            VerifierConfig.from_toml(text, tmp_path)
