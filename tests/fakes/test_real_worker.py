"""The real-worker mode's plumbing that needs no stack: the fake's hook, folder and source checks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_client
from tests.fakes.fake_runpod import FakeJob, FakeRunPod, Outcome
from tests.fakes.real_worker import STACK_ENV, Stack, StackError
from tests.realstack.prepare import Source, verify_source

REAL_FAILURE = {
    "error": "Job processing failed",
    "output": {
        "details": [
            "Workflow execution error: Node Type: CheckpointLoaderSimple, Node ID: 4, "
            "Message: Error while deserializing header: header too small\n"
        ]
    },
}


async def test_a_job_waits_for_the_worker_and_is_answered_with_what_it_reported() -> None:
    taken: list[FakeJob] = []
    async with FakeRunPod() as fake:
        fake.job_runner = taken.append
        client = make_client(fake)
        try:
            submitted = await client.run({"workflow": {}})
            assert (await client.status(submitted.id)).status == "IN_QUEUE"
            (job,) = taken
            job.reported = dict(REAL_FAILURE)
            fake.finish(job.id, Outcome(status="FAILED"))
            status = await client.status(submitted.id)
        finally:
            await client.aclose()

    assert status.status == "FAILED"
    assert status.error == "Job processing failed"
    assert status.output == REAL_FAILURE["output"]


def test_an_unprepared_folder_is_refused_with_the_command_that_prepares_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(StackError, match=r"tests\.realstack\.prepare"):
        Stack.load(tmp_path)


def test_a_source_tree_of_another_commit_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("print('changed')\n")
    expected = hashlib.sha256(b"the real one\n").hexdigest()
    source = Source("worker-comfyui", tmp_path, "d2a557235b38" + "0" * 28, {"handler.py": expected})

    with pytest.raises(StackError, match=r"handler\.py differs from commit d2a557235b38"):
        verify_source(source)
    (tmp_path / "handler.py").write_text("the real one\n")
    assert "match commit" in verify_source(source)


def test_without_a_stack_the_real_stack_suite_is_skipped_saying_how_to_run_it() -> None:
    environ = {k: v for k, v in os.environ.items() if k != STACK_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "tests/realstack"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout
    assert " passed" not in result.stdout and "skipped" in result.stdout
    assert f"set {STACK_ENV} to a folder made by" in result.stdout
