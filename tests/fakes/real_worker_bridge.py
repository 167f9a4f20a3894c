"""Runs inside the real-stack Python: worker-comfyui's own handler under runpod-python's run_job.

    PYTHON tests/fakes/real_worker_bridge.py WORKER_DIR COMFY_HOST PID_FILE

Reads one job a line (`{"id": ..., "input": ...}`) on stdin and answers each with one line: the
dict `run_job(handler, job)` returns, exactly what a real worker sends back to RunPod. Uses only
the standard library and what the handler itself needs, so it runs in ComfyUI's venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def _private_result_stream() -> TextIO:
    """A stream on the original stdout; from here on fd 1 goes to stderr with the handler's prints."""
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return results


def _load_handler(worker_dir: Path, comfy_host: str, pid_file: str) -> Any:
    # The handler imports `network_volume` from src/, as the worker image lays them side by side.
    sys.path[:0] = [str(worker_dir), str(worker_dir / "src")]
    import handler

    # Only the address and the PID file differ from the image, so stacks can share a machine.
    handler.COMFY_HOST = comfy_host
    handler.COMFY_PID_FILE = pid_file
    return handler


def main(argv: list[str]) -> int:
    worker_dir, comfy_host, pid_file = Path(argv[0]), argv[1], argv[2]
    results = _private_result_stream()
    handler = _load_handler(worker_dir, comfy_host, pid_file)
    from runpod import version
    from runpod.serverless.modules.rp_job import run_job

    results.write(json.dumps({"ready": True, "runpod": version.__version__}) + "\n")
    results.flush()
    for line in sys.stdin:
        job = json.loads(line)
        result = asyncio.run(run_job(handler.handler, job))
        results.write(json.dumps(result) + "\n")
        results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
