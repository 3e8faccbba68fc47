"""``sgxemu demo``: the whole story behaves, and a misbehaving step fails the demo."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from sgxemu_cli.commands.demo import STEPS, Outcome, Step, World, run_demo


def test_the_whole_story_behaves(capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="sgxdemo", dir="/tmp") as tmp:
        code = run_demo(Path(tmp))
        leftover = list(Path(tmp).glob("*/run/*.pid"))
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert f"All {len(STEPS)} steps behaved." in out
    assert out.count("   ok   ") == len(STEPS)
    for expected in ("LAUNCH_SIGNER_NOT_LISTED", "POLICY_LOCKED", "IMAGE_PATH_NOT_ALLOWED",
                     "OutOfDate", "test anchor"):
        assert expected in out, expected
    assert not leftover


def test_a_step_that_misbehaves_fails_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def good(_world: World) -> Outcome:
        ran.append("good")
        return Outcome(True, "fine")

    def bad(_world: World) -> Outcome:
        ran.append("bad")
        return Outcome(False, "the launch was not denied")

    def boom(_world: World) -> Outcome:
        raise RuntimeError("kaput")

    steps = (Step("one", "first", good), Step("two", "second", bad), Step("three", "", good))
    assert run_demo(tmp_path, steps) == 1
    assert ran == ["good", "bad"]
    out = capsys.readouterr().out
    assert "FAIL the launch was not denied" in out and "did not behave" in out
    assert run_demo(tmp_path, (Step("x", "", boom),)) == 1
    assert "unexpected error: RuntimeError: kaput" in capsys.readouterr().out
