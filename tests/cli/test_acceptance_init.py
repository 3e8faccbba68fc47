"""Acceptance (issue 5): after ``sgxemu init`` the launch-authority private key is not in the
state directory, whether it is exported (to a path outside) or destroyed.

Through the real command (``sgxemu --state S init``), not the launchctl library function: every
file that init writes is searched for the key's material (PEM and DER encodings, the private
exponent and primes in both byte orders), and every private key that init left in the state
directory (the service TLS keys, the PCS keys, the emulated vendor key) is loaded and shown not
to be the launch authority: its MRSIGNER differs from the launch enclave's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx_platform.arch.signing import mrsigner_of_public_key
from sgx_platform.arch.sigstruct import Sigstruct
from sgxemu_cli.main import main


def init(capsys: pytest.CaptureFixture[str], state: Path, *extra: str) -> dict[str, str]:
    code = main(["--state", str(state), "init", "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    launchctl: dict[str, str] = json.loads(out)["components"]["launchctl"]
    return launchctl


def key_material(key: rsa.RSAPrivateKey) -> list[bytes]:
    numbers = key.private_numbers()
    found = [
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        key.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption()),
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    ]
    for value in (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1):
        size = (value.bit_length() + 7) // 8
        found += [value.to_bytes(size, "big"), value.to_bytes(size, "little")]
    return found


def private_keys_in(state: Path) -> dict[Path, object]:
    """Every file under ``state`` that loads as a private key (PEM or DER)."""
    keys: dict[Path, object] = {}
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for loader in (serialization.load_pem_private_key, serialization.load_der_private_key):
            try:
                keys[path] = loader(data, password=None)
                break
            except (ValueError, TypeError):
                continue
    return keys


def assert_no_launch_authority_key(state: Path, le_mrsigner: str) -> None:
    # The launch enclave's SIGSTRUCT is what init keeps, and it names the signer.
    sig = Sigstruct.from_bytes((state / "launchctl" / "launch-enclave.sig").read_bytes())
    assert sig.mrsigner.hex() == le_mrsigner
    found = private_keys_in(state)
    assert len(found) >= 5, "the search found none of the keys init is known to write"
    for path, key in found.items():
        if isinstance(key, rsa.RSAPrivateKey):
            assert mrsigner_of_public_key(key).hex() != le_mrsigner, path


def test_an_exported_launch_authority_key_is_outside_and_nowhere_in_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, exported = tmp_path / "s", tmp_path / "offline" / "launch-authority.pem"
    exported.parent.mkdir()
    summary = init(capsys, state, "--export-launch-key", str(exported))
    assert Path(summary["launch_authority_key"]) == exported
    key = serialization.load_pem_private_key(exported.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert mrsigner_of_public_key(key).hex() == summary["le_mrsigner"]
    assert not exported.is_relative_to(state)
    secrets = key_material(key)
    files = [p for p in state.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), path
    assert_no_launch_authority_key(state, summary["le_mrsigner"])


def test_without_an_export_the_key_is_destroyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s"
    summary = init(capsys, state)
    assert summary["launch_authority_key"] == "destroyed"
    assert_no_launch_authority_key(state, summary["le_mrsigner"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"], "nothing written beside it"


def test_an_export_path_inside_the_state_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s"
    code = main(["--state", str(state), "init", "--export-launch-key", str(state / "la.pem")])
    _, err = capsys.readouterr()
    assert code != 0 and "inside the state directory" in err
    assert not state.exists(), "a refused init leaves nothing behind"
