"""``sgxemu up/down/status``: real service processes, health checks, stale pid files."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgxemu_cli import supervisor
from sgxemu_cli.commands.init import initialize
from sgxemu_cli.main import main
from sgxemu_cli.state import StateLayout


@pytest.fixture()
def layout() -> Iterator[StateLayout]:
    with tempfile.TemporaryDirectory(prefix="sgxsv", dir="/tmp") as d:
        root = Path(d) / "s"
        initialize(root)
        layout = StateLayout(root)
        try:
            yield layout
        finally:
            supervisor.down(layout)


def _status_json(layout: StateLayout, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--state", str(layout.root), "status", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_up_status_down(layout: StateLayout, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state", str(layout.root), "up", "--detach"]) == 0
    assert "SERVING" in capsys.readouterr().out
    code, doc = _status_json(layout, capsys)
    assert code == 0 and doc["healthy"] is True
    pids = [s["pid"] for s in doc["services"]]
    assert all(isinstance(p, int) for p in pids)
    # up again is idempotent: the same processes
    assert main(["--state", str(layout.root), "up", "--detach"]) == 0
    capsys.readouterr()
    assert [s["pid"] for s in _status_json(layout, capsys)[1]["services"]] == pids
    assert main(["--state", str(layout.root), "down"]) == 0
    assert "stopped" in capsys.readouterr().out
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    code, doc = _status_json(layout, capsys)
    assert code == 1 and {s["health"] for s in doc["services"]} == {"STOPPED"}
    assert not list(layout.run.glob("*.pid"))


def test_a_killed_service_is_reported_and_restarts_on_its_state(
    layout: StateLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    supervisor.up(layout)
    pid = supervisor.running_pid(layout, "platform")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while supervisor.running_pid(layout, "platform") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    code, doc = _status_json(layout, capsys)
    assert code == 1
    assert doc["services"][0]["running"] is False
    rows = supervisor.up(layout)
    assert rows[0].health == "SERVING" and rows[0].pid != pid


def test_a_stale_pid_file_is_never_signalled(layout: StateLayout) -> None:
    # A pid file naming a live process that is not this state's service (here: ourselves).
    supervisor.pid_file(layout, "platform").write_text(f"{os.getpid()}\n")
    assert supervisor.running_pid(layout, "platform") is None
    assert supervisor.stop_service(layout, "platform") is False
    assert not supervisor.pid_file(layout, "platform").exists()


def test_commands_refuse_a_directory_that_is_not_a_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state", str(tmp_path), "status"]) == 64
    assert "sgxemu --state" in capsys.readouterr().err
