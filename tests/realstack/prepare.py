"""Prepare a real-stack folder: check the sources you have, lay out placeholder models, test-start.

    python -m tests.realstack.prepare FOLDER --comfyui DIR --worker DIR --python PATH [--port N]

Downloads and builds nothing. DIR are source trees of ComfyUI v0.8.0 and worker-comfyui 5.8.5;
PATH is the Python of a venv with ComfyUI's requirements plus `requests`, `websocket-client` and
`runpod`. Prints the settings that turn on the real-stack suite and the emulator.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fakes.real_worker import BRIDGE, STACK_ENV, ComfyUI, Stack, StackError

COMFYUI_VERSION = "0.8.0"
COMFYUI_COMMIT = "fc0cb10bcbee6e73ed3caf34c27f7bde4559a07f"
WORKER_VERSION = "5.8.5"
WORKER_COMMIT = "d2a557235b3800d68dcc6fa3259125fdf4bed8a6"
# Files of those commits, so a tree without .git (an archive) can be checked too.
COMFYUI_FILES = {
    "comfyui_version.py": "0650cb5fbf8e714090be1de3e4f6d6e4617732ca536fdb7ac8e4ae3f07ddc238",
    "execution.py": "798a2af43ce315972dc0359a150f256e39eaea8c4986f75bee877966b8e0e358",
    "nodes.py": "dd4b10eebd746da29178e0f8f75781f98edbf1f0620eb42afe2d03156a6c7c33",
}
WORKER_FILES = {
    "handler.py": "c43fcc2bfff6cbb60555d7839b902c54de8a9a55ba20caba2bbd3adf9c2886ec",
}
# Empty files named like real models: ComfyUI lists them, so validation passes, and loading
# one fails the way a damaged upload does.
PLACEHOLDER_CHECKPOINTS = ("ponyDiffusionV6XL.safetensors",)
PLACEHOLDER_LORAS = ("detail.safetensors", "pony/detail.safetensors")
PYTHON_CHECK = (
    "import torch, runpod, requests, websocket; from runpod import version; "
    "print(torch.__version__, version.__version__)"
)


@dataclass(frozen=True)
class Source:
    """One source tree to verify: its name, expected commit and file digests."""

    name: str
    path: Path
    commit: str
    files: dict[str, str]


def verify_source(source: Source) -> str:
    """Check the tree is the expected commit (by git, or by file digests); say how it was checked."""
    if (source.path / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(source.path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if head != source.commit:
            raise StackError(
                f"{source.name} at {source.path} is commit {head or '?'}, not {source.commit}"
            )
        return f"git HEAD {head}"
    for name, digest in source.files.items():
        path = source.path / name
        try:
            found = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise StackError(f"{source.name}: cannot read {path} ({exc.strerror})") from exc
        if found != digest:
            raise StackError(
                f"{source.name}: {path} differs from commit {source.commit[:12]}; "
                "check out that commit"
            )
    return f"files {', '.join(source.files)} match commit {source.commit[:12]}"


def verify_python(python: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", PYTHON_CHECK], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["cannot run it"])[-1]
        raise StackError(
            f"{python}: {last}. Install ComfyUI's requirements as its README says, then "
            "`pip install requests websocket-client runpod` in the same venv"
        )
    torch, runpod = result.stdout.split()
    return f"torch {torch}, runpod {runpod}"


def lay_out(stack: Stack) -> list[Path]:
    """Make the volume with its placeholder models and the model-paths file; return the placeholders."""
    made = []
    for folder, names in (
        (stack.checkpoints, PLACEHOLDER_CHECKPOINTS),
        (stack.loras, PLACEHOLDER_LORAS),
    ):
        for name in names:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            made.append(path)
    # The same layout as worker-comfyui's src/extra_model_paths.yaml, on this folder's volume.
    (stack.folder / "extra_model_paths.yaml").write_text(
        "runpod_worker_comfy:\n"
        f"  base_path: {stack.volume}\n"
        "  checkpoints: models/checkpoints/\n"
        "  loras: models/loras/\n",
        encoding="utf-8",
    )
    return made


def check_comfyui(stack: Stack) -> str:
    """Start ComfyUI, check its version and that it lists the placeholders, stop it."""
    server = ComfyUI(stack)
    server.start()
    try:
        stats = httpx.get(f"{stack.comfy_url}/system_stats", timeout=10).json()
        version = stats["system"]["comfyui_version"]
        if version != COMFYUI_VERSION:
            raise StackError(f"ComfyUI answers as version {version}, not {COMFYUI_VERSION}")
        listed = {}
        for node, field in (("CheckpointLoaderSimple", "ckpt_name"), ("LoraLoader", "lora_name")):
            info = httpx.get(f"{stack.comfy_url}/object_info/{node}", timeout=10).json()
            listed[field] = info[node]["input"]["required"][field][0]
    finally:
        server.stop()
    for field, names in (("ckpt_name", PLACEHOLDER_CHECKPOINTS), ("lora_name", PLACEHOLDER_LORAS)):
        missing = sorted(set(names) - set(listed[field]))
        if missing:
            raise StackError(f"ComfyUI does not list {', '.join(missing)}; see {stack.comfy_log}")
    return f"ComfyUI {version} answered on {stack.comfy_host} and lists the placeholder models"


def check_bridge(stack: Stack) -> str:
    """Import the handler under runpod-python in the stack's Python, as the emulator will."""
    result = subprocess.run(
        [str(stack.python), str(BRIDGE), str(stack.worker), stack.comfy_host, str(stack.pid_file)],
        input="",
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        hello = json.loads(result.stdout.splitlines()[0])
    except (IndexError, ValueError):
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StackError(f"the handler does not load: {tail}") from None
    return f"worker-comfyui's handler loads under runpod {hello['runpod']}"


def prepare(stack: Stack) -> list[str]:
    """Every check and step in order; returns what was verified, raises StackError on the first fault."""
    done = [
        "ComfyUI: "
        + verify_source(Source("ComfyUI", stack.comfyui, COMFYUI_COMMIT, COMFYUI_FILES)),
        "worker-comfyui: "
        + verify_source(Source("worker-comfyui", stack.worker, WORKER_COMMIT, WORKER_FILES)),
        f"{stack.python}: " + verify_python(stack.python),
    ]
    stack.folder.mkdir(parents=True, exist_ok=True)
    placeholders = lay_out(stack)
    done.append(
        "placeholders: " + ", ".join(str(p.relative_to(stack.folder)) for p in placeholders)
    )
    stack.save()
    done.append(check_bridge(stack))
    done.append(check_comfyui(stack))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the stack's files go (made if missing)")
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI v0.8.0 source tree")
    parser.add_argument(
        "--worker", type=Path, required=True, help="worker-comfyui 5.8.5 source tree"
    )
    parser.add_argument(
        "--python", type=Path, required=True, help="Python of the venv with ComfyUI's requirements"
    )
    parser.add_argument(
        "--port", type=int, default=8188, help="ComfyUI's port (the handler's own is 8188)"
    )
    args = parser.parse_args(argv)
    stack = Stack(
        folder=args.folder.expanduser().resolve(),
        python=args.python.expanduser().absolute(),
        comfyui=args.comfyui.expanduser().resolve(),
        worker=args.worker.expanduser().resolve(),
        port=args.port,
    )
    try:
        for line in prepare(stack):
            print(f"ok  {line}")
    except StackError as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nStack ready in {stack.folder}. Settings:\n"
        f"  export {STACK_ENV}={stack.folder}\n"
        "Then:\n"
        "  .venv/bin/python -m pytest tests/realstack      # the real-stack suite\n"
        "  .venv/bin/python -m tests.fakes.real_worker     # ComfyUI + the emulator, for "
        "`python -m bot generate`\n"
        f'  .venv/bin/python -m tests.fakes.sandbox --real-stack "${STACK_ENV}" '
        '"a test --workflow test-pattern"'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
