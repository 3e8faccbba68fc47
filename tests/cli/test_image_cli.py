"""``sgxemu image build | keygen | measure | sign | sigstruct show`` through ``main``."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from sgx_platform.arch.image import build_image, measure
from sgx_platform.arch.sgxs import read_sgxs
from sgxemu_cli.main import main

SIGDIR = ("fortanix-rust-sgx", "sigstruct")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = int(e.code) if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(result: tuple[int, str, str], fragment: str) -> None:
    code, out, err = result
    assert code == 64, (code, out, err)
    assert "Traceback" not in err and out == ""
    assert fragment in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sgxemu:"), err


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "vendor.pem"
    assert main(["keygen", "--out", str(path)]) == 0
    return path


@pytest.fixture
def image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "hello.sgxs"
    code, _, _ = run(
        capsys, "image", "build", "--out", str(path), "--code-pages", "3", "--data-pages", "2",
        "--heap-pages", "4", "--tcs", "2", "--seed", "7",
    )  # fmt: skip
    assert code == 0
    return path


# -- happy paths ------------------------------------------------------------------------------


def test_image_build_writes_the_builder_image(
    image_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = build_image(code_pages=3, data_pages=2, heap_pages=4, tcs=2, seed=7)
    assert read_sgxs(image_file.read_bytes()) == expected
    code, out, _ = run(capsys, "measure", str(image_file))
    assert code == 0 and out == measure(expected).hex() + "\n"
    code, out, _ = run(capsys, "measure", str(image_file), "--json")
    doc = json.loads(out)
    assert doc["mrenclave"] == measure(expected).hex()
    assert (doc["pages"], doc["measured_pages"], doc["size"]) == (15, 11, 0x10000)


def test_image_build_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "x.sgxs"
    code, out, _ = run(capsys, "image", "build", "--out", str(out_file), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["mrenclave"] == measure(read_sgxs(out_file.read_bytes())).hex()


@pytest.mark.parametrize(
    ("name", "mrenclave"),
    [
        ("test_enclave.sgxs", "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"),
        ("report.sgxs", "a06a560b26f5e397b2d7872fac66fe4b43bf4f507296ee048f110be6fb1a2290"),
    ],
)
def test_measure_real_files(
    real_vectors: Path, capsys: pytest.CaptureFixture[str], name: str, mrenclave: str
) -> None:
    code, out, _ = run(capsys, "measure", str(real_vectors.joinpath(*SIGDIR, name)))
    assert (code, out) == (0, mrenclave + "\n")


def test_keygen_writes_a_private_rsa3072_e3_key(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers().e == 3 and key.key_size == 3072
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    before = key_file.read_bytes()
    assert_usage_error(run(capsys, "keygen", "--out", str(key_file)), "refusing to overwrite")
    assert key_file.read_bytes() == before


def test_sign_and_show(
    image_file: Path, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sig_file = tmp_path / "hello.sig"
    code, out, err = run(
        capsys, "sign", str(image_file), "--key", str(key_file), "--out", str(sig_file),
        "--isvprodid", "65535", "--isvsvn", "3", "--date", "2024-05-06", "--json",
    )  # fmt: skip
    assert code == 0, err
    signed = json.loads(out)
    raw = sig_file.read_bytes()
    assert len(raw) == 1808
    mrenclave = measure(read_sgxs(image_file.read_bytes())).hex()
    assert signed["mrenclave"] == mrenclave == raw[960:992].hex()
    # Independent check with cryptography (little-endian on disk, big-endian for PKCS#1).
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    n = key.public_key().public_numbers().n
    assert raw[128:512] == n.to_bytes(384, "little")
    key.public_key().verify(
        raw[516:900][::-1], raw[0:128] + raw[900:1028], padding.PKCS1v15(), hashes.SHA256()
    )
    s = int.from_bytes(raw[516:900], "little")
    q1 = s * s // n
    assert int.from_bytes(raw[1040:1424], "little") == q1
    assert int.from_bytes(raw[1424:1808], "little") == (s**3 - q1 * s * n) // n
    assert raw[20:24] == bytes.fromhex("06052420")  # BCD 0x20240506, little-endian
    assert signed["mrsigner"] == hashlib.sha256(raw[128:512]).hexdigest()

    code, out, _ = run(capsys, "sigstruct", "show", str(sig_file), "--json")
    shown = json.loads(out)
    assert code == 0
    assert shown["mrenclave"] == shown["enclavehash"] == mrenclave
    assert shown["mrsigner"] == signed["mrsigner"]
    assert (shown["isvprodid"], shown["isvsvn"], shown["date"]) == (65535, 3, "2024-05-06")
    assert shown["attributes"]["flags"] == "0x0000000000000004"
    assert shown["attribute_mask"]["flags"] == "0xfffffffffffffffd"
    assert shown["attribute_mask"]["xfrm"] == "0xffffffffffffff1b"
    assert shown["debug_launch_possible"] is True
    assert shown["signature_valid"] and shown["q1_valid"] and shown["q2_valid"] and shown["valid"]
    assert shown["reasons"] == []

    code, out, _ = run(capsys, "sigstruct", "show", str(sig_file))
    assert code == 0 and f"mrenclave              {mrenclave}" in out


def test_sign_no_debug(
    image_file: Path, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sig_file = tmp_path / "nodebug.sig"
    code, _, _ = run(
        capsys,
        "sign",
        str(image_file),
        "--key",
        str(key_file),
        "--out",
        str(sig_file),
        "--no-debug",
    )
    assert code == 0
    _, out, _ = run(capsys, "sigstruct", "show", str(sig_file), "--json")
    shown = json.loads(out)
    assert shown["attribute_mask"]["flags"] == "0xffffffffffffffff"
    assert "DEBUG" not in shown["attributes"]["names"] and shown["debug_launch_possible"] is False
    assert shown["valid"]


def test_show_real_sigstruct(real_vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "sigstruct",
        "show",
        str(real_vectors.joinpath(*SIGDIR, "test_enclave.sig")),
        "--json",
    )
    shown = json.loads(out)
    assert code == 0
    assert shown["mrsigner"] == "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542"
    assert shown["mrenclave"] == "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    assert shown["signature_valid"] is True and shown["valid"] is True
    assert (shown["isvprodid"], shown["date"], shown["vendor"]) == (65535, "2016-12-14", "0x0000")


@pytest.mark.parametrize(
    ("position", "valid_flags", "fragment"),
    [
        (1024, (False, True, True), "RSA signature does not verify"),  # signed ISVPRODID
        (600, (False, False, False), "RSA signature does not verify"),  # s: Q1, Q2 follow
        (1100, (True, False, True), "Q1"),
        (1500, (True, True, False), "Q2"),
        (512, (False, False, False), "EXPONENT"),
    ],
)
def test_show_reports_tampering(
    real_vectors: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    position: int,
    valid_flags: tuple[bool, bool, bool],
    fragment: str,
) -> None:
    raw = bytearray(real_vectors.joinpath(*SIGDIR, "test_enclave.sig").read_bytes())
    raw[position] ^= 0x01
    path = tmp_path / "t.sig"
    path.write_bytes(bytes(raw))
    code, out, _ = run(capsys, "sigstruct", "show", str(path), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["valid"] is False
    if position == 512:
        assert shown["structure_valid"] is False and shown["signature_valid"] is False
    else:
        assert (shown["signature_valid"], shown["q1_valid"], shown["q2_valid"]) == valid_flags
    assert any(fragment in r for r in shown["reasons"])


# -- unusable input: one line, exit 64 -----------------------------------------------------------


def test_bad_images_and_sigstructs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], real_vectors: Path
) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not an enclave\n")
    real = real_vectors.joinpath(*SIGDIR, "test_enclave.sgxs").read_bytes()
    truncated = tmp_path / "trunc.sgxs"
    truncated.write_bytes(real[:-100])
    sig = real_vectors.joinpath(*SIGDIR, "test_enclave.sig").read_bytes()
    short_sig = tmp_path / "short.sig"
    short_sig.write_bytes(sig[:-1])
    long_sig = tmp_path / "long.sig"
    long_sig.write_bytes(sig + b"\0")
    bad_header = tmp_path / "hdr.sig"
    bad_header.write_bytes(b"\x07" + sig[1:])
    assert_usage_error(run(capsys, "measure", str(junk)), "not a usable SGXS")
    assert_usage_error(run(capsys, "measure", str(truncated)), "truncated")
    assert_usage_error(run(capsys, "measure", str(tmp_path / "missing.sgxs")), "does not exist")
    assert_usage_error(run(capsys, "measure", str(tmp_path)), "is a directory")
    assert_usage_error(run(capsys, "sigstruct", "show", str(junk)), "expected 1808 bytes")
    assert_usage_error(run(capsys, "sigstruct", "show", str(short_sig)), "got 1807")
    assert_usage_error(run(capsys, "sigstruct", "show", str(long_sig)), "got 1809")
    assert_usage_error(run(capsys, "sigstruct", "show", str(bad_header)), "bad HEADER")


def test_bad_keys(image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.sig")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    small = tmp_path / "rsa2048.pem"
    small.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    sign = ("sign", str(image_file), "--out", out, "--key")
    assert_usage_error(run(capsys, *sign, str(junk)), "not a PEM private key")
    assert_usage_error(run(capsys, *sign, str(small)), "RSA-3072 with e=3")
    assert_usage_error(run(capsys, *sign, str(ec_key)), "RSA-3072 with e=3")
    assert_usage_error(run(capsys, *sign, str(encrypted)), "encrypted")
    assert_usage_error(run(capsys, *sign, str(tmp_path / "none.pem")), "does not exist")
    assert not (tmp_path / "x.sig").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["image", "build", "--out", "X", "--tcs", "0"],
        ["image", "build", "--out", "X", "--code-pages", "-1"],
        ["image", "build", "--out", "X", "--code-pages", "0"],
        ["image", "build", "--out", "X", "--heap-pages", "lots"],
        ["image", "build", "--out", "X", "--seed", str(2**64)],
        ["sign", "IMG", "--key", "K", "--out", "X", "--isvprodid", "65536"],
        ["sign", "IMG", "--key", "K", "--out", "X", "--isvsvn", "-1"],
        ["sign", "IMG", "--key", "K", "--out", "X", "--date", "2024-13-01"],
        ["image"],
        ["sigstruct"],
    ],
)
def test_bad_arguments_exit_64(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / a) if a in ("X", "IMG", "K") else a for a in argv]
    code, _out, err = run(capsys, *argv)
    assert code == 64 and "Traceback" not in err
    assert not (tmp_path / "X").exists()


def test_unwritable_output(
    image_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_usage_error(
        run(capsys, "image", "build", "--out", str(tmp_path / "no" / "such" / "dir.sgxs")),
        "cannot write",
    )


def test_entry_point_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The ``sgxemu`` entry function as a user runs it: exit 64 and no traceback on junk."""
    junk = tmp_path / "junk.sig"
    junk.write_bytes(b"\x00" * 10)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sgxemu_cli.main import entry; entry()",
            "sigstruct",
            "show",
            str(junk),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 64, proc.stderr
    assert (
        proc.stderr.strip()
        == f"sgxemu: {junk}: not a SIGSTRUCT: SIGSTRUCT: expected 1808 bytes, got 10"
    )
