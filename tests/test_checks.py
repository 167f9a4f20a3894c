"""`python -m bot check` against the fakes: one line per check, a fix for each failure."""

from __future__ import annotations

from pathlib import Path

from bot.checks import run_checks
from tests.conftest import make_client, run_cli
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome


def _environ(
    tmp_path: Path, runpod: FakeRunPod, discord: FakeDiscord, **extra: str
) -> dict[str, str]:
    return {
        "DISCORD_TOKEN": discord.token,
        "RUNPOD_API_KEY": runpod.api_key,
        "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
        "RUNPOD_API_BASE": runpod.api_base,
        "DATABASE_PATH": str(tmp_path / "check.db"),
        **extra,
    }


async def test_everything_passes_against_working_services(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    lines: list[str] = []
    status = await run_checks(
        _environ(tmp_path, fake_runpod, fake_discord), print_line=lines.append
    )
    assert status == 0, lines
    text = "\n".join(lines)
    assert "[ok  ] RunPod: endpoint test-endpoint reachable, key accepted; workers:" in text
    assert "idle=1" in text
    assert "[ok  ] Discord: logged in as" in text and "permissions=274878024704" in text
    assert text.endswith("All checks passed.")


async def test_each_failure_names_its_fix_and_hides_the_secrets(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    env = _environ(
        tmp_path,
        fake_runpod,
        fake_discord,
        RUNPOD_API_KEY="rpa_wrongwrongwrong",
        DISCORD_TOKEN="bad.token.value",
    )
    lines: list[str] = []
    status = await run_checks(env, print_line=lines.append)
    text = "\n".join(lines)
    assert status == 1
    assert "[FAIL] RunPod: the API key was refused (401)" in text and "RUNPOD_API_KEY" in text
    assert (
        "[FAIL] Discord: the token was refused" in text and "Reset" not in text
    ) or "reset the token" in text
    assert "rpa_wrongwrongwrong" not in text and "bad.token.value" not in text


async def test_a_wrong_endpoint_id_is_named(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    lines: list[str] = []
    await run_checks(
        _environ(tmp_path, fake_runpod, fake_discord, RUNPOD_ENDPOINT_ID="nope"),
        print_line=lines.append,
    )
    assert any("endpoint nope does not exist (404)" in line for line in lines)


async def test_jobs_waiting_with_no_workers_is_a_failure(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    fake_runpod.workers = {"idle": 0, "ready": 0, "running": 0}
    fake_runpod.script(Outcome(status="HANG"))
    await make_client(fake_runpod).run({"workflow": {}})
    lines: list[str] = []
    assert (
        await run_checks(_environ(tmp_path, fake_runpod, fake_discord), print_line=lines.append)
        == 1
    )
    assert any("max workers" in line for line in lines)


async def test_each_endpoint_gets_its_own_line_and_only_the_one_without_workers_fails(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    flux = FakeRunPod(api_key=fake_runpod.api_key, endpoint_id="flux-endpoint")
    fake_runpod.also_serve(flux)
    flux.workers = {}
    flux.script(Outcome(status="HANG"))
    await make_client(flux).run({"workflow": {}})
    env = _environ(
        tmp_path, fake_runpod, fake_discord, RUNPOD_ENDPOINTS="flux=flux-endpoint,sdxl=gone"
    )
    lines: list[str] = []
    assert await run_checks(env, print_line=lines.append) == 1
    text = "\n".join(lines)
    assert "[ok  ] RunPod: endpoint test-endpoint reachable" in text
    assert "[FAIL] RunPod flux: endpoint flux-endpoint reachable" in text
    assert "jobs in queue: 1" in text and "max workers" in text
    assert "[FAIL] RunPod sdxl: endpoint gone does not exist (404)" in text
    assert "into RUNPOD_ENDPOINTS (sdxl=...)" in text


def test_with_no_settings_skipped_checks_are_not_counted_as_failures(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert "[skip] RunPod: needs RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID" in result.stdout
    assert "[skip] Discord: needs DISCORD_TOKEN" in result.stdout
    assert result.stdout.strip().endswith("3 check(s) failed.") and result.returncode == 1


def test_an_invalid_value_is_reported_with_what_to_do_next(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path, MAX_STEPS="lots")
    assert "[FAIL] settings: MAX_STEPS='lots' is not a number." in result.stdout
    assert "fix the ones above and run check again" in result.stdout and result.returncode == 1
