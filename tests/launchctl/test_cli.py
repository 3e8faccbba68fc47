"""``sgxemu launchctl ...`` against the real services, and the path of an admin who reads the
denial of ``sgxemu enclave load`` and runs the command it names."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from sgx_platform.arch.signing import mrsigner_of_public_key
from sgxemu_cli import main as cli_main


@pytest.fixture
def sgxemu(monkeypatch: pytest.MonkeyPatch, running: Any) -> Any:
    """``sgxemu --state STATE ARGS...`` in-process: returns (exit code, stdout, stderr)."""
    (running.state / "sgxemu-state.json").write_text('{"format": 1}\n')

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main.main(["--state", str(running.state), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_add_signer_by_key_matches_sigstruct_show_and_the_denial_names_the_fix(
    sgxemu: Any, running: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, image, sig = tmp_path / "k.pem", tmp_path / "app.sgxs", tmp_path / "app.sig"
    assert sgxemu("keygen", "--out", str(key), capsys=capsys)[0] == 0
    assert sgxemu("image", "build", "--out", str(image), "--seed", "21", capsys=capsys)[0] == 0
    assert sgxemu("sign", str(image), "--key", str(key), "--out", str(sig), capsys=capsys)[0] == 0
    code, out, _ = sgxemu("sigstruct", "show", str(sig), "--json", capsys=capsys)
    assert code == 0
    shown = json.loads(out)["mrsigner"]

    code, out, err = sgxemu("enclave", "load", str(image), str(sig), "--install", capsys=capsys)
    assert code == 1
    assert shown in err and "rule signer" in err
    command = err.split("an admin can allow it: ", 1)[1].strip()
    assert command == f"sgxemu launchctl add-signer {shown}"

    code, out, _ = sgxemu("launchctl", "add-signer", "--key", str(key), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["signer"]["mrsigner"] == shown
    code, out, err = sgxemu("enclave", "load", str(image), str(sig), "--install", "--debug",
                            capsys=capsys)
    assert code == 1 and "rule allow_debug" in err
    command = err.split("an admin can allow it: ", 1)[1].strip()
    assert sgxemu(*shlex.split(command)[1:], capsys=capsys)[0] == 0
    code, out, _ = sgxemu("enclave", "load", str(image), str(sig), "--install", "--debug",
                          "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["mrsigner"] == shown


def test_list_status_policy_lock_and_audit(
    sgxemu: Any, running: Any, keys: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    app = mrsigner_of_public_key(keys.app).hex()
    code, out, _ = sgxemu("launchctl", "add-signer", app, "--isvprodid", "3", "--isvprodid",
                          "4", "--min-isvsvn", "2", "--comment", "app team", capsys=capsys)
    assert code == 0 and app in out
    code, out, _ = sgxemu("launchctl", "list", "--json", capsys=capsys)
    listed = {e["mrsigner"]: e for e in json.loads(out)}
    assert listed[app] == {
        "mrsigner": app, "allow_debug": False, "allow_provision_key": False,
        "isvprodids": [3, 4], "min_isvsvn": 2, "comment": "app team",
    }
    assert len(listed) == 2  # and the vendor signer
    code, out, _ = sgxemu("launchctl", "policy", "set", "no_write_exec", "off", capsys=capsys)
    assert code == 0 and "rule no_write_exec: off" in out
    images = tmp_path / "imgs"
    images.mkdir()
    assert sgxemu("launchctl", "policy", "allow-dir", str(images), capsys=capsys)[0] == 0
    assert sgxemu("launchctl", "policy", "allow-digest", "ab" * 32, capsys=capsys)[0] == 0
    code, out, _ = sgxemu("launchctl", "policy", "show", "--json", capsys=capsys)
    policy = json.loads(out)
    assert policy["allowed_dirs"][-1] == str(images)
    assert policy["allowed_digests"] == ["ab" * 32]
    assert policy["rules"]["no_write_exec"] is False
    code, out, _ = sgxemu("launchctl", "status", "--json", capsys=capsys)
    status = json.loads(out)
    assert (status["locked"], status["mode"], status["entries"]) == (False, "token", 2)
    assert status["policy"] == policy

    code, out, _ = sgxemu("launchctl", "lock", "--json", capsys=capsys)
    digest = json.loads(out)["digest"]
    code, out, _ = sgxemu("launchctl", "status", "--json", capsys=capsys)
    assert json.loads(out)["locked"] and json.loads(out)["latched_digest"] == digest
    code, _, err = sgxemu("launchctl", "remove-signer", app, capsys=capsys)
    assert code == 1
    assert "POLICY_LOCKED" in err and "the launch policy is locked until the platform is reset" \
        in err
    code, _, err = sgxemu("launchctl", "policy", "set", "no_write_exec", "on", capsys=capsys)
    assert code == 1 and "POLICY_LOCKED" in err

    code, out, _ = sgxemu("launchctl", "audit", "--json", "--verify", capsys=capsys)
    audit = json.loads(out)
    assert code == 0 and audit["verification"]["verified"] is True
    events = [e["event"] for e in audit["entries"]]
    assert events[:3] == ["state_sealed", "boot_configuration_applied", "signer_added"]
    assert events[-1] == "policy_locked" and events.count("load_policy_changed") == 3
    code, out, _ = sgxemu("launchctl", "audit", "--verify", capsys=capsys)
    assert code == 0 and "audit chain verified" in out


def test_bad_input_and_a_stopped_daemon(
    sgxemu: Any, running: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert sgxemu("launchctl", "add-signer", "abcd", capsys=capsys)[0] == 64
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    assert sgxemu("launchctl", "add-signer", "--key", str(junk), capsys=capsys)[0] == 64
    assert sgxemu("launchctl", "add-signer", "--sigstruct", str(tmp_path / "none"),
                  capsys=capsys)[0] == 64
    with pytest.raises(SystemExit) as e:
        sgxemu("launchctl", "add-signer", capsys=capsys)
    assert e.value.code == 64
    with pytest.raises(SystemExit):
        sgxemu("launchctl", "policy", "set", "bogus_rule", "on", capsys=capsys)
    assert sgxemu("launchctl", "policy", "allow-digest", "xyz", capsys=capsys)[0] == 64
    running.stop_launchctl()
    code, _, err = sgxemu("launchctl", "status", "--timeout", "2", capsys=capsys)
    assert code == 1 and "does not answer" in err and "sgxemu launchctl serve" in err
