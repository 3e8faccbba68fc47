"""Shared fixtures: the location of the real SGX/DCAP vectors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _vectors_dir() -> Path:
    """The repository's copy (tests/vectors/real, see its SOURCES.md), or an override."""
    override = os.environ.get("SGXEMU_REAL_VECTORS")
    if override:
        return Path(override)
    return REPO_ROOT / "tests" / "vectors" / "real"


@pytest.fixture(scope="session")
def real_vectors() -> Path:
    """The folder of real SGX/DCAP vectors (copied byte for byte from ../shared/vectors/real)."""
    path = _vectors_dir()
    if not (path / "sets.json").is_file():
        pytest.fail(f"real vectors not found at {path}; set SGXEMU_REAL_VECTORS")
    return path
