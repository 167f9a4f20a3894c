"""The contributor sandbox (`python -m tests.fakes.sandbox`) runs what a contributor asks, to the end."""

from __future__ import annotations

import pytest

from tests.fakes import sandbox

FAST = ["--queue-delay", "0", "--run-delay", "0.1", "--quick"]


async def test_a_batch_prompt_is_started_and_every_job_finishes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await sandbox.main(["a {red, blue} car --repeat 2", *FAST]) == 0
    shown = capsys.readouterr().out
    assert "the sandbox presses Start for you" in shown
    assert all(f"stablehand-{job}-1.png" in shown for job in (1, 2, 3, 4)), shown
    assert "Traceback" not in shown


async def test_the_walkthrough_grants_credits_with_the_current_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await sandbox.main(["--walkthrough", *FAST]) == 0
    shown = capsys.readouterr().out
    assert "5 bonus credits (contest winner)" in shown
    assert "Something went wrong" not in shown and "Traceback" not in shown
