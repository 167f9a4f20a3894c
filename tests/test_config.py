"""Settings: required per command, every problem at once, secrets never shown."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from bot import logs
from bot.config import RUN_REQUIRES, SETTINGS, SYNC_REQUIRES, ConfigError, Secret, load_settings
from tests.conftest import ROOT, run_cli


def test_run_needs_token_key_and_endpoint_and_names_each_with_its_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(RUN_REQUIRES, environ={}, dotenv_path=None)
    text = caught.value.render()
    for name in ("DISCORD_TOKEN", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID"):
        assert name in text
    assert "discord.com/developers" in text and "runpod.io" in text
    assert len(caught.value.problems) == 3


def test_sync_needs_only_the_discord_token() -> None:
    settings = load_settings(
        SYNC_REQUIRES, environ={"DISCORD_TOKEN": "abc.def.ghi"}, dotenv_path=None
    )
    assert settings.runpod_api_key is None
    with pytest.raises(ConfigError) as caught:
        load_settings(SYNC_REQUIRES, environ={}, dotenv_path=None)
    assert caught.value.problems == [p for p in caught.value.problems if "DISCORD_TOKEN" in p]


def test_rendering_workflows_needs_no_settings_and_defaults_apply() -> None:
    settings = load_settings(environ={}, dotenv_path=None)
    assert settings.runpod_api_base == "https://api.runpod.ai/v2"
    assert settings.checkpoint == "ponyDiffusionV6XL.safetensors"
    assert str(settings.database_path) == "stablehand.db"
    assert settings.log_level == "INFO"


def test_every_bad_value_is_reported_together() -> None:
    env = {
        "MAX_STEPS": "lots",
        "MAX_COUNT": "0",
        "RUNPOD_API_BASE": "ftp://example.com",
        "NSFW_POLICY": "whatever",
        "RUNPOD_ENDPOINT_ID": "bad id!",
        "LOG_LEVEL": "loud",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env, dotenv_path=None)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6
    assert "MAX_STEPS='lots' is not a number" in problems
    assert "MAX_COUNT='0' must be 1 or more" in problems
    assert "LOG_LEVEL='loud' must be one of debug, info, warning, error" in problems
    assert "RUNPOD_API_BASE" in problems and "https://" in problems
    assert "NSFW_POLICY" in problems and "safe_tags" in problems


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("CHECKPOINT=from-dotenv.safetensors\nLOG_LEVEL=debug\n")
    settings = load_settings(environ={"CHECKPOINT": "from-env.safetensors"}, dotenv_path=dotenv)
    assert settings.checkpoint == "from-env.safetensors"
    assert settings.log_level == "DEBUG"


def test_secrets_are_masked_in_every_repr() -> None:
    env = {"DISCORD_TOKEN": "super-secret-token-value", "RUNPOD_API_KEY": "rpa_secretkeyvalue123"}
    settings = load_settings(environ=env, dotenv_path=None)
    for text in (
        repr(settings),
        str(settings),
        f"{settings.discord_token}",
        repr(settings.runpod_api_key),
    ):
        assert "super-secret-token-value" not in text
        assert "rpa_secretkeyvalue123" not in text
    assert settings.discord_token is not None
    assert settings.discord_token.reveal() == "super-secret-token-value"


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    for setting in SETTINGS:
        match = re.search(rf"^#?\s*{setting.name}=(.*)$", text, re.MULTILINE)
        assert match, f"{setting.name} missing from .env.example"
        if setting.default is not None:
            assert match.group(1) == setting.default, setting.name


@pytest.mark.parametrize("args", [(), ("run",)])
def test_running_with_no_settings_says_what_to_set_and_exits_2(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert "RUNPOD_ENDPOINT_ID is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_check_with_no_settings_fails_with_fixes(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 1
    assert "[FAIL] settings: DISCORD_TOKEN is not set" in result.stdout
    assert "fix:" in result.stdout
    assert "[ok  ] database" in result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def test_readme_documents_every_setting() -> None:
    text = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in text]
    assert not missing, f"README's settings table lacks {missing}"


def test_a_secret_that_slips_into_a_log_line_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    token = Secret("MTIzNDU2Nzg5MDEyMzQ1Njc4.secret.token-value")
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    logs.configure("INFO", [token, None])
    try:
        try:
            raise RuntimeError(f"request failed with Authorization: Bot {token.reveal()}")
        except RuntimeError:
            logging.getLogger("stablehand.test").exception("login with %s failed", token.reveal())
    finally:
        root.handlers[:], root.level = before
    logged = capsys.readouterr().err
    assert token.reveal() not in logged
    assert logged.count("********") >= 2 and "login with ******** failed" in logged


def test_a_malformed_log_call_does_not_break_its_caller(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    logs.configure("INFO", [Secret("a-secret-value")])
    try:
        logging.getLogger("stablehand.test").info("two placeholders %s %s", "one argument")
    finally:
        root.handlers[:], root.level = before
    assert "Logging error" in capsys.readouterr().err


def test_keys_and_tokens_must_be_plain_ascii() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={"RUNPOD_API_KEY": "clé", "DISCORD_TOKEN": "to ken"}, dotenv_path=None
        )
    problems = "\n".join(caught.value.problems)
    assert "RUNPOD_API_KEY=(hidden) must be copied exactly as shown" in problems
    assert "DISCORD_TOKEN=(hidden)" in problems and "clé" not in problems
