"""The repository's copy of the real SGX/DCAP vectors is intact (sizes and SHA-256 of sets.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def test_every_listed_file_is_present_and_unchanged(real_vectors: Path) -> None:
    listed = json.loads((real_vectors / "sets.json").read_text())["files"]
    assert len(listed) > 50
    for name, expected in listed.items():
        data = (real_vectors / name).read_bytes()
        assert len(data) == expected["size"], name
        assert hashlib.sha256(data).hexdigest() == expected["sha256"], name
