"""`python -m bot generate` for the operator: --image, Ctrl-C, and errors said the operator's way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Secret
from bot.generate import ProgressPrinter, generate
from bot.jobs import JobUpdate
from bot.runpod import RunPodClient
from bot.services import Services
from tests.conftest import FAST, FAST_RETRY, ROOT, SETTING_NAMES, make_settings
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome


def _photo(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    Image.new("RGB", size, (30, 120, 200)).save(path, "PNG")
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_image_feeds_an_upscale_workflow_as_members_attachments_do(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    photo = _photo(tmp_path / "photo.png")
    code = await generate(
        settings,
        "a pony",
        workflow="pony-v6-xl-upscale",
        out=tmp_path / "out",
        image=photo,
        timing=FAST,
    )
    assert code == 0
    [run] = fake_runpod.requests_for("run")
    [sent] = run.json["input"]["images"]
    [loader] = [n for n in run.json["input"]["workflow"].values() if n["class_type"] == "LoadImage"]
    assert loader["inputs"]["image"] == sent["name"]
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


async def test_an_image_with_the_default_workflow_switches_to_its_image_variant(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    photo = _photo(tmp_path / "photo.png")
    code = await generate(
        settings, "a pony", workflow=None, out=tmp_path / "out", image=photo, timing=FAST
    )
    assert code == 0
    [run] = fake_runpod.requests_for("run")
    assert len(run.json["input"]["images"]) == 1


async def test_a_damaged_image_is_refused_before_anything_is_sent(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(_photo(tmp_path / "whole.png").read_bytes()[:200])
    settings = make_settings(tmp_path, fake_runpod)
    code = await generate(
        settings, "a pony", workflow="pony-v6-xl-upscale", out=tmp_path / "out", image=broken
    )
    assert code == 1
    assert f"--image {broken}: That image is damaged or incomplete" in capsys.readouterr().err
    assert fake_runpod.requests_for("run") == []


async def test_a_missing_image_file_is_named(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    missing = tmp_path / "nowhere.png"
    code = await generate(
        settings, "a pony", workflow="pony-v6-xl-upscale", out=tmp_path / "out", image=missing
    )
    assert code == 1 and f"--image {missing}: It cannot be read" in capsys.readouterr().err


async def test_a_workflow_that_needs_an_image_asks_for_image_path_not_an_attachment(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    code = await generate(settings, "a pony", workflow="pony-v6-xl-upscale", out=tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 1 and "give one with `--image PATH`" in err and "attach" not in err


async def test_a_dead_api_base_is_said_once_before_anything_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v2"
    settings = make_settings(tmp_path, RUNPOD_API_BASE=base)
    client = RunPodClient(
        api_base=base, endpoint_id="test-endpoint", api_key=Secret("k"), retry=FAST_RETRY
    )
    code = await generate(
        settings, "test", workflow="test-pattern", out=tmp_path / "out", timing=FAST, runpod=client
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("is unreachable") == 1 and "check RUNPOD_API_BASE and the network" in err
    assert "queued" not in err


async def test_a_wrong_key_tells_the_operator_what_to_set(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod, RUNPOD_API_KEY="not-the-key")
    code = await generate(
        settings, "test", workflow="test-pattern", out=tmp_path / "o", timing=FAST
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "the API key was refused (401)" in err and "set RUNPOD_API_KEY" in err
    assert "until the operator fixes it" not in err and "not-the-key" not in err
    assert fake_runpod.requests_for("run") == []


async def test_a_failed_job_names_its_cause_for_the_operator(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_runpod.script(Outcome(status="FAILED", details=[fr.DETAIL_DAMAGED_CHECKPOINT]))
    settings = make_settings(tmp_path, fake_runpod)
    code = await generate(
        settings, "test", workflow="test-pattern", out=tmp_path / "o", timing=FAST
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "failed: The checkpoint file on the endpoint is damaged" in err
    assert (
        "cause: Job processing failed: Workflow execution error: Node Type: CheckpointLoaderSimple"
        in err
    )


async def test_ctrl_c_mid_job_cancels_it_at_runpod_and_exits_130_without_a_traceback(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="STUCK", queue_delay=0))
    environ = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    environ.update(
        PYTHONPATH=str(ROOT),
        RUNPOD_API_KEY=fake_runpod.api_key,
        RUNPOD_ENDPOINT_ID=fake_runpod.endpoint_id,
        RUNPOD_API_BASE=fake_runpod.api_base,
        DATABASE_PATH=str(tmp_path / "stablehand.db"),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "generate", "test", "--workflow", "test-pattern",
        "--out", str(tmp_path / "out"),
        cwd=tmp_path, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await fake_runpod.wait_for_requests("run", 1, timeout=60)
        [job] = fake_runpod.jobs.values()
        deadline = time.monotonic() + 30
        while job.status != "IN_PROGRESS" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert job.status == "IN_PROGRESS"
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err = stderr.decode()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"Cancelled job 1 at RunPod ({job.id})" in err and "may still be billed" in err
    assert len(fake_runpod.requests_for("cancel")) == 1 and job.status == "CANCELLED"
    assert stdout == b""


async def test_generated_pngs_carry_the_comfyui_prompt(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    out = tmp_path / "out"
    assert await generate(settings, "test", workflow="test-pattern", out=out, timing=FAST) == 0
    [path] = out.glob("*.png")
    [run] = fake_runpod.requests_for("run")
    with Image.open(path) as image:
        assert json.loads(image.text["prompt"]) == run.json["input"]["workflow"]


async def test_progress_repeats_nothing_that_did_not_change(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    job = await services.jobs.accept(
        services.prepare("test --workflow test-pattern", user_id=1, guild_id=None, channel_id=None)
    )
    printer = ProgressPrinter()
    for update in (
        JobUpdate(job, "queued", position=1),
        JobUpdate(job, "queued", position=1),
        JobUpdate(job, "waiting"),
        JobUpdate(job, "queued", position=1),
        JobUpdate(job, "running", elapsed=2.0),
    ):
        printer(update)
    assert capsys.readouterr().err.splitlines() == [
        "  queued (position 1)",
        "  waiting in RunPod's queue",
        "  queued (position 1)",
        "  generating (2 s)",
    ]


async def test_a_workflow_of_a_further_endpoint_runs_there_and_a_wrong_id_is_named_first(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    flux = FakeRunPod(api_key=fake_runpod.api_key, endpoint_id="flux-endpoint")
    fake_runpod.also_serve(flux)
    settings = make_settings(tmp_path, fake_runpod, RUNPOD_ENDPOINTS="flux=flux-endpoint")
    code = await generate(
        settings, "a red fox", workflow="flux1-dev-fp8", out=tmp_path / "out", timing=FAST
    )
    assert code == 0
    assert len(flux.jobs) == 1 and fake_runpod.jobs == {}
    wrong = make_settings(tmp_path, fake_runpod, RUNPOD_ENDPOINTS="flux=nowhere")
    code = await generate(wrong, "a red fox", workflow="flux1-dev-fp8", out=tmp_path / "out")
    assert code == 2
    assert "endpoint nowhere does not exist (404)" in capsys.readouterr().err
    assert len(flux.jobs) == 1, "nothing more was sent"
