#!/usr/bin/env python3
"""Generate the Python gRPC code (and mypy stubs) for every .proto under protos/.

Usage: ``python protos/generate.py`` regenerates in place; ``--check`` regenerates into a
temporary directory and fails (exit 1) when the committed code differs, naming the files.
The generator pair is pinned in pyproject.toml (grpcio-tools and protobuf) so the check
cannot flap between machines.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _protos() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in ROOT.rglob("*.proto"))


def _generate(out: Path) -> None:
    include = Path(protoc.__file__).resolve().parent / "_proto"
    files = [str(p) for p in _protos()]
    bindir = Path(sys.executable).parent
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        exe = shutil.which(name) or str(bindir / name)
        if not Path(exe).exists():
            raise SystemExit(f"{name} not found: install the dev extra (mypy-protobuf)")
        plugins.append(f"--plugin={name}={exe}")
    args = [
        "grpc_tools.protoc",
        *plugins,
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    # Every generated directory is a regular package (sgx/, sgx/<component>/, .../v1/).
    for directory in {p.parent for p in out.rglob("*_pb2.py")}:
        d = directory
        while d != out:
            init = d / "__init__.py"
            if not init.exists():
                init.write_text("")
            d = d.parent


def _generated_files(base: Path) -> set[Path]:
    found = {p.relative_to(base) for p in base.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)}
    found |= {p.relative_to(base) for p in (base / "sgx").rglob("__init__.py")} if (
        base / "sgx"
    ).exists() else set()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = _generated_files(out)
        committed = _generated_files(ROOT)
        if args.check:
            stale = sorted(
                str(p)
                for p in fresh | committed
                if p not in fresh
                or p not in committed
                or not filecmp.cmp(out / p, ROOT / p, shallow=False)
            )
            if stale:
                print("generated code is stale; run: python protos/generate.py", file=sys.stderr)
                for name in stale:
                    print(f"  {name}", file=sys.stderr)
                return 1
            print(f"generated code is up to date ({len(fresh)} files)")
            return 0
        for p in committed - fresh:
            (ROOT / p).unlink()
        for p in fresh:
            (ROOT / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / p, ROOT / p)
        print(f"generated {len(fresh)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
