"""Repository hygiene: layout rules and the one-way dependency direction of STYLE.md.

The dependency checks import every module of a package in a fresh interpreter and inspect
``sys.modules``: a grep would miss what an ``__init__`` pulls in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ("platform", "quoting", "verifier", "launchctl", "cli", "protos")
TOP_LEVEL = (*CONTAINERS, "tests", "bench", "docs", "examples")
COMPONENTS = {
    "sgx_platform": ROOT / "platform" / "sgx_platform",
    "sgx_quoting": ROOT / "quoting" / "sgx_quoting",
    "sgx_verifier": ROOT / "verifier" / "sgx_verifier",
    "sgx_launchctl": ROOT / "launchctl" / "sgx_launchctl",
    "sgxemu_cli": ROOT / "cli" / "sgxemu_cli",
    "sgx_rpc": ROOT / "protos" / "sgx_rpc",
}

_PROBE = r"""
import importlib, json, pkgutil, sys
name = sys.argv[1]
package = importlib.import_module(name)
if hasattr(package, "__path__"):
    for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_loaded_by(package: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"importing {package} failed:\n{out.stderr}"
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def _under(modules: list[str], prefix: str) -> list[str]:
    return [m for m in modules if m == prefix or m.startswith(prefix + ".")]


@pytest.mark.parametrize("folder", TOP_LEVEL)
def test_no_init_directly_in_top_level_folder(folder: str) -> None:
    assert not (ROOT / folder / "__init__.py").exists()


def test_platform_init_is_empty() -> None:
    assert (ROOT / "platform" / "sgx_platform" / "__init__.py").read_bytes() == b""


def test_no_importable_platform_module_shadows_the_standard_library() -> None:
    for folder in ("", *CONTAINERS, "tests", "bench"):
        base = ROOT / folder
        assert not (base / "platform.py").exists(), base
        assert not (base / "platform" / "__init__.py").exists(), base
    out = subprocess.run(
        [sys.executable, "-c", "import platform, sys; print(platform.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out.stdout.strip()).resolve().is_relative_to(stdlib)


def test_pytest_collects_from_the_repository_root() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_arch_is_pure() -> None:
    loaded = _modules_loaded_by("sgx_platform.arch")
    own = [m for m in _under(loaded, "sgx_platform") if m != "sgx_platform"]
    assert all(m.startswith("sgx_platform.arch") for m in own), own
    assert not _under(loaded, "grpc")
    assert not _under(loaded, "sgx")
    for other in ("sgx_quoting", "sgx_verifier", "sgx_launchctl", "sgxemu_cli"):
        assert not _under(loaded, other)


def test_verifier_uses_only_arch_of_the_platform() -> None:
    loaded = _modules_loaded_by("sgx_verifier")
    platform_modules = [m for m in _under(loaded, "sgx_platform") if m != "sgx_platform"]
    assert all(m.startswith("sgx_platform.arch") for m in platform_modules), platform_modules
    for forbidden in ("sgx_quoting", "sgx_launchctl", "sgxemu_cli", "dcap_qvl"):
        assert not _under(loaded, forbidden), forbidden


#: What quoting and launchctl may load of the platform: the pure arch library and the
#: platform's published gRPC client (which itself loads only arch, generated code and sgx_rpc).
PLATFORM_API_MODULES = ("sgx_platform.rpc", "sgx_platform.rpc.client")


@pytest.mark.parametrize("package", ["sgx_quoting", "sgx_launchctl"])
def test_quoting_and_launchctl_use_the_platform_only_through_its_api(package: str) -> None:
    loaded = _modules_loaded_by(package)
    platform_modules = [m for m in _under(loaded, "sgx_platform") if m != "sgx_platform"]
    assert all(
        m.startswith("sgx_platform.arch") or m in PLATFORM_API_MODULES for m in platform_modules
    ), platform_modules
    others = {"sgx_quoting", "sgx_launchctl"} - {package}
    for forbidden in (*others, "sgx_verifier", "sgxemu_cli", "dcap_qvl"):
        assert not _under(loaded, forbidden), forbidden


def test_the_platform_client_loads_no_emulator_state() -> None:
    loaded = _modules_loaded_by("sgx_platform.rpc.client")
    platform_modules = [m for m in _under(loaded, "sgx_platform") if m != "sgx_platform"]
    assert all(
        m.startswith("sgx_platform.arch") or m in PLATFORM_API_MODULES for m in platform_modules
    ), platform_modules


def test_rpc_runtime_imports_no_component() -> None:
    loaded = _modules_loaded_by("sgx_rpc")
    platform_modules = [m for m in _under(loaded, "sgx_platform") if m != "sgx_platform"]
    assert all(m.startswith("sgx_platform.arch") for m in platform_modules), platform_modules
    for forbidden in ("sgx_quoting", "sgx_verifier", "sgx_launchctl", "sgxemu_cli", "dcap_qvl"):
        assert not _under(loaded, forbidden), forbidden


def test_platform_does_not_import_the_other_components() -> None:
    loaded = _modules_loaded_by("sgx_platform")
    for forbidden in ("sgx_quoting", "sgx_verifier", "sgx_launchctl", "sgxemu_cli", "dcap_qvl"):
        assert not _under(loaded, forbidden), forbidden


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "package", ["sgx_platform", "sgx_quoting", "sgx_verifier", "sgx_launchctl"]
)
def test_only_rpc_modules_import_generated_code(package: str) -> None:
    base = COMPONENTS[package]
    offenders = []
    for path in base.rglob("*.py"):
        if "rpc" in path.relative_to(base).parts:
            continue
        generated = [n for n in _imports_of(path) if n == "sgx" or n.startswith("sgx.")]
        if generated:
            offenders.append(f"{path.relative_to(ROOT)}: {generated}")
    assert not offenders, offenders


def test_every_package_is_typed() -> None:
    for path in COMPONENTS.values():
        assert (path / "py.typed").exists(), path
