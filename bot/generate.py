"""`python -m bot generate`: one prompt through the job manager, progress on the terminal, files out."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bot import failures
from bot.checks import explain_runpod_error
from bot.config import Settings
from bot.images import MAX_INPUT_BYTES, ImageError, ImageFile, VerifiedImage, prepare_input_image
from bot.jobs import Job, JobError, JobState, JobUpdate, UpdateKind
from bot.metadata import with_generation_data
from bot.polling import Timing
from bot.prompt import Options, PromptError
from bot.runpod import RunPodAuthError, RunPodClient, RunPodError, RunPodNotFound
from bot.services import Services

CLI_USER = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # the shell's convention for "ended by SIGINT"

# Failures that are the operator's to fix: said as what to set, not as a member would read them.
OPERATOR_FAILURES = {
    failures.AUTH.message: "RunPod refused RUNPOD_API_KEY (401): create a key at "
    "https://www.runpod.io/console/user/settings and set RUNPOD_API_KEY.",
    failures.ENDPOINT.message: "RunPod does not know RUNPOD_ENDPOINT_ID (404): copy the id from "
    "your endpoint's page in the RunPod console.",
    failures.UNAVAILABLE.message: "RunPod could not be reached or refused the job for a while: "
    "check RUNPOD_API_BASE, the network and https://status.runpod.io, then try again.",
}
CONFIG_FAILURES = {failures.AUTH.message, failures.ENDPOINT.message}
# The member's way of giving an image, said the command line's way.
MEMBER_IMAGE_WORDS = (
    ("attach one with the `image` option", "give one with `--image PATH`"),
    ("does not use an attached image; remove it", "does not use an image; leave out `--image`"),
)


class FileDelivery:
    """Saves a job's images (PNG with generation data) and reports its end on the terminal."""

    def __init__(self, out: Path, finished: asyncio.Future[Job]) -> None:
        self.out = out
        self.finished = finished
        self.saved: list[Path] = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        marked = with_generation_data(images, job.request, job.workflow_json)
        for index, image in enumerate(marked, start=1):
            extension = image.filename.rsplit(".", 1)[-1]
            # Every run is job 1 of its own scratch database: the time keeps names apart.
            path = self.out / f"stablehand-{self.stamp}-seed{job.request.seed}-{index}.{extension}"
            path.write_bytes(image.data)
            self.saved.append(path)
        if not self.finished.done():
            self.finished.set_result(job)

    async def notify(self, job: Job) -> None:
        if not self.finished.done():
            self.finished.set_result(job)


class ProgressPrinter:
    """One terminal line per change of state; a retry that changes nothing is not said again."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, update: JobUpdate) -> None:
        detail = {
            UpdateKind.QUEUED: f"queued (position {update.position})",
            UpdateKind.WAITING: "waiting for a GPU worker to start"
            if update.cold
            else "waiting in RunPod's queue",
            UpdateKind.RUNNING: f"generating ({int(update.elapsed or 0)} s)",
            UpdateKind.DELIVERING: "downloading the images",
        }.get(update.kind)
        if detail and detail != self.last:
            self.last = detail
            print(f"  {detail}", file=sys.stderr)


def read_image(path: Path, *, max_pixels: int) -> VerifiedImage:
    """The same checks a member's attachment gets; `ImageError` says what is wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise ImageError(
                f"That image is {size / 2**20:.0f} MB; the limit is {MAX_INPUT_BYTES // 2**20} MB."
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"It cannot be read ({exc.strerror or exc}).") from None
    return prepare_input_image(data, max_pixels=max_pixels, max_bytes=MAX_INPUT_BYTES)


async def generate(
    settings: Settings,
    prompt: str,
    *,
    workflow: str | None,
    out: Path,
    image: Path | None = None,
    timing: Timing | None = None,
    runpod: RunPodClient | None = None,
) -> int:
    """Run one job end to end on the configured endpoint; 0 when images were saved."""
    with tempfile.TemporaryDirectory(prefix="stablehand-") as scratch:
        # A scratch database: the bot's own would let this process resume the bot's jobs.
        services = await Services.open(
            settings,
            database_path=Path(scratch) / "generate.db",
            charge=False,
            timing=timing,
            runpod=runpod,
        )
        try:
            return await _generate(services, prompt, workflow=workflow, out=out, image=image)
        finally:
            await services.close()


async def _generate(
    services: Services, prompt: str, *, workflow: str | None, out: Path, image: Path | None
) -> int:
    verified = None
    if image is not None:
        try:
            verified = read_image(image, max_pixels=services.policy().max_pixels)
        except ImageError as exc:
            print(f"--image {image}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    try:
        new_job = services.prepare(
            prompt,
            user_id=CLI_USER,
            guild_id=None,
            channel_id=None,
            options=Options(workflow=workflow),
            image=verified,
        )
    except PromptError as exc:
        print(_for_the_command_line(str(exc)), file=sys.stderr)
        return EXIT_FAILED
    # Said once, before anything is queued: not as a job retrying its way to a timeout.
    try:
        await services.clients[new_job.endpoint].health()
    except RunPodError as exc:
        detail, fix = explain_runpod_error(exc, services.settings, new_job.endpoint)
        print(f"RunPod: {detail}. To fix: {fix}.", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, RunPodAuthError | RunPodNotFound) else EXIT_FAILED

    loop = asyncio.get_running_loop()
    finished: asyncio.Future[Job] = loop.create_future()
    delivery = FileDelivery(out, finished)
    services.jobs.subscribe(ProgressPrinter())
    await services.jobs.start(delivery)
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        job = await services.jobs.accept(new_job)
        await services.jobs.attach_message(job.id, None, None)
        request = job.request
        print(
            f"job {job.id}: {request.template}, {request.width}x{request.height}, seed {request.seed}",
            file=sys.stderr,
        )
        for note in request.notes:
            print(f"  note: {_for_the_command_line(note)}", file=sys.stderr)
        stop = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({finished, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not finished.done():
            # A second Ctrl-C ends the process at once.
            loop.remove_signal_handler(signal.SIGINT)
            return await _cancel(services, job.id, finished)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return _report(finished.result(), delivery.saved)


async def _cancel(services: Services, job_id: int, finished: asyncio.Future[Job]) -> int:
    """Ctrl-C: withdraw the job at RunPod and say what that does and does not stop."""
    print(f"  interrupted: cancelling job {job_id}", file=sys.stderr)
    try:
        job = await services.jobs.cancel(job_id, by_user=CLI_USER)
    except JobError as exc:
        print(f"  {exc}", file=sys.stderr)
    else:
        if job.state is JobState.SUBMITTING:
            # RunPod has not answered /run yet: the manager cancels the job once it does.
            await finished
    ended = await services.jobs.get(job_id)
    if ended is None or ended.state is not JobState.CANCELLED:
        print("  the job had already ended; nothing was cancelled", file=sys.stderr)
    elif ended.backend_id:
        print(
            f"Cancelled job {job_id} at RunPod ({ended.backend_id}). worker-comfyui lets a ComfyUI "
            "prompt that has started run to its end, so that GPU time may still be billed.",
            file=sys.stderr,
        )
    else:
        print(f"Cancelled job {job_id} before it reached RunPod.", file=sys.stderr)
    return EXIT_INTERRUPTED


def _report(ended: Job, saved: Sequence[Path]) -> int:
    if ended.failure:
        operator = OPERATOR_FAILURES.get(ended.failure)
        print(f"failed: {operator or ended.failure}", file=sys.stderr)
        if ended.error and not operator:
            print(f"  cause: {ended.error.splitlines()[0][:500]}", file=sys.stderr)
        return EXIT_CONFIG if ended.failure in CONFIG_FAILURES else EXIT_FAILED
    for path in saved:
        print(path)
    return 0


def _for_the_command_line(text: str) -> str:
    for member_words, cli_words in MEMBER_IMAGE_WORDS:
        text = text.replace(member_words, cli_words)
    return text
